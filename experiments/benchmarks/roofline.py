"""How close the engine gets to what this machine allows: a roofline per benchmarked case.

Usage: python -m experiments.benchmarks.roofline [--quick] [--only NAME ...] [--out FILE.json]

1. The machine (measured here, best of ``repeats``; rates per core from CPU time):
   * streaming bandwidth of an XLA loop ``x = a x + b`` over float32 arrays of
     768 KiB (in L2), 8 MiB (in L3) and 256 MiB (DRAM), counting one read and
     one write per element; plus a NumPy copy of 256 MiB for comparison;
   * arithmetic rate of an XLA loop of fused multiply-adds on an in-cache array
     (elementwise float32 flops, the kind of code the engine runs; eight
     independent chains per element), and of ``exp`` on the same
     (transcendentals per second); a 1024^3 float32 matmul
     for comparison (not used as a roof: the engine has no large matmuls).
     Each measurement lasts about 0.25 s per call (loops lengthened to fit).
2. The work of one seed-step (one gradient step of one run, with its exact
   metrics and, on-policy, its sampling), from XLA's cost analysis of the
   engine's own program for 16 runs: XLA counts a loop body once, so the
   program is compiled with its scans unrolled for 2 and 3 steps and the
   difference is one step. Flops and transcendentals are XLA's counts;
   bytes are XLA's "bytes accessed": every fused kernel reads its operands
   and writes its results through memory once (nothing kept in registers
   between kernels). The binary search of sample_bins for K > 512 is a
   loop XLA counts once (its work is undercounted there, by at most
   n log2 K compares per step).
3. The limit: time per seed-step >= max(flops / F + transcendentals / T,
   bytes / B), with F, T per-core rates (they share one core's units) and B
   the bandwidth of the cache level that holds a device's working set (runs
   per device x K x 4 bytes x 16 vectors: parameters, two Adam moments, the
   gradient, the policy's probabilities and log-probabilities, the five metric
   rows, the problem's four vectors and a snapshot). The achieved fraction is
   that bound / the measured CPU seconds per seed-step (from the suite and
   scaling reports beside this script when they exist, else timed here);
   the wall-time fraction divides the machine's cores among the devices.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import tyro

from experiments.benchmarks import common

DEFAULT_OUT = common.HERE / "roofline.json"
COST_RUNS = 16
WORKING_SET_VECTORS = 16


@dataclasses.dataclass(frozen=True)
class Args:
    """Machine limits, work per seed-step and the achieved fraction of the limit."""

    quick: bool = False
    """Small arrays and two cases (reverse_kl/exact, reinforce/on_policy); writes only with --out."""
    only: tuple[str, ...] = ()
    """Suite case names ("loss/sampling") or loss names to model (default: every suite case, plus the K sweep)."""
    suite: Path | None = None
    """Suite report with measured rates (default: suite.json beside this script, if any)."""
    scaling: Path | None = None
    """Scaling report with measured rates (default: scaling.json beside this script, if any)."""
    repeats: int | None = None
    """Repeats of each machine measurement (default 5; 2 with --quick)."""
    out: Annotated[Path | None, tyro.conf.arg(metavar="FILE.json")] = None
    """JSON output (default: roofline.json beside this script, except with --quick)."""
    host_devices: int | None = None
    """XLA CPU devices (default: one per usable core)."""
    device: str = "cpu"
    """Platform to run on: "cpu", or "gpu" (exits with one line when JAX sees no GPU); recorded in the JSON."""


# ----------------------------------------------------------------------------- the machine


def cache_sizes() -> dict:
    """L2 (per core) and L3 sizes in bytes, from sysfs (defaults if unreadable)."""
    sizes = {"l2": 1 << 20, "l3": 32 << 20}
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        for d in base.glob("index*"):
            level = int((d / "level").read_text())
            kind = (d / "type").read_text().strip()
            if kind in ("Unified", "Data") and level in (2, 3):
                s = (d / "size").read_text().strip()
                mult = {"K": 1 << 10, "M": 1 << 20}.get(s[-1], 1)
                sizes[f"l{level}"] = int(s.rstrip("KM")) * mult
    except (OSError, ValueError):
        pass
    return sizes


def _best(fn, work, repeats):
    """Work per second from the best wall and the best CPU time of ``repeats`` calls."""
    wall, cpu = common.timed(fn, repeats)
    return {"per_s_wall": work / wall, "per_s_cpu": work / max(cpu, 1e-9), "seconds_wall": wall, "seconds_cpu": cpu}


def _loop_rate(body, x, work_per_iter, repeats, target_s):
    """Rate of ``body`` applied in an XLA loop, with the trip count grown until a call lasts ~target_s.

    Long calls matter: CPU time is accounted in ticks of a few milliseconds, and
    the loop's per-iteration overhead must stay small against the body.
    """
    import jax

    f = jax.jit(lambda v, n: jax.lax.fori_loop(0, n, lambda i, u: body(u), v))
    f(x, 1).block_until_ready()  # compile (the trip count is traced: one program)
    # At least 8 passes: a call's first pass over a fresh output buffer pays page faults.
    n = 8
    while True:
        t0 = time.perf_counter()
        f(x, n).block_until_ready()
        dt = time.perf_counter() - t0
        if dt >= target_s / 8 or n >= 1 << 30:
            break
        n *= 4
    n = max(1, int(n * target_s / max(dt, 1e-9)))
    r = _best(lambda: f(x, n).block_until_ready(), work_per_iter * n, repeats)
    r["iterations"] = n
    return r


def measure_machine(quick: bool, repeats: int) -> dict:
    """Bandwidths and arithmetic rates of this machine (see the module docstring)."""
    import jax.numpy as jnp

    target = 0.05 if quick else 0.25
    out = {"caches": cache_sizes()}
    # L2: 768 KiB of a 1 MiB L2 (a smaller array would time the loop's overhead).
    sizes = {"l2": 768 << 10, "l3": 8 << 20, "dram": (32 << 20) if quick else (256 << 20)}
    out["bandwidth_array_bytes"] = sizes
    out["bandwidth_bytes_per_s"] = {lvl: _loop_rate(lambda v: v * 0.999 + 0.001, jnp.ones(nb // 4, jnp.float32), 2.0 * nb, repeats, target) for lvl, nb in sizes.items()}

    n = sizes["dram"] // 4
    src, dst = np.ones(n, np.float32), np.empty(n, np.float32)
    copies = max(1, int(target / 0.01))

    def copy():
        for _ in range(copies):
            np.copyto(dst, src)

    out["numpy_copy_bytes_per_s"] = _best(copy, 2.0 * src.nbytes * copies, repeats)

    # 64 KiB arrays (in L2) and eight independent chains per element, so that the
    # rates are not limited by the latency of one dependent chain (a single
    # chain of FMAs or exps measures 3-4x less on this machine).
    m = 16384
    x = jnp.linspace(0.1, 0.9, m, dtype=jnp.float32)

    def fma_body(v):
        a = [v * (0.99 + 0.001 * j) + 0.001 * j for j in range(8)]
        for _ in range(7):
            a = [u * 0.999 + 0.0005 for u in a]
        total = a[0]
        for u in a[1:]:
            total = total + u
        return total * 0.125

    def exp_body(v):
        e = [jnp.exp(-v * (1.0 - 0.1 * j)) for j in range(8)]
        total = e[0]
        for u in e[1:]:
            total = total + u
        return total * 0.125

    # 8 x 8 multiply-adds, 7 adds and a scale per element; 8 exps per element
    # (their 16 other flops are not counted, which makes T a little low).
    out["elementwise_flops_per_s"] = _loop_rate(fma_body, x, (8 * 8 * 2 + 8) * m, repeats, target)
    out["transcendentals_per_s"] = _loop_rate(exp_body, x, 8.0 * m, repeats, target)
    d = 512 if quick else 1024
    a = jnp.ones((d, d), jnp.float32) / d  # a @ a = a: a fixed point, no overflow
    out["matmul_flops_per_s"] = _loop_rate(lambda v: v @ v, a, 2.0 * d**3, repeats, target)
    return out


# ----------------------------------------------------------------------------- work per seed-step


@contextlib.contextmanager
def _unrolled_scans():
    """Trace the engine with fully unrolled lax.scan, so that XLA's cost analysis counts every step."""
    import jax

    orig = jax.lax.scan
    jax.lax.scan = functools.partial(orig, unroll=True)
    try:
        yield
    finally:
        jax.lax.scan = orig


