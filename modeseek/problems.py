"""Problems: a reference policy and a reward over the same K bins, and the paper presets.

A :class:`Problem` is a validated pytree, so problems can be stacked and swept
as traced data. :func:`pi_star` gives the KL-regularised optimum of Lemma 6.1.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from modeseek import _checks, references, rewards

__all__ = ["Problem", "pi_star", "paper_bandit", "presets", "get", "high_reward_mask"]


@dataclasses.dataclass(frozen=True)
class Problem:
    """A categorical bandit: reference policy pi_ref and reward r over K bins.

    Attributes:
      ref_probs: (K,) reference probabilities, non-negative, summing to 1.
      reward: (K,) finite rewards; the reward ignores the context (docs/paper.md §A.1).
      name: a label used in tables and figure captions (static, not traced).

    Construction validates the arrays and names the bad value on failure. Inside
    JAX transformations (traced leaves) validation is skipped.
    """

    ref_probs: Any
    reward: Any
    name: str = "custom"

    def __post_init__(self) -> None:
        if _checks.is_traced(self.ref_probs) or _checks.is_traced(self.reward):
            return
        p = _checks.probability_vector("ref_probs", self.ref_probs)
        r = _checks.vector("reward", self.reward)
        if r.shape != p.shape:
            raise ValueError(f"reward has shape {r.shape} but ref_probs has shape {p.shape}; expected the same number of bins")
        object.__setattr__(self, "ref_probs", jnp.asarray(p, dtype=jnp.float32))
        object.__setattr__(self, "reward", jnp.asarray(r, dtype=jnp.float32))

    @property
    def num_bins(self) -> int:
        """K, the number of response bins."""
        return int(np.shape(self.ref_probs)[-1])

    @property
    def ref_logp(self) -> jnp.ndarray:
        """(K,) log pi_ref, with zero-mass bins at a large finite negative value."""
        return safe_log(self.ref_probs)


_checks.register_pytree(Problem, ("ref_probs", "reward"), ("name",))

# log(0) is replaced by this value: far below any reachable float32 log-probability
# of a softmax over <= 1e6 bins, yet finite so that gradients never meet inf - inf.
LOG_ZERO = -1e4


def safe_log(p: ArrayLike) -> jnp.ndarray:
    """log p with exact zeros mapped to ``LOG_ZERO`` (0·log 0 terms then vanish under weights)."""
    p = jnp.asarray(p)
    return jnp.where(p > 0, jnp.log(jnp.where(p > 0, p, 1.0)), LOG_ZERO)


def pi_star(problem: Problem, beta: float | jax.Array) -> jnp.ndarray:
    """The KL-regularised optimum pi*(y) = pi_ref(y) exp(r(y)/beta) / Z.

    It maximises E_pi[r] - beta KL(pi || pi_ref) (docs/paper.md §E.1; the paper's Lemma 6.1, §E.2).

    Args:
      problem: the problem (ref_probs and reward of shape (K,)).
      beta: temperature > 0 (scalar, may be traced).

    Returns:
      (K,) probabilities.
    """
    _checks.positive("beta", beta)
    return jax.nn.softmax(safe_log(problem.ref_probs) + problem.reward / beta, axis=-1)


def high_reward_mask(reward: ArrayLike) -> jnp.ndarray:
    """(K,) boolean mask of bins with reward >= 0.5 of the maximum (of max - min for signed rewards)."""
    r = jnp.asarray(reward)
    lo, hi = jnp.min(r), jnp.max(r)
    base = jnp.where(lo < 0, lo, 0.0)
    return r >= base + 0.5 * (hi - base)


_PAPER_CENTERS = {"far": 70.0, "near": 20.0}


def paper_bandit(kind: str = "far", *, width: float = 10.0, num_bins: int = 100) -> Problem:
    """The paper's 1-token bandit (docs/paper.md §A.1-§A.3).

    Reference: exact squashed-Cauchy(-0.7, 0.4) bin masses. Reward: a gaussian bump
    of the given width centred at bin 70 ("far": reference mass ~0.002 per bin
    there; reward id 4, or ids 8/9 with widths 20/30) or at bin 20 ("near":
    close to the reference's interior mode at bin 16; reward id 5). For
    ``num_bins`` other than 100 the centre scales proportionally.

    Args:
      kind: "far" or "near".
      width: bump width in bins (paper: 10; wider "far" variants 20 and 30).
      num_bins: K.
    """
    _checks.choice("kind", kind, _PAPER_CENTERS)
    center = _PAPER_CENTERS[kind] * num_bins / 100.0
    suffix = "" if float(width) == 10.0 else f"_w{float(width):g}"
    return Problem(
        references.squashed_cauchy(num_bins),
        rewards.gaussian_bump(num_bins, center, width),
        name=f"{kind}{suffix}",
    )


_PRESETS = {
    "far": lambda: paper_bandit("far"),
    "near": lambda: paper_bandit("near"),
    "far_w20": lambda: paper_bandit("far", width=20.0),
    "far_w30": lambda: paper_bandit("far", width=30.0),
}


def presets() -> tuple[str, ...]:
    """Names of the built-in problems accepted by :func:`get`."""
    return tuple(_PRESETS)


def get(name: str) -> Problem:
    """A built-in problem by name; unknown names raise ValueError listing the valid ones."""
    _checks.choice("problem", name, _PRESETS)
    return _PRESETS[name]()
