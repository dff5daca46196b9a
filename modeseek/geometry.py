"""Rarity and coverage: the two axes of the paper's coverage conditions, as parameters.

The paper's central claim is conditional on two geometric quantities (its
Table 2, docs/paper.md §D.4): [C1] how far the reward's peak lies from the
reference policy, and [C2] how well the offline preference data covers the
good responses. This module makes both exact, tunable numbers.

* **Rarity** rho = pi_ref(H), the reference mass on the high-reward set
  H = {y : r(y) >= 0.5 max r} (:func:`modeseek.problems.high_reward_mask`).
  :func:`bump_for_rarity` builds a gaussian-bump reward (the paper's reward
  shape, docs/paper.md §A.3) that hits a requested rarity, by moving the bump's
  centre into the reference's tail at a fixed width ("shift") or by narrowing a
  bump at a fixed centre ("narrow"), and reports the value it achieved.
* **Coverage** c = mu(H) / pi_ref(H) of an offline data distribution mu.
  :func:`coverage_data` interpolates from mu_0, the reference truncated to the
  complement of H (no mass on the high-reward set: the preference data never
  shows a good response, as in the Skew Length task, docs/paper.md §D.6), to
  mu_1 = pi_ref, keeping pi_ref's shape inside and outside H.

Everything is computed in float64 NumPy (tail masses down to 1e-6 keep full
relative precision) and returned as float32 ``jax.Array`` like
:mod:`modeseek.references`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from modeseek import _checks
from modeseek.problems import high_reward_mask

__all__ = [
    "high_reward_set",
    "rarity",
    "coverage",
    "RarityBump",
    "bump_for_rarity",
    "bumps_for_rarities",
    "coverage_data",
    "coverage_grid",
    "RARITY_METHODS",
]

RARITY_METHODS = ("shift", "narrow")
_SIDES = ("left", "right", "any")
# Centres and widths are searched on a fine grid; the rarity is a step function
# of both (H is a set of whole bins), so a finer grid gains nothing.
_CENTER_STEP = 0.05
_NUM_WIDTHS = 4000


def high_reward_set(reward: ArrayLike) -> np.ndarray:
    """(K,) boolean mask of the high-reward set H = {y : r(y) >= 0.5 max r}."""
    return np.asarray(high_reward_mask(jnp.asarray(reward, jnp.float32)))


def _reference_and_high_set(ref_probs: ArrayLike, reward: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The validated reference (float64) and the high-reward set H, checked to have the same bins."""
    p = _checks.probability_vector("ref_probs", ref_probs)
    h = high_reward_set(reward)
    if h.shape != p.shape:
        raise ValueError(f"reward has {h.shape[0]} bins but ref_probs has {p.shape[0]}; expected the same")
    return p, h


def rarity(ref_probs: ArrayLike, reward: ArrayLike) -> float:
    """Rarity rho = pi_ref(H): the reference mass on the high-reward set.

    Small rho is the paper's "far" geometry (the reward's peak sits where pi_ref
    has little mass; docs/paper.md §A.3, §D.4 [C1] "peaks disjoint"), rho near 0.5
    its "near" geometry ("peaks overlap").

    Args:
      ref_probs: (K,) reference probabilities.
      reward: (K,) rewards.
    """
    p, h = _reference_and_high_set(ref_probs, reward)
    return float(p[h].sum())


def coverage(data_probs: ArrayLike, ref_probs: ArrayLike, reward: ArrayLike) -> float:
    """Coverage c = mu(H) / pi_ref(H) of a data distribution mu (1 = as much as pi_ref, 0 = none).

    Args:
      data_probs: (K,) offline data distribution mu.
      ref_probs: (K,) reference probabilities.
      reward: (K,) rewards defining H.
    """
    mu = _checks.probability_vector("data_probs", data_probs)
    rho = rarity(ref_probs, reward)
    if rho <= 0:
        raise ValueError("the reference puts no mass on the high-reward set; coverage is undefined")
    return float(mu[high_reward_set(reward)].sum() / rho)


@dataclasses.dataclass(frozen=True)
class RarityBump:
    """A gaussian-bump reward built to a requested rarity, with what was achieved.

    Attributes:
      reward: (K,) float32 rewards exp(-((y - center)/width)^2).
      center: the bump's centre (bins).
      width: its width w (bins); H is the bins within w sqrt(ln 2) of the centre.
      rarity: the achieved rarity pi_ref(H).
      target: the requested rarity.
      method: "shift" or "narrow".
    """

    reward: jnp.ndarray
    center: float
    width: float
    rarity: float
    target: float
    method: str

    @property
    def relative_error(self) -> float:
        """|achieved / target - 1|."""
        return abs(self.rarity / self.target - 1.0)


def _bump(num_bins: int, center: ArrayLike, width: ArrayLike) -> np.ndarray:
    i = np.arange(num_bins, dtype=np.float64)
    return np.exp(-(((i - np.asarray(center)[..., None]) / np.asarray(width)[..., None]) ** 2))


