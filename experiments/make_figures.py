"""Regenerate every figure, data table and the claims report into figures/ (``make figures``).

Usage: python -m experiments.make_figures [--smoke] [--resume] [--out DIR]

Every piece is recomputed, so the committed figures always come from the code
as it is. ``--resume`` skips pieces whose results are already in the output
folder (to finish an interrupted run); ``modeseek reproduce`` does the same by
default.
"""

from __future__ import annotations

import argparse
import time

import modeseek
from modeseek.compile_log import CompileLog
from modeseek.paper.reproduce import reproduce


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="figures")
    ap.add_argument("--smoke", action="store_true", help="tiny budgets (for tests)")
    ap.add_argument("--resume", action="store_true", help="skip pieces whose results are already in --out")
    args = ap.parse_args()
    # Reruns load compiled programs from disk instead of recompiling them.
    modeseek.enable_compilation_cache()
    t0 = time.perf_counter()
    logs: dict = {}
    results = reproduce(args.out, smoke=args.smoke, force=not args.resume, compile_logs=logs)
    for piece, claims, secs in results:
        status = f"{sum(c.passed for c in claims)}/{len(claims)} claims pass"
        log = logs.get(piece.name)
        print(f"{piece.name:24s} {secs:7.1f}s  {status}" + (f"  {log.summary()}" if log else ""))
        if log and log.xla_by_function:
            print("    slowest XLA compiles: " + ", ".join(f"{n} {s:.1f} s" for n, s in log.slowest(3)))
    total = sum(logs.values(), CompileLog())
    print(f"total {time.perf_counter() - t0:.1f}s, of which {total.summary()}; report: {args.out}/CLAIMS.md")


if __name__ == "__main__":
    main()
