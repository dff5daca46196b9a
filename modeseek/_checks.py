"""Small validation helpers shared by the public constructors.

Errors name the offending value and say what was expected, so that a bad
sweep fails at the call site instead of producing NaN deep inside a jitted run.
:func:`register_pytree` makes a validated dataclass a pytree whose
unflattening skips the validation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import jax
import numpy as np


def is_traced(x: Any) -> bool:
    """True when ``x`` is an abstract value inside a JAX transformation."""
    return isinstance(x, jax.core.Tracer)


def register_pytree(cls: type, leaves: tuple[str, ...], static: tuple[str, ...]) -> None:
    """Register the frozen dataclass ``cls`` as a pytree: ``leaves`` are traced, ``static`` fields are its aux data.

    Unflattening bypasses ``__init__``: it happens with tracers, which must not be validated.
    """

    def flatten(obj: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        return tuple(getattr(obj, n) for n in leaves), tuple(getattr(obj, n) for n in static)

    def unflatten(aux: tuple[Any, ...], values: Iterable[Any]) -> Any:
        obj: Any = object.__new__(cls)
        for name, value in zip(leaves + static, (*values, *aux)):
            object.__setattr__(obj, name, value)
        return obj

    jax.tree_util.register_pytree_node(cls, flatten, unflatten)


def choice(name: str, value: Any, valid: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``valid``, else raise a ValueError listing them."""
    valid = tuple(valid)
    if value not in valid:
        raise ValueError(f"{name}={value!r} is not valid; expected one of {', '.join(repr(v) for v in valid)}")
    return value


def positive(name: str, value: Any, *, allow_zero: bool = False) -> Any:
    """Check that every entry of a concrete scalar or array is finite and > 0 (or >= 0)."""
    if is_traced(value):
        return value
    arr = np.asarray(value, dtype=np.float64)
    bad = ~np.isfinite(arr) | ((arr < 0) if allow_zero else (arr <= 0))
    if np.any(bad):
        shown = float(arr[bad].ravel()[0]) if arr.ndim else float(arr)
        kind = "finite and >= 0" if allow_zero else "finite and > 0"
        raise ValueError(f"{name}={shown!r} is invalid; expected {kind}")
    return value


def vector(name: str, values: Any, *, unit: str = "bin", finite: bool = True) -> np.ndarray:
    """Validate a 1-D vector over at least 2 bins (or tokens: ``unit``), all entries finite unless ``finite=False``.

    Returns the vector as float64.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.shape[0] < 2:
        raise ValueError(f"{name} has shape {v.shape}; expected a 1-D vector over at least 2 {unit}s")
    if finite and not np.all(np.isfinite(v)):
        i = int(np.flatnonzero(~np.isfinite(v))[0])
        raise ValueError(f"{name} has a non-finite entry {float(v[i])!r} at {unit} {i}; expected finite values")
    return v


def probability_vector(name: str, probs: Any, *, atol: float = 1e-4) -> np.ndarray:
    """Validate a 1-D probability vector: finite, non-negative, summing to 1 within ``atol``.

    Returns the vector as float64, renormalised so it sums to 1 exactly.
    """
    p = vector(name, probs)
    if np.any(p < 0):
        i = int(np.argmin(p))
        raise ValueError(f"{name} has a negative entry {float(p[i])!r} at bin {i}; expected probabilities >= 0")
    total = float(p.sum())
    if abs(total - 1.0) > atol:
        raise ValueError(f"{name} sums to {total:.10g}; expected 1 within {atol}")
    return p / total


def prng_key(key: Any) -> np.ndarray:
    """Normalise a user's ``key`` to the raw threefry key data, a (2,) uint32 array.

    Accepted, and never colliding with one another:

    * an int 0 <= key < 2**64 (not a bool): the words ``(key >> 32, key & 0xFFFFFFFF)``,
      which is ``jax.random.PRNGKey(key)`` for key < 2**32 and JAX's own
      64-bit seeding above it (so 2**40 and 0 are different keys);
    * a typed key, ``jax.random.key(seed)`` (threefry, JAX's default): its key data,
      so ``key(0)`` and ``PRNGKey(0)`` give bit-identical runs;
    * a legacy ``jax.random.PRNGKey`` array: a (2,) uint32 array.

    Anything else raises a one-line ValueError naming the value.
    """
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        k = int(key)
        if not 0 <= k < 2**64:
            raise ValueError(f"key={k!r} is out of range; expected an int in [0, 2**64), a jax.random.key or a PRNGKey array")
        return np.array([k >> 32, k & 0xFFFFFFFF], np.uint32)
    if isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        impl = str(jax.random.key_impl(key))
        if key.shape != () or "threefry" not in impl:
            raise ValueError(f"key has shape {key.shape} and implementation {impl}; expected one threefry2x32 key (jax.random.key(seed))")
        return np.asarray(jax.random.key_data(key), np.uint32)
    if isinstance(key, (jax.Array, np.ndarray)):
        arr = np.asarray(key)
        if arr.shape == (2,) and arr.dtype == np.uint32:
            return arr.copy()
        raise ValueError(f"key has shape {arr.shape} and dtype {arr.dtype}; expected a (2,) uint32 PRNGKey array, a jax.random.key or an int")
    raise ValueError(f"key={key!r} is invalid; expected an int in [0, 2**64), a jax.random.key or a PRNGKey array")


def integer(name: str, value: Any, minimum: int = 1, *, reason: str = "") -> int:
    """Return ``value`` as an int if it is an integer (not a bool) >= ``minimum``, else a one-line ValueError.

    ``reason`` (e.g. "for pairs") is appended to the message to say why the minimum applies.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        why = f" {reason}" if reason else ""
        raise ValueError(f"{name}={value!r} is invalid; expected an integer >= {minimum}{why}")
    return int(value)


def interval(name: str, value: Any, low: float, high: float, *, low_open: bool = False, high_open: bool = False, what: str = "a value") -> float:
    """Return ``value`` as a float if it lies in the interval from ``low`` to ``high``, else a one-line ValueError.

    The ends are included unless ``low_open`` / ``high_open``; NaN is never inside.
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = float("nan")
    above = v > low if low_open else v >= low
    below = v < high if high_open else v <= high
    if isinstance(value, (bool, np.bool_)) or not (above and below):
        span = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        shown = value if isinstance(value, (int, float, str)) or value is None else v
        raise ValueError(f"{name}={shown!r} is invalid; expected {what} in {span}")
    return v
