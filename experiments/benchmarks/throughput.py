"""Warm throughput of the engine against a plain jit(vmap(scan)) of the same algorithm, timed in the same process.

Usage: python -m experiments.benchmarks.throughput [--quick] [--out FILE.json]

Cases (K = 100 bins, the "far" paper bandit, tabular policy, Adam):

* ``reverse_kl_exact``: exact reverse KL to pi_star (sampling="exact"). It is
  deterministic, so the runs differ by their learning rates: 1024 distinct
  values swept as one grid axis (a run that ignored its batch index could be
  left unbatched by vmap and flatter the number);
* ``reinforce_b64``: REINFORCE with 64 on-policy samples per step;
* ``dpo_64pairs``: on-policy DPO with 64 disjoint pairs per step (128 samples);
* ``dpo_66pairs_all``: on-policy DPO with all 66 pairs of 12 samples (no baseline).

Each case runs once to compile, then ``repeats`` timed calls with fresh keys
(and, for reverse KL, fresh learning rates), so no call repeats another's
values. Throughput is seeds x steps / run_seconds (the engine's timing of the
compiled call, up to block_until_ready); the CPU time of each call is recorded
too. Runs are sharded over one XLA CPU device per usable core (``--host-devices``).

The comparison: the first three cases also run the straightforward
``jit(vmap(scan))`` of ``experiments/benchmarks/baseline.py`` (same problem,
same metrics at every step, same devices, same process, its own compile
excluded). Engine and baseline calls alternate, the order swapped on every
repeat, so a change of the machine's speed hits both; each pair gives one
ratio engine / baseline = baseline seconds / engine seconds of the whole call
(both include copying every metric to the host; the engine stores the
policy's probabilities at the first and last step only, ``snapshot_every =
steps``, as the baseline returns no policy table), reported as the median and
the min-max over pairs. Absolute rates on a shared machine drift 2x between
hours; only these same-process ratios compare. A second, separate comparison
is the plain NumPy loop (``experiments/benchmarks/naive.py``, ``numpy_loop``
below): timed here on a few seeds and steps and extrapolated per seed-step.
The table is printed and written as JSON beside this script (atomically).
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

#: Required engine / baseline ratio (same process, one CPU core per device).
TARGET_RATIO = 1.5

DEFAULT_OUT = Path(__file__).with_name("throughput.json")

#: Why the engine / baseline ratio stays below TARGET_RATIO, from profiles in one process (written into the JSON).
PROFILE_NOTE = (
    "Tabular runs are computed in blocks fitted to the call (modeseek.engine.fit_block: up to 128 runs at K = 100); "
    "their bits do not depend on the width since modeseek compiles them without XLA's CPU library fusions (YNNPACK), "
    "whose sums over the bins rounded differently at different widths (modeseek._xla). The baseline is one program "
    "512 runs wide per device. Same process, 1024 runs x 1000 steps, two devices, 3 alternating pairs: blocks of 128 "
    "ran at x0.77 (exact reverse KL), x0.87 (REINFORCE B=64), x0.94 (DPO 64 pairs) of the baseline's speed, the "
    "former fixed blocks of 32 at x0.68, x0.74, x0.88, blocks of 256 at x0.77, x0.88, x0.90 and one 512-run block per "
    "device at x0.72, x0.87, x0.86: the remaining gap is a cost per run-step, not per block-step. Earlier profile at "
    "32 runs per block (REINFORCE B=64, one device, CPU time, 256 runs x 1000 steps): about 107 us (engine) and 79 us "
    "(baseline) per block-step plus 3.3 and 3.0 us per run-step. "
    "Measured and rejected as "
    "not helping at 32 runs: fusing the metrics (the seven exact metrics cost about 4% of a REINFORCE step), "
    "searchsorted sampling, unrolling the scan (2, 4, 8: no gain), packing the metrics into one output per step. "
    "Kept (same bits): a select instead of a per-step cond for the reuse-1 on-policy draw, and a branch around "
    "sparse snapshot writes (4-9% and 6% of the step); cumulative sums for inverse-CDF sampling as two loops in "
    "XLA:CPU's own blocked order (modeseek.regimes.prefix_sums; experiments/benchmarks/cumsum.py: the sum x2.4, "
    "DPO 64 pairs x1.24, REINFORCE B=64 x0.96, within the spread between alternating pairs). A select for the discarded last update saves 11% but "
    "changes the bits (XLA then fuses the Adam update into the addition); with optimisation barriers around it "
    "the tabular bits still moved (up to 3.8e-6 of expected reward in tests/data/reference_runs.npz), so it was not taken."
)


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
    """Timed calls per case after the compiling one, each paired with a baseline call (default 5; 1 with --quick)."""
    out: Annotated[Path | None, tyro.conf.arg(metavar="FILE.json", help_behavior_hint="")] = None
    """JSON output (default: throughput.json beside this script, except with --quick)."""
    only: tuple[str, ...] = ()
    """Names of the cases to run (default all)."""
    host_devices: int | None = None
    """XLA CPU devices to shard runs over (default: one per usable core; set before JAX starts)."""
    device: str = "cpu"
    """Platform to run on: "cpu", or "gpu" (exits with one line when JAX sees no GPU); recorded in the JSON."""


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
        "device_platform": dev.platform,
        "devices": [str(d) for d in jax.devices()],
        "jax_device_count": jax.device_count(),
        "compilation_cache_dir": jax.config.jax_compilation_cache_dir,
        "load_average_1m_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def _engine_call(case: Case, problem, seeds: int, steps: int, devices, extra: dict):
    """``call(i) -> (trajectory, wall, cpu)``: the i-th engine call of ``case`` (fresh keys and values per i)."""
    import modeseek as ms

    opts = {**dict(case.options), **extra}
    if devices is not None:
        opts["devices"] = devices

    def call(i: int):
        kw = dict(opts)
        if case.sampling in ("exact", "exact_offline"):
            # Deterministic runs: make every run differ through its learning rate,
            # and every call through a slightly shifted grid.
            kw["learning_rate"] = _learning_rates(seeds, i)
            n_seeds = 1
        else:
            n_seeds = seeds
        t0, c0 = time.perf_counter(), time.process_time()
        traj = ms.run(problem, loss=case.loss, sampling=case.sampling, steps=steps, seeds=n_seeds, key=1000 + i, **kw)
        return traj, time.perf_counter() - t0, time.process_time() - c0

    return call


def _learning_rates(runs: int, i: int) -> np.ndarray:
    return np.geomspace(0.01, 0.1, runs) * (1.0 + 0.01 * i)


def _baseline_call(case: Case, problem, runs: int, steps: int, devices):
    """``(compile_seconds, call(i) -> (metrics, wall, cpu))`` for the jit(vmap(scan)) baseline of ``case``."""
    from experiments.benchmarks import baseline

    base = baseline.Baseline(case.name, problem, steps, runs, devices)
    compile_s = base.compile()
    exact = case.sampling in ("exact", "exact_offline")

    def call(i: int):
        t0, c0 = time.perf_counter(), time.process_time()
        out = base(1000 + i, _learning_rates(runs, i) if exact else baseline.LEARNING_RATE)
        return out, time.perf_counter() - t0, time.process_time() - c0

    return compile_s, call


def bench_case(case: Case, *, seeds: int, steps: int, repeats: int, problem=None, devices=None, compare: bool = False, policy_snapshots: bool = True) -> dict:
    """Compile once, then time ``repeats`` calls with fresh keys/values.

    ``problem`` defaults to the "far" paper bandit (K = 100); ``devices`` is passed
    to modeseek.run (default: every visible device). With ``compare`` (cases of
    ``baseline.CASES`` only), every engine call is paired with a call of the
    jit(vmap(scan)) baseline, alternating which goes first, and the report gains
    a "baseline" entry with the per-pair ratios. Without ``policy_snapshots``
    the engine stores the policy's probabilities at steps 0 and ``steps`` only
    (``snapshot_every=steps``) instead of at every step, so that it returns what
    the baseline returns (the metrics at every step): the (steps + 1, K) table
    per run is a further output, not a metric, and costs up to 2x for exact
    reverse KL.
    """
    import modeseek as ms

    problem = ms.paper_bandit("far") if problem is None else problem
    extra = {} if policy_snapshots else {"snapshot_every": steps}
    call = _engine_call(case, problem, seeds, steps, devices, extra)
    first, _, _ = call(0)
    final0 = np.asarray(first.metrics["expected_reward"])[..., -1].ravel()
    runs = final0.size
    base_call = None
    if compare:
        base_compile, base_call = _baseline_call(case, problem, runs, steps, devices)
        base0, _, _ = base_call(0)
        base_walls, base_cpus = [], []
    timed, walls, cpus = [], [], []
    for i in range(1, repeats + 1):
        # Swap the order on every repeat, so neither side always runs on a warmer or colder machine.
        if base_call is not None and i % 2 == 0:
            _, bw, bc = base_call(i)
            base_walls.append(bw)
            base_cpus.append(bc)
        traj, wall, cpu = call(i)
        if traj.compile_seconds:
            raise RuntimeError(f"case {case.name}: call {i} recompiled ({traj.compile_seconds:.1f} s)")
        timed.append(traj.run_seconds)
        walls.append(wall)
        cpus.append(cpu)
        if base_call is not None and i % 2 == 1:
            _, bw, bc = base_call(i)
            base_walls.append(bw)
            base_cpus.append(bc)
    seed_steps = runs * steps
    rates = [seed_steps / t for t in timed]
    out = {
        "description": case.description,
        "loss": case.loss,
        "sampling": case.sampling,
        "options": dict(case.options),
        "engine_options": extra,
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
        "metric_names": sorted(first.metrics),
    }
    if base_call is not None:
        ratios = [b / e for b, e in zip(base_walls, walls)]
        cpu_ratios = [b / e for b, e in zip(base_cpus, cpus)]
        base_final = base0["expected_reward"][:, -1]
        out["baseline"] = {
            "what": "jit(vmap(scan)) of experiments/benchmarks/baseline.py, same problem, metrics, devices and process",
            "metrics": sorted(base0),
            "compile_seconds": base_compile,
            "wall_seconds": base_walls,
            "cpu_seconds": base_cpus,
            "seed_steps_per_s_best": seed_steps / min(base_walls),
            # engine / baseline speed of each alternating pair of whole calls.
            "ratio_per_pair": ratios,
            "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "cpu_ratio_median": statistics.median(cpu_ratios),
            "final_expected_reward_mean_over_runs": float(np.mean(base_final)),
            "final_expected_reward_std_over_runs": float(np.std(base_final)),
        }
    return out


def numpy_loop(case: Case, *, seeds: int, steps: int, problem=None) -> dict | None:
    """The plain NumPy loop of naive.py on ``seeds`` x ``steps`` (None for cases it does not implement)."""
    import modeseek as ms
    from experiments.benchmarks import naive

    if case.name not in naive.CASES:
        return None
    problem = ms.paper_bandit("far") if problem is None else problem
    loss, n, _ = naive.CASES[case.name]
    r = naive.time_naive(loss, np.asarray(problem.ref_probs, np.float64), np.asarray(problem.reward, np.float64), seeds=seeds, steps=steps, num_samples=n)
    return {**r, "seed_steps_per_s": 1.0 / r["wall_seconds_per_seed_step"]}


def _device_count() -> int:
    import jax

    return jax.device_count()


def _ratio(b: dict | None) -> str:
    if not b:
        return "-"
    return f"x{b['ratio_median']:.2f} ({b['ratio_min']:.2f}-{b['ratio_max']:.2f})"


def table(results: dict) -> str:
    """A Markdown table of the results."""
    lines = [
        "| case | compile (s) | engine best (seed-steps/s) | engine median | per CPU-second, best | jit(vmap(scan)) best | engine / jit(vmap(scan)), median (min-max) | NumPy loop |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        b, nl = r.get("baseline"), r.get("numpy_loop")
        lines.append(
            f"| {name} | {r['compile_seconds']:.1f} | {common.rate(r['seed_steps_per_s_best'])} | "
            f"{common.rate(r['seed_steps_per_s_median'])} | {common.rate(r['seed_steps_per_cpu_s_best'])} | "
            f"{common.rate(b['seed_steps_per_s_best']) if b else '-'} | {_ratio(b)} | "
            f"{common.rate(nl['seed_steps_per_s']) if nl else '-'} |"
        )
    return "\n".join(lines)


def targets(results: dict, factor: float = TARGET_RATIO) -> dict:
    """Whether each compared case's median engine / baseline ratio reaches ``factor``."""
    return {
        name: {
            "required_ratio": factor,
            "ratio_median": r["baseline"]["ratio_median"],
            "ratio_min": r["baseline"]["ratio_min"],
            "ratio_max": r["baseline"]["ratio_max"],
            "met": r["baseline"]["ratio_median"] >= factor,
        }
        for name, r in results.items()
        if "baseline" in r
    }


