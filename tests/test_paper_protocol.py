"""The paper protocol (modeseek.paper.protocol) and the pure helpers of figures 1-4.

Everything here is fast: no engine program is compiled. The configurations are
checked against the table of PAPER_NOTES A.6, the engine keywords against the
engine's own list of names, the loss identities that let one compiled sweep
stand for two methods against jax.grad, and the claim arithmetic on synthetic
curves built so that each verdict is known in advance.
"""

from __future__ import annotations

import itertools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from modeseek import engine, losses
from modeseek.batches import BestOfN
from modeseek.paper import fig_complementarity, fig_negative_gradient, fig_on_policy, fig_problem, protocol

# ----------------------------------------------------------------------------- configurations

# PAPER_NOTES A.6: (lr, train contexts, epochs, N, T, target margin, reward threshold) of the four scripts.
AUTHORS_TABLE = {
    "offline best-of-N": ("best_of_n", 0.01, 5, 1, 10, 200, None, 0.0),
    "offline IPO": ("ipo", 0.003, 100, 1, 10, 200, 10.0, 0.2),
    "on-policy best-of-N": ("best_of_n", 0.001, 10, 100, 10, 15, None, 0.0),
    "on-policy IPO": ("ipo", 0.01, 10, 100, 10, 15, 10.0, 0.0),
}


@pytest.mark.parametrize("name", sorted(AUTHORS_TABLE))
def test_authors_configurations_match_the_notes(name):
    loss, lr, contexts, epochs, n, t, margin, gap = AUTHORS_TABLE[name]
    c = protocol.AUTHORS[name]
    assert (c.loss, c.learning_rate, c.train_contexts, c.epochs, c.num_samples, c.reuse) == (loss, lr, contexts, epochs, n, t)
    assert c.target_margin == margin and c.min_reward_gap == gap and c.published
    assert c.steps == epochs * t
    assert c.sampling == ("offline" if epochs == 1 else "on_policy")
    assert c.reward_queries == epochs * contexts * n


@pytest.mark.parametrize(
    "cfg",
    list(protocol.AUTHORS.values())
    + [protocol.OFFLINE_DPO, protocol.ON_POLICY_DPO, protocol.offline_negative_best_of_n("sum_worse", 0.1)]
    + [protocol.on_policy_rl("reinforce"), protocol.on_policy_rl("ppo")],
    ids=lambda c: c.name,
)
def test_run_kwargs_follow_the_protocol_and_name_only_engine_options(cfg):
    kw = cfg.run_kwargs()
    valid = engine._STATIC_FIELDS | set(engine._TRACED_FIELDS) | {"loss", "sampling", "steps"}
    assert set(kw) <= valid, set(kw) - valid
    assert kw["policy"] == "mlp" and kw["first_batch"] == "data"
    assert kw["num_contexts"] == cfg.train_contexts and kw["num_samples"] == cfg.num_samples and kw["reuse"] == cfg.reuse
    assert kw["steps"] == cfg.epochs * cfg.reuse and kw["learning_rate"] == cfg.learning_rate
    assert kw["num_eval_contexts"] == 100
    # A.7: DPO/IPO evaluate with 4 draws per evaluation context, the others with 1.
    assert kw["eval_samples"] == (4 if cfg.loss in ("dpo", "ipo") else 1)
    if cfg.loss == "ipo":
        assert kw["target_margin"] == cfg.target_margin
    if cfg.negative:
        assert kw["negative"] == cfg.negative and kw["negative_coef"] == cfg.negative_coef


def test_run_kwargs_overrides_win_and_describe_names_the_numbers():
    kw = protocol.ON_POLICY_IPO.run_kwargs(steps=45, learning_rate=np.array([1e-3, 1e-2]), num_eval_contexts=7)
    assert kw["steps"] == 45 and kw["num_eval_contexts"] == 7
    np.testing.assert_array_equal(kw["learning_rate"], [1e-3, 1e-2])
    text = protocol.OFFLINE_IPO.describe()
    for piece in ("lr 0.003", "100 train contexts", "N = 10", "T = 200", "target margin 10", "min reward gap 0.2", "ipo.sh"):
        assert piece in text


