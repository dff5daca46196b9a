"""The whole reproduction pipeline in smoke mode: every registered piece, the reports, skipping and --force.

One smoke reproduction (all pieces, tiny budgets) is shared by the module's tests;
it is what `make test` has of the experiment code. Its numbers are not meaningful,
so only the outputs' presence, structure and consistency are checked.
"""

from __future__ import annotations

import json
import os
import time

import pandas as pd
import pytest

from modeseek.compile_log import CompileLog
from modeseek.paper import reproduce as rp

# One worker runs the whole smoke pipeline once for every test here (with
# `pytest -n 2 --dist loadgroup`, as `make test` runs it), instead of once per worker.
pytestmark = pytest.mark.xdist_group("paper_smoke")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    t0 = time.perf_counter()
    logs: dict = {}
    results = rp.reproduce(out, smoke=True, progress=False, compile_logs=logs)
    seconds = time.perf_counter() - t0
    print(f"smoke reproduction: {seconds:.1f} s; " + ", ".join(f"{p.name} {s:.1f} s ({logs[p.name].summary()})" for p, _, s in results))
    smoke_run_logs.update(logs)
    return out, results


smoke_run_logs: dict = {}


def test_every_registered_piece_ran(smoke_run):
    out, results = smoke_run
    names = [p.name for p, _, _ in results]
    assert names == [p.name for p in rp.pieces()]
    assert len(set(names)) == len(names), f"piece names must be unique: {names}"
    assert all(s > 0 for _, _, s in results), "a fresh output folder must run every piece"
    # Every piece that ran has its compile statistics, and they fit inside its wall time.
    assert sorted(smoke_run_logs) == sorted(names)
    for piece, _, secs in results:
        log = smoke_run_logs[piece.name]
        assert log.trace_seconds + log.lower_seconds <= secs, f"{piece.name}: {log.summary()} exceeds its {secs:.1f} s"
    assert sum(log.programs for log in smoke_run_logs.values()) > 0


@pytest.mark.parametrize("piece", rp.pieces(), ids=lambda p: p.name)
def test_piece_outputs(smoke_run, piece):
    out, _ = smoke_run
    caption = out / f"{piece.name}.caption.md"
    assert caption.exists() and caption.read_text().startswith("# "), f"{piece.name}: missing or malformed caption"
    table = pd.read_parquet(out / "data" / f"{piece.name}.parquet")
    assert len(table) > 0, f"{piece.name}: empty data table"
    images = rp.piece_images(out, piece)
    assert images, f"{piece.name}: no figure found"
    for img in images:
        head = (out / img).read_bytes()[:8]
        assert head == PNG_MAGIC, f"{piece.name}: {img} is not a PNG"
    marker = json.loads((out / "data" / f"{piece.name}.claims.json").read_text())
    assert marker["budget"] == "smoke"
    for c in marker["claims"]:
        assert isinstance(c["passed"], bool) and c["id"] and c["statement"] and c["evidence"], f"{piece.name}: incomplete claim {c}"


def test_reports_list_every_piece(smoke_run):
    out, results = smoke_run
    report = (out / "CLAIMS.md").read_text()
    gallery = (out / "README.md").read_text()
    n_pass = sum(c.passed for _, cs, _ in results for c in cs)
    n_all = sum(len(cs) for _, cs, _ in results)
    assert f"**{n_pass} of {n_all} claims pass.**" in report
    assert f"({n_pass} of {n_all} pass)" in gallery
    for piece, claims, _ in results:
        if claims:
            assert f"(`{piece.name}`)" in report, f"CLAIMS.md misses {piece.name}"
            for c in claims:
                assert f"**{'PASS' if c.passed else 'FAIL'}** {c.statement}" in report
        assert f"## {piece.title}" in gallery, f"README.md misses {piece.name}"
        for img in rp.piece_images(out, piece):
            assert f"]({img})" in gallery, f"README.md does not show {img}"
        assert f"[caption]({piece.name}.caption.md)" in gallery


