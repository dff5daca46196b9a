"""The ``modeseek`` command line (run, list, reproduce) and the throughput benchmark script."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modeseek import cli, losses, problems

ROOT = Path(__file__).resolve().parents[1]

# One small static configuration shared by the run tests: 4 runs either as 4 seeds
# or as 2 learning rates x 2 seeds, so the second test reuses the compiled program.
# --no-cache: the persistent cache is process-wide state (tested in a subprocess below).
RUN = ["run", "--problem", "far", "--loss", "dpo", "--sampling", "on_policy", "--steps", "12", "--num-samples", "4", "--no-cache"]


def _python(*args, timeout=600):
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_run_writes_tidy_parquet_atomically(tmp_path, capsys):
    out = tmp_path / "runs" / "dpo.parquet"
    assert cli.main([*RUN, "--seeds", "4", "--seed", "3", "--beta", "0.2", "--out", str(out)]) == 0
    df = pd.read_parquet(out)
    assert len(df) == 4 * 13
    assert sorted(df["seed"].unique()) == [0, 1, 2, 3]
    assert df["step"].min() == 0 and df["step"].max() == 12
    for col in ("expected_reward", "kl_pi_ref", "margin", "loss", "sampling", "problem", "beta", "learning_rate"):
        assert col in df.columns, col
    assert set(df["loss"]) == {"dpo"} and set(df["sampling"]) == {"on_policy"} and set(df["problem"]) == {"far"}
    assert np.allclose(df["beta"], 0.2)
    # Only the final file is left: the temporary name was renamed away.
    assert os.listdir(out.parent) == [out.name]
    # The printed summary is the mean over seeds of the table's final expected reward.
    text = capsys.readouterr().out
    final = df.loc[df["step"] == 12, "expected_reward"].mean()
    assert f"final expected reward {final:.4f}" in text
    assert "compile" in text and f"wrote {len(df)} rows" in text


def test_run_sweeps_several_values(tmp_path, capsys):
    out = tmp_path / "sweep.parquet"
    assert cli.main([*RUN, "--seeds", "2", "--learning-rate", "0.02", "0.2", "--out", str(out)]) == 0
    df = pd.read_parquet(out)
    assert len(df) == 2 * 2 * 13
    assert sorted(df["learning_rate"].unique()) == pytest.approx([0.02, 0.2])
    text = capsys.readouterr().out
    assert "[learning_rate=0.02]" in text and "[learning_rate=0.2]" in text


def test_run_refuses_to_overwrite_without_force(tmp_path, capsys):
    out = tmp_path / "runs.parquet"
    out.write_bytes(b"earlier results")
    with pytest.raises(SystemExit) as exc:
        cli.main([*RUN, "--seeds", "2", "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and repr(str(out)) in err and "--force" in err
    assert out.read_bytes() == b"earlier results"
    # --overwrite is the same flag as --force.
    for flag in ("--force", "--overwrite"):
        out.write_bytes(b"earlier results")
        assert cli.main([*RUN, "--seeds", "2", "--out", str(out), flag]) == 0
        assert len(pd.read_parquet(out)) == 2 * 13


@pytest.mark.parametrize(
    "args, named",
    [
        (["run", "--loss", "dpoo"], "loss='dpoo'"),
        (["run", "--loss", "dpo", "--problem", "middle"], "problem='middle'"),
        (["run", "--loss", "dpo", "--sampling", "sometimes"], "sampling='sometimes'"),
        (["run", "--loss", "dpo", "--beta", "-1"], "beta=-1"),
        (["run", "--loss", "reverse_kl", "--sampling", "on_policy"], "loss='reverse_kl'"),
        (["reproduce", "--only", "no_such_figure"], "no_such_figure"),
    ],
)
def test_bad_values_fail_cleanly(args, named, capsys, tmp_path):
    if args[0] == "reproduce":
        args = [*args, "--out", str(tmp_path)]
    else:
        args = [*args, "--out", str(tmp_path / "x.parquet")]
    with pytest.raises(SystemExit) as exc:
        cli.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert named in err and "error" in err and "Traceback" not in err
    assert not (tmp_path / "x.parquet").exists()


def test_reproduce_rejects_unknown_piece_before_creating_the_folder(tmp_path, capsys):
    out = tmp_path / "new" / "figures"
    with pytest.raises(SystemExit) as exc:
        cli.main(["reproduce", "--smoke", "--only", "bogus", "--out", str(out)])
    assert exc.value.code == 2
    assert "bogus" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def _unwritable(kind: str, tmp_path: Path) -> Path:
    """A folder that cannot hold new files: under a regular file, in /proc, or read-only."""
    if kind == "parent_is_file":
        (tmp_path / "file").write_text("x")
        return tmp_path / "file" / "sub"
    if kind == "proc":
        return Path("/proc") / "modeseek-test"
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


@pytest.mark.parametrize("kind", ["parent_is_file", "proc", "read_only"])
@pytest.mark.parametrize("command", ["run", "sweep", "reproduce"])
def test_unwritable_out_fails_before_computing(command, kind, tmp_path, capsys, monkeypatch):
    import modeseek
    from modeseek import sweep
    from modeseek.paper import reproduce as rp

    def compute(*args, **kwargs):
        raise AssertionError("computed before checking that --out can be written")

    monkeypatch.setattr(modeseek, "run", compute)
    monkeypatch.setattr(sweep, "_run_chunks", compute)
    monkeypatch.setattr(rp, "pieces", lambda: [rp.Piece("fake", "Fake", compute)])
    folder = _unwritable(kind, tmp_path)
    out = folder / "runs.parquet" if command == "run" else folder
    args = {
        "run": [*RUN, "--seeds", "2"],
        "sweep": ["sweep", "--loss", "reinforce", "--steps", "2", "--seeds", "2", "--no-progress"],
        "reproduce": ["reproduce", "--smoke"],
    }[command]
    with pytest.raises(SystemExit) as exc:
        cli.main([*args, "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"--out {str(out)!r} cannot be written" in err, err


def test_run_fills_the_persistent_compilation_cache(tmp_path):
    cache = tmp_path / "cache"
    env = dict(os.environ, MPLBACKEND="Agg", MODESEEK_CACHE_DIR=str(cache))
    args = [sys.executable, "-m", "modeseek.cli", "run", "--loss", "dpo", "--steps", "3", "--seeds", "2", "--num-samples", "2"]
    res = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert any(p.is_file() for p in cache.rglob("*")), "no compiled program was stored"


@pytest.mark.parametrize("flags, expected", [([], ["cache", "make"]), (["--no-cache"], ["make"])])
def test_reproduce_turns_on_the_cache_before_computing(flags, expected, tmp_path, monkeypatch):
    from modeseek import engine
    from modeseek.paper import reproduce as rp

    calls = []

    def make(out_dir, smoke):
        calls.append("make")
        return []

    monkeypatch.setattr(engine, "enable_compilation_cache", lambda: calls.append("cache"))
    monkeypatch.setattr(rp, "pieces", lambda: [rp.Piece("fake", "Fake", make)])
    assert cli.main(["reproduce", "--smoke", "--out", str(tmp_path), *flags]) == 0
    assert calls == expected


def test_unparsable_flag_exits_nonzero(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--loss", "dpo", "--steps", "many"])
    assert exc.value.code != 0
    assert "many" in capsys.readouterr().err


def test_list_via_console_entry_point():
    res = _python("-m", "modeseek.cli", "list", timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    for name in losses.names():
        spec = losses.get(name)
        # Name, family, the batch it consumes, policies, the source it cites, summary.
        assert any(line.split()[:4] == [name, spec.family, spec.batch, ",".join(spec.policies)] and spec.source in line and spec.summary in line for line in lines), name
        assert spec.source.startswith(("arXiv 2", "arXiv 1", "docs/paper.md §")), (name, spec.source)
        assert ("transformer" in ",".join(spec.policies)) == (name not in ("forward_kl", "reverse_kl", "remax", "nash_md", "xpo", "mirror_descent", "spo_exact")), name
    for name in ("offline", "on_policy", "exact", "exact_offline", "tabular", "mlp", *problems.presets()):
        assert any(line.split()[:1] == [name] for line in lines), name


def test_run_command_exposes_every_bandit_option():
    """Every traced hyperparameter and every static option a bandit run reads is a flag of modeseek run."""
    from modeseek import engine

    flags = {f.name for f in dataclasses.fields(cli.RunCommand)}
    traced = set(engine._TRACED_FIELDS)
    # Static fields the command sets itself or that only sequence runs and the engine's internals read.
    not_flags = engine._SEQUENCE_ONLY | {"block", "num_eval_contexts"}
    static = engine._STATIC_FIELDS - not_flags
    assert traced <= flags, sorted(traced - flags)
    assert static <= flags, sorted(static - flags)


def test_import_and_help_are_light():
    heavy = "('jax', 'numpy', 'pandas', 'matplotlib', 'modeseek.paper')"
    code = (
        "import sys, modeseek.cli\n"
        f"print(sorted(m for m in {heavy} if m in sys.modules))\n"
        "try:\n    modeseek.cli.main(['run', '--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
        f"print(sorted(m for m in {heavy} if m in sys.modules))\n"
    )
    res = _python("-c", code, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[0] == "[]" and res.stdout.strip().splitlines()[-1] == "[]"
    assert "--loss" in res.stdout
    res = _python("-m", "modeseek.cli", "--help", timeout=120)
    assert res.returncode == 0 and "reproduce" in res.stdout, res.stderr


def test_lazy_package_keeps_every_public_name():
    code = (
        "import sys, modeseek as ms\n"
        "assert 'jax' not in sys.modules\n"
        "from modeseek import run, Problem, losses\n"
        "assert run is ms.run is ms.engine.run and Problem is ms.problems.Problem and losses is ms.losses\n"
        "missing = [n for n in ms.__all__ if not hasattr(ms, n)]\n"
        "assert not missing, missing\n"
        "assert set(ms.__all__) <= set(dir(ms))\n"
        "assert not hasattr(ms, 'no_such_name')\n"
        "print(ms.run(ms.paper_bandit('far'), loss='reverse_kl', sampling='exact', steps=2, seeds=1).seeds)\n"
    )
    res = _python("-c", code, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "1"


def test_reproduce_smoke_only_filmstrips(tmp_path, capsys):
    assert cli.main(["reproduce", "--out", str(tmp_path), "--smoke", "--only", "filmstrips"]) == 0
    text = capsys.readouterr().out
    assert "filmstrips" in text and "claims pass" in text
    assert list(tmp_path.glob("*.png")), "no figure written"
    assert list(tmp_path.glob("filmstrips*.md")), "no caption written"
    assert list((tmp_path / "data").glob("filmstrips*.parquet")), "no data table written"
    report = (tmp_path / "CLAIMS.md").read_text()
    assert "filmstrips" in report
    # A second call finds the piece finished and skips it.
    assert cli.main(["reproduce", "--out", str(tmp_path), "--smoke", "--only", "filmstrips"]) == 0
    assert "already done" in capsys.readouterr().out


# ----------------------------------------------------------------------------- benchmark

BENCH_KEYS = {"created", "quick", "settings", "machine", "results", "targets"}
CASE_KEYS = {
    "compile_seconds",
    "run_seconds",
    "wall_seconds",
    "cpu_seconds",
    "seed_steps_per_s_best",
    "seed_steps_per_s_median",
    "seed_steps_per_cpu_s_best",
    "final_expected_reward_std_over_runs",
    "metric_names",
    "runs",
    "steps",
}


def _check_bench(path: Path, cases: list[str], runs: int, steps: int):
    report = json.loads(path.read_text())
    assert BENCH_KEYS <= set(report)
    assert {"cpu_count", "jax_version", "platform", "jax_backend"} <= set(report["machine"])
    assert "reference_seed_steps_per_s" not in report  # no constant rates measured elsewhere
    assert sorted(report["results"]) == sorted(cases)
    compared = [c for c in cases if c != "dpo_66pairs_all"]
    assert sorted(report["targets"]) == sorted(compared)
    for name, r in report["results"].items():
        assert CASE_KEYS <= set(r), name
        assert r["runs"] == runs and r["steps"] == steps
        # The engine returns what the baseline does: metrics at every step, the policy at the ends only.
        assert r["engine_options"] == {"snapshot_every": steps}
        # Rates follow from the timings: best = runs * steps / fastest timed call.
        assert r["seed_steps_per_s_best"] == pytest.approx(runs * steps / min(r["run_seconds"]))
        assert r["seed_steps_per_s_best"] >= r["seed_steps_per_s_median"] > 0
        # Every run differs (distinct learning rates or keys), so the batch is not collapsed.
        assert r["final_expected_reward_std_over_runs"] > 0
        if name not in compared:
            assert "baseline" not in r
            continue
        b, t = r["baseline"], report["targets"][name]
        # One ratio per alternating pair of whole calls: baseline seconds / engine seconds.
        assert b["ratio_per_pair"] == pytest.approx([x / y for x, y in zip(b["wall_seconds"], r["wall_seconds"])])
        assert len(b["ratio_per_pair"]) == len(r["wall_seconds"])
        assert b["ratio_min"] <= b["ratio_median"] <= b["ratio_max"]
        assert t["met"] == (b["ratio_median"] >= t["required_ratio"] == 1.5)
        # The baseline records the engine's metrics (reward_queries is the engine's host-side count).
        assert set(b["metrics"]) == set(r["metric_names"]) - {"reward_queries"}
        assert b["final_expected_reward_std_over_runs"] > 0
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_benchmark_quick_one_case(tmp_path):
    out = tmp_path / "bench.json"
    res = _python(
        "-m",
        "experiments.benchmarks.throughput",
        "--quick",
        "--only",
        "reverse_kl_exact",
        "--seeds",
        "16",
        "--steps",
        "20",
        "--repeats",
        "2",
        "--out",
        str(out),
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert "reverse_kl_exact" in res.stdout and "seed-steps/s" in res.stdout
    _check_bench(out, ["reverse_kl_exact"], runs=16, steps=20)


@pytest.mark.slow
def test_benchmark_quick_all_cases(tmp_path):
    out = tmp_path / "bench.json"
    res = _python("-m", "experiments.benchmarks.throughput", "--quick", "--out", str(out), timeout=900)
    assert res.returncode == 0, res.stderr
    _check_bench(out, ["reverse_kl_exact", "reinforce_b64", "dpo_64pairs", "dpo_66pairs_all"], runs=64, steps=100)
