"""Shared pieces of the benchmark scripts: host devices, timing, JSON reports.

Every script imports JAX only after :func:`configure_host_devices` has run, so
that on a CPU-only machine the run axis of a sweep can be sharded over one XLA
CPU device per core (``modeseek.run`` splits it over all visible devices; the
results are bit-identical to one device).
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

_FLAG = "--xla_force_host_platform_device_count"


def usable_cpus() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def configure_host_devices(count: int | None) -> int | None:
    """Ask XLA for ``count`` CPU devices (default: one per usable core); returns the count requested.

    Must run before JAX is first imported: XLA reads the flag once. If JAX is
    already imported (e.g. in a test process) nothing changes and None is returned.
    An explicit flag already in XLA_FLAGS is left alone.
    """
    if "jax" in sys.modules:
        return None
    count = usable_cpus() if count is None else int(count)
    if count < 1:
        raise ValueError(f"host device count {count} is invalid; expected an integer >= 1")
    flags = os.environ.get("XLA_FLAGS", "")
    m = re.search(_FLAG + r"=(\d+)", flags)
    if m:
        return int(m.group(1))
    os.environ["XLA_FLAGS"] = (flags + f" {_FLAG}={count}").strip()
    return count


#: Platforms the scripts accept for ``--device``.
DEVICES = ("cpu", "gpu")


def configure_device(device: str, host_devices: int | None = None) -> None:
    """Run this process's JAX programs on ``device`` ("cpu" or "gpu"); exits with one line if it is absent.

    "cpu" keeps JAX to its CPU backend (even where a GPU is visible) with
    :func:`configure_host_devices`'s devices; "gpu" leaves every backend on and
    requires that JAX's default backend be a GPU (a CUDA or ROCm jaxlib plugin
    and a visible GPU), so that ``modeseek.run`` and the baselines, which use
    ``jax.devices()``, run there. Must run before JAX is first imported for
    "cpu" to take effect; in a process that already imported JAX the backend
    in use is only checked.
    """
    if device not in DEVICES:
        raise SystemExit(f"--device {device!r} is not valid; expected one of {', '.join(DEVICES)}")
    if device == "cpu":
        if "jax" not in sys.modules:
            os.environ["JAX_PLATFORMS"] = "cpu"
        configure_host_devices(host_devices)
        return
    import jax

    try:
        backend = jax.default_backend()
    except RuntimeError as e:  # a GPU plugin that fails to start
        raise SystemExit(f"--device gpu: JAX could not start its GPU backend ({str(e).splitlines()[0]})") from None
    if backend != "gpu":
        raise SystemExit(f"--device gpu: no GPU is visible to JAX (default backend {backend!r}, devices {[str(d) for d in jax.devices()]}); expected a CUDA or ROCm jaxlib and a GPU")


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as indented JSON, atomically (temporary name, then rename)."""
    import json

    from modeseek.pieces import atomic_write_text

    atomic_write_text(Path(path), json.dumps(obj, indent=1, default=_jsonable) + "\n")


def save_report(report: dict, out: Path | None, quick: bool, default: Path) -> Path | None:
    """Write a script's report to ``out``, or to ``default`` unless ``quick`` (a quick run writes only where told)."""
    path = out or (None if quick else default)
    if path is not None:
        write_json(path, report)
        print(f"wrote {path}")
    return path


def _jsonable(x):
    import numpy as np

    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"{type(x).__name__} is not JSON serialisable")


def header(what: str, quick: bool) -> dict:
    """The common head of every report: time, mode, machine."""
    from experiments.benchmarks.throughput import machine

    return {"benchmark": what, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": quick, "machine": machine()}


def rate(x: float | None) -> str:
    """A rate in k or M per second, for tables."""
    if x is None:
        return "-"
    if x >= 1e6:
        return f"{x / 1e6:.2f} M"
    if x >= 1e3:
        return f"{x / 1e3:.0f} k"
    return f"{x:.0f}"


def timed(fn, repeats: int):
    """Best wall and CPU seconds of ``repeats`` calls of ``fn()`` (after one warm-up call)."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)
