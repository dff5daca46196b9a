"""The sampler's cumulative sum: ``modeseek.regimes.prefix_sums`` against ``jnp.cumsum``, side by side in one process.

Usage: python -m experiments.benchmarks.cumsum [--quick] [--repeats R] [--out FILE.json]

``prefix_sums`` performs XLA:CPU's blocked cumulative sum (blocks of 16) as
two loops instead of reduce-window kernels, with the same bits
(``tests/test_sample_bins_fast.py``). Two measurements, each alternating the
two implementations (order reversed on every repeat) so that the machine's
drift hits both:

* ``kernel``: the sum alone, on (rows, 100) probability tables inside a
  jitted loop of 1000 iterations, one program per CPU device, both devices at
  once (rows = 128: a tabular block; 100: the MLP protocol's evaluation draws);
* ``engine``: whole ``modeseek.run`` calls whose sampler uses one or the other
  (REINFORCE with 64 samples and on-policy DPO with 64 disjoint pairs, 1024
  runs x 1000 steps, K = 100; the paper's MLP protocol, 16 seeds x 1500 steps).
  Each call compiles its program afresh (the compiled-program cache is
  cleared), and the report uses the engine's run seconds, which exclude
  compiling.

The ratio per pair is cumsum seconds / prefix_sums seconds (> 1: prefix_sums
is faster); the report gives the median and min-max. Printed, and written as
JSON beside this script (atomically).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path
from typing import Annotated

import tyro

from experiments.benchmarks import common

DEFAULT_OUT = Path(__file__).with_name("cumsum.json")
IMPLEMENTATIONS = ("prefix_sums", "cumsum")


@dataclasses.dataclass(frozen=True)
class Args:
    """prefix_sums against jnp.cumsum: the kernel alone and whole engine calls, alternating in one process."""

    quick: Annotated[bool, tyro.conf.arg(help="small sizes (a smoke run; writes only with --out)")] = False
    repeats: int = 4
    """Alternating pairs per case."""
    out: Path | None = None
    host_devices: int | None = None
    """XLA CPU devices (default: one per usable core; set before JAX starts)."""
    device: str = "cpu"
    """Platform to run on: "cpu", or "gpu" (exits with one line when JAX sees no GPU); recorded in the JSON."""


def _summary(times: dict[str, list[float]]) -> dict:
    ratios = [c / f for c, f in zip(times["cumsum"], times["prefix_sums"])]
    return {"seconds": times, "ratio_per_pair": ratios, "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}


def kernel(rows: int, iterations: int, repeats: int) -> dict:
    """The sum alone on (rows, 100) tables, one jitted loop per device, all devices at once."""
    import jax
    import jax.numpy as jnp

    from modeseek import regimes

    fns = {"prefix_sums": jax.vmap(regimes.prefix_sums), "cumsum": lambda x: jnp.cumsum(x, axis=-1)}

    def looped(fn):
        def f(x):
            def body(c, t):
                return c + fn(x * (1.0 + 1e-7 * t))[:, -1].sum(), None

            return jax.lax.scan(body, jnp.float32(0.0), jnp.arange(iterations, dtype=jnp.float32))[0]

        return jax.jit(f)

    x = jnp.exp(jax.random.normal(jax.random.PRNGKey(0), (rows, 100)))
    progs = {name: looped(fn) for name, fn in fns.items()}
    args = [jax.device_put(x, d) for d in jax.devices()]
    for p in progs.values():
        jax.block_until_ready([p(a) for a in args])
    times: dict[str, list[float]] = {name: [] for name in IMPLEMENTATIONS}
    for r in range(repeats):
        for name in IMPLEMENTATIONS if r % 2 == 0 else IMPLEMENTATIONS[::-1]:
            t0 = time.perf_counter()
            jax.block_until_ready([progs[name](a) for a in args])
            times[name].append(time.perf_counter() - t0)
    return {"rows": rows, "bins": 100, "iterations": iterations, "devices": len(args), **_summary(times)}


def engine(name: str, call, repeats: int) -> dict:
    """Whole engine calls with the sampler's cumulative sum swapped, each program compiled afresh."""
    import jax.numpy as jnp

    from modeseek import _blocks, regimes

    fast = regimes.prefix_sums
    times: dict[str, list[float]] = {n: [] for n in IMPLEMENTATIONS}
    try:
        for r in range(repeats):
            for impl in IMPLEMENTATIONS if r % 2 == 0 else IMPLEMENTATIONS[::-1]:
                # sample_bins reads the module attribute when it is traced, so the swap takes effect on a fresh compile.
                regimes.prefix_sums = fast if impl == "prefix_sums" else (lambda x: jnp.cumsum(x, axis=-1))
                _blocks._executables.clear()
                times[impl].append(call(r).run_seconds)
    finally:
        regimes.prefix_sums = fast
        _blocks._executables.clear()
    out = {"case": name, **_summary(times)}
    print(f"  engine {name:18s} cumsum / prefix_sums x{out['ratio_median']:.3f} ({out['ratio_min']:.3f}-{out['ratio_max']:.3f})", flush=True)
    return out


def main(argv=None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__.splitlines()[0])
    if args.repeats < 1:
        raise SystemExit(f"repeats={args.repeats} is invalid; expected at least 1")
    common.configure_device(args.device, args.host_devices)
    import modeseek as ms
    from modeseek.paper import protocol

    far = ms.paper_bandit("far")
    seeds, steps = (16, 20) if args.quick else (1024, 1000)
    mlp_seeds, mlp_steps = (2, 15) if args.quick else (16, 1500)
    report = common.header("cumsum", args.quick)
    results: dict = {"kernel": [kernel(rows, 50 if args.quick else 1000, args.repeats) for rows in (128, 100)]}
    for k in results["kernel"]:
        print(f"  kernel ({k['rows']}, 100) x {k['iterations']}: cumsum / prefix_sums x{k['ratio_median']:.2f} ({k['ratio_min']:.2f}-{k['ratio_max']:.2f})", flush=True)
    calls = {
        "reinforce_b64": lambda r: ms.run(far, loss="reinforce", num_samples=64, steps=steps, seeds=seeds, key=r, snapshot_every=steps),
        "dpo_64pairs": lambda r: ms.run(far, loss="dpo", num_samples=128, pairing="disjoint", steps=steps, seeds=seeds, key=r, snapshot_every=steps),
        "paper_mlp_on_policy_bon": lambda r: ms.run(far, seeds=mlp_seeds, key=r, **protocol.ON_POLICY_BEST_OF_N.run_kwargs(num_eval_contexts=100, steps=mlp_steps)),
    }
    results["engine"] = [engine(name, call, args.repeats) for name, call in calls.items()]
    report["results"] = results
    report["settings"] = {"seeds": seeds, "steps": steps, "mlp_seeds": mlp_seeds, "mlp_steps": mlp_steps, "repeats": args.repeats}
    common.save_report(report, args.out, args.quick, DEFAULT_OUT)
    return report


if __name__ == "__main__":
    main()