def test_rl_configurations_share_on_policy_best_of_n_budget():
    base = protocol.ON_POLICY_BEST_OF_N
    for loss in ("reinforce", "ppo"):
        c = protocol.on_policy_rl(loss, 3e-3)
        assert (c.train_contexts, c.epochs, c.num_samples, c.reuse) == (base.train_contexts, base.epochs, base.num_samples, base.reuse)
        assert c.reward_queries == base.reward_queries and c.steps == base.steps and not c.published
        assert dict(c.extra)["advantage"] == "zscore"
    assert dict(protocol.on_policy_rl("ppo").extra)["clip_eps"] == 0.2
    with pytest.raises(ValueError, match="loss='dpo'"):
        protocol.on_policy_rl("dpo")


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(loss="nope"), "loss='nope'"),
        (dict(learning_rate=0.0), "learning_rate=0.0"),
        (dict(epochs=0), "epochs=0"),
        (dict(reuse=2.5), "reuse=2.5"),
        (dict(negative="most"), "negative='most'"),
        (dict(min_reward_gap=-0.1), "min_reward_gap=-0.1"),
        (dict(loss="ipo", num_samples=1, target_margin=1.0), "num_samples=1"),
    ],
)
def test_bad_configurations_raise_naming_the_value(change, match):
    with pytest.raises(ValueError, match=match):
        protocol.OFFLINE_BEST_OF_N.replace(**change)


def test_budgets():
    full, smoke = protocol.budget(False), protocol.budget(True)
    assert full.seeds >= 10 and full.policy == "mlp" and not full.smoke
    assert full.offline_steps == protocol.OFFLINE_BEST_OF_N.steps  # the authors' T = 200
    assert smoke.smoke and smoke.seeds == 2 and smoke.on_policy_steps(protocol.ON_POLICY_IPO) < full.on_policy_steps(protocol.ON_POLICY_IPO)
    assert "10 reported seeds" in full.describe() and "SMOKE" in smoke.describe()
    with pytest.raises(ValueError, match="seeds=0"):
        protocol.Budget(seeds=0, tune_seeds=1, on_policy_epochs=1, offline_steps=1)
    with pytest.raises(ValueError, match="policy='cnn'"):
        protocol.Budget(seeds=1, tune_seeds=1, on_policy_epochs=1, offline_steps=1, policy="cnn")


def test_run_config_passes_the_budget_and_memoises(monkeypatch):
    calls = []

    def fake_run(problems, *, seeds, key, **kw):
        calls.append((tuple(p.name for p in problems), seeds, key, kw))
        return object()

    monkeypatch.setattr(engine, "run", fake_run)
    protocol.clear_cache()
    b = protocol.Budget(seeds=3, tune_seeds=2, on_policy_epochs=4, offline_steps=7, eval_contexts=5, policy="tabular")
    lrs = np.array([1e-3, 1e-2])
    first = protocol.run_config(protocol.ON_POLICY_IPO, b, tuned=True, learning_rate=lrs)
    again = protocol.run_config(protocol.ON_POLICY_IPO, b, tuned=True, learning_rate=lrs.copy())
    other = protocol.run_config(protocol.ON_POLICY_IPO, b, tuned=True, learning_rate=np.array([1e-3, 3e-2]))
    protocol.run_config(protocol.OFFLINE_IPO, b)
    protocol.clear_cache()
    assert first is again and other is not first and len(calls) == 3
    (names, seeds, _, kw), _, (_, off_seeds, _, off_kw) = calls
    assert names == ("far", "near") and seeds == 5 and off_seeds == 3
    assert kw["steps"] == 4 * 15 and off_kw["steps"] == 7
    assert kw["policy"] == "tabular" and kw["num_eval_contexts"] == 5 and kw["sampling"] == "on_policy"


# ----------------------------------------------------------------------------- loss identities behind the merged sweeps


def _random_best_of_n(key, k=12, n=10):
    ky, kl = jax.random.split(key)
    y = jax.random.randint(ky, (n,), 0, k)
    others_w = jnp.ones((n,)).at[3].set(0.0)
    batch = BestOfN(y[3:4], jnp.ones((1,)), y[5:6], jnp.ones((1,)), y, others_w, jnp.asarray(float(n)))
    return jax.random.normal(kl, (k,)), batch


