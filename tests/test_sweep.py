"""Chunked, resumable, multi-process sweeps (modeseek.sweep, ``modeseek sweep`` / ``modeseek merge``).

One small sweep is shared by every test: REINFORCE on-policy on the far bandit,
2 learning rates x 10 seeds x 4 steps in chunks of 4 seeds (chunks 0-3, 4-7 and
8-9, the last padded to 4 seeds), so each worker compiles two programs (a chunk
of 8 runs and the unsplit sweep of 20 runs) and every later sweep reuses them.
On-policy sampling makes every seed's trajectory different, so a seed run with
the wrong key or a row put in the wrong place changes the table.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pandas as pd
import pytest

import modeseek as ms
from modeseek import _files, cli, engine, sweep
from modeseek import _xla as modeseek_xla

ROOT = Path(__file__).resolve().parents[1]

SPEC = sweep.SweepSpec(
    loss="reinforce",
    sampling="on_policy",
    problems=("far",),
    steps=4,
    seeds=10,
    chunk_seeds=4,
    key=3,
    options={"num_samples": 2},
    grid={"learning_rate": (0.01, 0.03)},
)
# The same sweep on the command line.
CLI_ARGS = [
    "--problem",
    "far",
    "--loss",
    "reinforce",
    "--sampling",
    "on_policy",
    "--steps",
    "4",
    "--num-samples",
    "2",
    "--seeds",
    "10",
    "--chunk-seeds",
    "4",
    "--seed",
    "3",
    "--learning-rate",
    "0.01",
    "0.03",
    "--no-progress",
]


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    """The unsplit sweep: one modeseek.run call with all 10 seeds."""
    return ms.run(**SPEC.run_kwargs(), seeds=SPEC.seeds).to_dataframe()


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """SPEC run once in-process; returns (folder, SweepResult, programs compiled during the sweep)."""
    out = tmp_path_factory.mktemp("sweep")
    before = engine.compile_count()
    result = sweep.run_sweep(SPEC, out, progress=False)
    return out, result, engine.compile_count() - before


def _copy(swept, tmp_path) -> Path:
    out = tmp_path / "sweep"
    shutil.copytree(swept[0], out)
    return out


def _merged(out: Path) -> pd.DataFrame:
    return pd.read_parquet(out / sweep.MERGED)


def test_chunked_sweep_equals_one_run_bit_for_bit(swept, reference):
    out, result, compiles = swept
    assert result.computed == (0, 1, 2) and result.skipped == ()
    assert result.merged == out / sweep.MERGED
    # Same rows in the same order, same dtypes, every float bit for bit.
    pd.testing.assert_frame_equal(_merged(out), reference, check_exact=True)

    # Each chunk file holds its own seeds only (the padding of the last chunk is dropped).
    for i, seeds in enumerate([range(0, 4), range(4, 8), range(8, 10)]):
        df = pd.read_parquet(sweep.chunk_path(out, i))
        assert sorted(df["seed"].unique()) == list(seeds)
        assert len(df) == 2 * len(seeds) * (SPEC.steps + 1)

    # One compiled program serves every chunk, the padded last one included: at most
    # the first chunk compiles (none if this worker compiled it before).
    manifest = json.loads((out / sweep.MANIFEST).read_text())
    assert compiles <= 1
    assert [c["compile_seconds"] > 0 for c in manifest["chunks"]][1:] == [False, False]
    assert sweep.SweepSpec.from_dict(manifest["spec"]) == SPEC and manifest["spec_hash"] == SPEC.digest
    versions = manifest["provenance"]["versions"]
    assert versions["jax"] == jax.__version__ and versions["modeseek"] == ms.__version__
    assert manifest["provenance"]["cpu_isa_ceiling"] == modeseek_xla.cpu_isa() and "cpu_flags" in manifest["provenance"]
    assert [c["chunk"] for c in manifest["chunks"]] == [0, 1, 2] and manifest["missing"] == []
    assert all(c["wall_seconds"] >= c["run_seconds"] > 0 for c in manifest["chunks"])
    assert [(c["seed_start"], c["seed_stop"], c["runs"]) for c in manifest["chunks"]] == [(0, 4, 8), (4, 8, 8), (8, 10, 8)]
    assert manifest["merged"] == [sweep.MERGED]
    # Only finished files are left: no temporary names.
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]


def test_resume_recomputes_only_the_missing_chunk(swept, reference, tmp_path):
    out = _copy(swept, tmp_path)
    sweep.chunk_path(out, 1).unlink()
    (out / sweep.MERGED).unlink()
    kept = {i: sweep.chunk_path(out, i).stat().st_mtime_ns for i in (0, 2)}
    runs = []
    result = sweep.run_sweep(SPEC, out, progress=False, on_chunk=lambda i, meta: runs.append(i))
    assert runs == [1] and result.computed == (1,) and result.skipped == (0, 2)
    assert {i: sweep.chunk_path(out, i).stat().st_mtime_ns for i in (0, 2)} == kept
    pd.testing.assert_frame_equal(_merged(out), reference, check_exact=True)
    # A finished sweep reruns nothing and compiles nothing.
    before = engine.compile_count()
    again = sweep.run_sweep(SPEC, out, progress=False)
    assert again.computed == () and again.skipped == (0, 1, 2) and engine.compile_count() == before


def test_interrupted_chunks_are_ignored_and_redone(swept, reference, tmp_path):
    out = tmp_path / "sweep"

    def interrupt(i, meta):
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C right after chunk 0

    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(SPEC, out, progress=False, on_chunk=interrupt)
    assert [p.name for p in sweep.chunk_files(out)] == ["chunk-000000.parquet"]
    assert not (out / sweep.MERGED).exists()
    # A write killed half-way leaves a temporary file; a damaged disk leaves a short file
    # under the final name. Neither counts as done.
    good = sweep.chunk_path(swept[0], 1).read_bytes()
    (out / "chunks" / f".chunk-000001.parquet.{_files._host()}-{_dead_pid()}.k1ll3d.tmp").write_bytes(good[: len(good) // 2])
    sweep.chunk_path(out, 2).write_bytes(sweep.chunk_path(swept[0], 2).read_bytes()[:-100])

    result = sweep.run_sweep(SPEC, out, progress=False)
    assert result.computed == (1, 2) and result.skipped == (0,)
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]
    pd.testing.assert_frame_equal(_merged(out), reference, check_exact=True)


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_rerun_merge_removes_the_temporary_of_a_killed_merge(swept, reference, tmp_path):
    out = _copy(swept, tmp_path)
    (out / sweep.MERGED).unlink()
    killed = out / f".{sweep.MERGED}.{_files._host()}-{_dead_pid()}.abcd1234.tmp"
    killed.write_bytes(b"PAR1 half a table")
    sweep.merge(out)
    assert not killed.exists()
    pd.testing.assert_frame_equal(_merged(out), reference, check_exact=True)


def test_merge_detects_missing_and_doubled_chunks(swept, reference, tmp_path, capsys):
    out = _copy(swept, tmp_path)
    moved = tmp_path / "chunk-000001.parquet"
    shutil.move(sweep.chunk_path(out, 1), moved)
    with pytest.raises(sweep.SweepError, match=r"1 of 3 chunks missing: chunk 1 \(seeds 4-7\)"):
        sweep.merge(out)
    with pytest.raises(SystemExit) as exc:
        cli.main(["merge", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("modeseek merge: error:") and "chunk 1 (seeds 4-7)" in err and "Traceback" not in err

    # Chunk files gathered from several hosts: one of them copied twice under another name.
    shutil.move(moved, sweep.chunk_path(out, 1))
    shutil.copy(sweep.chunk_path(out, 0), out / "chunks" / "chunk-000000-host2.parquet")
    with pytest.raises(sweep.SweepError, match="chunk 0 is present 2 times"):
        sweep.merge(out)
    (out / "chunks" / "chunk-000000-host2.parquet").unlink()
    # Chunks gathered from hosts that wrote no manifest describe the sweep themselves.
    (out / sweep.MANIFEST).unlink()
    (out / sweep.MERGED).unlink()
    assert cli.main(["merge", str(out)]) == 0
    assert "wrote 100 rows" in capsys.readouterr().out
    pd.testing.assert_frame_equal(_merged(out), reference, check_exact=True)
    assert json.loads((out / sweep.MANIFEST).read_text())["spec_hash"] == SPEC.digest


def test_unwritable_folder_is_refused_before_running(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="cannot be written.*is a file, not a folder"):
        sweep.run_sweep(SPEC, tmp_path / "file" / "sweep", progress=False)
    with pytest.raises(ValueError, match="cannot be written"):
        sweep.run_sweep(SPEC, "/proc/modeseek-test", progress=False)


def test_folder_of_another_sweep_is_refused(swept, tmp_path):
    out = _copy(swept, tmp_path)
    other = dataclasses.replace(SPEC, steps=6)
    with pytest.raises(ValueError, match=r"holds another sweep \(steps: 4 -> 6\)"):
        sweep.run_sweep(other, out, progress=False)
    # Without the manifest, the chunk files' own footers still refuse the mix.
    (out / sweep.MANIFEST).unlink()
    with pytest.raises(ValueError, match="belongs to another sweep"):
        sweep.run_sweep(other, out, progress=False)


@pytest.mark.parametrize(
    "change, named",
    [
        (dict(chunk_seeds=0), "chunk_seeds=0"),
        (dict(seeds=2.5), "seeds=2.5"),
        (dict(loss="dpoo"), "loss='dpoo'"),
        (dict(problems=("far", "middle")), "problem='middle'"),
        (dict(sampling="sometimes"), "sampling='sometimes'"),
        (dict(grid={"reuse": (1, 2)}), "grid name 'reuse'"),
        (dict(grid={"beta": ()}), "grid 'beta' has no values"),
        (dict(options={"num_sample": 2}), "option 'num_sample'"),
        (dict(options={"learning_rate": 0.1}), "'learning_rate' is both an option and a grid axis"),
    ],
)
def test_bad_spec_values_are_named(change, named):
    with pytest.raises(ValueError) as exc:
        sweep.SweepSpec(**{**dict(loss="reinforce", grid={"learning_rate": (0.01, 0.03)}), **change})
    assert named in str(exc.value)


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--chunk-seeds", "0"], "chunk_seeds=0"),
        (["--num-processes", "2", "--process-id", "2", "--coordinator", "127.0.0.1:1"], "process_id=2"),
        (["--num-processes", "2", "--process-id", "0", "--coordinator", "127.0.0.1"], "coordinator='127.0.0.1'"),
        (["--num-processes", "2", "--process-id", "0"], "coordinator=None"),
    ],
)
def test_cli_sweep_bad_values_fail_cleanly(extra, named, tmp_path, capsys, monkeypatch):
    for var in ("SLURM_JOB_ID", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "JAX_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(var, raising=False)  # outside a cluster launcher
    with pytest.raises(SystemExit) as exc:
        cli.main(["sweep", *CLI_ARGS, "--no-cache", "--out", str(tmp_path / "s"), *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("modeseek sweep: error:") and named in err and "Traceback" not in err
    assert not (tmp_path / "s" / "chunks").exists()


def test_cli_sweep_writes_the_merged_table(reference, tmp_path, capsys):
    out = tmp_path / "cli"
    # --no-cache: the persistent cache is a process-wide JAX setting; keep it off in the test process.
    assert cli.main(["sweep", *CLI_ARGS, "--no-cache", "--out", str(out)]) == 0
    pd.testing.assert_frame_equal(_merged(out), reference, check_exact=True)
    text = capsys.readouterr().out
    final = reference[reference["step"] == SPEC.steps].groupby("learning_rate", sort=False)["expected_reward"].mean()
    for lr, value in final.items():
        assert f"[learning_rate={lr:g}] final expected reward {value:.4f}" in text
    assert "ran 3 chunk(s)" in text and f"wrote {len(reference)} rows" in text


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_over_loopback(reference, tmp_path):
    out = tmp_path / "two"
    port = _free_loopback_port()
    # CPU only: two processes must not share (and preallocate) one accelerator.
    env = dict(os.environ, JAX_PLATFORMS="cpu", MODESEEK_CACHE_DIR=str(tmp_path / "cache"))
    common = [
        sys.executable,
        "-m",
        "modeseek.cli",
        "sweep",
        *CLI_ARGS,
        "--out",
        str(out),
        "--coordinator",
        f"127.0.0.1:{port}",
        "--num-processes",
        "2",
        "--init-timeout",
        "60",
        "--barrier-timeout",
        "90",
    ]
    procs = [subprocess.Popen([*common, "--process-id", str(p)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for p in (0, 1)]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=150))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for p, (_, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stderr[-2000:]
    assert "process 0/2: ran 2 chunk(s)" in outputs[0][0] and "wrote 100 rows" in outputs[0][0]
    assert "process 1/2: ran 1 chunk(s)" in outputs[1][0]
    pd.testing.assert_frame_equal(_merged(out), reference, check_exact=True)
    manifest = json.loads((out / sweep.MANIFEST).read_text())
    assert [(c["chunk"], c["process_id"], c["process_count"]) for c in manifest["chunks"]] == [(0, 0, 2), (1, 1, 2), (2, 0, 2)]
    assert manifest["processes"] == 2 and manifest["missing"] == []


# A two-process sweep in which process 1 fails after its first chunk.
_FAILING = """
import sys
from modeseek import sweep
pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
spec = sweep.SweepSpec(loss="reinforce", steps=4, seeds=40, chunk_seeds=4, key=3, options={"num_samples": 2})
def fail(i, meta):
    if pid == 1:
        raise RuntimeError(f"disk full after chunk {i}")