def _engine_args(problem, runs, lr=0.05):
    import jax
    import jax.numpy as jnp

    from modeseek import engine

    k = problem.num_bins
    keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.PRNGKey(0), jnp.arange(runs, dtype=jnp.uint32))
    hp = {n: jnp.full((runs,), getattr(engine.HyperParams, n) if getattr(engine.HyperParams, n) is not None else 5.0, jnp.float32) for n in engine._TRACED_FIELDS}
    hp["learning_rate"] = jnp.full((runs,), lr, jnp.float32)
    ref = jnp.broadcast_to(problem.ref_probs, (runs, k))
    rew = jnp.broadcast_to(problem.reward, (runs, k))
    arrays = {"ref_probs": ref, "reward": rew, "train_reward": rew, "data_probs": ref, "target_probs": jnp.zeros((runs, k), jnp.float32), "offline": jnp.zeros((runs,), bool)}
    return (keys, engine.HyperParams(**hp), arrays)


def step_cost(loss: str, sampling: str, options: dict, problem) -> dict:
    """Flops, transcendentals and bytes accessed per seed-step (XLA cost analysis, see module docstring)."""
    import jax

    from modeseek import engine

    def cost(steps):
        cfg = engine.RunConfig(loss=loss, sampling=sampling, steps=steps, num_bins=problem.num_bins, snapshot_every=steps, **options)
        with _unrolled_scans():
            exe = jax.jit(jax.vmap(engine.make_train(cfg))).lower(*_engine_args(problem, COST_RUNS)).compile()
        ca = exe.cost_analysis()
        ca = ca[0] if isinstance(ca, (list, tuple)) else ca
        return np.array([ca.get("flops", 0.0), ca.get("transcendentals", 0.0), ca.get("bytes accessed", 0.0)])

    d = (cost(3) - cost(2)) / COST_RUNS
    return {"flops": float(d[0]), "transcendentals": float(d[1]), "bytes": float(d[2])}