def test_mean_over_worse_is_sum_over_worse_with_rescaled_coefficient():
    logits, batch = _random_best_of_n(jax.random.PRNGKey(0))
    coefs, is_mean = protocol.sum_worse_grid(10)
    np.testing.assert_allclose(coefs[is_mean] * 9, protocol.MEAN_WORSE_COEFS)
    np.testing.assert_allclose(coefs[~is_mean], protocol.SUM_WORSE_COEFS)

    def loss(z, coef, negative):
        return losses.best_of_n(jax.nn.log_softmax(z), batch, negative=negative, negative_coef=coef)[0]

    # One compiled value-and-gradient per negative term; the coefficients are traced.
    vg = jax.jit(jax.value_and_grad(loss), static_argnums=2)
    for c in protocol.MEAN_WORSE_COEFS:
        (v_mean, g_mean), (v_sum, g_sum) = vg(logits, c, "mean_worse"), vg(logits, c / 9, "sum_worse")
        np.testing.assert_allclose(v_mean, v_sum, rtol=1e-6)
        np.testing.assert_allclose(g_mean, g_sum, rtol=1e-5, atol=1e-7)
    # Coefficient 0 of "worst" is plain best-of-N, which figure 2 relies on.
    assert protocol.WORST_COEFS[0] == 0.0
    np.testing.assert_allclose(vg(logits, 0.0, "worst")[1], vg(logits, 0.0, None)[1], atol=0)


# ----------------------------------------------------------------------------- summaries


def test_split_seeds_and_select_best_use_the_tuning_seeds():
    x = np.arange(2 * 5 * 3, dtype=float).reshape(2, 5, 3)
    rep, tune = protocol.split_seeds(x, 3)
    np.testing.assert_array_equal(rep, x[:, :3])
    np.testing.assert_array_equal(tune, x[:, 3:])
    with pytest.raises(ValueError, match="seeds=6"):
        protocol.split_seeds(x, 6)
    # Grid value 1 is best on the reported seeds, value 2 on the tuning seeds: the choice must be 2.
    curves = np.zeros((3, 4, 5))
    curves[1, :2] = 1.0
    curves[2, 2:] = 0.5
    _, tune = protocol.split_seeds(curves, 2, axis=1)
    assert protocol.select_best(tune) == 2
    assert protocol.select_best(curves) == 1
    with pytest.raises(ValueError, match="shape"):
        protocol.select_best(np.zeros((3, 4)))


def test_difference_band_is_welch():
    a, b = np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0])
    d, lo, hi = protocol.difference_band(a, b)
    se = np.sqrt(1.0 / 3 + 0.5 / 2)  # var(a)/3 + var(b)/2 with ddof = 1
    assert d == pytest.approx(1.5) and lo == pytest.approx(1.5 - 1.96 * se) and hi == pytest.approx(1.5 + 1.96 * se)
    assert protocol.difference_band([2.0], [1.0]) == (1.0, 1.0, 1.0)


def test_steps_to_reach_and_faster():
    assert protocol.steps_to_reach([0.1, 0.5, 0.9, 0.7], 0.8) == 2
    assert protocol.steps_to_reach([0.1, 0.5], 0.8) is None
    assert fig_complementarity.faster(5, 9, 100) and not fig_complementarity.faster(9, 9, 100)
    # Censored comparator: faster only if reached within the comparator's budget.
    assert fig_complementarity.faster(150, None, 200) and not fig_complementarity.faster(250, None, 200)
    assert not fig_complementarity.faster(None, None, 200)
    hit, med = fig_complementarity.crossing(np.array([[0.0, 0.9, 0.9], [0.0, 0.0, 0.0]]), 0.8)
    assert hit is None and med == np.inf  # the mean never reaches 0.8
    hit, med = fig_complementarity.crossing(np.array([[0.0, 0.9, 0.9], [0.0, 0.7, 0.9]]), 0.8)
    assert hit == 1 and med == 1.5


