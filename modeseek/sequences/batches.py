"""The data a sequence loss sees for one prompt: N sampled sequences and how the loss uses them.

A :class:`SequenceBatch` holds the N sequences drawn for one prompt with their
rewards and per-token log-probabilities under the sampling policy and under
pi_ref, plus ``items``: one of the core batch containers
(:class:`modeseek.batches.Points`, ``BestOfN``, ``Pairs``) whose indices point
at *rows of the batch* instead of bins. Given the (N,) vector of sequence
log-probabilities, a core loss is then literally the sequence-level loss, which
is how :mod:`modeseek.losses.sequences` reuses the core definitions.

The builders follow the core samplers draw for draw (:mod:`modeseek.regimes`):
best-of-N keeps the first index on ties and counts every other draw among the
"worse" ones (docs/paper.md §B.2); pairs are labelled by the core's own
:func:`modeseek.regimes.label_pairs` (docs/paper.md §B.6), so a 1-token sequence
batch equals the core batch drawn with the same key.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from modeseek import _checks, regimes
from modeseek.batches import BestOfN, Pairs, Points

__all__ = ["SequenceBatch", "points_items", "best_of_n_items", "pair_items"]


class SequenceBatch(NamedTuple):
    """N sequences for one prompt.

    Attributes:
      tokens: (N, L + 1) int32 [prompt, y_1..y_L].
      reward: (N,) sequence rewards.
      logq: (N, T) per-token log-probabilities under the sampling policy (T = L,
        or L + 1 with the authors' shift; PPO's old policy).
      ref_logp: (N, T) per-token log-probabilities under pi_ref.
      items: Points | BestOfN | Pairs indexing rows 0..N-1.
      ref_next_logp: (N, L, V) pi_ref's next-token log-distributions along the
        sequences, or None; only the exact per-token KL penalty needs it.
    """

    tokens: jax.Array
    reward: jax.Array
    logq: jax.Array
    ref_logp: jax.Array
    items: Any
    ref_next_logp: jax.Array | None = None


def points_items(reward: jax.Array, logq_seq: jax.Array) -> Points:
    """All N rows with weight 1/N (REINFORCE, PPO, RWR, SFT), from (N,) rewards and (N,) sequence log-probabilities under q."""
    n = reward.shape[0]
    return Points(jnp.arange(n, dtype=jnp.int32), reward, jnp.full((n,), 1.0 / n), logq_seq, jnp.asarray(n, jnp.float32))


def best_of_n_items(reward: jax.Array) -> BestOfN:
    """The best row (first on ties), the worst row and all rows but the best (duplicates included), from (N,) rewards."""
    n = reward.shape[0]
    jb, jw = jnp.argmax(reward), jnp.argmin(reward)
    one = jnp.ones((1,))
    others_w = jnp.ones((n,)).at[jb].set(0.0)
    return BestOfN(jb[None].astype(jnp.int32), one, jw[None].astype(jnp.int32), one, jnp.arange(n, dtype=jnp.int32), others_w, jnp.asarray(n, jnp.float32))


def pair_items(
    label_key: jax.Array | None,
    reward: jax.Array,
    *,
    labels: str = "reward",
    pairing: str = "all",
    min_reward_gap: float | jax.Array = 0.0,
    bt_scale: float | jax.Array = 1.0,
    label_uniforms: jax.Array | None = None,
) -> Pairs:
    """Preference pairs among the N rows (see :func:`modeseek.regimes.sample_pairs`).

    Args:
      label_key: key for Bradley-Terry labels (the second half of
        ``jax.random.split(key)``, as in the core sampler); unused with
        ``label_uniforms`` or reward labels.
      reward: (N,) rewards.
      labels, pairing, min_reward_gap, bt_scale: as in :func:`modeseek.regimes.sample_pairs`.
      label_uniforms: (number of pairs,) uniforms for Bradley-Terry labels drawn
        ahead (the engine draws all of a run's randomness before its loop).
    """
    _checks.choice("labels", labels, regimes.PAIR_LABELS)
    _checks.choice("pairing", pairing, regimes.PAIRINGS)
    n = _checks.integer("num_samples", reward.shape[0], 2, reason="for pairs")
    a_idx, b_idx = regimes.pair_index(n, pairing)

    def uniforms(shape: tuple[int, ...]) -> jax.Array:
        if label_uniforms is not None:
            return label_uniforms
        if label_key is None:
            raise ValueError("labels='bradley_terry' needs label_key or label_uniforms; got neither")
        return jax.random.uniform(label_key, shape)

    gap = reward[a_idx] - reward[b_idx]
    return regimes.label_pairs(jnp.asarray(a_idx), jnp.asarray(b_idx), gap, uniforms, labels=labels, min_reward_gap=min_reward_gap, bt_scale=bt_scale)
