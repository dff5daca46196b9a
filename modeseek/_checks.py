"""Small validation helpers shared by the public constructors.

Errors name the offending value and say what was expected, so that a bad
sweep fails at the call site instead of producing NaN deep inside a jitted run.
"""

from __future__ import annotations

from typing import Any, Iterable

import jax
import numpy as np


def is_traced(x: Any) -> bool:
    """True when ``x`` is an abstract value inside a JAX transformation."""
    return isinstance(x, jax.core.Tracer)


def choice(name: str, value: Any, valid: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``valid``, else raise a ValueError listing them."""
    valid = tuple(valid)
    if value not in valid:
        raise ValueError(
            f"{name}={value!r} is not valid; expected one of {', '.join(repr(v) for v in valid)}"
        )
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


def probability_vector(name: str, probs: Any, *, atol: float = 1e-4) -> np.ndarray:
    """Validate a 1-D probability vector: finite, non-negative, summing to 1 within ``atol``.

    Returns the vector as float64, renormalised so it sums to 1 exactly.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"{name} must be a 1-D vector over bins; got shape {p.shape}")
    if p.shape[0] < 2:
        raise ValueError(f"{name} must have at least 2 bins; got {p.shape[0]}")
    if not np.all(np.isfinite(p)):
        i = int(np.flatnonzero(~np.isfinite(p))[0])
        raise ValueError(f"{name} has a non-finite entry {float(p[i])!r} at bin {i}; expected finite probabilities")
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
    if isinstance(key, bool) or isinstance(key, np.bool_):
        raise ValueError(f"key={key!r} is invalid; expected an int in [0, 2**64), a jax.random.key or a PRNGKey array")
    if isinstance(key, (int, np.integer)):
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


def integer(name: str, value: Any, minimum: int = 1) -> int:
    """Return ``value`` as an int if it is an integer (not a bool) >= ``minimum``, else a one-line ValueError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r} is invalid; expected an integer >= {minimum}")
    return int(value)
