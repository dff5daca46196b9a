"""The engine (modeseek.run and Trajectory): shapes, tables, determinism, compile-once, validation.

Compiles dominate the cost (~1.5-3 s of CPU each; the MLP ~8 s), so the tests
share a few static configurations: ``_BASE`` with 2 runs and with 12 runs
(3 x 2 grid x 2 seeds, reused by the problem and data sweeps, which then do
not compile at all), and one configuration per feature.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

import modeseek as ms
from modeseek import engine

# On-policy best-of-4 over 2 contexts, 6 steps in 2 batches of 3 (sample reuse).
_BASE = dict(loss="best_of_n", sampling="on_policy", steps=6, reuse=3, num_samples=4, num_contexts=2)


def _run(problem, **kw):
    return ms.run(problem, **{**_BASE, **kw})


# ----------------------------------------------------------------------------- shapes and tables


def test_shapes_without_a_grid(far):
    tr = _run(far, seeds=2, key=0)
    assert tr.grid == {} and tr.grid_shape == ()
    assert set(ms.metrics.EXACT_METRICS) | {"train_loss", "reward_queries"} == set(tr.metrics)
    for name, v in tr.metrics.items():
        assert v.shape == (2, 7), name
    assert tr.final_probs.shape == (2, 100)
    np.testing.assert_array_equal(tr.snapshot_steps, np.arange(7))  # default: every max(1, 6 // 10) steps
    assert tr.snapshots.shape == (2, 7, 100)
    np.testing.assert_array_equal(tr.steps, np.arange(7))
    # Snapshot 0 is pi_ref (tabular policy initialised at the reference); the last is the final policy.
    np.testing.assert_allclose(tr.snapshots[:, 0], np.broadcast_to(np.asarray(far.ref_probs), (2, 100)), atol=1e-6)
    np.testing.assert_array_equal(tr.snapshots[:, -1], tr.final_probs)
    np.testing.assert_allclose(tr.final_probs.sum(-1), 1.0, atol=1e-5)
    # Step-0 metrics are those of pi_ref; the final ones those of final_probs.
    np.testing.assert_allclose(tr.metrics["expected_reward"][:, 0], float(far.ref_probs @ far.reward), rtol=1e-5)
    np.testing.assert_allclose(tr.metrics["kl_pi_ref"][:, 0], 0.0, atol=1e-5)
    np.testing.assert_allclose(tr.metrics["expected_reward"][:, -1], tr.final_probs @ np.asarray(far.reward), rtol=1e-4)
    assert tr.config.loss == "best_of_n" and tr.config.reuse == 3 and tr.seeds == 2
    assert tr.problem_names == ("far",)


def test_shapes_with_a_grid_and_the_dataframe(far):
    # Swept values form an outer-product grid in the order given (beta before learning_rate).
    lrs = np.array([0.01, 0.05, 0.2])
    tr = _run(far, seeds=2, key=0, beta=np.array([0.1, 1.0]), learning_rate=lrs)
    assert list(tr.grid) == ["beta", "learning_rate"] and tr.grid_shape == (2, 3)
    for name, v in tr.metrics.items():
        assert v.shape == (2, 3, 2, 7), name
    assert tr.final_probs.shape == (2, 3, 2, 100)
    assert tr.snapshots.shape == (2, 3, 2, 7, 100)
    # A larger learning rate moves the policy further (beta does not enter best-of-N).
    moved = np.abs(tr.final_probs - np.asarray(far.ref_probs)).sum(-1)
    assert np.all(moved[:, 2] > moved[:, 0])
    np.testing.assert_array_equal(tr.final_probs[0], tr.final_probs[1])

    df = tr.to_dataframe()
    assert len(df) == 2 * 3 * 2 * 7
    expected_cols = {"beta", "learning_rate", "seed", "step", "problem", "loss", "sampling", "policy", "optimizer", "reuse"}
    expected_cols |= {"num_samples", "num_contexts", "negative", "advantage", "kl_estimator", "negative_coef"}
    expected_cols |= set(tr.metrics)
    assert expected_cols <= set(df.columns), expected_cols - set(df.columns)
    assert set(df["learning_rate"]) == set(lrs) and set(df["seed"]) == {0, 1} and set(df["step"]) == set(range(7))
    assert (df["problem"] == "far").all() and (df["loss"] == "best_of_n").all() and (df["negative"] == "none").all()
    # Each row holds the metric of its own grid point, seed and step.
    row = df[(df["beta"] == 1.0) & (df["learning_rate"] == 0.2) & (df["seed"] == 1) & (df["step"] == 4)]
    assert len(row) == 1
    assert row["expected_reward"].item() == tr.metrics["expected_reward"][1, 2, 1, 4]
    assert row["reward_queries"].item() == tr.metrics["reward_queries"][1, 2, 1, 4]


def test_sweeps_of_problems_and_data_reuse_the_compiled_program(far, near):
    # 12 runs like the grid test (3 problems x 2 lrs x 2 seeds): same static config and
    # run count, so only traced data changes and nothing compiles.
    first = _run(far, seeds=2, key=0, beta=np.array([0.1, 1.0]), learning_rate=np.array([0.01, 0.05, 0.2]))
    before = engine.compile_count()
    # New values, same lengths: no compile, and the new values are used.
    again = _run(far, seeds=2, key=0, beta=np.array([0.3, 3.0]), learning_rate=np.array([0.02, 0.1, 0.4]))
    assert engine.compile_count() == before and again.compile_seconds == 0.0
    np.testing.assert_array_equal(again.grid["learning_rate"], [0.02, 0.1, 0.4])
    assert not np.array_equal(again.final_probs, first.final_probs)
    probs = [far, near, ms.paper_bandit("far", width=20.0)]
    tr = _run(probs, seeds=2, key=0, learning_rate=np.array([0.05, 0.2]))
    assert engine.compile_count() == before and tr.compile_seconds == 0.0
    assert list(tr.grid) == ["problem", "learning_rate"]
    np.testing.assert_array_equal(tr.grid["problem"], ["far", "near", "far_w20"])
    assert tr.problem_names == ("far", "near", "far_w20")
    # Each problem's metrics use its own reward: at step 0 E_ref[r] differs.
    np.testing.assert_allclose(tr.metrics["expected_reward"][:2, 0, 0, 0], [0.039, 0.377], atol=5e-4)
    df = tr.to_dataframe()
    assert set(df["problem"]) == {"far", "near", "far_w20"} and len(df) == 3 * 2 * 2 * 7

    data = np.stack([np.asarray(far.ref_probs), np.full(100, 0.01), np.asarray(ms.pi_star(far, 0.1))])
    tr = _run(far, seeds=2, key=0, data=data, learning_rate=np.array([0.05, 0.2]))
    assert engine.compile_count() == before
    assert list(tr.grid) == ["learning_rate", "data"] or list(tr.grid) == ["data", "learning_rate"]
    assert tr.metrics["expected_reward"].shape[-1] == 7 and tr.final_probs.size == 12 * 100


# ----------------------------------------------------------------------------- determinism and compiles


def test_same_key_same_bits_different_key_different_bits(far):
    a = _run(far, seeds=2, key=0)
    b = _run(far, seeds=2, key=0)
    c = _run(far, seeds=2, key=1)
    d = _run(far, seeds=2, key=jax.random.PRNGKey(0))
    for name in a.metrics:
        np.testing.assert_array_equal(a.metrics[name], b.metrics[name])
        np.testing.assert_array_equal(a.metrics[name], d.metrics[name])
    np.testing.assert_array_equal(a.final_probs, b.final_probs)
    np.testing.assert_array_equal(a.snapshots, b.snapshots)
    assert not np.array_equal(a.final_probs, c.final_probs)
    # Seeds are independent runs: different samples, different policies.
    assert not np.array_equal(a.final_probs[0], a.final_probs[1])


def test_traced_changes_do_not_recompile_static_changes_do(far):
    _run(far, seeds=2, key=0)
    before = engine.compile_count()
    tr = _run(far, seeds=2, key=3, learning_rate=0.3, beta=2.0, negative_coef=0.7)
    assert engine.compile_count() == before and tr.compile_seconds == 0.0
    # A problem with the same number of bins is traced data too.
    _run(ms.paper_bandit("near"), seeds=2, key=0)
    assert engine.compile_count() == before
    # A static option compiles a new program, once.
    tr = _run(far, seeds=2, key=0, num_samples=5)
    assert engine.compile_count() == before + 1 and tr.compile_seconds > 0
    _run(far, seeds=2, key=0, num_samples=5, learning_rate=0.01)
    assert engine.compile_count() == before + 1


def test_a_grid_point_equals_the_unswept_run(far):
    swept = _run(far, seeds=2, key=0, beta=np.array([0.1, 1.0]), learning_rate=np.array([0.01, 0.05, 0.2]))
    single = _run(far, seeds=2, key=0, beta=1.0, learning_rate=0.05)
    np.testing.assert_allclose(swept.final_probs[1, 1], single.final_probs, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(swept.metrics["expected_reward"][1, 1], single.metrics["expected_reward"], rtol=1e-5)


# ----------------------------------------------------------------------------- reward queries


def test_reward_queries_on_policy(far):
    tr = _run(far, seeds=2, key=0)
    t = np.arange(7)
    # A fresh batch of N = 4 samples x 2 contexts every reuse = 3 steps.
    np.testing.assert_array_equal(tr.metrics["reward_queries"][0], np.ceil(t / 3) * 8)
    np.testing.assert_array_equal(tr.metrics["reward_queries"][1], tr.metrics["reward_queries"][0])


def test_reward_queries_offline_and_batches_fixed(far):
    tr = ms.run(far, loss="best_of_n", sampling="offline", steps=6, num_samples=4, num_contexts=2, seeds=2, key=0)
    # One dataset of 4 x 2 samples, drawn once.
    np.testing.assert_array_equal(tr.metrics["reward_queries"][0], [0, 8, 8, 8, 8, 8, 8])
    # Offline data come from pi_ref: with a fixed best-of-N batch the loss can
    # only decrease under small Adam steps (it is a convex NLL in the logits).
    assert np.all(np.diff(tr.metrics["train_loss"], axis=-1) < 0)


def test_exact_pair_loss_metrics_queries_and_seed_independence(far):
    tr = ms.run(far, loss="dpo", sampling="exact", steps=5, seeds=2, key=0, beta=1.0, snapshot_every=5)
    # Exact updates read the reward table once per context: K = 100 queries.
    np.testing.assert_array_equal(tr.metrics["reward_queries"][0], [0, 100, 100, 100, 100, 100])
    for name in ms.metrics.PAIR_METRICS:
        assert tr.metrics[name].shape == (2, 6)
    np.testing.assert_array_equal(tr.snapshot_steps, [0, 5])
    # At pi = pi_ref every implicit margin is 0; DPO then increases the mean margin.
    np.testing.assert_allclose(tr.metrics["margin"][:, 0], 0.0, atol=1e-5)
    assert np.all(np.diff(tr.metrics["margin"][0]) > 0)
    # A deterministic update from a deterministic start: all seeds agree.
    np.testing.assert_array_equal(tr.final_probs[0], tr.final_probs[1])


# ----------------------------------------------------------------------------- options


def test_first_batch_from_data_and_monte_carlo_eval_reward(far):
    # The paper's epoch 0 samples from pi_data (PAPER_NOTES A.6). With data on
    # bins 66-74 around the far reward's peak, the first batch (steps 0-2) moves
    # mass there; drawn from the policy (= pi_ref) it almost never reaches them
    # (pi_ref holds 0.019 there). Measured at lr 0.5 after 3 steps, mass on bins
    # 66-74 relative to pi_ref over 8 seeds: 2.89-3.03 from data, 0.82-1.84 from
    # the policy (0.91, 0.96 for the two seeds used here).
    data = np.zeros(100)
    data[66:75] = 1.0 / 9
    base = _run(far, seeds=2, key=0, data=data, learning_rate=0.5)
    tr = _run(far, seeds=2, key=0, data=data, learning_rate=0.5, first_batch="data", eval_samples=400)
    ref_mass = float(np.asarray(far.ref_probs)[66:75].sum())
    gain_data = tr.snapshots[:, 3, 66:75].sum(-1) / ref_mass
    gain_pol = base.snapshots[:, 3, 66:75].sum(-1) / ref_mass
    assert np.all(gain_data > 2.5) and np.all(gain_pol < 1.5), (gain_data, gain_pol)
    np.testing.assert_array_equal(tr.metrics["reward_queries"], base.metrics["reward_queries"])

    # eval_samples: a Monte-Carlo estimate of expected_reward with 400 draws per
    # eval context (2 contexts), unbiased with s.d. <= sqrt(0.25 / 800) = 0.018
    # per step (rewards lie in [0, 1]).
    assert "sampled_reward" in tr.metrics and "sampled_reward" not in base.metrics
    d = (tr.metrics["sampled_reward"] - tr.metrics["expected_reward"]).ravel()
    assert np.abs(d).max() < 4.5 * np.sqrt(0.25 / 800)
    assert abs(d.mean()) < 4 * np.sqrt(0.25 / 800 / d.size)
    assert np.any(d != 0)  # it is a sample, not the exact value


def test_train_reward_drives_learning_and_adds_its_metric(far, near):
    # The learner sees train_reward (a proxy); metrics stay on the gold reward.
    rows = np.stack([np.asarray(far.reward), np.asarray(near.reward)])
    tr = ms.run(far, loss="reinforce", sampling="exact", steps=40, seeds=1, key=0, train_reward=rows, learning_rate=0.1, snapshot_every=40)
    assert list(tr.grid) == ["train_reward"]
    gold, train = tr.metrics["expected_reward"][:, 0], tr.metrics["expected_train_reward"][:, 0]
    # Row 0: the proxy is the gold reward.
    np.testing.assert_allclose(gold[0], train[0], rtol=1e-6)
    # Row 1: the learner climbs the near reward; the far (gold) reward does not follow.
    assert train[1, -1] > 0.9 and gold[1, -1] < 0.05
    np.testing.assert_allclose(train[1, -1], tr.final_probs[1, 0] @ np.asarray(near.reward), rtol=1e-4)
    assert gold[0, -1] > 0.5


def test_mlp_policy_runs_and_sft_fits_the_reference(far):
    # PAPER_NOTES A.4-A.5: the MLP starts near uniform; 100 Adam steps of reverse-KL
    # SFT bring it to pi_ref. A vanishing SFT learning rate (traced, no recompile)
    # leaves it near uniform: KL(uniform || pi_ref) = 0.49 nats.
    tr = ms.run(
        far,
        loss="reinforce",
        sampling="on_policy",
        steps=2,
        seeds=1,
        key=0,
        policy="mlp",
        num_contexts=4,
        num_eval_contexts=4,
        sft_learning_rate=np.array([1e-2, 1e-9]),
        snapshot_every=2,
    )
    kl0 = tr.metrics["kl_pi_ref"][:, 0, 0]
    assert kl0[0] < 1e-3, kl0
    assert 0.35 < kl0[1] < 0.6, kl0
    assert tr.final_probs.shape == (2, 1, 100)
    assert all(np.all(np.isfinite(v)) for v in tr.metrics.values())
    assert tr.config.policy == "mlp" and tr.config.num_eval_contexts == 4


def test_mlp_unbatched_program_equals_the_vmapped_one_to_round_off(far):
    # batching="map" computes each MLP run as one unbatched program (faster: no
    # transposed layouts in Adam's updates); its weight gradients' dots sum in
    # another order, so the last bits move but nothing else: measured on this
    # run, at most 1e-6 on any metric (KL and entropy values near 1 nat). The
    # margin 1e-5 is 10x that; a wrong gradient or a skipped update would move
    # these metrics by > 1e-3 over 20 steps.
    kw = dict(loss="best_of_n", sampling="on_policy", steps=20, reuse=5, seeds=2, key=0, policy="mlp", num_contexts=3, num_eval_contexts=4, sft_steps=5, first_batch="data")
    vm = ms.run(far, batching="vmap", **kw)
    mp = ms.run(far, batching="map", **kw)
    assert vm.config.batching == "vmap" and mp.config.batching == "map"
    assert vm.metrics.keys() == mp.metrics.keys()
    for name in vm.metrics:
        np.testing.assert_allclose(mp.metrics[name], vm.metrics[name], rtol=0, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(mp.final_probs, vm.final_probs, rtol=0, atol=1e-6)
    # Training moved the policy (the comparison is not of two flat curves).
    assert np.all(np.abs(vm.metrics["expected_reward"][:, -1] - vm.metrics["expected_reward"][:, 0]) > 1e-3)


# ----------------------------------------------------------------------------- validation

_BAD_RUNS = [
    (dict(loss="sfft"), "loss='sfft' is not valid; expected one of 'sft'"),
    (dict(sampling="online"), "sampling='online' is not valid"),
    (dict(learnig_rate=0.1), r"unknown hyperparameter\(s\) \['learnig_rate'\]; valid names are .*learning_rate"),
    (dict(steps=0), "steps=0 is invalid; expected an integer >= 1"),
    (dict(steps=2.5), "steps=2.5 is invalid"),
    (dict(seeds=0), "seeds=0 is invalid; expected an integer >= 1"),
    (dict(seed_offset=-1), "seed_offset=-1 is invalid; expected an integer >= 0"),
    (dict(devices=[]), "devices is empty; expected at least one jax device"),
    (dict(steps=7, reuse=3), "steps=7 is not a multiple of reuse=3"),
    (dict(reuse=0), "reuse=0 is invalid; expected an integer >= 1"),
    (dict(num_samples=0), "num_samples=0 is invalid"),
    (dict(num_contexts=1.5), "num_contexts=1.5 is invalid"),
    (dict(loss="forward_kl", sampling="on_policy"), "loss='forward_kl' is an analytic divergence; expected sampling='exact'"),
    (dict(loss="reverse_kl", sampling="offline"), "loss='reverse_kl' is an analytic divergence"),
    (dict(loss="dpo", num_samples=1), "num_samples=1 is too small for pair losses; expected >= 2"),
    (dict(target=np.full(100, 0.01)), "target is only used by forward_kl and reverse_kl, not loss='best_of_n'"),
    (dict(loss="forward_kl", sampling="exact", target=np.full(50, 0.02)), "target has 50 bins; expected 100"),
    (dict(loss="forward_kl", sampling="exact", target=np.full(100, 0.02)), r"target sums to 2; expected 1"),
    (dict(learning_rate=0.0), "learning_rate=0.0 is invalid; expected finite and > 0"),
    (dict(learning_rate=-1e-3), "learning_rate=-0.001 is invalid"),
    (dict(learning_rate=np.array([0.1, np.nan])), "learning_rate=nan is invalid"),
    (dict(beta=0.0), "beta=0.0 is invalid; expected finite and > 0"),
    (dict(negative_coef=-1.0), "negative_coef=-1.0 is invalid; expected finite and >= 0"),
    (dict(loss="ppo", clip_eps=0.0), "clip_eps=0.0 is invalid"),
    (dict(learning_rate=np.ones((2, 2))), r"learning_rate has shape \(2, 2\); expected a scalar or a 1-D array"),
    (dict(beta=np.array([])), "beta is an empty array"),
    (dict(data=np.full(50, 0.02)), r"data has shape \(50,\); expected \(100,\) or \(G, 100\)"),
    (dict(data=np.full(100, 0.02)), r"data\[0\] sums to 2; expected 1"),
    (dict(data=np.full((2, 100), -0.01)), r"data\[0\] has a negative entry -0.01 at bin 0"),
    (dict(train_reward=np.zeros(99)), r"train_reward has shape \(99,\); expected \(100,\) or \(G, 100\)"),
    (dict(train_reward=np.full(100, np.inf)), r"train_reward\[0\] has a non-finite entry inf at bin 0"),
    (dict(policy="cnn"), "policy='cnn' is not valid; expected one of 'tabular', 'mlp'"),
    (dict(optimizer="rmsprop"), "optimizer='rmsprop' is not valid; expected one of 'adam', 'sgd'"),
    (dict(init="ones"), "init='ones' is not valid"),
    (dict(negative="best"), "negative='best' is not valid; expected one of None, 'worst'"),
    (dict(loss="reinforce", advantage="gae"), "advantage='gae' is not valid"),
    (dict(loss="reinforce", kl_estimator="k4"), "kl_estimator='k4' is not valid"),
    (dict(loss="reinforce", kl_placement="both"), "kl_placement='both' is not valid"),
    (dict(loss="dpo", labels="human"), "labels='human' is not valid"),
    (dict(loss="dpo", pairing="random"), "pairing='random' is not valid"),
    (dict(first_batch="reference"), "first_batch='reference' is not valid; expected one of 'policy', 'data'"),
    (dict(sampling="exact", first_batch="data"), "first_batch='data' applies to sampling='on_policy' only"),
    (dict(eval_samples=-1), "eval_samples=-1 is invalid; expected an integer >= 0"),
    (dict(snapshot_every=0), "snapshot_every=0 is invalid; expected an integer >= 1"),
    (dict(batching="pmap"), "batching='pmap' is not valid; expected one of 'vmap', 'map'"),
]


@pytest.mark.parametrize("kwargs, message", _BAD_RUNS, ids=[m[:40] for _, m in _BAD_RUNS])
def test_run_validation_errors(far, kwargs, message):
    before = engine.compile_count()
    with pytest.raises(ValueError, match=message):
        _run(far, **{"seeds": 1, "key": 0, **kwargs})
    assert engine.compile_count() == before  # rejected before anything compiles


def test_run_rejects_bad_problems(far):
    with pytest.raises(ValueError, match="is not a modeseek.Problem"):
        _run("far", seeds=1)
    with pytest.raises(ValueError, match=r"swept problems must share the number of bins; got \[100, 50\]"):
        _run([far, ms.paper_bandit("far", num_bins=50)], seeds=1)


# ----------------------------------------------------------------------------- store="final"


def test_store_final_is_the_last_step_of_store_every_bit_for_bit(far):
    # A swept learning rate and sample reuse: the final step of a 2 x 3-seed grid.
    kw = dict(loss="reinforce", sampling="on_policy", steps=6, reuse=2, num_samples=4, seeds=3, key=5, learning_rate=[0.05, 0.2])
    every = ms.run(far, **kw)
    final = ms.run(far, store="final", **kw)
    assert set(final.metrics) == set(every.metrics)
    for name, v in final.metrics.items():
        assert v.shape == (2, 3, 1), name
        np.testing.assert_array_equal(v[..., 0], every.metrics[name][..., -1], err_msg=name)
    np.testing.assert_array_equal(final.eval_steps, [6])
    np.testing.assert_array_equal(final.snapshot_steps, [6])
    np.testing.assert_array_equal(final.final_probs, every.final_probs)
    np.testing.assert_array_equal(final.snapshots[:, :, 0], every.final_probs)
    df = final.to_dataframe()
    assert len(df) == 6 and set(df["step"]) == {6}


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(store="last"), "store='last' is not valid"),
        (dict(store="final", eval_every=2), "store='final' keeps the last step only"),
        (dict(store="final", snapshot_every=3), "store='final' keeps the last step only"),
    ],
)
def test_store_refusals(far, kw, match):
    with pytest.raises(ValueError, match=match):
        _run(far, **kw)
