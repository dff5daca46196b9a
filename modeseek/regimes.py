"""Data regimes: how a batch for one context is built from a sampling distribution.

Two constructors per batch type: ``sample_*`` draws N responses (inverse-CDF
sampling, one uniform per draw) and ``exact_*`` gives the population batch, the
exact expectation over the K bins that the sampled batch estimates. Which
distribution is sampled (the fixed data distribution for offline training, the
current policy for on-policy training) is the engine's choice; these functions
only see ``logq``.

Exact batches and batch statistics: a batch statistic that is linear in the
samples (best-of-N order statistics, pair indicators) is matched exactly; the
per-context normalisers of advantages and the pair count are taken in the
population limit (N -> inf), where the sampled estimators converge.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from modeseek import _checks
from modeseek.batches import BestOfN, Duels, Pairs, PairTable, Points, pair_expectation

__all__ = [
    "sample_bins",
    "sample_points",
    "exact_points",
    "sample_best_of_n",
    "exact_best_of_n",
    "RewardOrder",
    "reward_order",
    "pair_index",
    "label_pairs",
    "sample_pairs",
    "exact_pairs",
    "MAX_MATERIALISED_PAIR_BINS",
    "geometric_mixture",
    "duel_outcomes",
    "sample_duels",
    "exact_duels",
    "PAIR_LABELS",
    "PAIRINGS",
]

PAIR_LABELS = ("reward", "bradley_terry")
PAIRINGS = ("all", "disjoint")


# Up to this K the cumulative sum that XLA:CPU emits for jnp.cumsum (a blocked
# scan with blocks of 16: sequential sums inside a block, plus the sequential
# sum of the preceding block totals) is non-decreasing for non-negative inputs,
# because each entry is that of its predecessor plus a non-negative term under
# the same rounding. Beyond 256 bins a third level appears and adjacent entries
# can decrease by an ulp (measured: K = 300 and 512), so only the exhaustive
# count is exact there. tests/test_sample_bins_fast.py checks both facts.
_MONOTONE_CDF_BINS = 256


#: The block length of XLA:CPU's rewrite of a cumulative sum (see above).
_CUMSUM_BLOCK = 16


def _running_sums(x: jax.Array) -> jax.Array:
    # Left-to-right sums along the last axis as a loop: one vector add per
    # entry instead of the reduce-window kernel's scalar loop over each window.
    def step(acc: jax.Array, col: jax.Array) -> tuple[jax.Array, jax.Array]:
        acc = acc + col
        return acc, acc

    _, out = jax.lax.scan(step, jnp.zeros(x.shape[:-1], x.dtype), jnp.moveaxis(x, -1, 0))
    return jnp.moveaxis(out, 0, -1)


def prefix_sums(x: jax.Array) -> jax.Array:
    """Cumulative sums of a (K,) vector with the bits of ``jnp.cumsum`` on XLA:CPU, about twice as fast for 16 < K <= 256.

    XLA:CPU computes ``jnp.cumsum`` as sequential sums inside blocks of 16
    entries plus the sequential sum of the preceding block totals, each with a
    reduce-window kernel that re-adds every window (a (128, 100) cumsum took
    about 50 us, this about 20 us, both under one program per core). This
    function performs the same additions in the same order as two short loops,
    so every bit agrees (tests/test_sample_bins_fast.py checks it for K from 1
    to 1000, under jit and vmap, with either set of compile options). Outside
    16 < K <= 256 the rewrite has one level or more than two, and this is
    ``jnp.cumsum`` itself.
    """
    k = x.shape[-1]
    if not _CUMSUM_BLOCK < k <= _MONOTONE_CDF_BINS:
        return jnp.cumsum(x, axis=-1)
    nb = -(-k // _CUMSUM_BLOCK)
    blocks = jnp.concatenate([x, jnp.zeros((nb * _CUMSUM_BLOCK - k,), x.dtype)]).reshape(nb, _CUMSUM_BLOCK)
    local = _running_sums(blocks)
    before = jnp.concatenate([jnp.zeros((1,), x.dtype), _running_sums(local[:, -1])[:-1]])
    return (local + before[:, None]).reshape(-1)[:k]


def _le(x: jax.Array, u: jax.Array) -> jax.Array:
    # searchsorted's total order for these values: u is NaN only when the whole
    # CDF is (cumsum propagates NaN), and a NaN query sorts after everything.
    return (x <= u) | jnp.isnan(u)


def _blocked_count(cdf: jax.Array, u: jax.Array) -> jax.Array:
    """#{j : cdf_j <= u} for each u, for a non-decreasing (K,) cdf, in O(n sqrt K).

    Count the blocks of about sqrt(K) entries whose last entry is <= u (all of
    their entries are), then the entries <= u in the first block that is not.
    """
    k = cdf.shape[0]
    s = 1 << (math.isqrt(k).bit_length() - 1)
    nb = -(-k // s)
    # +inf padding never counts for a finite u; a NaN u counts it, and the
    # final clip to K - 1 then agrees with the exhaustive count (K).
    blocks = jnp.concatenate([cdf, jnp.full((nb * s - k,), jnp.inf, cdf.dtype)]).reshape(nb, s)
    full = jnp.sum(_le(blocks[None, :, -1], u[:, None]), axis=1, dtype=jnp.int32)
    full = jnp.minimum(full, nb - 1)
    partial = jnp.sum(_le(blocks[full], u[:, None]), axis=1, dtype=jnp.int32)
    return full * s + partial


def sample_bins(key: jax.Array, logq: jax.Array, n: int) -> jax.Array:
    """Draw n bins from softmax-normalised ``logq`` (K,) by inverse CDF, one uniform per draw.

    Much cheaper on CPU than Gumbel-max sampling, which needs n x K uniforms.
    Bin = #{j : cdf_j <= u}, clipped to K - 1, with u uniform on [0, total).
    The search is two-level (O(n sqrt K)) for K <= 256, an exhaustive O(n K)
    count for K <= 512 and a binary search beyond. The two-level search returns
    exactly the exhaustive count's bins for the same key, because the CDF is
    non-decreasing there (see ``_MONOTONE_CDF_BINS``); it is 2.4x faster than a
    binary search and 10x faster than the exhaustive count at K = 100.
    """
    probs = jnp.exp(logq - jnp.max(logq))
    cdf = prefix_sums(probs)
    u = jax.random.uniform(key, (n,), dtype=cdf.dtype) * cdf[-1]
    k = cdf.shape[0]
    if k <= _MONOTONE_CDF_BINS:
        idx = _blocked_count(cdf, u)
    else:
        method = "compare_all" if k <= 512 else "scan"
        idx = jnp.searchsorted(cdf, u, side="right", method=method)
    return jnp.minimum(idx, k - 1).astype(jnp.int32)


def sample_points(key: jax.Array, logq: jax.Array, reward: jax.Array, n: int) -> Points:
    """N responses from q with rewards; weights 1/N. logq, reward: (K,)."""
    y = sample_bins(key, logq, n)
    logq_n = jax.nn.log_softmax(logq)
    return Points(y, reward[y], jnp.full((n,), 1.0 / n), logq_n[y], jnp.asarray(n, jnp.float32))


def exact_points(logq: jax.Array, reward: jax.Array) -> Points:
    """All K bins weighted by q: the population version of :func:`sample_points`. logq, reward: (K,); the batch has M = K items."""
    logq_n = jax.nn.log_softmax(logq)
    k = logq.shape[0]
    return Points(
        jnp.arange(k, dtype=jnp.int32),
        reward,
        jax.lax.stop_gradient(jnp.exp(logq_n)),
        logq_n,
        jnp.asarray(jnp.inf, jnp.float32),
    )


def sample_best_of_n(key: jax.Array, logq: jax.Array, reward: jax.Array, n: int) -> BestOfN:
    """Draw N responses; keep the best (first index on ties), worst, and the rest.

    Args:
      key: PRNG key.
      logq: (K,) log-probabilities of the sampling distribution.
      reward: (K,) rewards.
      n: N >= 1 draws.
    """
    y = sample_bins(key, logq, n)
    r = reward[y]
    jb, jw = jnp.argmax(r), jnp.argmin(r)
    one = jnp.ones((1,))
    others_w = jnp.ones((n,)).at[jb].set(0.0)
    return BestOfN(y[jb][None], one, y[jw][None], one, y, others_w, jnp.asarray(n, jnp.float32))


class RewardOrder(NamedTuple):
    """The reward's sort order, which :func:`exact_best_of_n` needs and which depends on the reward only.

    Attributes:
      order: (K,) bins sorted by reward (``argsort``).
      le_index: (K,) for each bin, how many bins have a reward <= its own.
      lt_index: (K,) for each bin, how many bins have a reward < its own.
    """

    order: jax.Array
    le_index: jax.Array
    lt_index: jax.Array


def reward_order(reward: jax.Array) -> RewardOrder:
    """Sort the (K,) reward once, so that a loop of :func:`exact_best_of_n` calls need not re-sort it every step."""
    order = jnp.argsort(reward)
    rs = reward[order]
    return RewardOrder(order, jnp.searchsorted(rs, reward, side="right"), jnp.searchsorted(rs, reward, side="left"))


def exact_best_of_n(logq: jax.Array, reward: jax.Array, n: int, *, order: RewardOrder | None = None) -> BestOfN:
    """The exact distribution of the best and worst of N i.i.d. draws from q.

    Bins are grouped by reward value. With F_le / F_lt the q-mass of bins with
    reward <= / < r_i, the best draw falls in bin i's reward group with
    probability F_le^N - F_lt^N; within a group it is proportional to q, as the
    first-index tie-break among exchangeable draws makes it. The worst draw is the
    same with the order reversed. The expected count of bin i among the N - 1
    other draws is N q_i - P(best = i).

    Args:
      logq, reward: as in :func:`sample_best_of_n`.
      n: N, draws per batch.
      order: ``reward_order(reward)``, computed once outside a training loop
        (the engine does); computed here when omitted. Sorting every step cost
        about 8 us per run on CPU, most of an exact best-of-N step.
    """
    q = jax.lax.stop_gradient(jax.nn.softmax(logq))
    k = q.shape[0]
    if order is None:
        order = reward_order(reward)
    cq = jnp.concatenate([jnp.zeros((1,)), jnp.cumsum(q[order.order])])
    total = cq[-1]
    le = cq[order.le_index]
    lt = cq[order.lt_index]
    group = le - lt
    safe = jnp.where(group > 0, group, 1.0)
    share = jnp.where(group > 0, q / safe, 0.0)
    le_n, lt_n = jnp.clip(le / total, 0.0, 1.0), jnp.clip(lt / total, 0.0, 1.0)
    p_best = share * (le_n**n - lt_n**n)
    # Worst draw: mass of rewards >= r_i and > r_i, computed from the top for accuracy.
    ge_n = jnp.clip((total - lt) / total, 0.0, 1.0)
    gt_n = jnp.clip((total - le) / total, 0.0, 1.0)
    p_worst = share * (ge_n**n - gt_n**n)
    bins = jnp.arange(k, dtype=jnp.int32)
    others = jnp.maximum(n * q - p_best, 0.0)
    return BestOfN(bins, p_best, bins, p_worst, bins, others, jnp.asarray(n, jnp.float32))


@functools.cache
def pair_index(n: int, pairing: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices (a, b), each (P,) int32, of the P pairs among n draws: "all", every i < j, row-major (P = n(n-1)/2); "disjoint", (0, 1), (2, 3), ... (P = n // 2)."""
    if pairing == "all":
        a, b = np.triu_indices(n, 1)
    else:
        a, b = np.arange(0, n - 1, 2), np.arange(1, n, 2)
    return a.astype(np.int32), b.astype(np.int32)


