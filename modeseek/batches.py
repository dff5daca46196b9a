"""The data a loss sees for one context: weighted items over the K bins.

Every loss is written against one of these containers and is the same function
in every data regime. A sampled batch holds the drawn responses with weights
1/N; an exact batch holds all K bins (or K x K pairs, or the order-statistic
distribution of N draws) weighted by their probability under the sampling
distribution. The loss on an exact batch is therefore the population
(infinite-batch) loss, and its gradient the expected update: the same loss
code gives both the sampled update and the one it estimates, so the two can be
compared without sampling noise.

All weights are treated as constants (no gradient flows into them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Points", "BestOfN", "Pairs", "PairTable", "Duels", "Target", "pair_weight_block", "pair_expectation", "PAIR_BLOCK"]


class Points(NamedTuple):
    """Responses with rewards, for single-sample losses (SFT, RWR, REINFORCE, PPO).

    Attributes:
      y: (M,) int32 bins.
      reward: (M,) rewards r(y).
      weight: (M,) weights summing to 1 (1/N sampled; the sampling probability exact).
      logq: (M,) log-probability of y under the distribution that generated it.
      count: () number of samples N behind the batch (inf for an exact batch);
        used by leave-one-out baselines.
      stat: None, or a statistic over every context of the batch, filled in by
        the engine for losses that declare one (``Implementation.stat``:
        batch-whitened or batch-scaled advantages, the share of groups with a
        reward signal); losses stay unbatched and read it here.
      greedy_reward: None, or () the reward of the greedy (argmax) response of
        the sampling policy, for losses that ask for it (ReMax's baseline).
    """

    y: jax.Array
    reward: jax.Array
    weight: jax.Array
    logq: jax.Array
    count: jax.Array  # type: ignore[assignment]  # shadows tuple.count on purpose: the field's name is the batch's vocabulary
    stat: Any = None
    greedy_reward: Any = None


class BestOfN(NamedTuple):
    """The best, worst and remaining responses of N draws (best-of-N and its negative terms).

    Attributes:
      best, best_weight: (M,) bins and weights of the best draw (weights sum to 1).
      worst, worst_weight: (M,) bins and weights of the worst draw (sum to 1).
      others, others_weight: (M,) bins and weights of the N - 1 draws other than
        the best (weights sum to N - 1; duplicates of the best bin included, as
        in the paper code, docs/paper.md §B.2).
      num_samples: () N.
    """

    best: jax.Array
    best_weight: jax.Array
    worst: jax.Array
    worst_weight: jax.Array
    others: jax.Array
    others_weight: jax.Array
    num_samples: jax.Array


class Pairs(NamedTuple):
    """Preference pairs (chosen y_w, rejected y_l) with weights summing to 1 (or 0 if none count).

    Attributes:
      chosen: (M,) int32 preferred bins.
      rejected: (M,) int32 dispreferred bins.
      weight: (M,) pair weights.
    """

    chosen: jax.Array
    rejected: jax.Array
    weight: jax.Array


class PairTable(NamedTuple):
    """All K x K preference pairs of a distribution, kept factored for large K.

    The population pair batch without materialising K^2 items: the weight of
    (chosen i, rejected j) is q_i q_j P(i preferred to j) [pair counts] / total,
    computed block by block (:func:`pair_expectation`), so memory stays O(B K).

    Attributes:
      probs: (K,) sampling probabilities q.
      reward: (K,) rewards.
      min_reward_gap: () pairs with |r_i - r_j| below it are skipped.
      bt_scale: () Bradley-Terry inverse temperature.
      bradley_terry: () bool, Bradley-Terry labels instead of reward labels.
      total: () sum of the unnormalised weights (P(a pair counts)).
    """

    probs: jax.Array
    reward: jax.Array
    min_reward_gap: jax.Array
    bt_scale: jax.Array
    bradley_terry: jax.Array
    total: jax.Array


#: Rows of the pair table handled at once (memory O(PAIR_BLOCK x K)).
PAIR_BLOCK = 256


def pair_weight_block(table: PairTable, rows: jax.Array) -> jax.Array:
    """(B, K) unnormalised weights of the pairs (chosen = rows[b], rejected = j)."""
    gap = table.reward[rows][:, None] - table.reward[None, :]
    bt = table.bradley_terry
    pref = jnp.where(bt, jax.nn.sigmoid(table.bt_scale * gap), (gap > 0).astype(gap.dtype))
    counted = (jnp.abs(gap) >= table.min_reward_gap) & (bt | (gap != 0))
    q = jax.lax.stop_gradient(table.probs)
    return q[rows][:, None] * q[None, :] * pref * counted


def pair_expectation(table: PairTable, fn: Callable[[jax.Array], Any], *, normalise: bool = True, block: int = PAIR_BLOCK) -> Any:
    """sum_ij W_ij fn(rows)_ij over all pairs, block by block.

    Args:
      table: the pair table.
      fn: rows (B,) int32 -> pytree of (B, K) per-pair values (chosen in rows,
        rejected every bin).
      normalise: divide by ``table.total`` (weights summing to 1).
      block: rows per block.

    Returns:
      The pytree of weighted sums.
    """
    k = table.probs.shape[0]
    b = min(block, k)
    nb = -(-k // b)
    rows = jnp.arange(nb * b, dtype=jnp.int32).reshape(nb, b)

    def one(r: jax.Array) -> Any:
        valid = (r < k)[:, None]
        rr = jnp.minimum(r, k - 1)
        w = jnp.where(valid, pair_weight_block(table, rr), 0.0)
        return jax.tree.map(lambda v: jnp.sum(w * v), fn(rr))

    sums = jax.tree.map(lambda x: jnp.sum(x, axis=0), jax.lax.map(one, rows))
    if normalise:
        sums = jax.tree.map(lambda x: x / jnp.maximum(table.total, 1e-30), sums)
    return sums


class Duels(NamedTuple):
    """Duels of a policy response y against an opponent's response y' (self-play losses).

    The opponent is pi_ref (XPO) or a geometric mixture of the policy and
    pi_ref (Nash-MD); see :func:`modeseek.regimes.sample_duels`. Sampled:
    N policy draws paired index-wise with N opponent draws; exact: all K x K
    pairs (flattened), weighted by pi_i q'_j.

    Attributes:
      y: (M,) int32 responses drawn from the policy.
      other: (M,) int32 responses drawn from the opponent.
      win: (M,) P(y preferred to other) from the reward: 1, 1/2 or 0 with
        reward labels, sigmoid(bt_scale (r_y - r_other)) with Bradley-Terry labels.
      weight: (M,) weights of the duels, summing to 1 (1/N sampled).
      pair_weight: (M,) weights of the duels that count as preference pairs
        (ties skipped with reward labels, gaps below min_reward_gap skipped),
        summing to 1 over those (or 0 if none counts), as in :class:`Pairs`.
    """

    y: jax.Array
    other: jax.Array
    win: jax.Array
    weight: jax.Array
    pair_weight: jax.Array


class Target(NamedTuple):
    """A target distribution for the analytic divergences (forward and reverse KL).

    Attributes:
      probs: (K,) target probabilities.
    """

    probs: jax.Array