def working_set_bytes(runs_per_device: int, k: int) -> int:
    """Bytes a device's batch keeps live across a step (the model of the module docstring)."""
    return runs_per_device * k * 4 * WORKING_SET_VECTORS


def limit(cost: dict, machine: dict, ws_bytes: int) -> dict:
    """Lower bound on the seconds per seed-step on one core, and which roof sets it."""
    caches = machine["caches"]
    bws = machine["bandwidth_bytes_per_s"]
    if ws_bytes <= caches["l3"]:
        # Streaming from L2 measured no faster than from L3 here (loop overhead
        # weighs on the smaller array), so a cache-resident set gets the better of the two.
        level, bw = "cache", max(bws["l2"]["per_s_cpu"], bws["l3"]["per_s_cpu"])
    else:
        level, bw = "dram", bws["dram"]["per_s_cpu"]
    f = machine["elementwise_flops_per_s"]["per_s_cpu"]
    t = machine["transcendentals_per_s"]["per_s_cpu"]
    t_compute = cost["flops"] / f + cost["transcendentals"] / t
    t_memory = cost["bytes"] / bw
    return {
        "seconds_compute": t_compute,
        "seconds_memory": t_memory,
        "memory_level": level,
        "seconds": max(t_compute, t_memory),
        "bound": "compute" if t_compute >= t_memory else "memory",
        "seed_steps_per_s_per_core": 1.0 / max(t_compute, t_memory),
    }


# ----------------------------------------------------------------------------- achieved rates


def _load(path: Path | None, default: Path, quick: bool):
    p = path or default
    if p.exists():
        rep = json.loads(p.read_text())
        if path is not None or not rep.get("quick") or quick:
            return rep, str(p)
    return None, None


def _measure_rate(case, problem, quick, seeds=None, steps=None) -> dict:
    from experiments.benchmarks.suite import seeds_for
    from experiments.benchmarks.throughput import bench_case

    seeds = seeds or seeds_for(case, 16 if quick else 256)
    steps = steps or (20 if quick else 200)
    return bench_case(case, seeds=seeds, steps=steps, repeats=1 if quick else 2, problem=problem)


