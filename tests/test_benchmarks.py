"""The benchmark scripts of experiments/benchmarks: quick modes, JSON reports, and the naive baseline's algebra.

The quick modes run in this process (they share its compiled programs and its
single JAX device) with tiny budgets; the numbers are meaningless, only the
structure of the reports and their internal consistency are checked.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.benchmarks import baseline, cumsum, naive, paper_mlp, report, roofline, scaling, suite
from modeseek import losses, regimes
from modeseek.batches import Pairs, Points

ROOT = Path(__file__).resolve().parents[1]
HEAD = {"benchmark", "created", "quick", "machine", "results"}
MACHINE = {"cpu_count", "usable_cpus", "jax_version", "jax_backend", "jax_device_count", "load_average_1m_at_start"}
TIMING = {"runs", "steps", "compile_seconds", "run_seconds", "wall_seconds", "cpu_seconds", "seed_steps_per_s_best", "seed_steps_per_cpu_s_best"}


def _report(path: Path, what: str) -> dict:
    rep = json.loads(path.read_text())
    assert HEAD <= set(rep), set(rep)
    assert rep["benchmark"] == what and rep["quick"] is True
    assert MACHINE <= set(rep["machine"])
    # Written atomically: no temporary file is left beside the report.
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []
    return rep


def _consistent(r: dict):
    assert TIMING <= set(r), set(r)
    assert r["seed_steps_per_s_best"] == pytest.approx(r["runs"] * r["steps"] / min(r["run_seconds"]))
    assert r["seed_steps_per_cpu_s_best"] == pytest.approx(r["runs"] * r["steps"] / min(r["cpu_seconds"]))


# ----------------------------------------------------------------------------- naive baseline algebra


def test_naive_reinforce_gradient_is_the_engine_losss_gradient(far):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=100)
    y = rng.integers(0, 100, size=64)
    reward = np.asarray(far.reward, np.float64)
    loss, grad = naive.reinforce_grad(logits, y, reward)
    with jax.enable_x64(True):
        batch = Points(jnp.asarray(y), jnp.asarray(reward[y]), jnp.full(64, 1 / 64), jnp.zeros(64), jnp.asarray(64.0))

        def f(z):
            return losses.reinforce(jax.nn.log_softmax(z), batch, ref_logp=jnp.zeros(100))[0]

        ref_loss, ref_grad = jax.value_and_grad(f)(jnp.asarray(logits))
    np.testing.assert_allclose(loss, float(ref_loss), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grad, np.asarray(ref_grad), rtol=1e-10, atol=1e-14)


def test_naive_dpo_gradient_is_the_engine_losss_gradient(far):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=100)
    ref_logp = np.log(np.asarray(far.ref_probs, np.float64))
    y = rng.integers(0, 100, size=128)
    y[2] = y[3]  # a tied pair, which must be skipped
    chosen, rejected, w = naive.disjoint_pairs(y, np.asarray(far.reward, np.float64))
    assert w[1] == 0 and w.sum() == pytest.approx(1.0)
    loss, grad = naive.dpo_grad(logits, ref_logp, chosen, rejected, w, 0.1)
    with jax.enable_x64(True):
        batch = Pairs(jnp.asarray(chosen), jnp.asarray(rejected), jnp.asarray(w))

        def f(z):
            return losses.dpo(jax.nn.log_softmax(z), batch, ref_logp=jnp.asarray(ref_logp), beta=0.1)[0]

        ref_loss, ref_grad = jax.value_and_grad(f)(jnp.asarray(logits))
    np.testing.assert_allclose(loss, float(ref_loss), rtol=1e-12)
    np.testing.assert_allclose(grad, np.asarray(ref_grad), rtol=1e-10, atol=1e-14)


def test_naive_pairs_follow_the_engines_pairing_rule(far):
    # regimes.sample_pairs splits its key and draws the bins with the first half:
    # the naive rule applied to those bins must give the same pairs and weights.
    logq = jnp.log(far.ref_probs)
    for seed in range(5):
        key = jax.random.PRNGKey(seed)
        pairs = regimes.sample_pairs(key, logq, far.reward, 128, pairing="disjoint")
        y = np.asarray(regimes.sample_bins(jax.random.split(key)[0], logq, 128))
        chosen, rejected, w = naive.disjoint_pairs(y, np.asarray(far.reward))
        np.testing.assert_array_equal(np.asarray(pairs.chosen), chosen)
        np.testing.assert_array_equal(np.asarray(pairs.rejected), rejected)
        np.testing.assert_allclose(np.asarray(pairs.weight), w, rtol=1e-6)


# ----------------------------------------------------------------------------- the jit(vmap(scan)) baseline


def test_baseline_losses_are_the_engine_losses_on_the_same_batch(far):
    rng = np.random.default_rng(2)
    z = jnp.asarray(rng.normal(size=100), jnp.float32)
    reward = jnp.asarray(far.reward)
    ref_logp = jnp.log(far.ref_probs)
    y = jnp.asarray(rng.integers(0, 100, size=128))
    y = y.at[3].set(y[2])  # a tied pair, which must be skipped

    n = 64
    batch = Points(y[:n], reward[y[:n]], jnp.full(n, 1 / n), jnp.zeros(n), jnp.asarray(float(n)))
    engine = lambda zz: losses.reinforce(jax.nn.log_softmax(zz), batch, ref_logp=ref_logp)[0]  # noqa: E731
    mine = lambda zz: baseline.reinforce_loss(zz, y[:n], reward)  # noqa: E731
    np.testing.assert_allclose(jax.grad(mine)(z), jax.grad(engine)(z), rtol=1e-5, atol=1e-7)

    chosen, rejected, w = baseline.disjoint_pairs(y, reward)
    assert float(w[1]) == 0.0
    pairs = regimes.label_pairs(y[0::2], y[1::2], reward[y[0::2]] - reward[y[1::2]], None, labels="reward", min_reward_gap=0.0, bt_scale=1.0)
    np.testing.assert_array_equal(np.asarray(chosen)[np.asarray(w) > 0], np.asarray(pairs.chosen)[np.asarray(w) > 0])
    np.testing.assert_allclose(w, pairs.weight, rtol=1e-6)
    (l1, s1), g1 = jax.value_and_grad(lambda zz: baseline.dpo_loss(zz, chosen, rejected, w, ref_logp, 0.1), has_aux=True)(z)
    (l2, s2), g2 = jax.value_and_grad(lambda zz: losses.dpo(jax.nn.log_softmax(zz), pairs, ref_logp=ref_logp, beta=0.1), has_aux=True)(z)
    np.testing.assert_allclose(l1, l2, rtol=1e-6)
    np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-7)
    for k in ("chosen_logp", "rejected_logp", "margin"):
        np.testing.assert_allclose(s1[k], s2[k], rtol=1e-5, atol=1e-6)


def test_baseline_runs_the_engines_exact_algorithm(far):
    import modeseek as ms

    steps = 60
    # Exact reverse KL is deterministic: the two programs differ only in the order
    # of float32 sums (the engine's one table product against separate reductions),
    # ~1e-7 relative per step; 1e-4 after 60 Adam steps still rejects a 1% change of
    # the learning rate, which moves kl_pi_star by ~1e-2 relative here.
    lr = np.array([0.02, 0.05])
    eng = ms.run(far, loss="reverse_kl", sampling="exact", steps=steps, seeds=1, key=0, learning_rate=lr)
    base = baseline.Baseline("reverse_kl_exact", far, steps, 2, devices=jax.devices()[:1])
    out = base(0, lr)
    assert set(out) == set(eng.metrics) - {"reward_queries"}
    for k, v in out.items():
        np.testing.assert_allclose(v, eng.metrics[k].reshape(2, steps + 1), rtol=1e-4, atol=1e-6, err_msg=k)


@pytest.mark.slow
def test_baseline_samples_the_engines_algorithm(far):
    import modeseek as ms

    steps = 60
    # Sampled cases draw other random numbers: compare the mean expected reward
    # after `steps` steps over 64 seeds each, within 5 standard errors of the
    # difference of two independent means (a false failure has probability < 1e-6).
    for case, loss, opts in (("reinforce_b64", "reinforce", dict(num_samples=64)), ("dpo_64pairs", "dpo", dict(num_samples=128, pairing="disjoint"))):
        e = np.asarray(ms.run(far, loss=loss, sampling="on_policy", steps=steps, seeds=64, key=0, **opts).metrics["expected_reward"])[:, -1]
        b = baseline.Baseline(case, far, steps, 64, devices=jax.devices()[:1])(0)["expected_reward"][:, -1]
        se = np.sqrt(e.var(ddof=1) / e.size + b.var(ddof=1) / b.size)
        assert abs(e.mean() - b.mean()) < 5 * se, (case, e.mean(), b.mean(), se)
        # And training moved both far from the start (0.039): the comparison is not of two flat lines.
        assert min(e.mean(), b.mean()) > 0.039 + 10 * se, (case, e.mean(), se)


# ----------------------------------------------------------------------------- quick modes


def test_suite_quick_report(tmp_path):
    out = tmp_path / "suite.json"
    suite.main(["--quick", "--only", "reverse_kl/exact", "--seeds", "4", "--steps", "5", "--out", str(out)])
    rep = _report(out, "suite")
    assert list(rep["results"]) == ["reverse_kl/exact"]
    r = rep["results"]["reverse_kl/exact"]
    _consistent(r)
    assert r["runs"] == 4 and r["steps"] == 5 and r["family"] == "on_policy"
    # Timed against the jit(vmap(scan)) baseline in the same process: a ratio, no constant rates.
    b = r["baseline"]
    assert len(b["ratio_per_pair"]) == 1 and b["ratio_median"] == pytest.approx(b["wall_seconds"][0] / r["wall_seconds"][0])
    t = rep["targets"]["reverse_kl/exact"]
    assert t["required_ratio"] == 1.5 and t["met"] == (t["ratio_median"] >= 1.5)
    assert "reference_seed_steps_per_s" not in rep
    md = report.markdown(tmp_path)
    assert f"| reverse_kl/exact | x{t['ratio_median']:.2f} |" in md
    assert "| reverse_kl (on_policy) | - | - |" in md


def test_suite_lists_every_loss_in_every_valid_regime():
    names = [c.name for c in suite.cases()]
    assert len(names) == len(set(names)) == 8 * 4 + 2 * 2
    assert "reverse_kl/exact_offline" in names and "forward_kl/on_policy" not in names
    assert set(suite.BASELINE) <= set(names) and set(suite.BASELINE.values()) == set(baseline.CASES)


def test_scaling_quick_report(tmp_path):
    out = tmp_path / "scaling.json"
    scaling.main(["--quick", "--axes", "seeds", "--budget", "16", "--out", str(out)])
    rep = _report(out, "scaling")
    pts = rep["results"]["seeds"]["reverse_kl_exact"]
    assert [p["seeds"] for p in pts] == [1, 4]
    # Steps shrink as seeds grow (budget 16 seed-steps), but never below 100.
    assert [p["steps"] for p in pts] == [100, 100]
    for p in pts:
        _consistent(p)
    assert any("K x K" in s for s in rep["limitations"])


def test_naive_quick_report(tmp_path):
    out = tmp_path / "naive.json"
    naive.main(["--quick", "--only", "reinforce_b64", "--seeds", "1", "2", "--steps", "5", "--out", str(out)])
    rep = _report(out, "naive")
    r = rep["results"]["reinforce_b64"]
    assert r["naive"]["seeds"] == 1 and r["naive"]["steps"] == 5
    for p in r["points"]:
        # Linear extrapolation of the naive loop, as the report states.
        assert p["naive_wall_seconds_extrapolated"] == pytest.approx(p["seeds"] * 5 * r["naive"]["wall_seconds_per_seed_step"])
        assert p["speedup_wall"] == pytest.approx(p["naive_wall_seconds_extrapolated"] / p["engine_run_seconds"])
    t = rep["target"]
    assert t["at_seeds"] == 2 and t["required_speedup"] == 1000.0
    assert t["reinforce_b64"]["met"] == (t["reinforce_b64"]["speedup_wall"] >= 1000.0)
    assert 0.0 <= r["check_final_expected_reward"]["naive_mean"] <= 1.0
    assert report.markdown(tmp_path).count("| reinforce_b64 |") == 2


def test_roofline_quick_report(tmp_path):
    out = tmp_path / "roofline.json"
    roofline.main(["--quick", "--only", "reverse_kl/exact", "--repeats", "1", "--out", str(out)])
    rep = _report(out, "roofline")
    lim = rep["machine_limits"]
    for key in ("elementwise_flops_per_s", "transcendentals_per_s", "matmul_flops_per_s", "numpy_copy_bytes_per_s"):
        assert lim[key]["per_s_cpu"] > 0, key
    assert set(lim["bandwidth_bytes_per_s"]) == {"l2", "l3", "dram"}
    r = rep["results"]["reverse_kl/exact"]
    c = r["per_seed_step"]
    # Exact reverse KL over K = 100 bins: at least a softmax (K exps) and its
    # gradient per step, so flops and transcendentals scale with K.
    assert c["flops"] > 5 * 100 and 100 <= c["transcendentals"] < 100 * 100 and c["bytes"] > 4 * 100
    assert r["limit"]["seconds"] == pytest.approx(max(r["limit"]["seconds_compute"], r["limit"]["seconds_memory"]))
    assert r["fraction_of_limit_cpu"] == pytest.approx(r["seed_steps_per_cpu_s"] * r["limit"]["seconds"])


def test_step_cost_grows_with_the_number_of_bins():
    import modeseek as ms

    small = roofline.step_cost("reverse_kl", "exact", {}, ms.paper_bandit("far", num_bins=50))
    big = roofline.step_cost("reverse_kl", "exact", {}, ms.paper_bandit("far", num_bins=500))
    # O(K) per step: ten times the bins, about ten times the work (fixed per-step
    # costs such as the Adam step counter make it a little less).
    for key in ("flops", "transcendentals", "bytes"):
        assert 7 < big[key] / small[key] < 11, (key, small, big)


@pytest.mark.slow
def test_paper_mlp_quick_report(tmp_path):
    # Compiles two MLP programs per host device, hence slow.
    out = tmp_path / "paper_mlp.json"
    # With --device, as experiments.benchmarks.all passes it to every script.
    paper_mlp.main(["--quick", "--seeds", "1", "2", "--repeats", "1", "--steps", "15", "--device", "cpu", "--out", str(out)])
    rep = _report(out, "paper_mlp")
    case = rep["results"][paper_mlp.CASE]
    assert set(case["compile_seconds"]) == set(paper_mlp.IMPLEMENTATIONS)
    assert [r["seeds"] for r in case["rows"]] == [1, 2]
    for r in case["rows"]:
        assert r["speedup_over_vmap"] == pytest.approx(r["seconds_median"]["vmap"] / r["seconds_median"]["map"])
        # The two implementations differ in the last bits only (15 steps at lr 1e-3).
        assert max(r["max_abs_difference"].values()) < 1e-4, r["max_abs_difference"]
    assert "target" not in case  # only a full-size run (100 seeds x 1500 steps) is checked against 60 s


@pytest.mark.slow
def test_cumsum_quick_report(tmp_path):
    # Compiles each engine case twice (one program per cumulative sum), hence slow.
    from modeseek import regimes

    fast = regimes.prefix_sums
    out = tmp_path / "cumsum.json"
    cumsum.main(["--quick", "--repeats", "2", "--device", "cpu", "--out", str(out)])
    res = _report(out, "cumsum")["results"]
    assert [k["rows"] for k in res["kernel"]] == [128, 100]
    assert [e["case"] for e in res["engine"]] == ["reinforce_b64", "dpo_64pairs", "paper_mlp_on_policy_bon"]
    for r in res["kernel"] + res["engine"]:
        assert len(r["seconds"]["cumsum"]) == len(r["seconds"]["prefix_sums"]) == 2
        assert r["ratio_median"] == pytest.approx(statistics.median(c / f for c, f in zip(r["seconds"]["cumsum"], r["seconds"]["prefix_sums"])))
    # The swapped sampler is put back.
    assert regimes.prefix_sums is fast


@pytest.mark.slow
def test_all_quick_writes_every_report_and_the_summary(tmp_path):
    env = dict(os.environ, MPLBACKEND="Agg")
    res = subprocess.run(
        [sys.executable, "-m", "experiments.benchmarks.all", "--quick", "--out-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    names = {p.name for p in tmp_path.iterdir()}
    assert {"throughput.json", "suite.json", "scaling.json", "naive.json", "paper_mlp.json", "roofline.json", "memory.json", "sequences.json", "summary.json", "summary.md"} <= names
    s = json.loads((tmp_path / "summary.json").read_text())
    assert set(s["target_vs_baseline"]) == {"reverse_kl_exact", "reinforce_b64", "dpo_64pairs"}
    assert {"reinforce_b64", "dpo_64pairs"} <= set(s["target_1000x_naive"])
    assert set(s["fraction_of_limit"]) == {"reverse_kl/exact", "reinforce/on_policy"}
    assert set(s["suite_target_vs_baseline"]) == {"reverse_kl/exact", "reinforce/on_policy", "dpo/on_policy"}
    assert s["memory"]["fit"]["bytes_per_stored_seed_step"] > 0 and "vmap10" in s["sequences_ten_seed_over_one_seed_wall"]
    assert "summary" in res.stdout


def test_sequence_benchmark_work_model_and_matmul_floor():
    from experiments.benchmarks import sequences as seqbench

    # Work model by hand for one layer, d = 2, V = 3, L = 1 (t = 2), B = 1:
    # per token 12 d^2 + 2 t d + d V = 48 + 8 + 6 = 62 multiply-adds;
    # gradient 3 x B t tokens + sampling B L tokens = 7 token passes.
    assert seqbench.step_gflop(vocab=3, length=1, layers=1, embed=2, batch=1) == 2 * 62 * 7 / 1e9
    # The gpt-nano default the README quotes.
    assert round(seqbench.step_gflop(), 2) == 0.71
    one = seqbench.matmul_floor(1, repeats=2, vocab=5, length=2, layers=1, embed=8, batch=3)
    two = seqbench.matmul_floor(2, repeats=2, vocab=5, length=2, layers=1, embed=8, batch=3)
    assert one["seeds"] == 1 and two["seeds"] == 2
    assert one["seconds"] > 0 and two["seconds"] > 0


def test_device_gpu_refused_in_one_line_without_a_gpu():
    from experiments.benchmarks import common

    if jax.default_backend() == "gpu":
        pytest.skip("a GPU is visible")
    with pytest.raises(SystemExit, match=r"^--device gpu: no GPU is visible to JAX") as e:
        common.configure_device("gpu")
    assert "\n" not in str(e.value)
    with pytest.raises(SystemExit, match=r"--device 'tpu' is not valid; expected one of cpu, gpu"):
        common.configure_device("tpu")


def test_memory_fit_recovers_a_line():
    from experiments.benchmarks import memory

    # 400 MB fixed + 60 B per stored seed-step, exactly.
    pts = [{"seeds": s, "stored_steps": t, "peak_rss_bytes": 400e6 + 60 * s * t} for s, t in ((1024, 1001), (512, 1001), (1024, 251))]
    f = memory.fit(pts)
    assert f["bytes_per_stored_seed_step"] == pytest.approx(60) and f["fixed_bytes"] == pytest.approx(400e6)
    assert f["max_relative_residual"] < 1e-9
