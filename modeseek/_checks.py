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