def _counted(gap: jax.Array, min_reward_gap: float | jax.Array, labels: str) -> jax.Array:
    # A pair counts when its rewards differ by at least the minimum gap (and, with reward labels, differ at all).
    counted = jnp.abs(gap) >= min_reward_gap
    return counted & (gap != 0) if labels == "reward" else counted


def label_pairs(a: jax.Array, b: jax.Array, gap: jax.Array, uniforms: Callable[[tuple[int, ...]], jax.Array], *, labels: str, min_reward_gap: float | jax.Array, bt_scale: float | jax.Array) -> Pairs:
    """Label the pairs (a, b) whose rewards differ by ``gap`` = r_a - r_b (see :func:`sample_pairs`); a, b, gap: (P,).

    ``uniforms(shape)`` draws the uniforms of Bradley-Terry labels; it is not
    called for reward labels. Counted pairs get weight 1/(number counted).
    """
    if labels == "reward":
        a_wins = gap > 0
    else:
        a_wins = uniforms(gap.shape) < jax.nn.sigmoid(bt_scale * gap)
    counted = _counted(gap, min_reward_gap, labels)
    chosen = jnp.where(a_wins, a, b)
    rejected = jnp.where(a_wins, b, a)
    c = counted.astype(jnp.float32)
    return Pairs(chosen, rejected, c / jnp.maximum(c.sum(), 1.0))


