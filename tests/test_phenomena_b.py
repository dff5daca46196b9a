"""Phenomena B: KL-estimator fixed points, groups with no signal, preference collapse (closed forms against the engine)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import modeseek as ms
from modeseek.losses import kl_fixed_point
from modeseek.phenomena import kl_estimators, preference_collapse, uniform_groups
from modeseek.pieces import PIECES, Claim


def _far():
    p = ms.problems.get("far")
    return np.asarray(p.ref_probs, np.float64), np.asarray(p.reward, np.float64)


def test_registered_in_order_before_fig_problem():
    names = list(PIECES)
    i = names.index("fig_problem")
    assert names[i - 3 : i] == ["kl_estimators", "uniform_groups", "preference_collapse"]


def test_k1_in_reward_is_pi_star():
    ref, r = _far()
    star = np.asarray(ms.pi_star(ms.problems.get("far"), 0.1), np.float64)
    for est in ("k1", "exact"):
        np.testing.assert_allclose(kl_fixed_point(ref, r, 0.1, est, "reward"), star, atol=1e-6)


@pytest.mark.parametrize("estimator", ["k2", "k3"])
def test_reward_fixed_point_is_stable_stationary_point(estimator):
    ref, r = _far()
    beta = 0.1
    support = np.zeros(r.size, bool)
    support[np.argsort(-r)[:15]] = True
    p = kl_fixed_point(ref, r, beta, estimator, "reward", support=support)
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.all(p[~support] == 0)
    kept = p > 0
    # k3 at beta 0.1 drops the two lowest-reward bins of this support (their r is below c); k2 keeps all 15.
    assert kept.sum() == (15 if estimator == "k2" else 13)
    d = np.log(p[kept] / ref[kept])
    # The stable branch: every kept bin at or above pi_ref.
    assert np.all(d >= -1e-9)
    k = 0.5 * d**2 if estimator == "k2" else np.expm1(-d) + d
    shaped = r[kept] - beta * k
    # Stationary: the detached shaped reward is the same on every kept bin (bisection to ~1e-15; exp/log round-off).
    assert np.ptp(shaped) < 1e-9


def test_reward_fixed_point_bad_input():
    ref, r = _far()
    with pytest.raises(ValueError, match="support"):
        kl_fixed_point(ref, r, 0.1, "k3", "reward")
    with pytest.raises(ValueError, match="placement"):
        kl_fixed_point(ref, r, 0.1, "k3", "middle")


def test_engine_reaches_k3_in_reward_fixed_point():
    # 3000 exact steps: the full piece measures L1 <= 3.1e-4 for k3 in the reward on "far" and "near" at beta 0.03..1;
    # the tolerance 2e-3 is kl_estimators.TOL (a wrong support or branch is off by O(0.1), see the piece's figure).
    prob = ms.problems.get("near")
    ref, r = np.asarray(prob.ref_probs, np.float64), np.asarray(prob.reward, np.float64)
    betas = np.array([0.1, 0.3])
    tr = ms.run(prob, loss="reinforce", sampling="exact", steps=3000, kl_estimator="k3", kl_placement="reward", beta=betas, eval_every=3000)
    for i, b in enumerate(betas):
        final = np.asarray(tr.final_probs[i, 0], np.float64)
        cf, _ = kl_estimators.closed_form(ref, r, float(b), "k3", "reward", final)
        assert np.abs(final - cf).sum() <= kl_estimators.TOL
        # ...and the wrong closed forms are far: pi* and the k3-in-loss tilt.
        assert np.abs(final - kl_fixed_point(ref, r, float(b), "k2")).sum() > 0.1
        assert np.abs(final - kl_fixed_point(ref, r, float(b), "k3")).sum() > 0.1


@pytest.mark.slow
def test_engine_grpo_k3_in_loss_at_effective_beta():
    # Measured L1 <= 1.9e-4 after 3000 steps on "far" and "near"; at beta itself (no sigma) the L1 is 0.3-0.7.
    prob = ms.problems.get("far")
    ref, r = np.asarray(prob.ref_probs, np.float64), np.asarray(prob.reward, np.float64)
    tr = ms.run(prob, loss="grpo", sampling="exact", steps=3000, kl_estimator="k3", kl_placement="loss", beta=np.array([0.3]), eval_every=3000)
    final = np.asarray(tr.final_probs[0, 0], np.float64)
    be = kl_estimators.grpo_beta_eff(ref, r, 0.3)
    assert np.abs(final - kl_fixed_point(ref, r, be, "k3")).sum() <= kl_estimators.TOL
    assert np.abs(final - kl_fixed_point(ref, r, 0.3, "k3")).sum() > 0.1


def test_uniform_probability_exact_against_engine_and_sampling():
    p, g, groups = 0.05, 8, 20000
    prob = uniform_groups.rarity_problem(p)
    assert float(np.asarray(prob.ref_probs)[uniform_groups.GOOD_BIN]) == pytest.approx(p, rel=1e-6)
    exact = float(uniform_groups.uniform_probability(p, g))
    assert exact == pytest.approx(0.05**8 + 0.95**8)
    # The engine's exact statistic is float32: 1e-6 is ~10 ulps at 1.
    assert uniform_groups._engine_exact_uniform(prob, g) == pytest.approx(exact, abs=1e-6)
    share = uniform_groups.sampled_uniform_share(prob, (g,), groups, key=3)[g]
    se = np.sqrt(exact * (1 - exact) / groups)  # 0.0035
    # 4 standard errors: a false alarm has probability 6e-5; a wrong formula (e.g. (1-p)^G alone, 0.663) is 2e-9 away... so also
    # check that the p^G term is not what is being tested: at p = 0.05 it is 4e-11, so use the G-dependence instead.
    assert abs(share - exact) <= 4 * se
    assert abs(share - float(uniform_groups.uniform_probability(p, 4))) > 10 * se


def test_uniform_probability_bad_input():
    with pytest.raises(ValueError, match="p="):
        uniform_groups.uniform_probability(1.5, 8)
    with pytest.raises(ValueError, match="rarity"):
        uniform_groups.rarity_problem(0.0)


def test_grpo_loss_zero_gradient_not():
    out = uniform_groups.loss_and_gradient()
    assert len(set(out["rewards"])) == 2
    assert abs(out["no_kl_loss"]) < 1e-6
    assert abs(out["mean_advantage"]) < 1e-6
    assert out["no_kl_grad_norm"] > 1e-2


def test_preference_collapse_exact_number():
    at = float(preference_collapse.preferred_mass(0.1))
    assert at == pytest.approx(1.5**10 / (1 + 1.5**10), abs=1e-15)
    assert round(at, 3) == 0.983
    assert float(preference_collapse.preferred_mass(1.0)) == pytest.approx(0.6, abs=1e-15)
    assert preference_collapse.matching_beta() == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(ValueError, match="beta"):
        preference_collapse.preferred_mass(0.0)


def test_preference_collapse_engine_rlhf_and_dpo():
    # The full piece measures |engine - exact| <= 4.5e-4 over 13 betas in [1e-2, 10] after 3000 steps (1e-8 at beta 0.1 and 1).
    prob = preference_collapse.problem()
    betas = np.array([0.1, 1.0])
    rl = ms.run(prob, loss="reinforce", sampling="exact", steps=3000, kl_estimator="k1", kl_placement="reward", beta=betas, eval_every=3000)
    dpo = ms.run(prob, loss="dpo", sampling="exact_offline", steps=3000, labels="bradley_terry", beta=betas, eval_every=3000)
    for tr in (rl, dpo):
        got = np.asarray(tr.final_probs[:, 0, 0], np.float64)
        np.testing.assert_allclose(got, preference_collapse.preferred_mass(betas), atol=preference_collapse.TOL)


@pytest.mark.parametrize("module", [kl_estimators, uniform_groups, preference_collapse])
def test_piece_smoke(module, tmp_path):
    name = module.PIECE.name
    claims = module.PIECE.make(tmp_path, True)
    assert claims and all(isinstance(c, Claim) for c in claims)
    json.dumps([c.to_dict() for c in claims])
    for f in (f"{name}.png", f"{name}.caption.md", f"data/{name}.parquet"):
        assert (tmp_path / f).stat().st_size > 0, f