def main(argv=None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__.splitlines()[0])
    common.configure_device(args.device, args.host_devices)
    from experiments.benchmarks import baseline

    seeds = args.seeds or (64 if args.quick else 1024)
    steps = args.steps or (100 if args.quick else 1000)
    repeats = args.repeats or (1 if args.quick else 5)
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
        results[case.name] = r = bench_case(case, seeds=seeds, steps=steps, repeats=repeats, compare=case.name in baseline.CASES, policy_snapshots=False)
        nl = numpy_loop(case, seeds=1, steps=min(steps, 20 if args.quick else 200))
        if nl is not None:
            r["numpy_loop"] = nl
        print(
            f"  {case.name:18s} compile {r['compile_seconds']:5.1f} s  best {common.rate(r['seed_steps_per_s_best'])}  "
            f"median {common.rate(r['seed_steps_per_s_median'])} seed-steps/s  engine / jit(vmap(scan)) {_ratio(r.get('baseline'))}",
            flush=True,
        )
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "quick": args.quick,
        "settings": {"num_bins": 100, "problem": "far", "policy": "tabular", "optimizer": "adam", "seeds": seeds, "steps": steps, "repeats": repeats},
        "machine": info,
        "results": results,
    }
    report["targets"] = targets(results)
    if any(not t["met"] for t in report["targets"].values()):
        report["note"] = PROFILE_NOTE
    print()
    print(table(results))
    print()
    common.save_report(report, args.out, args.quick, DEFAULT_OUT)
    return report


if __name__ == "__main__":
    main()