def main(argv=None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__.splitlines()[0])
    common.configure_device(args.device, args.host_devices)
    import jax

    import modeseek as ms
    from experiments.benchmarks import scaling as scaling_mod
    from experiments.benchmarks import suite as suite_mod

    repeats = args.repeats or (2 if args.quick else 5)
    report = common.header("roofline", args.quick)
    devices = jax.device_count()
    cores = report["machine"]["usable_cpus"]
    print(f"roofline: {devices} device(s) on {cores} core(s), load {report['machine']['load_average_1m_at_start']}")
    mach = measure_machine(args.quick, repeats)
    report["machine_limits"] = mach
    bw = mach["bandwidth_bytes_per_s"]
    print(
        f"  bandwidth (per core, CPU time): L2 {bw['l2']['per_s_cpu'] / 1e9:.1f} GB/s, L3 {bw['l3']['per_s_cpu'] / 1e9:.1f} GB/s, "
        f"DRAM {bw['dram']['per_s_cpu'] / 1e9:.1f} GB/s; numpy copy {mach['numpy_copy_bytes_per_s']['per_s_cpu'] / 1e9:.1f} GB/s"
    )
    print(
        f"  elementwise {mach['elementwise_flops_per_s']['per_s_cpu'] / 1e9:.1f} GFLOP/s, exp {mach['transcendentals_per_s']['per_s_cpu'] / 1e9:.2f} G/s, "
        f"matmul {mach['matmul_flops_per_s']['per_s_cpu'] / 1e9:.1f} GFLOP/s (per CPU-second)",
        flush=True,
    )

    suite_rep, suite_src = _load(args.suite, suite_mod.DEFAULT_OUT, args.quick)
    scaling_rep, scaling_src = _load(args.scaling, scaling_mod.DEFAULT_OUT, args.quick)
    report["rates_from"] = {"suite": suite_src, "scaling": scaling_src}

    all_cases = suite_mod.cases()
    if args.only:
        chosen = suite_mod.select(all_cases, args.only, False)
    elif args.quick:
        chosen = [c for c in all_cases if c.name in ("reverse_kl/exact", "reinforce/on_policy")]
    else:
        chosen = list(all_cases)
    far = ms.paper_bandit("far")
    results = {}
    for case in chosen:
        results[case.name] = _model(case, far, mach, cores, devices, (suite_rep or {}).get("results", {}).get(case.name), args.quick)

    # The K sweep: the same model at each K for the scaling report's cases.
    bins_results = {}
    if not args.only:
        sc = {c.name: c for c in scaling_mod._cases().values()}
        measured = ((scaling_rep or {}).get("results") or {}).get("bins", {})
        ks = (10, 1000) if args.quick else scaling_mod.BINS
        for name in ("reverse_kl_exact",) if args.quick else ("reverse_kl_exact", "reinforce_b64"):
            pts = []
            for k in ks:
                problem = ms.paper_bandit("far", width=k / 10, num_bins=k)
                m = next((p for p in measured.get(name, []) if p["bins"] == k), None)
                runs = 4 if args.quick else 32
                steps = 10 if args.quick else scaling_mod._steps(2**21 * 100 / (runs * k), 10, 1000)
                r = _model(sc[name], problem, mach, cores, devices, m, args.quick, seeds=runs, steps=steps)
                r["bins"] = k
                pts.append(r)
            bins_results[name] = pts
    report["results"] = results
    report["bins"] = bins_results
    report["model"] = __doc__.split("\n\n", 1)[1]
    print()
    print(table(results))
    common.save_report(report, args.out, args.quick, DEFAULT_OUT)
    return report


def _model(case, problem, mach, cores, devices, measured, quick, seeds=None, steps=None) -> dict:
    cost = step_cost(case.loss, case.sampling, dict(case.options), problem)
    if measured is None:
        measured = _measure_rate(case, problem, quick, seeds, steps)
        source = "timed here"
    else:
        source = "report"
    runs = measured["runs"]
    per_device = -(-runs // measured.get("devices", devices))
    lim = limit(cost, mach, working_set_bytes(per_device, problem.num_bins))
    cpu_rate = measured["seed_steps_per_cpu_s_best"]
    wall_rate = measured["seed_steps_per_s_best"]
    # Wall basis: the devices share the machine's cores.
    cores_used = min(cores, measured.get("devices", devices))
    r = {
        "loss": case.loss,
        "sampling": case.sampling,
        "num_bins": problem.num_bins,
        "per_seed_step": cost,
        "limit": lim,
        "measured_from": source,
        "runs": runs,
        "seed_steps_per_cpu_s": cpu_rate,
        "seed_steps_per_s": wall_rate,
        "fraction_of_limit_cpu": cpu_rate * lim["seconds"],
        "fraction_of_limit_wall": wall_rate * lim["seconds"] / cores_used,
        "achieved_flops_per_cpu_s": cost["flops"] * cpu_rate,
        "achieved_transcendentals_per_cpu_s": cost["transcendentals"] * cpu_rate,
        "achieved_bytes_per_cpu_s": cost["bytes"] * cpu_rate,
    }
    print(
        f"  {case.name:26s} K={problem.num_bins:<6d} {cost['flops']:9.0f} flop {cost['transcendentals']:7.0f} transc {cost['bytes'] / 1e3:8.1f} kB"
        f"  limit {common.rate(lim['seed_steps_per_s_per_core'])}/core ({lim['bound']}, {lim['memory_level']})"
        f"  achieved {common.rate(cpu_rate)}/CPU-s = {r['fraction_of_limit_cpu']:.0%}",
        flush=True,
    )
    return r


def table(results: dict) -> str:
    """Markdown table: work per seed-step, the limit and the achieved fraction."""
    lines = [
        "| case | flop | transc. | kB | limit /core | bound | achieved /CPU-s | fraction |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for name, r in results.items():
        c, lim = r["per_seed_step"], r["limit"]
        lines.append(
            f"| {name} | {c['flops']:.0f} | {c['transcendentals']:.0f} | {c['bytes'] / 1e3:.1f} | {common.rate(lim['seed_steps_per_s_per_core'])} | "
            f"{lim['bound']} ({lim['memory_level']}) | {common.rate(r['seed_steps_per_cpu_s'])} | {r['fraction_of_limit_cpu']:.0%} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
