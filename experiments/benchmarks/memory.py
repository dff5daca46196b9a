"""Peak resident memory of a run against the seeds and the stored steps, each point in a fresh process.

Usage: python -m experiments.benchmarks.memory [--quick] [--out FILE.json]

Every point is one ``modeseek.run`` call in a new Python process (so that no
other call's allocations count): REINFORCE with 64 samples per step on the
"far" paper bandit (K = 100, tabular policy, Adam), the issue's configuration.
The child first compiles with a one-seed call, then runs the measured call
and reports its peak resident set size (Linux ``VmHWM``, which starts afresh
in the new process, unlike ``ru_maxrss``) and its resident size just before the call. Points:

* seeds x steps with every metric stored (``store="every"``, metrics at every
  step, snapshots at steps 0 and ``steps``): the issue's 1024 x 1000, and
  fewer seeds or steps around it;
* the same 1024 x 1000 with ``store="final"`` (the last step's metrics only).

A least-squares line ``peak = a + c x seeds x (steps + 1)`` over the
``store="every"`` points gives the bytes per stored seed-step ``c`` (the run
stores 9 metrics per step: 8 float32 computed on the device and
reward_queries, float64 on the host) and the fixed part ``a`` (the runtime,
the compiled program, the working arrays); the residuals say how linear the
growth is. The table is printed and written as JSON beside this script.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import numpy as np
import tyro

from experiments.benchmarks import common

DEFAULT_OUT = common.HERE / "memory.json"
#: (seeds, steps) points with every metric stored; the first is the issue's run.
POINTS = ((1024, 1000), (512, 1000), (256, 1000), (1024, 500), (1024, 250), (2048, 1000))
QUICK_POINTS = ((64, 50), (32, 50), (64, 25))


@dataclasses.dataclass(frozen=True)
class Args:
    """Peak memory against seeds and stored steps, one fresh process per point."""

    quick: bool = False
    """Three tiny points; writes only with --out."""
    out: Annotated[Path | None, tyro.conf.arg(metavar="FILE.json")] = None
    """JSON output (default: memory.json beside this script, except with --quick)."""
    host_devices: int | None = None
    """XLA CPU devices to shard runs over in each child (default: one per usable core)."""
    device: str = "cpu"
    """"cpu" or "gpu": the platform each child runs on (see common.configure_device)."""


def child(seeds: int, steps: int, store: str, host_devices: int | None, device: str) -> dict:
    """One measured call in this process (the child's side): peak and starting resident sizes in bytes."""
    common.configure_device(device, host_devices)
    import modeseek as ms

    problem = ms.paper_bandit("far")
    kw = dict(loss="reinforce", sampling="on_policy", num_samples=64, steps=steps, store=store)
    ms.run(problem, seeds=1, key=0, **kw)  # compiles the program the measured call uses
    before = _rss_bytes()
    peak_before = _peak_rss_bytes()
    tr = ms.run(problem, seeds=seeds, key=1, **kw)
    peak = _peak_rss_bytes()
    stored = sum(np.asarray(v).nbytes for v in tr.metrics.values()) + tr.snapshots.nbytes + tr.final_probs.nbytes
    return {
        "seeds": seeds,
        "steps": steps,
        "store": store,
        "stored_steps": int(len(tr.eval_steps)),
        "peak_rss_bytes": int(peak),
        "rss_before_call_bytes": int(before),
        "peak_rss_before_call_bytes": int(peak_before),
        "trajectory_bytes": int(stored),
        "metric_names": sorted(tr.metrics),
        "run_seconds": tr.run_seconds,
        "device": _device_name(),
    }


def _device_name() -> str:
    import jax

    d = jax.devices()[0]
    return f"{d.platform}:{getattr(d, 'device_kind', d)}"


def _peak_rss_bytes() -> int:
    """This process's peak resident size: VmHWM (Linux), else ru_maxrss.

    VmHWM belongs to the address space, which starts afresh at exec; ru_maxrss
    survives exec, so a child started by a large parent would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss_bytes() -> int:
    """Current resident set size (Linux /proc/self/statm), 0 where unknown."""
    import os

    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def measure(seeds: int, steps: int, store: str, host_devices: int | None, device: str) -> dict:
    """Run :func:`child` in a fresh interpreter and return its report."""
    cmd = [sys.executable, "-m", "experiments.benchmarks.memory", "--child", str(seeds), str(steps), store, str(host_devices or 0), device]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=common.HERE.parents[1])
    if res.returncode != 0:
        raise RuntimeError(f"memory point {seeds} x {steps} ({store}) failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def fit(points: list[dict]) -> dict:
    """Least squares ``peak = a + c x seeds x stored_steps`` over the points, with relative residuals."""
    x = np.array([p["seeds"] * p["stored_steps"] for p in points], np.float64)
    y = np.array([p["peak_rss_bytes"] for p in points], np.float64)
    c, a = np.polyfit(x, y, 1)
    resid = y - (a + c * x)
    return {
        "bytes_per_stored_seed_step": float(c),
        "fixed_bytes": float(a),
        "max_abs_residual_bytes": float(np.max(np.abs(resid))),
        "max_relative_residual": float(np.max(np.abs(resid) / y)),
    }


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        seeds, steps, store, hd, device = argv[1:6]
        print(json.dumps(child(int(seeds), int(steps), store, int(hd) or None, device)))
        return {}
    args = tyro.cli(Args, args=argv, description=__doc__.splitlines()[0])
    points = QUICK_POINTS if args.quick else POINTS
    # The parent runs no program; configuring it too makes the header's machine record the children's platform.
    common.configure_device(args.device, args.host_devices)
    report = common.header("memory", args.quick)
    every = []
    for seeds, steps in points:
        r = measure(seeds, steps, "every", args.host_devices, args.device)
        every.append(r)
        print(f"  store=every  {seeds:5d} seeds x {steps:5d} steps: peak {r['peak_rss_bytes'] / 1e6:7.1f} MB (trajectory {r['trajectory_bytes'] / 1e6:6.1f} MB)", flush=True)
    s0, t0 = points[0]
    final = measure(s0, t0, "final", args.host_devices, args.device)
    print(f"  store=final  {s0:5d} seeds x {t0:5d} steps: peak {final['peak_rss_bytes'] / 1e6:7.1f} MB (trajectory {final['trajectory_bytes'] / 1e6:6.1f} MB)")
    line = fit(every)
    print(f"peak = {line['fixed_bytes'] / 1e6:.0f} MB + {line['bytes_per_stored_seed_step']:.0f} B x seeds x stored steps (largest residual {line['max_relative_residual']:.1%} of the peak)")
    report.update(
        {
            "case": "reinforce, on_policy, 64 samples, K = 100 (far), tabular, Adam",
            "results": {"every": every, "final": final},
            "fit": line,
            "issue_run": {"seeds": s0, "steps": t0, "peak_rss_bytes_every": every[0]["peak_rss_bytes"], "peak_rss_bytes_final": final["peak_rss_bytes"]},
        }
    )
    common.save_report(report, args.out, args.quick, DEFAULT_OUT)
    return report


if __name__ == "__main__":
    main()
