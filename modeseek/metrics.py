"""Exact metrics of a categorical policy, computed from its full probability vector.

For categorical policies every metric is an exact expectation over the K bins,
not a Monte-Carlo estimate (the paper's code samples 100 eval responses,
docs/paper.md §A.7): the full probability vector is at hand, an exact value
costs one pass over it, and curves then differ only by what training did, not
by evaluation noise.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from modeseek.problems import high_reward_mask, safe_log

__all__ = [
    "EXACT_METRICS",
    "PAIR_METRICS",
    "MetricConstants",
    "metric_constants",
    "metrics_from_constants",
    "exact_metrics",
    "entropy",
    "kl",
]

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


def entropy(logp: jax.Array) -> jax.Array:
    """Exact entropy -sum_i p_i log p_i of log-probabilities, over the last axis."""
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def kl(logp: jax.Array, logq: jax.Array) -> jax.Array:
    """Exact KL(p || q) = sum_i p_i (log p_i - log q_i) from log-probabilities, over the last axis."""
    return jnp.sum(jnp.exp(logp) * (logp - logq), axis=-1)


class MetricConstants(NamedTuple):
    """Per-problem quantities that do not change during a run (hoisted out of the step).

    ``table`` stacks the vectors whose pi-expectations are metrics: rewards,
    log pi_ref, log pi_star, the high-reward indicator and the best-bin
    indicator. One matrix-vector product then gives all of them; on CPU this is
    several times faster under vmap than separate reductions.

    Attributes:
      table: (5, K) the stacked vectors, in that order.
      ref_probs: (K,) pi_ref.
      ref_neg_entropy: () sum_i pi_ref,i log pi_ref,i.
    """

    table: jax.Array
    ref_probs: jax.Array
    ref_neg_entropy: jax.Array


def metric_constants(ref_probs: jax.Array, reward: jax.Array, beta: float | jax.Array) -> MetricConstants:
    """Precompute the metric table for :func:`metrics_from_constants` from (K,) ref_probs and reward."""
    ref_logp = safe_log(ref_probs)
    table = jnp.stack(
        [
            reward,
            ref_logp,
            jax.nn.log_softmax(ref_logp + reward / beta),
            high_reward_mask(reward).astype(reward.dtype),
            jax.nn.one_hot(jnp.argmax(reward), reward.shape[-1], dtype=reward.dtype),
        ]
    )
    return MetricConstants(table, ref_probs, jnp.sum(jax.scipy.special.xlogy(ref_probs, ref_probs)))


def metrics_from_constants(logp: jax.Array, c: MetricConstants) -> dict[str, jax.Array]:
    """All EXACT_METRICS (scalars) for one context from its (K,) ``logp``, given precomputed constants (see exact_metrics)."""
    p = jnp.exp(logp)
    reward, ref, star, high, best = c.table @ p
    neg_h = logp @ p
    return {
        "expected_reward": reward,
        "kl_pi_ref": neg_h - ref,
        "kl_ref_pi": c.ref_neg_entropy - c.ref_probs @ logp,
        "kl_pi_star": neg_h - star,
        "entropy": -neg_h,
        "mass_high_reward": high,
        "p_best": best,
    }


def exact_metrics(logp: jax.Array, ref_probs: jax.Array, reward: jax.Array, beta: float | jax.Array) -> dict[str, jax.Array]:
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
    return metrics_from_constants(logp, metric_constants(ref_probs, reward, beta))
