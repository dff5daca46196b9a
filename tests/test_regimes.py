"""Data regimes: inverse-CDF sampling, and exact batches against Monte-Carlo frequencies.

Statistical margins: a frequency estimated from T independent indicator draws
has standard deviation sqrt(f (1 - f) / T). We allow 4.5 of them per cell (with
~150 cells per test, a two-sided 4.5-sigma excursion has probability ~1e-3
over the table under a normal approximation; the keys are fixed, so the tests
are deterministic). Pairs that share draws ("all" pairing) are correlated; for
them T is the number of independent draw pairs, M * floor(N / 2), which is
conservative. Measured largest |z| per test: 1.5-2.6.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import modeseek as ms
from modeseek import regimes
from modeseek.problems import LOG_ZERO

Z = 4.5


def _assert_frequencies(freq, expected, t_eff, what):
    freq, expected = np.asarray(freq, np.float64), np.asarray(expected, np.float64)
    sd = np.sqrt(np.maximum(expected * (1 - expected), 0.0) / t_eff)
    # Cells with zero expected mass must never be hit; the others within Z sd
    # (plus 1e-6 for float32 sums of the exact weights).
    bad = np.abs(freq - expected) > Z * sd + 1e-6
    assert not np.any(bad), f"{what}: cells {np.argwhere(bad).ravel().tolist()} off: {freq[bad]} vs {expected[bad]}"


# ----------------------------------------------------------------------------- sample_bins


def test_sample_bins_frequencies_match_the_distribution(small_problem):
    q = np.asarray(small_problem.ref_probs, np.float64)
    n = 40_000
    y = np.asarray(regimes.sample_bins(jax.random.PRNGKey(0), jnp.log(small_problem.ref_probs), n))
    assert y.dtype == np.int32 and y.shape == (n,)
    _assert_frequencies(np.bincount(y, minlength=12) / n, q, n, "sample_bins")


def test_sample_bins_accepts_unnormalised_logits_and_never_draws_excluded_bins():
    logq = jnp.asarray([3.0, -jnp.inf, 3.0 + np.log(3.0), LOG_ZERO, 3.0])
    y = np.asarray(regimes.sample_bins(jax.random.PRNGKey(1), logq, 20_000))
    counts = np.bincount(y, minlength=5)
    assert counts[1] == 0 and counts[3] == 0
    _assert_frequencies(counts / 20_000, [0.2, 0, 0.6, 0, 0.2], 20_000, "unnormalised logits")


def test_sample_bins_many_bins_uses_the_same_law():
    # K > 512 switches searchsorted's method; the law must not change.
    k = 600
    logq = jnp.zeros(k).at[-1].set(np.log(k))  # last bin holds half the mass
    y = np.asarray(regimes.sample_bins(jax.random.PRNGKey(2), logq, 10_000))
    assert y.min() >= 0 and y.max() == k - 1
    frac_last = np.mean(y == k - 1)
    assert abs(frac_last - 0.5) < Z * np.sqrt(0.25 / 10_000)


def test_sample_bins_same_key_same_draws_different_key_different_draws(small_problem):
    lq = jnp.log(small_problem.ref_probs)
    a = regimes.sample_bins(jax.random.PRNGKey(3), lq, 64)
    b = regimes.sample_bins(jax.random.PRNGKey(3), lq, 64)
    c = regimes.sample_bins(jax.random.PRNGKey(4), lq, 64)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.any(np.asarray(a) != np.asarray(c))


# ----------------------------------------------------------------------------- points


def test_sample_and_exact_points_fields(small_problem):
    lq = jnp.log(small_problem.ref_probs) + 5.0  # unnormalised on purpose
    r = small_problem.reward
    s = regimes.sample_points(jax.random.PRNGKey(0), lq, r, 7)
    assert s.y.shape == (7,) and float(s.count) == 7.0
    np.testing.assert_allclose(np.asarray(s.weight), np.full(7, 1 / 7), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(s.reward), np.asarray(r)[np.asarray(s.y)])
    np.testing.assert_allclose(np.asarray(s.logq), np.log(np.asarray(small_problem.ref_probs))[np.asarray(s.y)], rtol=1e-5)
    e = regimes.exact_points(lq, r)
    np.testing.assert_array_equal(np.asarray(e.y), np.arange(12))
    np.testing.assert_allclose(np.asarray(e.weight), np.asarray(small_problem.ref_probs), rtol=1e-5)
    assert float(e.count) == np.inf


# ----------------------------------------------------------------------------- best of N


def _order_statistics(q, r, n):
    """Reference implementation: P(best draw = i), P(worst draw = i) for N i.i.d. draws, float64.

    Groups of equal reward get F(<= v)^N - F(< v)^N, shared in proportion to q
    (the first-index tie-break among exchangeable draws).
    """
    q, r = np.asarray(q, np.float64), np.asarray(r, np.float64)
    best, worst = np.zeros_like(q), np.zeros_like(q)
    for i in range(q.size):
        same = q[r == r[i]].sum()
        le, lt = q[r <= r[i]].sum(), q[r < r[i]].sum()
        ge, gt = q[r >= r[i]].sum(), q[r > r[i]].sum()
        best[i] = q[i] / same * (le**n - lt**n)
        worst[i] = q[i] / same * (ge**n - gt**n)
    return best, worst


@pytest.mark.parametrize("n", [1, 3, 10])
def test_exact_best_of_n_matches_order_statistics(small_problem, small_data_logq, n):
    q = np.asarray(jax.nn.softmax(small_data_logq), np.float64)
    r = np.asarray(small_problem.reward)
    assert r[6] == r[8]  # a tie
    b = regimes.exact_best_of_n(small_data_logq, small_problem.reward, n)
    best, worst = _order_statistics(q, r, n)
    np.testing.assert_allclose(np.asarray(b.best_weight), best, atol=2e-6)
    np.testing.assert_allclose(np.asarray(b.worst_weight), worst, atol=2e-6)
    np.testing.assert_allclose(np.asarray(b.others_weight), n * q - best, atol=5e-6)
    assert abs(float(b.best_weight.sum()) - 1) < 1e-5 and abs(float(b.worst_weight.sum()) - 1) < 1e-5
    assert abs(float(b.others_weight.sum()) - (n - 1)) < 1e-5
    # Within the tied group the best draw is shared in proportion to q.
    np.testing.assert_allclose(best[6] / best[8], q[6] / q[8], rtol=1e-9)
    if n == 1:
        np.testing.assert_allclose(np.asarray(b.best_weight), q, atol=1e-6)
        np.testing.assert_allclose(np.asarray(b.worst_weight), q, atol=1e-6)


def test_exact_best_of_n_with_a_precomputed_reward_order_is_identical(small_problem, small_data_logq, far):
    # The engine sorts the reward once per run and passes the order in; the
    # result must be bit-for-bit what the self-sorting call gives, ties included.
    for lq, r in ((small_data_logq, small_problem.reward), (jnp.log(far.ref_probs), far.reward)):
        order = regimes.reward_order(r)
        assert np.all(np.diff(np.asarray(r)[np.asarray(order.order)]) >= 0)
        # le - lt is the size of each bin's tie group.
        sizes = np.asarray(order.le_index - order.lt_index)
        np.testing.assert_array_equal(sizes, (np.asarray(r)[:, None] == np.asarray(r)[None, :]).sum(1))
        f = jax.jit(lambda lq, o: regimes.exact_best_of_n(lq, r, 7, order=o))
        g = jax.jit(lambda lq: regimes.exact_best_of_n(lq, r, 7))
        for a, b in zip(jax.tree.leaves(f(lq, order)), jax.tree.leaves(g(lq))):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_exact_best_of_n_on_the_paper_problem(far):
    # 100 bins, many tied pairs (symmetric about bin 70), mass 0.002 per bin near the peak.
    lq = jnp.log(far.ref_probs)
    b = regimes.exact_best_of_n(lq, far.reward, 10)
    best, worst = _order_statistics(far.ref_probs, far.reward, 10)
    np.testing.assert_allclose(np.asarray(b.best_weight), best, atol=2e-6)
    np.testing.assert_allclose(np.asarray(b.worst_weight), worst, atol=2e-6)
    # The worst of 10 draws almost always sits at the left edge spike or the interior mode.
    assert np.asarray(b.worst_weight)[:30].sum() > 0.99


def test_exact_best_of_n_matches_monte_carlo(small_problem, small_data_logq):
    n, m = 5, 40_000
    r = small_problem.reward
    sampled = jax.jit(jax.vmap(lambda k: regimes.sample_best_of_n(k, small_data_logq, r, n)))(jax.random.split(jax.random.PRNGKey(5), m))
    exact = regimes.exact_best_of_n(small_data_logq, r, n)
    best_f = np.bincount(np.asarray(sampled.best[:, 0]), minlength=12) / m
    worst_f = np.bincount(np.asarray(sampled.worst[:, 0]), minlength=12) / m
    _assert_frequencies(best_f, exact.best_weight, m, "best draw")
    _assert_frequencies(worst_f, exact.worst_weight, m, "worst draw")
    # The reward of the sampled best is the maximum of the batch's rewards.
    ys = np.asarray(sampled.others)
    np.testing.assert_array_equal(np.asarray(r)[np.asarray(sampled.best[:, 0])], np.asarray(r)[ys].max(axis=1))
    # "Others": the N - 1 draws per batch other than the best (duplicates of the
    # best bin included). Their per-draw bin frequency is compared with T = M
    # batches, not M (N - 1) draws, since draws within a batch are dependent
    # through the choice of the best one (conservative).
    others_counts = np.zeros(12)
    np.add.at(others_counts, ys.ravel(), np.asarray(sampled.others_weight).ravel())
    assert np.all(np.asarray(sampled.others_weight).sum(axis=1) == n - 1)
    _assert_frequencies(others_counts / (m * (n - 1)), np.asarray(exact.others_weight) / (n - 1), m, "other draws")


# ----------------------------------------------------------------------------- pairs


def _pair_frequencies(logq, reward, n, m, key, **kw):
    sampled = jax.jit(jax.vmap(lambda k: regimes.sample_pairs(k, logq, reward, n, **kw)))(jax.random.split(key, m))
    counted = np.asarray(sampled.weight) > 0
    cells = np.asarray(sampled.chosen) * 12 + np.asarray(sampled.rejected)
    freq = np.bincount(cells[counted], minlength=144) / counted.sum()
    # The sampled weights are 1 / (counted pairs of the batch) on counted pairs.
    totals = np.asarray(sampled.weight).sum(axis=1)
    assert np.allclose(totals[counted.any(axis=1)], 1.0, atol=1e-5)
    return freq, counted


_PAIR_CASES = {
    # labels, min_reward_gap, pairing
    "reward_all": ("reward", 0.0, "all"),
    "reward_disjoint": ("reward", 0.0, "disjoint"),
    "reward_gap": ("reward", 0.2, "all"),
    "bradley_terry": ("bradley_terry", 0.0, "disjoint"),
    "bradley_terry_gap": ("bradley_terry", 0.2, "all"),
}


@pytest.mark.parametrize("case", list(_PAIR_CASES))
def test_exact_pairs_match_sampled_pair_frequencies(small_problem, small_data_logq, case):
    labels, gap, pairing = _PAIR_CASES[case]
    n, m = 6, 20_000
    r = np.asarray(small_problem.reward, np.float64)
    kw = dict(labels=labels, min_reward_gap=gap, bt_scale=3.0)
    freq, _ = _pair_frequencies(small_data_logq, small_problem.reward, n, m, jax.random.PRNGKey(7), pairing=pairing, **kw)
    exact = np.asarray(regimes.exact_pairs(small_data_logq, small_problem.reward, **kw).weight, np.float64)
    assert abs(exact.sum() - 1) < 1e-5
    _assert_frequencies(freq, exact, m * (n // 2), case)

    gaps = np.abs(r[:, None] - r[None, :]).ravel()
    if labels == "reward":
        # Ties (equal rewards: the diagonal, and bins 6/8, 5/9, ...) never count.
        assert exact[gaps == 0].sum() == 0 and freq[gaps == 0].sum() == 0
        assert exact.reshape(12, 12)[6, 8] == 0 and exact.reshape(12, 12)[8, 6] == 0
        # The chosen response always has the higher reward.
        chosen_r = np.repeat(r, 12)
        rejected_r = np.tile(r, 12)
        assert np.all(chosen_r[exact > 0] > rejected_r[exact > 0])
    else:
        # Bradley-Terry: both orders of a pair occur, in odds exp(bt_scale * gap).
        w = exact.reshape(12, 12)
        np.testing.assert_allclose(w[7, 2] / w[2, 7], np.exp(3.0 * (r[7] - r[2])), rtol=1e-4)
    if gap > 0:
        assert exact[gaps < gap].sum() == 0 and freq[gaps < gap].sum() == 0
        assert exact[gaps >= gap].sum() > 0.99


def test_pairs_count_and_validation(small_problem, small_data_logq):
    r = small_problem.reward
    all_pairs = regimes.sample_pairs(jax.random.PRNGKey(0), small_data_logq, r, 5)
    assert all_pairs.chosen.shape == (10,)
    disjoint = regimes.sample_pairs(jax.random.PRNGKey(0), small_data_logq, r, 5, pairing="disjoint")
    assert disjoint.chosen.shape == (2,)  # floor(5 / 2) independent pairs
    with pytest.raises(ValueError, match="num_samples=1 is invalid; expected an integer >= 2 for pairs"):
        regimes.sample_pairs(jax.random.PRNGKey(0), small_data_logq, r, 1)
    with pytest.raises(ValueError, match="labels='human' is not valid; expected one of 'reward', 'bradley_terry'"):
        regimes.sample_pairs(jax.random.PRNGKey(0), small_data_logq, r, 4, labels="human")
    with pytest.raises(ValueError, match="pairing='random' is not valid; expected one of 'all', 'disjoint'"):
        regimes.sample_pairs(jax.random.PRNGKey(0), small_data_logq, r, 4, pairing="random")
    with pytest.raises(ValueError, match="labels='human' is not valid"):
        regimes.exact_pairs(small_data_logq, r, labels="human")


def test_pairs_with_a_constant_reward_have_no_counted_pair_and_no_nan(small_data_logq):
    flat = jnp.ones(12)
    e = regimes.exact_pairs(small_data_logq, flat)
    assert np.all(np.asarray(e.weight) == 0)
    s = regimes.sample_pairs(jax.random.PRNGKey(0), small_data_logq, flat, 6)
    assert np.all(np.asarray(s.weight) == 0)
    # Losses on such a batch are 0 with a zero gradient, not NaN.
    logp = jax.nn.log_softmax(jnp.zeros(12))
    for b in (e, s):
        val, aux = ms.losses.dpo(logp, b, ref_logp=logp, beta=1.0)
        assert float(val) == 0.0 and all(np.isfinite(float(v)) for v in aux.values())
