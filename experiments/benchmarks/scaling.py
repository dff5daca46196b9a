"""How throughput scales with the number of seeds, the number of bins K and the batch size.

Usage: python -m experiments.benchmarks.scaling [--quick] [--axes seeds bins batch] [--out FILE.json]

Three sweeps, each point compiled once and timed on ``repeats`` fresh calls
(throughput.bench_case), tabular policy, Adam, exact metrics at every step:

* seeds 1, 4, ..., 65,536 (K = 100): exact reverse KL (one learning rate per
  run), REINFORCE with 64 samples, on-policy DPO with 64 disjoint pairs. Steps
  shrink as seeds grow so that a call does about ``budget`` seed-steps
  (between 100 and 1000 steps: a call's fixed work, initialisation and the
  transfer of 11 policy snapshots per run, must stay small against its steps);
* K = 10, 100, ..., 100,000 (32 runs; the "far" bandit rescaled: peak at 0.7 K,
  width K / 10): the same three cases, plus exact DPO (the population of K x K
  pairs, 4 runs) up to K = 1000 only: exact pair losses materialise K^2 pairs per step,
  so K = 10,000 would need 400 MB per run. Steps shrink as K grows so that a call
  touches about ``budget x 100`` bin-steps (pair-steps for exact DPO; at least 10 steps);
* batch size 1, 4, ..., 1024 (256 runs x 200 steps, K = 100): REINFORCE with
  that many samples, on-policy DPO with that many disjoint pairs.

Seed-steps per second are reported, and for the batch sweep also samples per
second. The run axis is sharded over one XLA CPU device per usable core.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import tyro

from experiments.benchmarks import common

DEFAULT_OUT = common.HERE / "scaling.json"
AXES = ("seeds", "bins", "batch")

SEEDS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536)
BINS = (10, 100, 1000, 10_000, 100_000)
BATCHES = (1, 4, 16, 64, 256, 1024)
EXACT_PAIRS_MAX_BINS = 1000


@dataclasses.dataclass(frozen=True)
class Args:
    """Throughput against seeds, bins and batch size."""

    quick: bool = False
    """Tiny sweeps, one case each (seeds 1, 4 of exact reverse KL; K 10, 1000 and batch 1, 4 of REINFORCE); writes only with --out."""
    axes: tuple[str, ...] = AXES
    """Which sweeps to run: seeds, bins, batch."""
    budget: int | None = None
    """Seed-steps per call in the seeds sweep (default 2^21; 256 with --quick)."""
    repeats: int | None = None
    """Timed calls per point (default 2; 1 with --quick)."""
    out: Annotated[Path | None, tyro.conf.arg(metavar="FILE.json")] = None
    """JSON output (default: scaling.json beside this script, except with --quick)."""
    host_devices: int | None = None
    """XLA CPU devices to shard runs over (default: one per usable core)."""
    device: str = "cpu"
    """Platform to run on: "cpu", or "gpu" (exits with one line when JAX sees no GPU); recorded in the JSON."""


def _steps(budget: float, lo: int, hi: int) -> int:
    return int(min(hi, max(lo, round(budget))))


def _cases():
    from experiments.benchmarks.throughput import Case

    return {
        "reverse_kl_exact": Case("reverse_kl_exact", "reverse_kl", "exact", (), "exact reverse KL"),
        "reinforce_b64": Case("reinforce_b64", "reinforce", "on_policy", (("num_samples", 64),), "REINFORCE, 64 samples"),
        "dpo_64pairs": Case("dpo_64pairs", "dpo", "on_policy", (("num_samples", 128), ("pairing", "disjoint")), "DPO, 64 disjoint pairs"),
        "dpo_exact": Case("dpo_exact", "dpo", "exact", (), "DPO on all K x K pairs (exact)"),
    }


def _point(case, *, seeds, steps, repeats, problem=None) -> dict:
    from experiments.benchmarks.throughput import bench_case

    r = bench_case(case, seeds=seeds, steps=steps, repeats=repeats, problem=problem)
    keep = ("runs", "steps", "num_bins", "devices", "compile_seconds", "run_seconds", "wall_seconds", "cpu_seconds", "seed_steps_per_s_best", "seed_steps_per_s_median", "seed_steps_per_cpu_s_best")
    return {k: r[k] for k in keep}


def _show(axis, name, x, r):
    print(
        f"  {axis:5s} {name:17s} {x:>7}  runs {r['runs']:6d} x {r['steps']:4d} steps  compile {r['compile_seconds']:5.1f} s"
        f"  {common.rate(r['seed_steps_per_s_best']):>8s} seed-steps/s ({common.rate(r['seed_steps_per_cpu_s_best'])} per CPU-s)",
        flush=True,
    )


def sweep_seeds(values, budget, repeats, names=("reverse_kl_exact", "reinforce_b64", "dpo_64pairs")) -> dict:
    cases = _cases()
    out = {}
    for name in names:
        out[name] = []
        for s in values:
            steps = _steps(budget / s, 100, 1000)
            r = _point(cases[name], seeds=s, steps=steps, repeats=repeats)
            r["seeds"] = s
            out[name].append(r)
            _show("seeds", name, s, r)
    return out


def sweep_bins(values, runs, budget, repeats, names=("reverse_kl_exact", "reinforce_b64", "dpo_64pairs", "dpo_exact")) -> dict:
    import modeseek as ms

    cases = _cases()
    out = {}
    for name in names:
        out[name] = []
        for k in values:
            if name == "dpo_exact" and k > EXACT_PAIRS_MAX_BINS:
                continue
            problem = ms.paper_bandit("far", width=k / 10, num_bins=k)
            # A step touches K bins (K^2 pairs for exact DPO, with an eighth of the
            # runs): keep the work per call level.
            n = max(1, runs // 8) if name == "dpo_exact" else runs
            per_step = k * k if name == "dpo_exact" else k
            steps = _steps(budget * 100 / (n * per_step), 10, 1000)
            r = _point(cases[name], seeds=n, steps=steps, repeats=repeats, problem=problem)
            r["bins"] = k
            out[name].append(r)
            _show("bins", name, k, r)
    return out


def sweep_batch(values, runs, steps, repeats, names=("reinforce", "dpo_pairs")) -> dict:
    from experiments.benchmarks.throughput import Case

    out = {name: [] for name in names}
    for n in values:
        for name, case in (
            ("reinforce", Case(f"reinforce_b{n}", "reinforce", "on_policy", (("num_samples", n),))),
            ("dpo_pairs", Case(f"dpo_{n}pairs", "dpo", "on_policy", (("num_samples", 2 * n), ("pairing", "disjoint")))),
        ):
            if name not in names:
                continue
            r = _point(case, seeds=runs, steps=steps, repeats=repeats)
            r["batch"] = n
            r["samples_per_step"] = n if name == "reinforce" else 2 * n
            r["samples_per_s_best"] = r["seed_steps_per_s_best"] * r["samples_per_step"]
            out[name].append(r)
            _show("batch", name, n, r)
    return out


def table(results: dict) -> str:
    """Markdown tables, one per axis."""
    parts = []
    for axis, key in (("seeds", "seeds"), ("bins", "bins"), ("batch", "batch")):
        if axis not in results:
            continue
        res = results[axis]
        xs = sorted({p[key] for pts in res.values() for p in pts})
        lines = [f"| {key} | " + " | ".join(res) + " |", "| ---: |" + " ---: |" * len(res)]
        for x in xs:
            cells = []
            for pts in res.values():
                p = next((p for p in pts if p[key] == x), None)
                cells.append(common.rate(p["seed_steps_per_s_best"]) if p else "-")
            lines.append(f"| {x:,} | " + " | ".join(cells) + " |")
        parts.append(f"{axis} (seed-steps/s, best)\n\n" + "\n".join(lines))
    return "\n\n".join(parts)


def main(argv=None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__.splitlines()[0])
    bad = sorted(set(args.axes) - set(AXES))
    if bad:
        raise SystemExit(f"unknown axis {bad}; valid axes are {', '.join(AXES)}")
    common.configure_device(args.device, args.host_devices)
    repeats = args.repeats or (1 if args.quick else 2)
    budget = args.budget or (256 if args.quick else 2**21)
    seeds = (1, 4) if args.quick else SEEDS
    bins = (10, 1000) if args.quick else BINS
    batches = (1, 4) if args.quick else BATCHES
    bins_runs, batch_runs, batch_steps = (4, 8, 10) if args.quick else (32, 256, 200)
    report = common.header("scaling", args.quick)
    report["settings"] = {
        "problem": "far (rescaled to K bins: peak at 0.7 K, width K / 10)",
        "policy": "tabular",
        "optimizer": "adam",
        "seeds_budget_seed_steps_per_call": budget,
        "bins_runs": bins_runs,
        "bins_budget_bin_steps_per_call": budget * 100,
        "batch_runs": batch_runs,
        "batch_steps": batch_steps,
        "repeats": repeats,
        "exact_pairs_max_bins": EXACT_PAIRS_MAX_BINS,
    }
    print(f"scaling: axes {', '.join(args.axes)}; {report['machine']['jax_device_count']} device(s), load {report['machine']['load_average_1m_at_start']}")
    # --quick: one case per axis, to check the script in little time.
    q = args.quick
    results = {}
    if "seeds" in args.axes:
        results["seeds"] = sweep_seeds(seeds, budget, repeats, *([("reverse_kl_exact",)] if q else []))
    if "bins" in args.axes:
        results["bins"] = sweep_bins(bins, bins_runs, budget, repeats, *([("reinforce_b64",)] if q else []))
    if "batch" in args.axes:
        results["batch"] = sweep_batch(batches, batch_runs, batch_steps, repeats, *([("reinforce",)] if q else []))
    report["results"] = results
    report["limitations"] = [
        f"Exact pair losses (sampling='exact' with dpo, ipo, pref_ft) build K x K pairs per step; benchmarked only up to K = {EXACT_PAIRS_MAX_BINS}.",
    ]
    print()
    print(table(results))
    common.save_report(report, args.out, args.quick, DEFAULT_OUT)
    return report


if __name__ == "__main__":
    main()
