"""Run every figure piece, skip finished ones, and write the claims report.

``reproduce(out_dir, smoke=False, force=False)`` is what ``make figures`` and
``modeseek reproduce`` call. A piece counts as finished when its claims file
``data/<name>.claims.json`` exists (written last, atomically, after the figure,
caption and table) and records the budget it ran at ("smoke" or "full");
rerunning skips it unless ``force`` or it ran at the other budget (a claims
file without a budget, written before budgets were recorded, counts as
another budget). CLAIMS.md and the gallery README.md are rebuilt from all
finished pieces on every call, and name the pieces whose numbers come from
the smoke budget. Smoke results never go to ``figures/`` unless asked for by
name (:func:`default_out_dir`).

The committed figures were made with the versions pinned in the checkout's
``requirements.lock`` (``make install``); other versions of jax, jaxlib or
numpy may change results in the last bits, which on-policy sampling amplifies
(``modeseek._xla``). So :func:`reproduce` prints one warning line when the
running versions differ from the lock's (:func:`version_mismatch`); outside a
checkout (an installed wheel) there is no lock and no warning.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from modeseek._files import require_writable_folder
from modeseek._xla import fast_compile
from modeseek.compile_log import CompileLog
from modeseek.pieces import Claim, Piece, atomic_write_text, check_names, load_all

__all__ = [
    "pieces",
    "select_pieces",
    "reproduce",
    "default_out_dir",
    "report_lines",
    "write_claims_report",
    "write_gallery",
    "piece_images",
    "LOCK_FILE",
    "locked_versions",
    "version_mismatch",
]

#: The pinned environment of the checkout this module lives in (absent in an installed wheel).
LOCK_FILE = Path(__file__).resolve().parents[2] / "requirements.lock"
#: The packages whose versions decide the bits of a result.
PINNED = ("jax", "jaxlib", "numpy")


def locked_versions(lock: str | Path = LOCK_FILE, names: Sequence[str] = PINNED) -> dict[str, str]:
    """{name: version} pinned in a pip-compile lock file for each of ``names`` it pins; {} when the file is missing."""
    try:
        text = Path(lock).read_text()
    except OSError:
        return {}
    found = {}
    for name in names:
        m = re.search(rf"^{re.escape(name)}==([^\s;\\]+)", text, flags=re.MULTILINE | re.IGNORECASE)
        if m:
            found[name] = m.group(1)
    return found


def version_mismatch(lock: str | Path = LOCK_FILE, names: Sequence[str] = PINNED) -> str | None:
    """One line naming the running versions of ``names`` that differ from the lock's, or None when all match (or no lock)."""
    pinned = locked_versions(lock, names)
    differ = []
    for name, want in pinned.items():
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            have = "missing"
        if have != want:
            differ.append(f"{name} {have} (lock: {want})")
    if not differ:
        return None
    return f"warning: running {', '.join(differ)}; results may differ in the last bits from the committed figures (`make install` installs the lock)"


def pieces() -> list[Piece]:
    """All figure pieces in report order: the registry :data:`modeseek.pieces.PIECES`, each imported on first use."""
    return load_all()


def select_pieces(only: Sequence[str] | None) -> list[Piece]:
    """The pieces named in ``only`` (all when None or empty), in report order; ValueError names unknown ones."""
    todo = pieces()
    if only:
        check_names(only, [p.name for p in todo])
        todo = [p for p in todo if p.name in set(only)]
    return todo


def default_out_dir(smoke: bool) -> Path:
    """``figures`` (the committed figures) for the full budget, ``figures-smoke`` for the smoke one (never mixed into ``figures``)."""
    return Path("figures-smoke" if smoke else "figures")


def _claims_path(out_dir: Path, name: str) -> Path:
    return out_dir / "data" / f"{name}.claims.json"


def _read_marker(path: Path) -> tuple[str | None, list[Claim]]:
    """(budget, claims) of a claims file; budget None for a file written before budgets were recorded."""
    data = json.loads(path.read_text())
    if isinstance(data, list):
        return None, [Claim(**d) for d in data]
    return data.get("budget"), [Claim(**d) for d in data["claims"]]


def _budget_note(results: Sequence[tuple[Piece, list[Claim]]], budgets: dict[str, str | None]) -> str:
    """The warning for results that are not all from the full budget ("" when they are)."""
    names = [p.name for p, _ in results]
    not_full = [n for n in names if budgets.get(n) != "full"]
    if not not_full:
        return ""
    if all(budgets.get(n) == "smoke" for n in names):
        return " **Smoke budget: numbers are not meaningful.**"
    return f" **Mixed budgets: {', '.join(f'`{n}`' for n in not_full)} ran at the smoke budget (or an unrecorded one); their numbers are not meaningful.**"