def test_tuned_slice_reports_held_out_seeds_at_the_chosen_value():
    b = protocol.Budget(seeds=2, tune_seeds=2, on_policy_epochs=1, offline_steps=1)
    er = np.zeros((2, 3, 4, 6))  # problems, learning rates, seeds, steps
    er[0, 0, :2] = 1.0  # far: lr 0 looks best on reported seeds only
    er[0, 1, 2:] = 0.6  # far: lr 1 best on tuning seeds
    er[1, 2] = 0.3  # near: lr 2 best everywhere
    traj = types.SimpleNamespace(metrics={"expected_reward": er, "kl_pi_ref": er + 10})
    curves, chosen = fig_on_policy.tuned_slice(traj, "kl_pi_ref", b)
    assert chosen == [1, 2]
    np.testing.assert_array_equal(curves[0], er[0, 1, :2] + 10)
    np.testing.assert_array_equal(curves[1], er[1, 2, :2] + 10)


def _res(values: dict[str, tuple[float, float]], seeds=10, steps=5, jitter=0.01):
    """Synthetic figure-2 results: method -> (far final, near final) with small seed noise."""
    rng = np.random.default_rng(0)
    out = {}
    for name, (far, near) in values.items():
        er = np.empty((2, seeds, steps + 1))
        er[0], er[1] = far, near
        er += jitter * rng.standard_normal(er.shape)
        out[name] = {"expected_reward": er}
    return out


def test_figure2_claims_on_synthetic_results():
    good = _res({"offline best-of-N": (0.3, 0.95), "on-policy best-of-N": (0.9, 1.0), "REINFORCE": (0.95, 1.0), "PPO": (0.97, 1.0)})
    far, near = fig_on_policy._claims(good, 5, 5)
    assert far.passed and near.passed
    # PPO only 0.1 above offline on "far", and offline 0.2 below the best on "near": both fail, with the numbers.
    bad = _res({"offline best-of-N": (0.3, 0.75), "on-policy best-of-N": (0.9, 0.8), "REINFORCE": (0.95, 0.95), "PPO": (0.4, 0.9)})
    far, near = fig_on_policy._claims(bad, 5, 5)
    assert not far.passed and "PPO 0.399" in far.evidence and "[not far above]" in far.evidence
    assert not near.passed and "best is REINFORCE" in near.evidence and near.note


def test_figure3_claims_need_both_reward_and_kl():
    names = ["offline best-of-N"] + list(fig_negative_gradient.NEGATIVES.values()) + ["offline DPO", "offline IPO"]
    rng = np.random.default_rng(1)

    def curves(r, k):
        return {
            "expected_reward": r + 0.01 * rng.standard_normal((2, 10, 3)),
            "kl_pi_ref": k + 0.01 * rng.standard_normal((2, 10, 3)),
            "entropy": np.zeros((2, 10, 3)),
        }

    res = {n: {"curves": curves(0.3, 1.0), "coef": [0.1, 0.1]} for n in names}
    res["offline DPO"] = {"curves": curves(0.8, 3.0), "coef": None}  # better and further: pass
    res["offline IPO"] = {"curves": curves(0.8, 0.5), "coef": None}  # better but closer: fail on KL
    claims = {c.id: c for c in fig_negative_gradient._claims(res)}
    assert claims["far_negative_gradient_dpo"].passed
    assert not claims["far_negative_gradient_ipo"].passed and "KL" in claims["far_negative_gradient_ipo"].note
    assert not claims["far_negative_gradient_bon_worst"].passed and "reward" in claims["far_negative_gradient_bon_worst"].note


# ----------------------------------------------------------------------------- figure 1


def test_expected_best_of_n_matches_enumeration():
    p = np.array([0.5, 0.2, 0.3])
    r = np.array([0.0, 1.0, 1.0])  # a tie between bins 1 and 2
    for n in (1, 2, 3):
        brute = sum(np.prod(p[list(ys)]) * r[list(ys)].max() for ys in itertools.product(range(3), repeat=n))
        assert fig_problem.expected_best_of_n(p, r, n) == pytest.approx(brute, abs=1e-12)
    with pytest.raises(ValueError, match="n=0"):
        fig_problem.expected_best_of_n(p, r, 0)


def test_problem_geometry_matches_the_notes(far, near):
    for kind, problem in (("far", far), ("near", near)):
        g = fig_problem.geometry(problem, fig_problem.CENTERS[kind])
        for key, value in fig_problem.NOTES_TABLE[kind].items():
            assert abs(g[key] - value) <= fig_problem.TOLERANCE, (kind, key, g[key], value)