def sample_pairs(
    key: jax.Array,
    logq: jax.Array,
    reward: jax.Array,
    n: int,
    *,
    labels: str = "reward",
    pairing: str = "all",
    min_reward_gap: float | jax.Array = 0.0,
    bt_scale: float | jax.Array = 1.0,
) -> Pairs:
    """Preference pairs from N draws of q.

    Args:
      key, logq, reward: as in :func:`sample_best_of_n`.
      n: N draws; "all" pairing uses all N(N-1)/2 pairs (as the paper code,
        docs/paper.md §B.6), "disjoint" uses floor(N/2) independent pairs (0,1), (2,3), ...
      labels: "reward" (the higher true reward is chosen; equal rewards are
        skipped) or "bradley_terry" (the first of a pair is chosen with
        probability sigmoid(bt_scale * (r_a - r_b))).
      min_reward_gap: pairs with |r_a - r_b| below it are skipped (the paper's
        threshold, 0.2 for offline IPO).
      bt_scale: Bradley-Terry inverse temperature.

    Returns:
      Pairs with weight 1/(number counted) on counted pairs, 0 elsewhere.
    """
    _checks.choice("labels", labels, PAIR_LABELS)
    _checks.choice("pairing", pairing, PAIRINGS)
    _checks.integer("num_samples", n, 2, reason="for pairs")
    ks, kl = jax.random.split(key)
    y = sample_bins(ks, logq, n)
    a_idx, b_idx = pair_index(n, pairing)
    ya, yb = y[a_idx], y[b_idx]
    uniforms = lambda shape: jax.random.uniform(kl, shape)  # noqa: E731
    return label_pairs(ya, yb, reward[ya] - reward[yb], uniforms, labels=labels, min_reward_gap=min_reward_gap, bt_scale=bt_scale)


