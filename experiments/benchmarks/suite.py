"""Seed-steps per second and compile seconds of each of the paper's ten losses in every sampling regime.

Usage: python -m experiments.benchmarks.suite [--quick] [--only NAME ...] [--out FILE.json]

One case per (loss, sampling regime) that the engine accepts: 10 losses (three
families) x offline / on_policy / exact / exact_offline, the analytic
divergences (forward_kl, reverse_kl) in the exact regimes only; 36 cases.
K = 100 (the "far" paper bandit), tabular policy, Adam, one context, exact
metrics recorded at every step. Batch sizes: 64 samples for the point losses
(sft, rwr, reinforce, ppo) and best-of-64 for best_of_n; 64 disjoint pairs (128
samples) for the pair losses (pref_ft, dpo, ipo). Exact regimes replace the
batch by its population version (all K bins; K x K pairs for pair losses).
The exact pair cases do K^2 = 10,000 pair terms per step, 100 to 1000 times
the time of the others, so they run 1/64 of the seeds (at least 1; 10,000
pair terms per run are already plenty of work for vmap to batch).

Timing is throughput.bench_case: compile once, then ``repeats`` calls with fresh
keys (exact regimes: a fresh grid of distinct learning rates, one per run,
since those runs are deterministic); wall and CPU seconds of every call. The
run axis is sharded over one XLA CPU device per usable core (``--host-devices``).

The three cases that have a straightforward jit(vmap(scan)) in
``experiments/benchmarks/baseline.py`` (exact reverse KL, REINFORCE with 64
samples, on-policy DPO with 64 pairs: ``BASELINE``) are timed against it in the
same process, alternating calls, as throughput.py does (the engine then stores
the policy at steps 0 and ``steps`` only, as the baseline returns none); their
target is an engine / baseline ratio of ``throughput.TARGET_RATIO``. Absolute
rates measured at other times or on other machines are not compared.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path
from typing import Annotated

import tyro

from experiments.benchmarks import common

DEFAULT_OUT = common.HERE / "suite.json"

#: Suite cases timed against the jit(vmap(scan)) baseline: suite name -> baseline.CASES name.
BASELINE = {"reverse_kl/exact": "reverse_kl_exact", "reinforce/on_policy": "reinforce_b64", "dpo/on_policy": "dpo_64pairs"}
SAMPLINGS = ("offline", "on_policy", "exact", "exact_offline")
EXACT = ("exact", "exact_offline")


def _options(batch: str) -> tuple[tuple[str, object], ...]:
    if batch == "pairs":
        return (("num_samples", 128), ("pairing", "disjoint"))
    if batch == "target":
        return ()
    return (("num_samples", 64),)


#: The paper's ten objectives (docs/paper.md §B), each benchmarked in every regime; the catalogue's
#: later objectives are measured against these (e.g. grpo against reinforce, tests/test_catalogue_group.py).
PAPER_LOSSES = ("sft", "best_of_n", "pref_ft", "rwr", "forward_kl", "dpo", "ipo", "reinforce", "ppo", "reverse_kl")


def cases():
    """Every (paper loss, regime) case, in family order, as throughput.Case objects."""
    from experiments.benchmarks.throughput import Case
    from modeseek import losses

    out = []
    for family in ("mode_covering", "contrastive", "on_policy"):
        for name in PAPER_LOSSES:
            spec = losses.get(name)
            if spec.family != family:
                continue
            for sampling in SAMPLINGS:
                if spec.batch == "target" and sampling not in EXACT:
                    continue
                desc = {"points": "64 samples", "best_of_n": "best of 64", "pairs": "64 disjoint pairs", "target": "analytic"}[spec.batch]
                out.append(Case(f"{name}/{sampling}", name, sampling, _options(spec.batch), f"{family}: {name}, {sampling}, {desc}"))
    return out


@dataclasses.dataclass(frozen=True)
class Args:
    """Benchmark each of the paper's ten losses in every sampling regime."""

    quick: bool = False
    """Tiny budget (16 runs x 20 steps, 1 timed call; only the three cases with a baseline unless --only); writes only with --out."""
    seeds: int | None = None
    """Runs per call (default 1024)."""
    steps: int | None = None
    """Gradient steps per run (default 1000)."""
    repeats: int | None = None
    """Timed calls per case after the compiling one (default 2)."""
    only: tuple[str, ...] = ()
    """Case names ("loss/sampling") or loss names to run (default: all 36)."""
    out: Annotated[Path | None, tyro.conf.arg(metavar="FILE.json")] = None
    """JSON output (default: suite.json beside this script, except with --quick)."""
    host_devices: int | None = None
    """XLA CPU devices to shard runs over (default: one per usable core)."""
    device: str = "cpu"
    """Platform to run on: "cpu", or "gpu" (exits with one line when JAX sees no GPU); recorded in the JSON."""