def _budget_suffix(budget: str | None) -> str:
    return "" if budget == "full" else " [smoke budget]" if budget == "smoke" else " [budget not recorded]"


def write_claims_report(out_dir: Path, results: Sequence[tuple[Piece, list[Claim]]], *, budgets: dict[str, str | None]) -> Path:
    """Write CLAIMS.md: every claim with PASS/FAIL and its measured numbers.

    ``budgets`` maps piece names to "smoke", "full" or None (not recorded);
    pieces not at the full budget are flagged at the top and in their heading.
    """
    n_pass = sum(c.passed for _, cs in results for c in cs)
    n_all = sum(len(cs) for _, cs in results)
    lines = [
        "# Claims report",
        "",
        "Regenerated by `make figures` (`modeseek reproduce`); every outcome and number below is",
        "computed from the results in `data/`, none is typed in." + _budget_note(results, budgets),
        "",
        f"**{n_pass} of {n_all} claims pass.**",
        "",
    ]
    for piece, claims in results:
        if not claims:
            continue
        lines += [f"## {piece.title} (`{piece.name}`){_budget_suffix(budgets.get(piece.name))}", ""]
        for c in claims:
            lines.append(f"- **{'PASS' if c.passed else 'FAIL'}** {c.statement}")
            lines.append(f"  - measured: {c.evidence}")
            if c.note:
                lines.append(f"  - note: {c.note}")
        lines.append("")
    path = Path(out_dir) / "CLAIMS.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def piece_images(out_dir: Path, piece: Piece) -> list[str]:
    """The image files of a piece, relative to ``out_dir``.

    ``<name>.png``, ``<name>_*.png`` and every ``.png`` its caption names that exists.
    """
    out_dir = Path(out_dir)
    names = []
    if (out_dir / f"{piece.name}.png").exists():
        names.append(f"{piece.name}.png")
    names += sorted(p.name for p in out_dir.glob(f"{piece.name}_*.png"))
    caption = out_dir / f"{piece.name}.caption.md"
    if caption.exists():
        names += [m for m in re.findall(r"[A-Za-z0-9_.-]+\.png", caption.read_text()) if (out_dir / m).exists()]
    return list(dict.fromkeys(names))


def _summary(out_dir: Path, piece: Piece) -> list[str]:
    """The piece's two gallery lines, or the first caption bullet when it has none."""
    if piece.summary.strip():
        return [line.strip() for line in piece.summary.strip().splitlines() if line.strip()]
    caption = Path(out_dir) / f"{piece.name}.caption.md"
    if caption.exists():
        bullets = [line[2:].strip() for line in caption.read_text().splitlines() if line.startswith("- ")]
        if bullets:
            return [bullets[0]]
    return [piece.title]