def test_rerun_skips_finished_pieces_and_force_reruns(smoke_run):
    out, first = smoke_run
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.suffix in (".png", ".parquet", ".json")}
    t0 = time.perf_counter()
    again = rp.reproduce(out, smoke=True, progress=False)
    elapsed = time.perf_counter() - t0
    assert [s for _, _, s in again] == [0.0] * len(again)
    # Skipping reads the claims files and rewrites the two reports only; running even the
    # cheapest piece compiles or plots for seconds, so 5 s separates the two cases.
    assert elapsed < 5.0, f"rerun took {elapsed:.1f} s; finished pieces should be skipped"
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items()), "a skipped piece rewrote its outputs"
    assert [[c.to_dict() for c in cs] for _, cs, _ in again] == [[c.to_dict() for c in cs] for _, cs, _ in first]

    # --force reruns (the cheapest piece, to keep the test short) and rewrites its outputs.
    cheapest = min(first, key=lambda r: r[2])[0]
    marker = out / "data" / f"{cheapest.name}.claims.json"
    before = marker.stat().st_mtime_ns
    os.utime(marker, ns=(before - 10**9, before - 10**9))
    forced = rp.reproduce(out, smoke=True, progress=False, force=True, only=[cheapest.name])
    assert [p.name for p, _, _ in forced] == [cheapest.name] and forced[0][2] > 0
    assert marker.stat().st_mtime_ns > before - 10**9
    assert f"## {cheapest.title}" in (out / "README.md").read_text()


def test_unknown_piece_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown piece"):
        rp.reproduce(tmp_path / "out", smoke=True, progress=False, only=["no_such_figure"])
    assert not (tmp_path / "out").exists(), "the name is checked before the folder is created"


def test_unwritable_folder_is_refused_before_any_piece_runs(tmp_path, monkeypatch):
    def make(out_dir, smoke):
        raise AssertionError("a piece ran before the folder was checked")

    monkeypatch.setattr(rp, "pieces", lambda: [rp.Piece("fake", "Fake", make)])
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="cannot be written"):
        rp.reproduce(tmp_path / "file" / "figures", progress=False)


def _fake_pieces(monkeypatch, names=("a", "b")):
    """Cheap stand-ins for the pieces; returns the log of (event, piece, smoke) calls."""
    from modeseek.pieces import Claim, Piece

    calls = []

    def piece(name):
        def make(out_dir, smoke):
            calls.append(("make", name, smoke))
            return [Claim("c", f"{name} holds", True, "smoke numbers" if smoke else "full numbers")]

        return Piece(name, name.upper(), make, reset=lambda out_dir: calls.append(("reset", name, None)))

    fakes = [piece(n) for n in names]
    monkeypatch.setattr(rp, "pieces", lambda: fakes)
    return calls


def test_budget_is_part_of_a_piece_identity(tmp_path, monkeypatch):
    calls = _fake_pieces(monkeypatch)
    rp.reproduce(tmp_path, smoke=True, progress=False)
    assert "Smoke budget" in (tmp_path / "CLAIMS.md").read_text()
    calls.clear()
    rp.reproduce(tmp_path, smoke=True, progress=False)
    assert calls == [], "finished at the same budget: skipped"

    # A full run into a smoke folder recomputes, resetting resumable partial results first.
    rp.reproduce(tmp_path, smoke=False, progress=False, only=["a"])
    assert calls == [("reset", "a", None), ("make", "a", False)]
    report = (tmp_path / "CLAIMS.md").read_text()
    gallery = (tmp_path / "README.md").read_text()
    for text in (report, gallery):
        assert "Mixed budgets: `b` ran at the smoke budget" in text and "Smoke budget:" not in text
    assert "(`b`) [smoke budget]" in report and "(`a`)\n" in report
    calls.clear()
    rp.reproduce(tmp_path, smoke=False, progress=False)
    assert calls == [("reset", "b", None), ("make", "b", False)], "a is full already, b is recomputed"
    assert "budget" not in (tmp_path / "CLAIMS.md").read_text().lower()
    assert "full numbers" in (tmp_path / "CLAIMS.md").read_text() and "smoke numbers" not in (tmp_path / "CLAIMS.md").read_text()

    # A claims file from before budgets were recorded (a bare list) is not trusted.
    marker = tmp_path / "data" / "a.claims.json"
    marker.write_text(json.dumps(json.loads(marker.read_text())["claims"]))
    calls.clear()
    rp.reproduce(tmp_path, smoke=False, progress=False)
    assert calls == [("reset", "a", None), ("make", "a", False)]


