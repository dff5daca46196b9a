"""Regenerate every figure, data table and the claims report into figures/ (``make figures``).

Usage: python -m experiments.make_figures [--smoke] [--resume] [--out DIR]

Every piece is recomputed, so the committed figures always come from the code
as it is. ``--resume`` skips pieces whose results, at the same budget, are
already in the output folder (to finish an interrupted run); ``modeseek
reproduce`` does the same by default. ``--smoke`` without ``--out`` writes to
figures-smoke/, so the committed figures are never replaced by smoke ones.
"""

from __future__ import annotations

import argparse
import time

import modeseek
from modeseek.paper.reproduce import default_out_dir, report_lines, reproduce


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=None, help="output folder (default figures, or figures-smoke with --smoke)")
    ap.add_argument("--smoke", action="store_true", help="tiny budgets (for tests)")
    ap.add_argument("--resume", action="store_true", help="skip pieces whose results are already in --out")
    args = ap.parse_args()
    # Reruns load compiled programs from disk instead of recompiling them.
    modeseek.enable_compilation_cache()
    t0 = time.perf_counter()
    logs: dict = {}
    out = args.out if args.out is not None else default_out_dir(args.smoke)
    results = reproduce(out, smoke=args.smoke, force=not args.resume, compile_logs=logs)
    print("\n".join(report_lines(results, logs, time.perf_counter() - t0, out, rerun_hint="without --resume it reruns")))


if __name__ == "__main__":
    main()
