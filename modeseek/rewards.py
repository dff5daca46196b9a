"""Reward vectors r over ``num_bins`` response bins.

Rewards are plain (K,) float32 arrays. The gaussian constructors are written in
``jax.numpy`` so that their parameters (centre, width) can be traced and swept.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from modeseek import _checks

__all__ = ["gaussian_bump", "multi_bump", "threshold", "from_array"]


def gaussian_bump(num_bins: int, center: ArrayLike, width: ArrayLike) -> jnp.ndarray:
    """The paper's reward r(i) = exp(-((i - center) / width)^2) (docs/paper.md §A.3).

    Args:
      num_bins: K.
      center: peak bin c (70 for the paper's "far" reward, 20 for "near").
      width: w > 0 (10 in the paper; 20 and 30 for its wider "far" variants).

    Returns:
      (K,) rewards in (0, 1], maximum 1 at the bin nearest ``center``.
    """
    num_bins = _checks.integer("num_bins", num_bins, 2)
    _checks.positive("width", width)
    i = jnp.arange(num_bins, dtype=jnp.float32)
    return jnp.exp(-(((i - center) / width) ** 2))


def multi_bump(
    num_bins: int,
    centers: Sequence[float],
    widths: Sequence[float],
    heights: Sequence[float] | None = None,
) -> jnp.ndarray:
    """A maximum of gaussian bumps: r(i) = max_m h_m exp(-((i - c_m)/w_m)^2).

    The maximum (rather than a sum) keeps each bump's height and shape, so a
    two-bump reward has two modes of known height.

    Args:
      num_bins: K.
      centers, widths, heights: (M,) bump parameters; heights default to 1.
    """
    c = np.atleast_1d(np.asarray(centers, dtype=np.float32))
    w = np.atleast_1d(np.asarray(widths, dtype=np.float32))
    h = np.ones_like(c) if heights is None else np.atleast_1d(np.asarray(heights, dtype=np.float32))
    if not (c.shape == w.shape == h.shape):
        raise ValueError(f"centers {c.shape}, widths {w.shape} and heights {h.shape} must have equal length")
    bumps = [hm * gaussian_bump(num_bins, cm, wm) for cm, wm, hm in zip(c, w, h)]
    return jnp.max(jnp.stack(bumps), axis=0)


def threshold(num_bins: int, low: int, high: int | None = None) -> jnp.ndarray:
    """A sparse 0/1 reward: 1 on bins low..high (inclusive), 0 elsewhere.

    Args:
      num_bins: K.
      low: first rewarded bin.
      high: last rewarded bin (default K - 1).
    """
    high = num_bins - 1 if high is None else high
    if not (0 <= low <= high < num_bins):
        raise ValueError(f"threshold bins low={low!r}, high={high!r} must satisfy 0 <= low <= high < {num_bins}")
    i = np.arange(num_bins)
    return jnp.asarray(((i >= low) & (i <= high)).astype(np.float32))


def from_array(values: ArrayLike) -> jnp.ndarray:
    """Validate a user (K,) reward array: 1-D, at least 2 bins, all finite."""
    return jnp.asarray(_checks.vector("reward", values), dtype=jnp.float32)
