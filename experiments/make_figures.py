"""Regenerate every figure, data table and the claims report into figures/ (``make figures``).

Usage: python -m experiments.make_figures [--smoke] [--resume] [--out DIR] [--no-notebook]

Every piece is recomputed, so the committed figures always come from the code
as it is. ``--resume`` skips pieces whose results, at the same budget, are
already in the output folder (to finish an interrupted run); ``modeseek
reproduce`` does the same by default. ``--smoke`` without ``--out`` writes to
figures-smoke/, so the committed figures are never replaced by smoke ones.

At the full budget it also executes ``notebooks/explore.ipynb`` in a fresh
kernel and writes it back with its outputs (plots as PNG), so that the
committed notebook shows what it computes; ``--no-notebook`` skips that. A
smoke run never touches the notebook (the test suite executes it in smoke mode).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import modeseek
from modeseek._files import atomic_write
from modeseek.paper.reproduce import default_out_dir, report_lines, reproduce

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore.ipynb"
#: Seconds a single notebook cell may run: generous, since the machine may be shared.
CELL_TIMEOUT_S = 1800


def execute_notebook(path: Path = NOTEBOOK, *, smoke: bool = False, timeout: int = CELL_TIMEOUT_S) -> Path:
    """Run every cell of the notebook at ``path`` in a fresh kernel and write it back, outputs included, atomically.

    The kernel gets this process's environment without ``MPLBACKEND`` (``make figures`` sets it to Agg,
    which would bypass the kernel's inline backend and leave the plots out) and with ``MODESEEK_SMOKE``
    set from ``smoke``. Per-cell timings are not recorded, so a rerun changes only what the cells print.
    """
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["MODESEEK_SMOKE"] = "1" if smoke else "0"
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False, resources={"metadata": {"path": str(path.parent)}})
    client.execute(env=env)
    atomic_write(path, lambda tmp: nbformat.write(nb, tmp))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=None, help="output folder (default figures, or figures-smoke with --smoke)")
    ap.add_argument("--smoke", action="store_true", help="tiny budgets (for tests)")
    ap.add_argument("--resume", action="store_true", help="skip pieces whose results are already in --out")
    ap.add_argument("--no-notebook", action="store_true", help="do not execute notebooks/explore.ipynb")
    args = ap.parse_args()
    # Reruns load compiled programs from disk instead of recompiling them.
    modeseek.enable_compilation_cache()
    t0 = time.perf_counter()
    logs: dict = {}
    out = args.out if args.out is not None else default_out_dir(args.smoke)
    results = reproduce(out, smoke=args.smoke, force=not args.resume, compile_logs=logs)
    print("\n".join(report_lines(results, logs, time.perf_counter() - t0, out, rerun_hint="without --resume it reruns")))
    if not args.smoke and not args.no_notebook:
        t1 = time.perf_counter()
        path = execute_notebook()
        print(f"executed {path} in {time.perf_counter() - t1:.1f} s ({path.stat().st_size / 1e6:.2f} MB with outputs)")


if __name__ == "__main__":
    main()
