"""Problems, references and rewards: exact values, validation and the paper presets.

Numbers are checked against PAPER_NOTES A.2 (exact squashed-Cauchy bin masses)
and A.3 (expected rewards of pi_ref and of the best of 10 draws).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import modeseek as ms
from modeseek import problems, references, regimes, rewards

# PAPER_NOTES A.2: P(bin i) = F(e_{i+1}) - F(e_i) for tanh(Cauchy(-0.7, 0.4)), printed to 5 decimals.
PAPER_REF_MASSES = np.array(
    [
        0.07809, 0.02079, 0.01819, 0.01750, 0.01755, 0.01799, 0.01869, 0.01956, 0.02056, 0.02163,
        0.02273, 0.02382, 0.02481, 0.02567, 0.02632, 0.02671, 0.02681, 0.02660, 0.02610, 0.02533,
        0.02433, 0.02317, 0.02190, 0.02058, 0.01925, 0.01793, 0.01667, 0.01548, 0.01436, 0.01332,
        0.01236, 0.01148, 0.01067, 0.00994, 0.00927, 0.00866, 0.00810, 0.00760, 0.00713, 0.00671,
        0.00633, 0.00597, 0.00565, 0.00535, 0.00508, 0.00483, 0.00460, 0.00438, 0.00419, 0.00400,
        0.00384, 0.00368, 0.00353, 0.00340, 0.00327, 0.00316, 0.00305, 0.00295, 0.00285, 0.00276,
        0.00268, 0.00260, 0.00253, 0.00247, 0.00240, 0.00234, 0.00229, 0.00224, 0.00219, 0.00215,
        0.00211, 0.00208, 0.00204, 0.00201, 0.00199, 0.00196, 0.00194, 0.00192, 0.00191, 0.00190,
        0.00189, 0.00189, 0.00189, 0.00189, 0.00190, 0.00192, 0.00194, 0.00197, 0.00201, 0.00205,
        0.00212, 0.00220, 0.00230, 0.00244, 0.00263, 0.00290, 0.00331, 0.00400, 0.00553, 0.04223,
    ]
)  # fmt: skip


# ----------------------------------------------------------------------------- reference of the paper


def test_squashed_cauchy_matches_paper_table():
    p = np.asarray(references.squashed_cauchy(100), np.float64)
    assert p.shape == (100,)
    # Printed to 5 decimals: each entry is within half a unit of the last place
    # (plus float32 storage error, ~1e-9 at these magnitudes).
    np.testing.assert_allclose(p, PAPER_REF_MASSES, rtol=0, atol=5e-6 + 1e-8)


def test_squashed_cauchy_shape_of_the_reference():
    p = np.asarray(references.squashed_cauchy(100), np.float64)
    assert abs(p.sum() - 1.0) < 1e-6
    assert np.all(p > 0)
    assert int(np.argmax(p[1:99])) + 1 == 16  # interior mode near tanh(-0.7) = -0.60
    # Edge spikes: Cauchy tails piled onto the end bins by tanh.
    assert int(np.argmax(p)) == 0 and p[0] > 2.5 * p[16]
    assert p[99] > 7 * p[98] and p[99] > p[16]
    # The "far" reward's peak sits in a region of ~0.002 mass per bin.
    assert np.all((p[60:81] > 0.0018) & (p[60:81] < 0.0027))
    # Entropy 4.117 nats (PAPER_NOTES A.2), printed to 3 decimals.
    assert abs(-(p * np.log(p)).sum() - 4.117) < 5e-4


def test_squashed_cauchy_other_sizes_and_parameters():
    p = np.asarray(references.squashed_cauchy(20), np.float64)
    assert p.shape == (20,) and abs(p.sum() - 1) < 1e-6
    # loc = 0 makes the squashed Cauchy symmetric about z = 0.
    s = np.asarray(references.squashed_cauchy(10, loc=0.0, scale=1.0), np.float64)
    np.testing.assert_allclose(s, s[::-1], atol=1e-7)
    with pytest.raises(ValueError, match="scale=-1.0"):
        references.squashed_cauchy(100, scale=-1.0)
    with pytest.raises(ValueError, match="num_bins=1"):
        references.squashed_cauchy(1)


@pytest.mark.parametrize(
    "kind, expected_ref_reward, expected_best_of_10",
    # PAPER_NOTES A.3 prints E_ref[r] and E[max of N=10 draws]. The far value
    # evaluates to 0.31348 (float64); the table's 0.314 looks double-rounded,
    # so the tolerance is one unit in the printed third decimal.
    [("far", 0.039, 0.314), ("near", 0.377, 0.940)],
)
def test_paper_problem_expected_rewards(kind, expected_ref_reward, expected_best_of_10):
    prob = ms.paper_bandit(kind)
    assert abs(float(prob.ref_probs @ prob.reward) - expected_ref_reward) < 5e-4
    b = regimes.exact_best_of_n(jnp.log(prob.ref_probs), prob.reward, 10)
    best = float(jnp.sum(b.best_weight * prob.reward[b.best]))
    assert abs(best - expected_best_of_10) < 1e-3


def test_paper_problem_reference_mass_near_the_peaks(far, near):
    # PAPER_NOTES A.3: pi_ref(c) and the pi_ref mass within one width of the peak.
    p = np.asarray(far.ref_probs, np.float64)
    assert abs(p[70] - 0.0021) < 5e-5 and abs(p[60:81].sum() - 0.046) < 5e-4
    assert abs(p[20] - 0.0243) < 5e-5 and abs(p[10:31].sum() - 0.454) < 5e-4
    np.testing.assert_array_equal(np.asarray(near.ref_probs), np.asarray(far.ref_probs))


# ----------------------------------------------------------------------------- rewards


def test_gaussian_bump_values():
    r = np.asarray(rewards.gaussian_bump(100, 70, 10), np.float64)
    i = np.arange(100)
    np.testing.assert_allclose(r, np.exp(-(((i - 70) / 10.0) ** 2)), rtol=1e-6, atol=1e-12)
    assert r[70] == 1.0 and int(np.argmax(r)) == 70
    np.testing.assert_allclose(r[[60, 80, 50]], [np.exp(-1), np.exp(-1), np.exp(-4)], rtol=1e-6)
    # Symmetric bins have bit-identical rewards (ties matter for best-of-N and pairs).
    assert np.all(r[70 - np.arange(1, 30)] == r[70 + np.arange(1, 30)])
    # A non-integer centre: the two nearest bins share the maximum.
    h = np.asarray(rewards.gaussian_bump(10, 4.5, 2.0))
    assert h[4] == h[5] and h[4] == h.max() < 1.0
    with pytest.raises(ValueError, match="width=0"):
        rewards.gaussian_bump(10, 4.0, 0.0)
    with pytest.raises(ValueError, match="num_bins=1"):
        rewards.gaussian_bump(1, 0.0, 1.0)


def test_multi_bump_is_the_maximum_of_its_bumps():
    r = np.asarray(rewards.multi_bump(100, [20, 70], [5, 10], [0.5, 1.0]), np.float64)
    a = 0.5 * np.asarray(rewards.gaussian_bump(100, 20, 5), np.float64)
    b = np.asarray(rewards.gaussian_bump(100, 70, 10), np.float64)
    np.testing.assert_allclose(r, np.maximum(a, b), rtol=1e-6)
    assert abs(r[20] - 0.5) < 1e-6 and r[70] == 1.0
    d = np.asarray(rewards.multi_bump(10, [2, 7], [1, 1]))
    assert d[2] == d[7] == 1.0  # default heights 1
    with pytest.raises(ValueError, match="equal length"):
        rewards.multi_bump(10, [2, 7], [1])


def test_threshold_reward():
    r = np.asarray(rewards.threshold(10, 3, 5))
    np.testing.assert_array_equal(r, [0, 0, 0, 1, 1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(np.asarray(rewards.threshold(5, 3)), [0, 0, 0, 1, 1])
    for low, high in [(5, 3), (-1, 3), (0, 10)]:
        with pytest.raises(ValueError, match=f"low={low}, high={high}"):
            rewards.threshold(10, low, high)


def test_reward_from_array():
    r = rewards.from_array([0.0, -1.5, 2.0])
    assert r.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(r), [0.0, -1.5, 2.0])
    with pytest.raises(ValueError, match=r"shape \(2, 2\)"):
        rewards.from_array(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"shape \(1,\)"):
        rewards.from_array([1.0])
    with pytest.raises(ValueError, match="non-finite entry inf at bin 1"):
        rewards.from_array([0.0, np.inf, 1.0])


# ----------------------------------------------------------------------------- other references


def test_gaussian_reference():
    p = np.asarray(references.gaussian(21, 10.0, 2.0), np.float64)
    i = np.arange(21)
    expected = np.exp(-0.5 * ((i - 10) / 2.0) ** 2)
    np.testing.assert_allclose(p, expected / expected.sum(), rtol=1e-5)
    with pytest.raises(ValueError, match="widths=-2.0"):
        references.gaussian(21, 10.0, -2.0)


def test_mixture_reference_weights_are_component_masses():
    p = np.asarray(references.mixture(100, [20, 80], [3, 3], [0.25, 0.75]), np.float64)
    assert abs(p.sum() - 1) < 1e-6
    # Well-separated components: the mass of each half is its weight.
    assert abs(p[:50].sum() - 0.25) < 1e-6 and abs(p[50:].sum() - 0.75) < 1e-6
    eq = np.asarray(references.mixture(100, [20, 80], [3, 3]), np.float64)
    assert abs(eq[:50].sum() - 0.5) < 1e-6
    with pytest.raises(ValueError, match="must have the same length"):
        references.mixture(10, [1, 2], [1])
    with pytest.raises(ValueError, match="weights=-0.5"):
        references.mixture(10, [1, 2], [1, 1], [1.0, -0.5])
    with pytest.raises(ValueError, match="sum to 0"):
        references.mixture(10, [1, 2], [1, 1], [0.0, 0.0])


def test_uniform_and_zipf_references():
    np.testing.assert_allclose(np.asarray(references.uniform(8)), np.full(8, 1 / 8), rtol=1e-6)
    z = np.asarray(references.zipf(50, 1.5), np.float64)
    np.testing.assert_allclose(z / z[0], np.arange(1, 51) ** -1.5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(references.zipf(8, 0.0)), np.full(8, 1 / 8), rtol=1e-6)
    with pytest.raises(ValueError, match="exponent=-1.0"):
        references.zipf(8, -1.0)
    with pytest.raises(ValueError, match="num_bins=1"):
        references.uniform(1)


def test_reference_from_logits():
    p = np.asarray(references.from_logits([0.0, np.log(3.0), -np.inf, 0.0]), np.float64)
    np.testing.assert_allclose(p, [0.2, 0.6, 0.0, 0.2], rtol=1e-6)
    # Large logits do not overflow.
    q = np.asarray(references.from_logits([1000.0, 1000.0]))
    np.testing.assert_allclose(q, [0.5, 0.5])
    with pytest.raises(ValueError, match="invalid entry nan at bin 1"):
        references.from_logits([0.0, np.nan])
    with pytest.raises(ValueError, match="invalid entry inf at bin 0"):
        references.from_logits([np.inf, 0.0])
    with pytest.raises(ValueError, match="all -inf"):
        references.from_logits([-np.inf, -np.inf])
    with pytest.raises(ValueError, match=r"shape \(1,\)"):
        references.from_logits([0.0])


def test_reference_from_probs():
    p = np.asarray(references.from_probs([0.25, 0.75, 0.0]))
    np.testing.assert_allclose(p, [0.25, 0.75, 0.0])
    with pytest.raises(ValueError, match="negative entry -0.25 at bin 1"):
        references.from_probs([1.25, -0.25])
    with pytest.raises(ValueError, match="sums to 0.9"):
        references.from_probs([0.4, 0.5])


# ----------------------------------------------------------------------------- Problem


def test_problem_stores_float32_and_exposes_bins(far):
    assert far.num_bins == 100
    assert far.ref_probs.dtype == jnp.float32 and far.reward.dtype == jnp.float32
    prob = ms.Problem([0.5, 0.5, 0.0], [1.0, 0.0, 2.0])
    assert float(prob.ref_logp[2]) == problems.LOG_ZERO  # zero mass: finite log
    np.testing.assert_allclose(np.asarray(prob.ref_logp[:2]), np.log([0.5, 0.5]))


@pytest.mark.parametrize(
    "ref, reward, message",
    [
        ([0.5, 0.5], [0.0, 1.0, 2.0], r"reward has shape \(3,\) but ref_probs has shape \(2,\)"),
        ([[0.5, 0.5]], [0.0, 1.0], r"ref_probs has shape \(1, 2\); expected a 1-D vector over at least 2 bins"),
        ([1.0], [0.0], r"ref_probs has shape \(1,\); expected a 1-D vector over at least 2 bins"),
        ([0.7, -0.2, 0.5], [0.0, 1.0, 2.0], "negative entry -0.2 at bin 1"),
        ([0.5, 0.6], [0.0, 1.0], "sums to 1.1"),
        ([0.5, np.nan], [0.0, 1.0], "non-finite entry nan at bin 1"),
        ([0.5, 0.5], [0.0, np.inf], "reward has a non-finite entry inf at bin 1"),
        ([0.5, 0.5], [np.nan, 0.0], "reward has a non-finite entry nan at bin 0"),
    ],
)
def test_problem_validation_names_the_bad_value(ref, reward, message):
    with pytest.raises(ValueError, match=message):
        ms.Problem(ref, reward)


def test_pi_star_closed_form(far):
    ref = np.asarray(far.ref_probs, np.float64)
    r = np.asarray(far.reward, np.float64)
    for beta in (0.05, 0.1, 1.0):
        w = ref * np.exp(r / beta)
        np.testing.assert_allclose(np.asarray(ms.pi_star(far, beta)), w / w.sum(), rtol=2e-5, atol=1e-9)


def test_pi_star_extreme_temperatures(far):
    cold = np.asarray(ms.pi_star(far, 1e-3), np.float64)
    hot = np.asarray(ms.pi_star(far, 1e3), np.float64)
    assert np.all(np.isfinite(cold)) and np.all(np.isfinite(hot))
    assert abs(cold.sum() - 1) < 1e-5 and abs(hot.sum() - 1) < 1e-5
    # beta -> 0: all mass on the reward's argmax; beta -> inf: pi_ref.
    assert cold[70] > 0.999
    np.testing.assert_allclose(hot, np.asarray(far.ref_probs), rtol=2e-3)
    with pytest.raises(ValueError, match="beta=0.0"):
        ms.pi_star(far, 0.0)
    with pytest.raises(ValueError, match="beta=-1.0"):
        ms.pi_star(far, -1.0)


def test_pi_star_with_zero_reference_mass_keeps_the_bin_empty():
    prob = ms.Problem([0.5, 0.5, 0.0], [0.0, 0.0, 1.0])
    p = np.asarray(ms.pi_star(prob, 1e-3))
    assert np.all(np.isfinite(p)) and p[2] == 0.0


def test_high_reward_mask(far):
    m = np.asarray(problems.high_reward_mask(far.reward))
    r = np.asarray(far.reward)
    np.testing.assert_array_equal(m, r >= 0.5)
    assert m.sum() == 17  # |i - 70| <= 10 sqrt(ln 2) = 8.3
    signed = np.asarray(problems.high_reward_mask(jnp.array([-2.0, 0.0, 1.0, 2.0])))
    np.testing.assert_array_equal(signed, [False, True, True, True])


# ----------------------------------------------------------------------------- presets and names


def test_paper_bandit_presets():
    far_ = ms.paper_bandit("far")
    near_ = ms.paper_bandit("near")
    assert far_.name == "far" and near_.name == "near"
    assert int(jnp.argmax(far_.reward)) == 70 and int(jnp.argmax(near_.reward)) == 20
    w20 = ms.paper_bandit("far", width=20.0)
    assert w20.name == "far_w20"
    assert abs(float(w20.reward[50]) - np.exp(-1)) < 1e-6
    # Centres scale with the number of bins.
    small = ms.paper_bandit("far", num_bins=50)
    assert small.num_bins == 50 and int(jnp.argmax(small.reward)) == 35
    assert set(problems.presets()) == {"far", "near", "far_w20", "far_w30"}
    for name in problems.presets():
        prob = problems.get(name)
        assert prob.name == name and prob.num_bins == 100
    np.testing.assert_array_equal(np.asarray(problems.get("far_w30").reward), np.asarray(ms.paper_bandit("far", width=30.0).reward))


def test_unknown_names_list_the_valid_ones(far):
    with pytest.raises(ValueError, match="problem='farr' is not valid; expected one of 'far', 'near'"):
        problems.get("farr")
    with pytest.raises(ValueError, match="kind='middle' is not valid; expected one of 'far', 'near'"):
        ms.paper_bandit("middle")
    with pytest.raises(ValueError, match="loss='dpoo' is not valid; expected one of .*'dpo'.*'reverse_kl'"):
        ms.losses.get("dpoo")
    with pytest.raises(ValueError, match="policy='cnn' is not valid; expected one of 'tabular', 'mlp'"):
        ms.policies.make("cnn")
    with pytest.raises(ValueError, match="init='ones' is not valid"):
        ms.policies.make("tabular", far.ref_probs, init="ones")
    with pytest.raises(ValueError, match="sampling='online' is not valid; expected one of 'offline', 'on_policy', 'exact', 'exact_offline'"):
        ms.run(far, loss="sft", sampling="online", steps=2)


def test_loss_registry_families():
    fam = ms.losses.families()
    assert set(fam) == set(ms.losses.names())
    assert {n for n, f in fam.items() if f == "on_policy"} == {"reinforce", "ppo", "reverse_kl", "grpo", "dr_grpo", "dapo", "gspo", "cispo", "rloo", "reinforce_pp", "remax", "gpg"}
    assert {n for n, f in fam.items() if f == "contrastive"} == {"dpo", "ipo", "slic", "simpo", "cpo", "orpo", "kto", "bco", "apo_zero", "apo_down", "sppo", "dpop", "chi_po", "robust_dpo"}
    for name in ms.losses.names():
        spec = ms.losses.get(name)
        assert spec.name == name and spec.summary


def test_validation_helpers_name_the_value_in_one_line():
    from modeseek import _checks

    cases = [
        (lambda: _checks.integer("steps", True), "steps=True is invalid; expected an integer >= 1"),
        (lambda: _checks.integer("num_samples", 1, 2, reason="for pairs"), "num_samples=1 is invalid; expected an integer >= 2 for pairs"),
        (lambda: _checks.interval("coverage", float("nan"), 0.0, 1.0), r"coverage=nan is invalid; expected a value in \[0, 1\]"),
        (lambda: _checks.interval("dropout", 1.0, 0.0, 1.0, high_open=True), r"dropout=1.0 is invalid; expected a value in \[0, 1\)"),
        (lambda: _checks.interval("rarity", 0.0, 0.0, 1.0, low_open=True, high_open=True), r"rarity=0.0 is invalid; expected a value in \(0, 1\)"),
        (lambda: _checks.interval("coverage", True, 0.0, 1.0), "coverage=True is invalid"),
        (lambda: _checks.vector("table", np.zeros((2, 2)), unit="token"), r"table has shape \(2, 2\); expected a 1-D vector over at least 2 tokens"),
        (lambda: _checks.vector("reward", [0.0, 1.0, np.nan]), "reward has a non-finite entry nan at bin 2; expected finite values"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as exc:
            call()
        assert "\n" not in str(exc.value)
    assert _checks.integer("n", np.int64(3)) == 3 and type(_checks.integer("n", np.int64(3))) is int
    assert _checks.interval("c", np.float32(0.5), 0.0, 1.0) == 0.5
    np.testing.assert_array_equal(_checks.vector("logits", [0.0, -np.inf], finite=False), [0.0, -np.inf])