def targets(results: dict) -> dict:
    """Whether each case timed against the baseline reaches throughput.TARGET_RATIO (see throughput.targets)."""
    from experiments.benchmarks.throughput import targets as ratio_targets

    return ratio_targets(results)


def table(results: dict) -> str:
    """Markdown table of the results."""
    lines = [
        "| loss | sampling | family | compile (s) | seed-steps/s (best) | per CPU-second |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for r in results.values():
        fam = r["description"].split(":")[0]
        lines.append(f"| {r['loss']} | {r['sampling']} | {fam} | {r['compile_seconds']:.1f} | {common.rate(r['seed_steps_per_s_best'])} | {common.rate(r['seed_steps_per_cpu_s_best'])} |")
    return "\n".join(lines)


def seeds_for(case, seeds: int) -> int:
    """Runs for a case: 1/64 of ``seeds`` for the exact pair cases (K x K pairs per step)."""
    from modeseek import losses

    if case.sampling in EXACT and losses.get(case.loss).batch == "pairs":
        return max(1, seeds // 64)
    return seeds


def select(all_cases, only, quick):
    if not only:
        return [c for c in all_cases if c.name in BASELINE] if quick else list(all_cases)
    names = {c.name for c in all_cases} | {c.loss for c in all_cases}
    bad = sorted(set(only) - names)
    if bad:
        raise SystemExit(f"unknown case(s) {bad}; valid names are loss names or {', '.join(c.name for c in all_cases)}")
    return [c for c in all_cases if c.name in only or c.loss in only]


def main(argv=None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__.splitlines()[0])
    common.configure_device(args.device, args.host_devices)
    from experiments.benchmarks.throughput import bench_case

    seeds = args.seeds or (16 if args.quick else 1024)
    steps = args.steps or (20 if args.quick else 1000)
    repeats = args.repeats or (1 if args.quick else 2)
    chosen = select(cases(), args.only, args.quick)
    report = common.header("suite", args.quick)
    report["settings"] = {"num_bins": 100, "problem": "far", "policy": "tabular", "optimizer": "adam", "seeds": seeds, "steps": steps, "repeats": repeats}
    m = report["machine"]
    print(f"suite: {len(chosen)} cases, {seeds} runs x {steps} steps, {repeats} timed calls; {m['jax_device_count']} device(s), load {m['load_average_1m_at_start']}")
    results = {}
    for case in chosen:
        if case.name in BASELINE:
            # Under the baseline's name, which selects its jit(vmap(scan)); the report keeps the suite's name.
            r = bench_case(dataclasses.replace(case, name=BASELINE[case.name]), seeds=seeds_for(case, seeds), steps=steps, repeats=repeats, compare=True, policy_snapshots=False)
        else:
            r = bench_case(case, seeds=seeds_for(case, seeds), steps=steps, repeats=repeats)
        r["family"] = r["description"].split(":")[0]
        r["seed_steps_per_cpu_s_median"] = statistics.median(r["runs"] * steps / c for c in r["cpu_seconds"])
        results[case.name] = r
        print(
            f"  {case.name:26s} compile {r['compile_seconds']:5.1f} s  {common.rate(r['seed_steps_per_s_best']):>8s} seed-steps/s  ({common.rate(r['seed_steps_per_cpu_s_best'])} per CPU-s)",
            flush=True,
        )
    report["results"] = results
    report["targets"] = targets(results)
    print()
    print(table(results))
    for name, t in report["targets"].items():
        print(f"target {name}: engine / jit(vmap(scan)) x{t['ratio_median']:.2f} ({t['ratio_min']:.2f}-{t['ratio_max']:.2f}), need x{t['required_ratio']:.1f} ({'met' if t['met'] else 'not met'})")
    common.save_report(report, args.out, args.quick, DEFAULT_OUT)
    return report


if __name__ == "__main__":
    main()
