"""Exact metrics of a categorical policy, computed from its full probability vector.

Convention 6: for categorical policies these are exact expectations, not
Monte-Carlo estimates (the paper's code samples 100 eval responses, PAPER_NOTES A.7).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from modeseek.losses.on_policy import entropy, kl
from modeseek.problems import high_reward_mask, safe_log

__all__ = ["EXACT_METRICS", "PAIR_METRICS", "exact_metrics", "expected_reward"]

#: Keys computed at every step for every run.
EXACT_METRICS = (
    "expected_reward",
    "kl_pi_ref",
    "kl_ref_pi",
    "kl_pi_star",
    "entropy",
    "mass_high_reward",
    "p_best",
)
#: Extra keys for pair losses (weighted means over the current batch's pairs).
PAIR_METRICS = ("chosen_logp", "rejected_logp", "margin")


def expected_reward(logp, reward):
    """E_pi[r] for (K,) log-probabilities and rewards."""
    return jnp.sum(jnp.exp(logp) * reward)


def exact_metrics(logp, ref_probs, reward, beta) -> dict[str, jax.Array]:
    """All EXACT_METRICS for one context.

    Args:
      logp: (K,) log pi_theta(.|x).
      ref_probs: (K,) pi_ref.
      reward: (K,) r.
      beta: temperature of pi_star = pi_ref exp(r/beta)/Z.

    Returns:
      Dict of scalars: expected_reward, kl_pi_ref = KL(pi||pi_ref), kl_ref_pi =
      KL(pi_ref||pi), kl_pi_star = KL(pi||pi_star), entropy, mass_high_reward
      (mass on bins with r >= 0.5 max r) and p_best (mass of the first best bin).
    """
    ref_logp = safe_log(ref_probs)
    star_logp = jax.nn.log_softmax(ref_logp + reward / beta)
    p = jnp.exp(logp)
    return {
        "expected_reward": jnp.sum(p * reward),
        "kl_pi_ref": kl(logp, ref_logp),
        "kl_ref_pi": jnp.sum(jax.scipy.special.xlogy(ref_probs, ref_probs) - ref_probs * logp),
        "kl_pi_star": kl(logp, star_logp),
        "entropy": entropy(logp),
        "mass_high_reward": jnp.sum(jnp.where(high_reward_mask(reward), p, 0.0)),
        "p_best": p[jnp.argmax(reward)],
    }