def write_gallery(out_dir: Path, results: Sequence[tuple[Piece, list[Claim]]], *, budgets: dict[str, str | None]) -> Path:
    """Write README.md: every finished figure with its image(s), two lines on what it shows, and its files.

    ``budgets`` as in :func:`write_claims_report`.
    """
    out_dir = Path(out_dir)
    n_pass = sum(c.passed for _, cs in results for c in cs)
    n_all = sum(len(cs) for _, cs in results)
    lines = [
        "# Figures",
        "",
        "Regenerated by `make figures` (`modeseek reproduce --out DIR`); every figure has a caption file saying "
        "what was run (seeds, steps, hyperparameters) and a Parquet table with the data behind it in `data/`.",
        f"The claims checked against these results are in [CLAIMS.md](CLAIMS.md) ({n_pass} of {n_all} pass)." + _budget_note(results, budgets),
        "",
    ]
    for piece, claims in results:
        lines += [f"## {piece.title}{_budget_suffix(budgets.get(piece.name))}", ""]
        lines += [f"{line}  " for line in _summary(out_dir, piece)]
        lines.append("")
        for img in piece_images(out_dir, piece):
            lines += [f"![{piece.title}: {img}]({img})", ""]
        links = []
        if (out_dir / f"{piece.name}.caption.md").exists():
            links.append(f"[caption]({piece.name}.caption.md)")
        if (out_dir / "data" / f"{piece.name}.parquet").exists():
            links.append(f"[data](data/{piece.name}.parquet)")
        if claims:
            links.append(f"claims: {sum(c.passed for c in claims)} of {len(claims)} pass")
        if links:
            lines += [" · ".join(links), ""]
    path = out_dir / "README.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def report_lines(results: Sequence[tuple[Piece, list[Claim], float]], compile_logs: dict, seconds: float, out_dir: str | Path, *, rerun_hint: str, slowest: int = 3) -> list[str]:
    """What ``make figures`` and ``modeseek reproduce`` print after :func:`reproduce`.

    One line per piece (seconds, claims passed, its compile statistics or that
    it was skipped), its ``slowest`` XLA compiles, and a total line.

    Args:
      results: what :func:`reproduce` returned.
      compile_logs: the dict :func:`reproduce` filled (pieces run in this call).
      seconds: wall time of the call.
      out_dir: its output folder.
      rerun_hint: how to rerun a skipped piece (the caller's option), e.g. "--force reruns it".
      slowest: XLA compiles to list per piece (0: none).
    """
    lines = []
    for piece, claims, secs in results:
        status = f"{sum(c.passed for c in claims)}/{len(claims)} claims pass"
        log = compile_logs.get(piece.name)
        note = f"  {log.summary()}" if log else f"  (already done; {rerun_hint})"
        lines.append(f"{piece.name:24s} {secs:7.1f} s  {status}{note}")
        if log and slowest and log.xla_by_function:
            lines.append("    slowest XLA compiles: " + ", ".join(f"{n} {s:.1f} s" for n, s in log.slowest(slowest)))
    total = sum(compile_logs.values(), CompileLog())
    lines.append(f"total {seconds:.1f} s, of which {total.summary()}; report: {Path(out_dir) / 'CLAIMS.md'}")
    return lines


def reproduce(
    out_dir: str | Path | None = None,
    *,
    smoke: bool = False,
    force: bool = False,
    only: Sequence[str] | None = None,
    progress: bool = True,
    compile_logs: dict | None = None,
) -> list[tuple[Piece, list[Claim], float]]:
    """Regenerate every figure, its data and caption, the claims report and the gallery.

    Args:
      out_dir: output folder (figures in it, tables in ``out_dir/data``); default :func:`default_out_dir`.
      smoke: tiny budgets, for tests (numbers not meaningful).
      force: rerun finished pieces too (pieces finished at the other budget are rerun anyway).
      only: names of pieces to run (default all).
      progress: show a progress bar.
      compile_logs: if a dict, filled with {piece name: CompileLog} for every
        piece run (tracing, lowering and XLA compile seconds).

    Returns:
      List of (piece, claims, seconds) for every piece (seconds 0 when skipped).
    """
    from tqdm.auto import tqdm

    note = version_mismatch()
    if note:
        print(note, file=sys.stderr)
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(smoke)
    budget = "smoke" if smoke else "full"
    todo = select_pieces(only)
    require_writable_folder(out_dir, label=f"out_dir={str(out_dir)!r}")
    (out_dir / "data").mkdir(parents=True, exist_ok=True)
    results = []
    bar = tqdm(todo, disable=not progress, desc="reproduce", unit="figure")
    for piece in bar:
        bar.set_postfix_str(piece.name)
        marker = _claims_path(out_dir, piece.name)
        found = _read_marker(marker) if marker.exists() else None
        if found is not None and found[0] == budget and not force:
            results.append((piece, found[1], 0.0))
            continue
        # Partial results a piece resumes must come from this budget too.
        if (force or found is not None) and piece.reset is not None:
            piece.reset(out_dir)
        t0 = time.perf_counter()
        # The pieces' programs each run for seconds: compile them for compile speed.
        with CompileLog() as log, fast_compile():
            claims = piece.make(out_dir, smoke)
        if compile_logs is not None:
            compile_logs[piece.name] = log
        atomic_write_text(marker, json.dumps({"budget": budget, "claims": [c.to_dict() for c in claims]}, indent=1))
        results.append((piece, claims, time.perf_counter() - t0))
    # The report covers every piece with results on disk, not only this call's.
    done, budgets = [], {}
    for piece in pieces():
        marker = _claims_path(out_dir, piece.name)
        if marker.exists():
            budgets[piece.name], claims = _read_marker(marker)
            done.append((piece, claims))
    write_claims_report(out_dir, done, budgets=budgets)
    write_gallery(out_dir, done, budgets=budgets)
    return results
