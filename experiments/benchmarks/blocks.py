"""What fixed-width blocks of runs cost: blocked engine vs one program as wide as the call.

Usage: python -m experiments.benchmarks.blocks [--quick] [--out FILE.json]

A seed's bits must not depend on how many runs share its call, so the engine
computes every run in a program of ``block`` runs (modeseek._blocks). The
alternative, one program exactly as wide as the call, is what
``modeseek.run(..., block=runs)`` computes: a single block of the call's width.
So both sides are the engine itself, on one CPU device, in this process, and
each repeat times them back to back in alternating order, so that the
machine's drift hits both (the README's "measure side by side").

For each case (the throughput benchmark's three, plus the paper's MLP) and
each call size n (1 seed, and many), it reports the median over repeats of
run seconds (compile excluded) for each block size and for the unblocked
program, and their ratio: > 1 means the blocks are slower. The table is
printed and written as JSON beside this script (atomically).
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
from pathlib import Path
from typing import Annotated

import tyro

from experiments.benchmarks import common

DEFAULT_OUT = Path(__file__).with_name("blocks.json")

#: (name, run options, call sizes, steps); the MLP costs ~1 ms per seed-step, so it gets fewer.
CASES = (
    ("reinforce_b64", dict(loss="reinforce", sampling="on_policy", num_samples=64), (1, 1024), 1000),
    ("reverse_kl_exact", dict(loss="reverse_kl", sampling="exact"), (1, 1024), 1000),
    ("dpo_64pairs", dict(loss="dpo", sampling="on_policy", num_samples=128, pairing="disjoint"), (1, 1024), 1000),
    ("mlp_best_of_n", dict(loss="best_of_n", sampling="on_policy", policy="mlp", num_samples=10), (1, 32), 20),
)
BLOCKS = (1, 8, 16, 32, 64, 128)


@dataclasses.dataclass(frozen=True)
class Args:
    """Blocked vs unblocked engine, alternating in one process."""

    quick: Annotated[bool, tyro.conf.arg(help="small sizes (a smoke run; writes only with --out)")] = False
    repeats: int = 3
    out: Path | None = None


def bench(name: str, options: dict, sizes, steps: int, repeats: int, blocks=BLOCKS) -> dict:
    import jax

    import modeseek as ms

    far = ms.paper_bandit("far")
    dev = jax.devices()[:1]
    keys = itertools.count(1)  # fresh keys: no call repeats another's values
    rows = []
    for n in sizes:
        # Blocks of 1 for a wide call would be n sequential calls: far off the table, skipped.
        widths = sorted({b for b in blocks if b > 1 or n <= 64} | {n})

        def call(b):
            return ms.run(far, steps=steps, seeds=n, key=next(keys), devices=dev, block=b, **options).run_seconds

        for b in widths:
            call(b)  # compile
        times: dict[int, list[float]] = {b: [] for b in widths}
        for r in range(repeats):
            for b in widths if r % 2 == 0 else widths[::-1]:
                times[b].append(call(b))
        base = statistics.median(times[n])
        for b in widths:
            med = statistics.median(times[b])
            rows.append(
                {
                    "case": name,
                    "runs": n,
                    "block": b,
                    "unblocked": b == n,
                    "steps": steps,
                    "run_seconds_median": med,
                    "run_seconds_all": times[b],
                    "seed_steps_per_s": n * steps / med,
                    "ratio_to_unblocked": med / base,
                }
            )
            print(f"{name:18s} runs={n:5d} block={b:5d}{' (unblocked)' if b == n else '':12s} {med * 1e3:9.1f} ms  x{med / base:5.2f}", flush=True)
    return {"case": name, "options": options, "rows": rows}


def main(args: Args) -> dict:
    common.configure_host_devices(1)
    report = common.header("blocks", args.quick)
    report["results"] = []
    for name, options, sizes, steps in CASES:
        if args.quick:
            sizes, steps = tuple(min(s, 40) for s in sizes), 20
        report["results"].append(bench(name, options, sizes, steps, args.repeats))
    common.save_report(report, args.out, args.quick, DEFAULT_OUT)
    return report


if __name__ == "__main__":
    main(tyro.cli(Args))
