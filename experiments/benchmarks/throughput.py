"""Warm throughput (seed-steps per second) and compile time of the engine.

Usage: python -m experiments.benchmarks.throughput [--quick] [--out FILE.json]

Cases (K = 100 bins, the "far" paper bandit, tabular policy, Adam):

* ``reverse_kl_exact``: exact reverse KL to pi_star (sampling="exact"). It is
  deterministic, so the runs differ by their learning rates: 1024 distinct
  values swept as one grid axis (a run that ignored its batch index could be
  left unbatched by vmap and flatter the number);
* ``reinforce_b64``: REINFORCE with 64 on-policy samples per step;
* ``dpo_64pairs``: on-policy DPO with 64 disjoint pairs per step (128 samples);
* ``dpo_66pairs_all``: on-policy DPO with all 66 pairs of 12 samples.

Each case runs once to compile, then ``repeats`` timed calls with fresh keys
(and, for reverse KL, fresh learning rates), so no call repeats another's
values. Throughput is seeds x steps / run_seconds (the engine's timing of the
compiled call, up to block_until_ready); the CPU time of each call is recorded
too, since on a shared machine wall time overstates the cost. Runs are sharded over one XLA CPU
device per usable core (``--host-devices``). The table is printed and written as
JSON beside this script (atomically), with the machine and the reference
numbers of a straightforward jit(vmap(scan)) on a 2-core CPU.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import tyro

from experiments.benchmarks import common

#: Seed-steps per second of a straightforward jit(vmap(scan)) on a 2-core CPU (issue #10).
REFERENCE = {"reverse_kl_exact": 1.2e6, "reinforce_b64": 2.8e5, "dpo_64pairs": 1.5e5}

DEFAULT_OUT = Path(__file__).with_name("throughput.json")


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmarked configuration (static options for modeseek.run)."""

    name: str
    loss: str
    sampling: str
    options: tuple[tuple[str, object], ...] = ()
    description: str = ""


CASES = (
    Case("reverse_kl_exact", "reverse_kl", "exact", (), "exact reverse KL, one learning rate per run"),
    Case("reinforce_b64", "reinforce", "on_policy", (("num_samples", 64),), "REINFORCE, 64 samples per step"),
    Case("dpo_64pairs", "dpo", "on_policy", (("num_samples", 128), ("pairing", "disjoint")), "DPO, 64 disjoint pairs per step"),
    Case("dpo_66pairs_all", "dpo", "on_policy", (("num_samples", 12), ("pairing", "all")), "DPO, all 66 pairs of 12 samples"),
)


@dataclasses.dataclass(frozen=True)
class Args:
    """Measure warm throughput and compile time of the engine."""

    quick: bool = False
    """Small budget (64 seeds x 100 steps, 1 timed call) to check that the script works; writes only with --out."""
    seeds: int | None = None
    """Runs per call (default 1024; 64 with --quick)."""
    steps: int | None = None
    """Gradient steps per run (default 1000; 100 with --quick)."""
    repeats: int | None = None
    """Timed calls per case after the compiling one (default 3; 1 with --quick)."""
    out: Annotated[Path | None, tyro.conf.arg(metavar="FILE.json", help_behavior_hint="")] = None
    """JSON output (default: throughput.json beside this script, except with --quick)."""
    only: tuple[str, ...] = ()
    """Names of the cases to run (default all)."""
    host_devices: int | None = None
    """XLA CPU devices to shard runs over (default: one per usable core; set before JAX starts)."""


