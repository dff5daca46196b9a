"""Reference policies pi_ref over ``num_bins`` response bins.

Every constructor returns exact bin masses as a float32 ``jax.Array`` of shape
``(num_bins,)`` summing to 1. Masses are computed in float64 NumPy first, so
that tail bins (the ~0.002-per-bin region of the paper's reference) keep full
relative precision.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from modeseek import _checks

__all__ = [
    "squashed_cauchy",
    "gaussian",
    "mixture",
    "uniform",
    "zipf",
    "from_logits",
    "from_probs",
]


def _as_probs(p: np.ndarray) -> jnp.ndarray:
    p = np.asarray(p, dtype=np.float64)
    return jnp.asarray(p / p.sum(), dtype=jnp.float32)


def squashed_cauchy(num_bins: int = 100, loc: float = -0.7, scale: float = 0.4) -> jnp.ndarray:
    """The paper's reference: exact bin masses of tanh(Cauchy(loc, scale)) on [-1, 1].

    Bin i covers [-1 + 2i/K, -1 + 2(i+1)/K). The mass is F(e_{i+1}) - F(e_i) with
    F(y) = 1/2 + arctan((atanh(y) - loc)/scale)/pi, so there is no sampling noise
    (the authors histogram 10,000 samples instead; docs/paper.md §A.2).

    Args:
      num_bins: K, number of equal bins.
      loc: location of the Cauchy before squashing.
      scale: scale of the Cauchy, > 0.

    Returns:
      (K,) probabilities. For the defaults: interior mode at bin 16, edge spikes
      at bins 0 and 99, ~0.002 mass per bin around bin 70.
    """
    num_bins = _checks.integer("num_bins", num_bins, 2)
    _checks.positive("scale", scale)
    edges = np.linspace(-1.0, 1.0, num_bins + 1)
    with np.errstate(divide="ignore"):
        u = np.arctanh(np.clip(edges, -1.0, 1.0))
    cdf = 0.5 + np.arctan((u - loc) / scale) / np.pi
    cdf[0], cdf[-1] = 0.0, 1.0
    return _as_probs(np.diff(cdf))


def gaussian(num_bins: int, center: float, width: float) -> jnp.ndarray:
    """A discretised Gaussian over bin indices: p_i proportional to exp(-(i - center)^2 / (2 width^2)).

    Args:
      num_bins: K.
      center: mean, in bin units.
      width: standard deviation in bins, > 0.
    """
    return mixture(num_bins, [center], [width], [1.0])


def mixture(
    num_bins: int,
    centers: Sequence[float],
    widths: Sequence[float],
    weights: Sequence[float] | None = None,
) -> jnp.ndarray:
    """A mixture of discretised Gaussians over bin indices.

    Each component is normalised over the K bins before mixing, so ``weights`` are
    the component masses.

    Args:
      num_bins: K.
      centers: (M,) component means in bin units.
      widths: (M,) standard deviations in bins, each > 0.
      weights: (M,) non-negative mixing weights (normalised here); default equal.
    """
    num_bins = _checks.integer("num_bins", num_bins, 2)
    c = np.atleast_1d(np.asarray(centers, dtype=np.float64))
    w = np.atleast_1d(np.asarray(widths, dtype=np.float64))
    if c.shape != w.shape:
        raise ValueError(f"centers {c.shape} and widths {w.shape} must have the same length")
    _checks.positive("widths", w)
    m = np.ones_like(c) if weights is None else np.atleast_1d(np.asarray(weights, dtype=np.float64))
    if m.shape != c.shape:
        raise ValueError(f"weights {m.shape} must match centers {c.shape}")
    _checks.positive("weights", m, allow_zero=True)
    if m.sum() <= 0:
        raise ValueError(f"weights={m.tolist()} sum to 0; expected some positive weight")
    i = np.arange(num_bins, dtype=np.float64)[:, None]
    logk = -0.5 * ((i - c) / w) ** 2
    comp = np.exp(logk - logk.max(axis=0))
    comp /= comp.sum(axis=0)
    return _as_probs(comp @ (m / m.sum()))


def uniform(num_bins: int) -> jnp.ndarray:
    """The uniform distribution over K bins."""
    num_bins = _checks.integer("num_bins", num_bins, 2)
    return _as_probs(np.ones(num_bins))


def zipf(num_bins: int, exponent: float = 1.0) -> jnp.ndarray:
    """A truncated Zipf law: p_i proportional to (i + 1)^(-exponent), i = 0..K-1.

    Args:
      num_bins: K.
      exponent: s >= 0; 0 gives the uniform distribution.
    """
    num_bins = _checks.integer("num_bins", num_bins, 2)
    _checks.positive("exponent", exponent, allow_zero=True)
    return _as_probs(np.arange(1, num_bins + 1, dtype=np.float64) ** (-float(exponent)))


def from_logits(logits: ArrayLike) -> jnp.ndarray:
    """softmax(logits) for a user (K,) logit vector; -inf marks excluded bins."""
    z = _checks.vector("logits", logits, finite=False)
    if np.any(np.isnan(z)) or np.any(z == np.inf):
        i = int(np.flatnonzero(np.isnan(z) | (z == np.inf))[0])
        raise ValueError(f"logits has an invalid entry {float(z[i])!r} at bin {i}; expected finite values or -inf")
    if np.all(z == -np.inf):
        raise ValueError("logits are all -inf; expected at least one finite logit")
    return _as_probs(np.exp(z - z.max()))


def from_probs(probs: ArrayLike) -> jnp.ndarray:
    """Validate and return a user (K,) probability vector (renormalised to sum to 1)."""
    return _as_probs(_checks.probability_vector("probs", probs))