#: Above this many bins the exact pair batch stays factored (PairTable, O(K) memory).
MAX_MATERIALISED_PAIR_BINS = 512


def exact_pairs(
    logq: jax.Array, reward: jax.Array, *, labels: str = "reward", min_reward_gap: float | jax.Array = 0.0, bt_scale: float | jax.Array = 1.0, factored: bool | None = None
) -> Pairs | PairTable:
    """All K x K ordered pairs weighted by q_i q_j P(i preferred to j), over counted pairs.

    The population version of :func:`sample_pairs` (either pairing: every pair
    of draws has the same law). Up to MAX_MATERIALISED_PAIR_BINS bins the K^2
    pairs are materialised as :class:`Pairs`; above (or with ``factored=True``)
    a :class:`PairTable` is returned, which the pair losses evaluate block by
    block in O(K) memory. logq, reward: (K,); a materialised batch has M = K^2 pairs.
    """
    _checks.choice("labels", labels, PAIR_LABELS)
    q = jax.lax.stop_gradient(jax.nn.softmax(logq))
    k = q.shape[0]
    if factored or (factored is None and k > MAX_MATERIALISED_PAIR_BINS):
        f32 = q.dtype
        table = PairTable(
            q,
            reward,
            jnp.asarray(min_reward_gap, f32),
            jnp.asarray(bt_scale, f32),
            jnp.asarray(labels == "bradley_terry"),
            jnp.asarray(1.0, f32),
        )
        total = pair_expectation(table, lambda rows: jnp.ones((rows.shape[0], k), f32), normalise=False)
        return table._replace(total=total)
    gap = reward[:, None] - reward[None, :]
    pref = (gap > 0).astype(q.dtype) if labels == "reward" else jax.nn.sigmoid(bt_scale * gap)
    counted = _counted(gap, min_reward_gap, labels)
    # P(chosen = i, rejected = j) over a random pair, restricted to counted pairs;
    # its total is P(a pair counts), so normalising matches the sampled 1/(number counted).
    w = q[:, None] * q[None, :] * pref * counted
    w = w / jnp.maximum(jnp.sum(w), 1e-30)
    i, j = jnp.meshgrid(jnp.arange(k, dtype=jnp.int32), jnp.arange(k, dtype=jnp.int32), indexing="ij")
    return Pairs(i.ravel(), j.ravel(), w.ravel())


# ----------------------------------------------------------------------------- duels (self-play losses)


