"""The one run loop: every policy kind through modeseek.run, traced schedules, arms, make_train."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import modeseek as ms
from modeseek import engine


@pytest.fixture(scope="module")
def far():
    return ms.paper_bandit("far")


@pytest.fixture(scope="module")
def seq():
    return ms.sequences.paper_sequence_bandit("far", vocab=6, length=3)


def test_sweeping_reuse_and_num_samples_compiles_one_program(far):
    before = engine.compile_count()
    tr = ms.run(far, loss="reinforce", reuse=[1, 2, 5, 10], num_samples=[10, 20], steps=30, seeds=2, key=5)
    assert engine.compile_count() - before == 1
    assert tr.grid_shape == (4, 2) and tr.metrics["expected_reward"].shape == (4, 2, 2, 31)
    # Other values up to the same largest num_samples reuse the program.
    again = ms.run(far, loss="reinforce", reuse=[3], num_samples=[7], max_samples=20, steps=30, seeds=2, key=5)
    assert engine.compile_count() - before == 1
    # Reward queries follow each run's own schedule: ceil(t / T) collections of N per context.
    t = np.arange(31)
    np.testing.assert_array_equal(tr.metrics["reward_queries"][2, 1, 0], np.ceil(t / 5) * 20)
    np.testing.assert_array_equal(again.metrics["reward_queries"][0, 0, 0], np.ceil(t / 3) * 7)


def test_traced_schedule_equals_the_static_one(far):
    kw = dict(loss="best_of_n", steps=12, seeds=3, key=2)
    static = ms.run(far, reuse=3, num_samples=6, **kw)
    traced = ms.run(far, reuse=[3], num_samples=[6], **kw)
    np.testing.assert_array_equal(traced.metrics["expected_reward"][0, 0], static.metrics["expected_reward"])
    # Drawn at a larger size and masked: the same draws (prefix-stable uniforms), up to float rounding.
    wide = ms.run(far, reuse=[3], num_samples=[6], max_samples=16, **kw)
    np.testing.assert_allclose(wide.metrics["expected_reward"][0, 0], static.metrics["expected_reward"], atol=1e-5)


def test_minibatches_slide_over_one_batch(far):
    # One pass over a batch of 8 in minibatches of 4 (reuse 2): each step sees new responses;
    # with minibatch = num_samples the same run reuses the whole batch twice.
    kw = dict(loss="reinforce", steps=8, seeds=2, key=1, reuse=[2], num_samples=[8])
    half = ms.run(far, minibatch=[4], **kw)
    whole = ms.run(far, minibatch=[8], **kw)
    assert not np.array_equal(half.metrics["train_loss"], whole.metrics["train_loss"])
    np.testing.assert_array_equal(half.metrics["reward_queries"], whole.metrics["reward_queries"])
    with pytest.raises(ValueError, match="minibatch=9 exceeds num_samples=8"):
        ms.run(far, minibatch=[9], **kw)
    with pytest.raises(ValueError, match="steps=8 is not a multiple of reuse=3"):
        ms.run(far, loss="reinforce", steps=8, reuse=[2, 3], num_samples=4)
    with pytest.raises(ValueError, match="traced schedule"):
        ms.run(far, loss="dpo", steps=8, reuse=[1, 2])
    with pytest.raises(ValueError, match="max_samples applies to a traced schedule"):
        ms.run(far, loss="reinforce", steps=8, max_samples=20)


def test_bandit_arms_share_a_program_and_match_separate_runs(far):
    kw = dict(loss="best_of_n", steps=10, seeds=2, key=3, num_samples=4)
    before = engine.compile_count()
    tr = ms.run(far, arms=[dict(sampling="offline", label="off"), dict(sampling="on_policy", learning_rate=0.1, label="on")], **kw)
    assert engine.compile_count() - before == 1
    assert list(tr.grid["arm"]) == ["off", "on"] and list(tr.arm_values["sampling"]) == ["offline", "on_policy"]
    off = ms.run(far, sampling="offline", **kw)
    on = ms.run(far, sampling="on_policy", learning_rate=0.1, **kw)
    np.testing.assert_allclose(tr.metrics["expected_reward"][0], off.metrics["expected_reward"], atol=1e-5)
    np.testing.assert_allclose(tr.metrics["expected_reward"][1], on.metrics["expected_reward"], atol=1e-5)
    np.testing.assert_array_equal(tr.metrics["reward_queries"][0, 0], off.metrics["reward_queries"][0])
    np.testing.assert_array_equal(tr.metrics["reward_queries"][1, 0], on.metrics["reward_queries"][0])


def test_sequences_get_paired_axes_seed_offsets_and_eval_every(seq):
    kw = dict(loss="reinforce", policy="factorised", steps=6, num_contexts=2, num_samples=4, key=7)
    tr = ms.run(seq, seeds=3, learning_rate=[0.05, 0.1], beta=[0.1, 0.2], paired=("learning_rate", "beta"), eval_every=2, **kw)
    assert tr.grid_shape == (2,) and tr.metrics["expected_reward"].shape == (2, 3, 4)
    np.testing.assert_array_equal(tr.eval_steps, [0, 2, 4, 6])
    one = ms.run(seq, seeds=1, seed_offset=2, learning_rate=0.1, beta=0.2, eval_every=2, **kw)
    np.testing.assert_array_equal(one.metrics["expected_reward"][0], tr.metrics["expected_reward"][1, 2])
    df = tr.to_dataframe()
    assert set(df["seed"]) == {0, 1, 2} and {"learning_rate", "beta", "ratio", "shift"} <= set(df.columns)


def test_sequences_sweep_reuse_in_one_program_with_the_static_bits(seq):
    kw = dict(loss="reinforce", policy="factorised", steps=4, num_contexts=2, num_samples=4, seeds=2, key=1)
    before = engine.compile_count()
    tr = ms.run(seq, reuse=[1, 4], **kw)
    assert engine.compile_count() - before == 1
    for j, r in enumerate([1, 4]):
        static = ms.run(seq, reuse=r, **kw)
        for name in ("expected_reward", "train_loss", "reward_queries"):
            np.testing.assert_array_equal(tr.metrics[name][j], static.metrics[name], err_msg=f"{name}, reuse {r}")


@pytest.mark.slow
def test_bandits_get_eval_every(far):
    dense = ms.run(far, loss="reinforce", steps=10, seeds=2, key=4)
    sparse = ms.run(far, loss="reinforce", steps=10, seeds=2, key=4, eval_every=5)
    np.testing.assert_array_equal(sparse.eval_steps, [0, 5, 10])
    np.testing.assert_allclose(sparse.metrics["expected_reward"], dense.metrics["expected_reward"][..., [0, 5, 10]], atol=1e-6)


def test_make_train_is_a_pure_per_run_function(far):
    cfg = engine.RunConfig(loss="reinforce", sampling="on_policy", steps=20, num_bins=far.num_bins, snapshot_every=20)
    train = jax.jit(jax.vmap(ms.make_train(cfg)))
    runs = 3
    keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.PRNGKey(9), jnp.arange(runs, dtype=jnp.uint32))
    hp = engine.HyperParams(**{n: jnp.full((runs,), v if v is not None else 5.0, jnp.float32) for n, v in vars(engine.HyperParams()).items()})
    k = far.num_bins
    ref = jnp.broadcast_to(far.ref_probs, (runs, k))
    rew = jnp.broadcast_to(far.reward, (runs, k))
    arrays = {"ref_probs": ref, "reward": rew, "train_reward": rew, "data_probs": ref, "target_probs": jnp.zeros((runs, k)), "offline": jnp.zeros((runs,), bool)}
    out = train(keys, hp, arrays)
    tr = ms.run(far, loss="reinforce", steps=20, seeds=runs, key=9, snapshot_every=20)
    np.testing.assert_allclose(np.asarray(out["metrics"]["expected_reward"]), tr.metrics["expected_reward"], atol=1e-5)
    assert out["final"].shape == (runs, k)


def test_kind_specific_options_are_refused(far, seq):
    with pytest.raises(ValueError, match="shift applies to sequence problems only"):
        ms.run(far, loss="reinforce", shift="authors")
    with pytest.raises(ValueError, match="data, target and train_reward apply to bandit problems only"):
        ms.run(seq, loss="reinforce", policy="factorised", data=np.ones(6) / 6)
    with pytest.raises(ValueError, match="sequence runs sweep reuse only"):
        ms.run(seq, loss="reinforce", policy="factorised", num_samples=[4, 8])
    with pytest.raises(ValueError, match="minibatch applies to bandit problems only"):
        ms.run(seq, loss="reinforce", policy="factorised", minibatch=[2])
    with pytest.raises(ValueError, match="expected problems of one kind"):
        ms.run([far, seq], loss="reinforce")


def test_snapshots_dataframe_for_both_kinds(far, seq):
    tr = ms.run(far, loss="reinforce", steps=10, seeds=2, key=1, beta=[0.1, 0.2], snapshot_every=5)
    df = tr.snapshots_dataframe(mean_over_seeds=False)
    assert len(df) == 2 * 2 * 3 * far.num_bins
    row = df[(df.beta == 0.2) & (df.seed == 1) & (df.step == 5) & (df.bin == 70)]
    assert float(row.prob.iloc[0]) == pytest.approx(float(tr.snapshots[1, 1, 1, 70]))
    st = ms.run(seq, loss="reinforce", policy="factorised", steps=4, seeds=2, key=1, num_contexts=2, num_samples=4, snapshot_every=2)
    mean = st.snapshots_dataframe()
    assert len(mean) == 3 * 3 * 6 and set(mean.position) == {1, 2, 3}
    cell = mean[(mean.step == 4) & (mean.position == 2) & (mean.token == 5)]
    assert float(cell.prob.iloc[0]) == pytest.approx(float(st.snapshots[:, 2, 1, 5].mean()))
    np.testing.assert_allclose(mean.groupby(["step", "position"]).prob.sum(), 1.0, atol=1e-5)


def test_first_batch_data_is_ignored_offline_and_refused_for_exact(far):
    kw = dict(loss="best_of_n", steps=4, seeds=1, key=2, num_samples=4)
    with_flag = ms.run(far, sampling="offline", first_batch="data", **kw)
    plain = ms.run(far, sampling="offline", **kw)
    np.testing.assert_array_equal(with_flag.metrics["expected_reward"], plain.metrics["expected_reward"])
    with pytest.raises(ValueError, match="first_batch='data' applies to sampling='on_policy' only"):
        ms.run(far, sampling="exact", first_batch="data", **kw)


@pytest.mark.slow
def test_sequence_presets_run():
    from modeseek.sequences import problems

    for prob in (problems.length_problem(length=3, vocab=6), problems.sparse_problem(1, 4, length=3, vocab=6)):
        tr = ms.run(prob, loss="reinforce", policy="factorised", steps=2, num_contexts=2, num_samples=4)
        assert np.all(np.isfinite(tr.metrics["expected_reward"]))


def test_store_final_on_a_sequence_problem(seq):
    kw = dict(loss="reinforce", policy="factorised", steps=4, num_contexts=2, num_samples=4, seeds=2, key=1)
    every = ms.run(seq, **kw)
    final = ms.run(seq, store="final", **kw)
    for name, v in final.metrics.items():
        np.testing.assert_array_equal(v[..., 0], every.metrics[name][..., -1], err_msg=name)
    assert final.snapshots.shape == (2, 1) + every.final_probs.shape[1:]
    np.testing.assert_array_equal(final.snapshots[:, 0], every.final_probs)