def machine() -> dict:
    """What the numbers were measured on."""
    import jax

    dev = jax.devices()[0]
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": common.usable_cpus(),
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jax_version": jax.__version__,
        "jax_backend": jax.default_backend(),
        "device": getattr(dev, "device_kind", str(dev)),
        "jax_device_count": jax.device_count(),
        "compilation_cache_dir": jax.config.jax_compilation_cache_dir,
        "load_average_1m_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def bench_case(case: Case, *, seeds: int, steps: int, repeats: int, problem=None, devices=None) -> dict:
    """Compile once, then time ``repeats`` calls with fresh keys/values.

    ``problem`` defaults to the "far" paper bandit (K = 100); ``devices`` is passed
    to modeseek.run (default: every visible device).
    """
    import modeseek as ms

    problem = ms.paper_bandit("far") if problem is None else problem
    opts = dict(case.options)
    if devices is not None:
        opts["devices"] = devices

    def call(i: int):
        kw = dict(opts)
        if case.sampling in ("exact", "exact_offline"):
            # Deterministic runs: make every run differ through its learning rate,
            # and every call through a slightly shifted grid.
            kw["learning_rate"] = np.geomspace(0.01, 0.1, seeds) * (1.0 + 0.01 * i)
            n_seeds = 1
        else:
            n_seeds = seeds
        t0, c0 = time.perf_counter(), time.process_time()
        traj = ms.run(problem, loss=case.loss, sampling=case.sampling, steps=steps, seeds=n_seeds, key=1000 + i, **kw)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        final = np.asarray(traj.metrics["expected_reward"])[..., -1].ravel()
        return traj, wall, cpu, final

    first, _, _, final0 = call(0)
    runs = final0.size
    timed, walls, cpus = [], [], []
    for i in range(1, repeats + 1):
        traj, wall, cpu, _ = call(i)
        if traj.compile_seconds:
            raise RuntimeError(f"case {case.name}: call {i} recompiled ({traj.compile_seconds:.1f} s)")
        timed.append(traj.run_seconds)
        walls.append(wall)
        cpus.append(cpu)
    seed_steps = runs * steps
    rates = [seed_steps / t for t in timed]
    return {
        "description": case.description,
        "loss": case.loss,
        "sampling": case.sampling,
        "options": dict(case.options),
        "num_bins": problem.num_bins,
        "devices": len(devices) if devices is not None else _device_count(),
        "runs": runs,
        "steps": steps,
        "compile_seconds": first.compile_seconds,
        "first_run_seconds": first.run_seconds,
        "run_seconds": timed,
        # Whole ms.run calls (host-side work included), and the CPU time they used:
        # CPU time well below usable_cpus x wall time means the machine was shared.
        "wall_seconds": walls,
        "cpu_seconds": cpus,
        "seed_steps_per_s_best": max(rates),
        "seed_steps_per_s_median": statistics.median(rates),
        # Per CPU-second of the whole call: less sensitive to other processes on a
        # shared machine (on an idle one, wall throughput is at least this when XLA
        # runs the program on one thread).
        "seed_steps_per_cpu_s_best": max(seed_steps / c for c in cpus),
        # Evidence that the runs differ (a collapsed batch would have zero spread).
        "final_expected_reward_std_over_runs": float(np.std(final0)),
        "final_expected_reward_mean_over_runs": float(np.mean(final0)),
        "reference_seed_steps_per_s": REFERENCE.get(case.name),
    }


def _device_count() -> int:
    import jax

    return jax.device_count()


def table(results: dict) -> str:
    """A Markdown table of the results."""
    lines = [
        "| case | compile (s) | best (seed-steps/s) | median (seed-steps/s) | per CPU-second, best | reference |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        ref = r["reference_seed_steps_per_s"]
        lines.append(
            f"| {name} | {r['compile_seconds']:.1f} | {common.rate(r['seed_steps_per_s_best'])} | "
            f"{common.rate(r['seed_steps_per_s_median'])} | {common.rate(r['seed_steps_per_cpu_s_best'])} | {common.rate(ref) if ref else '-'} |"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__.splitlines()[0])
    common.configure_host_devices(args.host_devices)
    seeds = args.seeds or (64 if args.quick else 1024)
    steps = args.steps or (100 if args.quick else 1000)
    repeats = args.repeats or (1 if args.quick else 3)
    names = {c.name for c in CASES}
    bad = sorted(set(args.only) - names)
    if bad:
        raise SystemExit(f"unknown case(s) {bad}; valid names are {', '.join(sorted(names))}")
    cases = [c for c in CASES if not args.only or c.name in args.only]

    info = machine()
    print(
        f"{info['jax_backend']} ({info['device']}), {info['usable_cpus']} usable CPUs, jax {info['jax_version']}, "
        f"load {info['load_average_1m_at_start']}; {seeds} runs x {steps} steps, {repeats} timed calls"
    )
    results = {}
    for case in cases:
        results[case.name] = r = bench_case(case, seeds=seeds, steps=steps, repeats=repeats)
        print(f"  {case.name:18s} compile {r['compile_seconds']:5.1f} s  best {common.rate(r['seed_steps_per_s_best'])}  median {common.rate(r['seed_steps_per_s_median'])} seed-steps/s", flush=True)
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": args.quick,
        "settings": {"num_bins": 100, "problem": "far", "policy": "tabular", "optimizer": "adam", "seeds": seeds, "steps": steps, "repeats": repeats},
        "machine": info,
        "reference_seed_steps_per_s": REFERENCE,
        "results": results,
    }
    # The targets: 2x the reference on each of its three cases.
    report["targets"] = common.targets(results, REFERENCE, 2.0)
    print()
    print(table(results))
    print()
    common.save_report(report, args.out, args.quick, DEFAULT_OUT)
    return report


if __name__ == "__main__":
    main()