def geometric_mixture(logq: jax.Array, ref_logp: jax.Array, alpha: float | jax.Array) -> jax.Array:
    """log pi_mix for pi_mix proportional to q^(1 - alpha) pi_ref^alpha (Nash-MD, Munos et al. 2023, arXiv 2312.00886).

    Normalised in log space, so it stays finite for any alpha in [0, 1] and any
    finite log-probabilities. alpha = 0 gives q, alpha = 1 gives pi_ref. logq, ref_logp and the result: (K,).
    """
    return jax.nn.log_softmax((1.0 - alpha) * jax.nn.log_softmax(logq) + alpha * jax.nn.log_softmax(ref_logp))


def duel_outcomes(gap: jax.Array, *, labels: str, min_reward_gap: float | jax.Array, bt_scale: float | jax.Array) -> tuple[jax.Array, jax.Array]:
    """(win, counted), each (M,), for (M,) reward gaps r_y - r_other: P(y preferred) and whether the duel is a preference pair.

    Reward labels: win is 1, 1/2 (a tie) or 0; Bradley-Terry labels:
    sigmoid(bt_scale * gap), the label's probability rather than a drawn label.
    A duel counts as a pair as in :func:`sample_pairs` (|gap| >= min_reward_gap,
    and no tie with reward labels).
    """
    if labels == "reward":
        win = jnp.where(gap > 0, 1.0, jnp.where(gap < 0, 0.0, 0.5)).astype(gap.dtype)
    else:
        win = jax.nn.sigmoid(bt_scale * gap)
    return win, _counted(gap, min_reward_gap, labels)


def _duels(y: jax.Array, other: jax.Array, w: jax.Array, reward: jax.Array, labels: str, min_reward_gap: float | jax.Array, bt_scale: float | jax.Array) -> Duels:
    gap = reward[y] - reward[other]
    win, counted = duel_outcomes(gap, labels=labels, min_reward_gap=min_reward_gap, bt_scale=bt_scale)
    pw = w * counted
    return Duels(y, other, win, w, pw / jnp.maximum(jnp.sum(pw), 1e-30))


def sample_duels(
    key: jax.Array, logq: jax.Array, opponent_logq: jax.Array, reward: jax.Array, n: int, *, labels: str = "reward", min_reward_gap: float | jax.Array = 0.0, bt_scale: float | jax.Array = 1.0
) -> Duels:
    """N draws of q paired index-wise with N independent draws of the opponent.

    Args:
      key: PRNG key.
      logq: (K,) log-probabilities of the policy (the y of each duel).
      opponent_logq: (K,) log-probabilities of the opponent (pi_ref, or the
        geometric mixture of :func:`geometric_mixture`).
      reward: (K,) rewards.
      n: N >= 1 duels.
      labels, min_reward_gap, bt_scale: as in :func:`sample_pairs`; the win
        probability is kept (see :func:`duel_outcomes`) instead of a drawn label.

    Returns:
      Duels with weight 1/N, and pair weight 1/(number counted) on counted duels.
    """
    _checks.choice("labels", labels, PAIR_LABELS)
    _checks.integer("num_samples", n, 1, reason="for duels")
    ky, ko = jax.random.split(key)
    y = sample_bins(ky, logq, n)
    other = sample_bins(ko, opponent_logq, n)
    return _duels(y, other, jnp.full((n,), 1.0 / n), reward, labels, min_reward_gap, bt_scale)


def exact_duels(logq: jax.Array, opponent_logq: jax.Array, reward: jax.Array, *, labels: str = "reward", min_reward_gap: float | jax.Array = 0.0, bt_scale: float | jax.Array = 1.0) -> Duels:
    """All K x K duels (y = i, other = j) weighted by q_i q'_j: the population version of :func:`sample_duels`.

    The pair weights are normalised over counted duels, as :func:`exact_pairs`
    does (the population limit of the sampled 1/(number counted)). Materialises
    K^2 items, so K is limited to MAX_MATERIALISED_PAIR_BINS.
    """
    _checks.choice("labels", labels, PAIR_LABELS)
    k = logq.shape[0]
    if k > MAX_MATERIALISED_PAIR_BINS:
        raise ValueError(f"num_bins={k} is too large for exact duels (K^2 pairs); expected at most {MAX_MATERIALISED_PAIR_BINS}")
    q = jax.lax.stop_gradient(jax.nn.softmax(logq))
    qo = jax.lax.stop_gradient(jax.nn.softmax(opponent_logq))
    i, j = jnp.meshgrid(jnp.arange(k, dtype=jnp.int32), jnp.arange(k, dtype=jnp.int32), indexing="ij")
    return _duels(i.ravel(), j.ravel(), (q[:, None] * qo[None, :]).ravel(), reward, labels, min_reward_gap, bt_scale)