def test_smoke_never_defaults_to_the_committed_figures(tmp_path, monkeypatch):
    import sys

    from experiments import make_figures
    from modeseek import cli

    calls = _fake_pieces(monkeypatch, names=("a",))
    monkeypatch.chdir(tmp_path)
    rp.reproduce(smoke=True, progress=False)
    assert cli.main(["reproduce", "--smoke"]) == 0
    monkeypatch.setattr(make_figures.modeseek, "enable_compilation_cache", lambda: None)
    monkeypatch.setattr(sys, "argv", ["make_figures", "--smoke"])
    make_figures.main()
    assert not (tmp_path / "figures").exists()
    assert json.loads((tmp_path / "figures-smoke" / "data" / "a.claims.json").read_text())["budget"] == "smoke"
    assert [c[0] for c in calls] == ["make", "reset", "make"], "the library and the command skip, make figures reruns"
    # Named explicitly, figures/ takes smoke results, flagged as such.
    assert cli.main(["reproduce", "--smoke", "--out", "figures"]) == 0
    assert "Smoke budget" in (tmp_path / "figures" / "CLAIMS.md").read_text()


def test_force_resets_pieces_with_their_own_partial_results(tmp_path, monkeypatch):
    from modeseek.phase import piece as phase_piece
    from modeseek.phase.sweep import table_paths
    from modeseek.pieces import Claim, Piece

    calls = []

    def make(out_dir, smoke):
        calls.append("make")
        return [Claim("c", "a claim", True, "measured")]

    fake = Piece("fake", "Fake", make, reset=lambda out_dir: calls.append("reset"))
    monkeypatch.setattr(rp, "pieces", lambda: [fake])
    rp.reproduce(tmp_path, progress=False)
    assert calls == ["make"], "a first run has nothing to reset"
    rp.reproduce(tmp_path, progress=False)
    assert calls == ["make"], "a finished piece is skipped"
    rp.reproduce(tmp_path, progress=False, force=True)
    assert calls == ["make", "reset", "make"], "force resets before rerunning"

    # The phase piece's reset removes its resumable sweep, so a forced run recomputes it.
    paths = table_paths(tmp_path)
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    phase_piece.PIECE.reset(tmp_path)
    assert not any(p.exists() for p in paths.values())


def test_report_lines_for_run_and_skipped_pieces(smoke_run):
    out, results = smoke_run
    lines = rp.report_lines(results, smoke_run_logs, 12.5, out, rerun_hint="--force reruns it", slowest=2)
    per_piece = [line for line in lines if not line.startswith(" ") and not line.startswith("total")]
    assert [line.split()[0] for line in per_piece] == [p.name for p, _, _ in results]
    assert all("claims pass  compile" in line for line in per_piece)
    assert all(line.count(" s,") <= 1 for line in lines if line.startswith("    slowest XLA compiles: "))
    total = sum(smoke_run_logs.values(), CompileLog())
    assert lines[-1] == f"total 12.5 s, of which {total.summary()}; report: {out / 'CLAIMS.md'}"
    # Without compile logs every piece reads as skipped, with the caller's hint.
    skipped = rp.report_lines(results, {}, 0.0, out, rerun_hint="drop --resume")
    assert all(line.endswith("(already done; drop --resume)") for line in skipped[:-1])
