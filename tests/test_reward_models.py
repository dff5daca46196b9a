"""Bradley-Terry reward models (modeseek.reward_models): counts, recovery of a known reward, extrapolation, vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from modeseek import reward_models as rm

K = 24
STEPS = 1500  # one static value for every fit below: each fit function compiles once


def _truth():
    # A smooth known reward in [0, 1] with an interior peak.
    return np.exp(-(((np.arange(K) - 9.0) / 5.0) ** 2)).astype(np.float32)


def test_pair_counts_tally_who_beat_whom():
    w = rm.pair_counts(jnp.array([0, 0, 2]), jnp.array([1, 1, 0]), 3)
    np.testing.assert_array_equal(np.asarray(w), [[0, 2, 0], [0, 0, 0], [1, 0, 0]])
    w = rm.pair_counts(jnp.array([0, 1]), jnp.array([1, 0]), 2, weight=jnp.array([0.5, 0.0]))
    np.testing.assert_array_equal(np.asarray(w), [[0, 0.5], [0, 0]])


def test_sampled_counts_follow_the_labels():
    key = jax.random.PRNGKey(0)
    data = jnp.full((K,), 1.0 / K)
    r = jnp.asarray(_truth())
    w = np.asarray(rm.sample_pair_counts(key, data, r, num_samples=12, num_contexts=3, labels="reward"))
    # Deterministic labels: a pair counts only if the rewards differ, and then the better bin wins.
    assert 0 < w.sum() <= 3 * 12 * 11 / 2
    i, j = np.nonzero(w)
    assert np.all(np.asarray(r)[i] > np.asarray(r)[j])
    # A constant reward ties every pair: nothing is counted.
    assert float(rm.sample_pair_counts(key, data, jnp.ones(K), num_samples=12).sum()) == 0.0


def _bt_counts(scale, covered):
    """Bradley-Terry labelled pairs drawn from the uniform distribution over ``covered`` bins."""
    data = np.zeros(K, np.float32)
    data[covered] = 1.0 / len(covered)
    return rm.sample_pair_counts(jax.random.PRNGKey(1), jnp.asarray(data), jnp.asarray(_truth()), num_samples=40, num_contexts=60, labels="bradley_terry", bt_scale=scale)


def test_tabular_fit_recovers_a_known_reward_on_covered_bins():
    covered = np.arange(K)
    counts = _bt_counts(4.0, covered)
    v = np.asarray(rm.fit_tabular(counts, prior_scale=10.0, bt_scale=4.0, steps=STEPS))
    truth = _truth()
    err = (v - v.mean()) - (truth - truth.mean())
    # 60 x 780 = 46,800 pairs, ~3,900 comparisons per bin: the per-bin standard error of
    # a BT estimate is about 1 / (s sqrt(n p (1 - p))) ~ 1 / (4 sqrt(3900 x 0.2)) ~ 0.01, so
    # 0.06 is ~6 standard errors; a fit that ignored the data would be off by up to 0.6.
    assert np.max(np.abs(err)) < 0.06, err


def test_tabular_cannot_extrapolate_but_the_smooth_model_does():
    covered = np.arange(0, 14)  # the data never shows bins 14..23
    counts = _bt_counts(4.0, covered)
    tab = np.asarray(rm.fit_tabular(counts, prior_mean=0.25, prior_scale=10.0, bt_scale=4.0, steps=STEPS))
    feats = rm.rbf_features(K, 6)
    rbf = np.asarray(rm.fit_features(counts, feats, prior_scale=10.0, bt_scale=4.0, steps=STEPS))
    truth = _truth()
    # Unseen bins keep the prior mean exactly: the data's gradient never reaches them.
    np.testing.assert_allclose(tab[14:], 0.25, atol=1e-6)
    # Both recover the covered part (same margin argument as above, fewer bins -> more pairs each).
    for v in (tab, rbf):
        c = covered
        err = (v[c] - v[c].mean()) - (truth[c] - truth[c].mean())
        assert np.max(np.abs(err)) < 0.08, err
    # The smooth model continues the data's downward trend past the edge (truth falls from bin 9 on).
    assert rbf[16] < rbf[13] < rbf[9]
    assert np.std(rbf[14:]) > 0.01


def test_fits_are_vmappable_and_jittable():
    counts = jnp.stack([_bt_counts(s, np.arange(K)) for s in (2.0, 4.0, 8.0)])
    feats = rm.rbf_features(K, 6)
    batched = jax.jit(jax.vmap(lambda w: rm.fit_features(w, feats, prior_scale=10.0, bt_scale=4.0, steps=STEPS)))(counts)
    single = [np.asarray(rm.fit_features(w, feats, prior_scale=10.0, bt_scale=4.0, steps=STEPS)) for w in counts]
    np.testing.assert_allclose(np.asarray(batched), np.stack(single), rtol=1e-4, atol=1e-4)
    assert np.all(np.isfinite(np.asarray(batched)))


def test_deterministic_labels_stay_finite_under_the_prior():
    # Separable data (the better bin always wins) has no maximum-likelihood optimum; the prior makes it finite.
    counts = rm.sample_pair_counts(jax.random.PRNGKey(2), jnp.full((K,), 1.0 / K), jnp.asarray(_truth()), num_samples=30, labels="reward")
    v = np.asarray(rm.fit_tabular(counts, prior_scale=3.0, steps=STEPS))
    assert np.all(np.isfinite(v)) and np.max(np.abs(v)) < 50
    seen = np.asarray(counts.sum(0) + counts.sum(1)) > 0
    # The ordering of seen bins follows the reward's (rank correlation well above chance).
    a, b = np.argsort(np.argsort(v[seen])), np.argsort(np.argsort(_truth()[seen]))
    assert np.corrcoef(a, b)[0, 1] > 0.8


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="num_centers"):
        rm.rbf_features(K, 0)
    with pytest.raises(ValueError, match="features has shape"):
        rm.fit_features(jnp.zeros((K, K)), jnp.ones((K + 1, 3)))
    with pytest.raises(ValueError, match="width"):
        rm.rbf_features(K, 4, width=-1.0)
    feats = np.asarray(rm.rbf_features(K, 4, linear=True))
    assert feats.shape == (K, 5)
    np.testing.assert_allclose(feats[:, -1], (np.arange(K) - (K - 1) / 2) / (K - 1), atol=1e-6)