try:
    sweep.run_sweep(spec, out, coordinator=f"127.0.0.1:{port}", num_processes=2, process_id=pid,
                    progress=False, on_chunk=fail, init_timeout_s=60, barrier_timeout_s=120)
except Exception as e:
    print(f"{type(e).__name__}: {e}")
    sys.exit(3)
"""


@pytest.mark.slow
def test_failing_process_stops_the_other_and_mismatched_specs_are_refused(tmp_path):
    # A failure stops the other process at its next chunk (long before the 120 s barrier timeout).
    script = tmp_path / "failing.py"
    script.write_text(_FAILING)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    port = _free_loopback_port()
    procs = [subprocess.Popen([sys.executable, str(script), str(p), str(port), str(tmp_path / "f")], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for p in (0, 1)]
    try:
        outs = [p.communicate(timeout=100)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert [p.returncode for p in procs] == [3, 3]
    assert "SweepError: stopped because process 1 failed: RuntimeError: disk full after chunk 1" in outs[0]
    assert "RuntimeError: disk full after chunk 1" in outs[1]
    assert len(sweep.chunk_files(tmp_path / "f")) < 10

    # Processes given different options refuse to start, naming the other process.
    port = _free_loopback_port()
    env["MODESEEK_CACHE_DIR"] = str(tmp_path / "cache")
    common = [sys.executable, "-m", "modeseek.cli", "sweep", *CLI_ARGS, "--out", str(tmp_path / "m"), "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--init-timeout", "60"]
    procs = [
        subprocess.Popen([*common, "--process-id", "0"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
        subprocess.Popen([*common, "--process-id", "1", "--steps", "6"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
    ]
    try:
        errs = [p.communicate(timeout=100)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert [p.returncode for p in procs] == [2, 2]
    # Whichever process sees the mismatch first reports it; the other stops because of it.
    assert all("runs another sweep" in e and "Traceback" not in e for e in errs)
    assert not sweep.chunk_files(tmp_path / "m")


def test_a_sequence_sweep_resumes_after_an_interruption(tmp_path):
    spec = sweep.SweepSpec(
        loss="reinforce",
        problems=("sequence_far", "sequence_near"),
        steps=4,
        seeds=5,
        chunk_seeds=2,
        key=3,
        options={"policy": "factorised", "num_contexts": 2, "num_samples": 4, "eval_every": 2},
        grid={"learning_rate": (0.05, 0.1)},
    )
    out = tmp_path / "seq"

    def interrupt(i, meta):
        raise KeyboardInterrupt  # as if killed right after chunk 0

    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(spec, out, progress=False, on_chunk=interrupt)
    result = sweep.run_sweep(spec, out, progress=False)
    assert result.computed == (1, 2) and result.skipped == (0,)
    # The merged table equals one call over every seed, bit for bit.
    one = ms.run(
        [sweep.get_problem(n) for n in spec.problems], loss="reinforce", steps=4, seeds=5, key=3, policy="factorised", num_contexts=2, num_samples=4, eval_every=2, learning_rate=np.array([0.05, 0.1])
    )
    order = ["problem", "learning_rate", "seed", "step"]
    merged = _merged(out).sort_values(order).reset_index(drop=True)
    ref = one.to_dataframe().sort_values(order).reset_index(drop=True)
    assert len(merged) == 2 * 2 * 5 * 3
    for column in ("expected_reward", "kl_pi_ref", "train_loss"):
        np.testing.assert_array_equal(merged[column].to_numpy(), ref[column].to_numpy(), err_msg=column)


@pytest.mark.parametrize(
    "loss, options, grid",
    [
        ("grpo", {"scale_rewards": "batch", "drop_uniform_groups": True}, {"clip_eps_high": (0.2, 0.28)}),
        ("nash_md", {"labels": "bradley_terry"}, {"mixture_alpha": (0.0, 0.5)}),
        pytest.param("dapo", {}, {"learning_rate": (0.05, 0.1)}, marks=pytest.mark.slow),
        pytest.param("kto", {}, {"desirable_weight": (1.0, 1.33)}, marks=pytest.mark.slow),
    ],
)
def test_catalogue_objectives_run_through_a_sweep(loss, options, grid, tmp_path):
    """The catalogue's static options, presets and traced options go through modeseek sweep as through modeseek.run."""
    spec = sweep.SweepSpec(loss=loss, steps=4, seeds=3, chunk_seeds=2, key=5, options={"num_samples": 6, **options}, grid=grid)
    sweep.run_sweep(spec, tmp_path / loss, progress=False)
    ((name, values),) = grid.items()
    one = ms.run(sweep.get_problem("far"), loss=loss, steps=4, seeds=3, key=5, num_samples=6, **options, **{name: np.asarray(values)})
    order = [name, "seed", "step"]
    merged = _merged(tmp_path / loss).sort_values(order).reset_index(drop=True)
    ref = one.to_dataframe().sort_values(order).reset_index(drop=True)
    assert len(merged) == len(ref) == 2 * 3 * 5
    for column in ("expected_reward", "train_loss"):
        np.testing.assert_array_equal(merged[column].to_numpy(), ref[column].to_numpy(), err_msg=column)