def _rarities(p: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    # Same threshold as high_reward_mask (bumps are positive, so base = 0), in float64.
    high = rewards >= 0.5 * rewards.max(axis=-1, keepdims=True)
    return (high * p).sum(axis=-1)


def bump_for_rarity(
    ref_probs: ArrayLike,
    target: float,
    *,
    method: str = "shift",
    width: float = 12.0,
    center: float | None = None,
    side: str = "left",
    start: float | None = None,
    rtol: float = 0.15,
) -> RarityBump:
    """A gaussian-bump reward r(y) = exp(-((y - c)/w)^2) whose rarity pi_ref(H) is ``target``.

    The reward shape is the paper's (docs/paper.md §A.3); rarity is its [C1] axis
    (§D.4). Because H is a set of whole bins the rarity is a step function of the
    bump's parameters: the search returns the parameters whose rarity is nearest
    to ``target`` in log scale and raises if that is not within ``rtol``.

    Args:
      ref_probs: (K,) reference probabilities.
      target: requested rarity in (0, 1).
      method: "shift" (fixed ``width``; the centre moves from ``start`` towards
        the reference's tail on ``side``) or "narrow" (fixed ``center``; the width
        shrinks or grows).
      width: bump width in bins for "shift".
      center: bump centre for "narrow" (default: the edge bin on ``side``, 0 for
        "left", K - 1 for "right").
      side: "left", "right" or "any": where the "shift" search may place the
        centre relative to ``start``.
      start: where "shift" starts (default: the reference's most likely bin).
      rtol: accepted relative error |achieved/target - 1|.

    Returns:
      A :class:`RarityBump` with the achieved rarity.

    Raises:
      ValueError: for a target outside (0, 1), or one that this method cannot
        reach within ``rtol`` (the message gives the reachable range).
    """
    p = _checks.probability_vector("ref_probs", ref_probs)
    k = p.shape[0]
    target = _checks.interval("target", target, 0.0, 1.0, low_open=True, high_open=True, what="a rarity")
    _checks.choice("method", method, RARITY_METHODS)
    _checks.choice("side", side, _SIDES)
    _checks.positive("rtol", rtol)
    if method == "shift":
        _checks.positive("width", width)
        s = float(np.argmax(p)) if start is None else _checks.interval("start", start, 0, k - 1, what="a bin position")
        lo, hi = {"left": (0.0, s), "right": (s, k - 1.0), "any": (0.0, k - 1.0)}[side]
        centers = np.arange(lo, hi + _CENTER_STEP / 2, _CENTER_STEP)
        widths = np.full_like(centers, float(width))
        what = f"shifting a width-{float(width):g} bump {side} of bin {s:g}"
    else:
        c = (0.0 if side != "right" else k - 1.0) if center is None else _checks.interval("center", center, 0, k - 1, what="a bin position")
        widths = np.geomspace(1e-2, 4.0 * k, _NUM_WIDTHS)
        centers = np.full_like(widths, c)
        what = f"narrowing a bump centred at bin {c:g}"
    rho = _rarities(p, _bump(k, centers, widths))
    with np.errstate(divide="ignore"):
        err = np.abs(np.log(np.maximum(rho, 1e-300)) - np.log(target))
    best = np.flatnonzero(err == err.min())
    # The error is flat over a run of parameters giving the same H; take the
    # run's middle so that H sits symmetrically inside the half-maximum region.
    j = int(best[len(best) // 2]) if np.all(np.diff(best) == 1) else int(best[0])
    bump = RarityBump(jnp.asarray(_bump(k, centers[j], widths[j]), jnp.float32), float(centers[j]), float(widths[j]), float(rho[j]), target, method)
    if bump.relative_error > rtol:
        reach = rho[rho > 0]
        raise ValueError(
            f"target rarity {target:.3g} is not reachable by {what}: the nearest achievable rarity is "
            f"{bump.rarity:.3g} (relative error {bump.relative_error:.2f} > rtol={rtol:g}); "
            f"reachable rarities span [{reach.min():.3g}, {reach.max():.3g}]"
        )
    return bump


def bumps_for_rarities(ref_probs: ArrayLike, targets: Sequence[float], **kwargs: Any) -> list[RarityBump]:
    """:func:`bump_for_rarity` for each target (same keyword arguments)."""
    return [bump_for_rarity(ref_probs, t, **kwargs) for t in np.atleast_1d(np.asarray(targets, dtype=np.float64))]


def coverage_data(ref_probs: ArrayLike, reward: ArrayLike, coverage_value: float) -> jnp.ndarray:
    """The offline data distribution mu_c with coverage c = mu_c(H) / pi_ref(H).

    Definition (docs/paper.md §D.4 [C2], §D.6 Skew Length):
    mu_c = c pi_ref + (1 - c) mu_0, where mu_0 = pi_ref restricted to the
    complement of H and renormalised (see the module docstring). For every c
    the data keeps pi_ref's shape inside H (scaled by c) and outside H (scaled
    up to fill the rest): mu_c(H) = c rho exactly.

    Args:
      ref_probs: (K,) reference probabilities.
      reward: (K,) rewards defining H.
      coverage_value: c in [0, 1].

    Returns:
      (K,) float32 probabilities.
    """
    c = _checks.interval("coverage", coverage_value, 0.0, 1.0)
    p, h = _reference_and_high_set(ref_probs, reward)
    rest = float(p[~h].sum())
    if rest <= 0:
        raise ValueError("the high-reward set holds all of pi_ref's mass; a data distribution without it does not exist")
    mu0 = np.where(h, 0.0, p) / rest
    mu = c * p + (1.0 - c) * mu0
    return jnp.asarray(mu / mu.sum(), jnp.float32)


def coverage_grid(ref_probs: ArrayLike, reward: ArrayLike, coverages: Sequence[float]) -> jnp.ndarray:
    """(C, K) stack of :func:`coverage_data` for each coverage (rows sweepable as ``run(data=...)``)."""
    return jnp.stack([coverage_data(ref_probs, reward, c) for c in np.atleast_1d(np.asarray(coverages, np.float64))])
