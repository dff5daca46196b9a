"""Blocks of runs: why a seed's bits never depend on what shares its call.

XLA may compile a batched program differently for different batch widths, so
the same run computed in a batch of 1, of 8 or of 64 could differ in the last
bits; Adam and on-policy sampling then amplify the difference (the
reproducibility issue in the project's issue list measured 0.12 of expected
reward after 1000 steps). Every run is therefore computed by one program
compiled for exactly ``block`` runs, called once per block, the last block
padded by repeating its last run. A run's position in its block does not
change its bits either (each lane of a fixed-width program goes through the
same code; ``tests/test_reproducibility.py`` checks it across seed offsets,
grids, chunks and devices).

For tabular bandits the width itself no longer matters. The width dependence
came from XLA's CPU library fusions (YNNPACK), which take over element-wise and
reduction fusions above a size threshold and sum over the bins in another
order: ``jnp.sum`` over a (W, 100) array gave the 32-wide bits for W <= 33 only,
and ``log_softmax`` and its gradient likewise. :mod:`modeseek._xla` compiles
the tabular programs without them (``width_stable``), and then a tabular run
has the same bits in blocks of 2 to 1024 runs (checked at K = 100, 1000 and
8192 bins, and for every loss of the catalogue in each of its data regimes at
widths 2 and 128; a block of exactly 1 run is another program, since XLA drops
the unit batch axis). So the engine fits the tabular block to each call
(``modeseek.engine.fit_block``: a power of two covering each device's or
core's share, at most 128 runs at K = 100) instead of a fixed 32, which cuts
the fixed cost per block-step of wide calls and the padding of small ones.
The MLP, sequence and transformer runs keep a fixed width
(``modeseek.engine.default_block``): a factorised sequence run still differs
between blocks of 2 and of 8.

Several devices take blocks in turn, each running the same block program, so a
sharded call equals a single-device one bit for bit; blocks run concurrently,
one per usable core (a wide program gets its parallelism from XLA splitting its
large operations over threads; a narrow block runs on one core, so the blocks
take the cores instead). ``experiments/benchmarks/blocks.py`` measures blocks
of several widths against the unblocked program.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import numpy as np
from jax.typing import ArrayLike

from modeseek import _checks
from modeseek._xla import compile_lowered, options_key

__all__ = ["run_blocks", "resolve_devices", "run_keys", "available_bytes", "MemoryEstimateError"]


class MemoryEstimateError(ValueError):
    """A call whose estimated memory exceeds what the machine has available."""


def available_bytes() -> int | None:
    """Memory available to new allocations (Linux MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _gb(x: float) -> str:
    return f"{x / 1e9:.3g} GB"


def check_memory(runs: int, block: int, out_block_bytes: int, working_per_run: int) -> None:
    """Refuse, before anything is allocated, a call that cannot fit in the available memory.

    The estimate counts every block's outputs (kept until the call returns), the
    host copy they are gathered into, and ``block`` runs' working arrays (the
    caller's estimate of a run's per-step batch and metric temporaries).
    """
    n_blocks = -(-runs // block)
    outputs = n_blocks * out_block_bytes
    host = outputs * runs // (n_blocks * block)
    working = block * working_per_run
    need = outputs + host + working
    avail = available_bytes()
    if avail is not None and need > avail:
        raise MemoryEstimateError(
            f"this call needs about {_gb(need)} (stored outputs {_gb(outputs + host)}, working arrays {_gb(working)}), "
            f"more than the {_gb(avail)} available; use fewer steps (or evaluate less often), "
            f"fewer samples per step, or fewer seeds per call (modeseek sweep --chunk-seeds splits a sweep)"
        )


_executables: dict[tuple, Any] = {}


def resolve_devices(devices: Sequence[jax.Device] | None) -> list[jax.Device]:
    """The devices to spread blocks over (default: all of ``jax.devices()``); refuses an empty list."""
    devs = list(jax.devices() if devices is None else devices)
    if not devs:
        raise ValueError("devices is empty; expected at least one jax device")
    return devs


def run_keys(base: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """(runs, 2) raw keys ``fold_in(base, seed)``: a run's key depends on its seed index alone."""
    return np.asarray(jax.vmap(jax.random.fold_in, (None, 0))(jax.numpy.asarray(base), jax.numpy.asarray(seeds, jax.numpy.uint32)))


def usable_cores() -> int:
    """Blocks run at once: one per usable core (a block program runs on one core)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _map(fn: Callable, items: Sequence[Any], workers: int) -> list:
    """``[fn(x) for x in items]``, on ``workers`` threads when more than one."""
    if workers == 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


def _pad(x: ArrayLike, runs: int, padded: int) -> np.ndarray:
    x = np.asarray(x)
    if padded == runs:
        return x
    return np.concatenate([x, np.repeat(x[-1:], padded - runs, axis=0)])


def run_blocks(
    fn: Callable,
    per_run: Sequence[Any],
    shared: Sequence[Any] = (),
    *,
    block: int,
    devices: Sequence[Any],
    cache_key: Hashable,
    batching: str = "vmap",
    working_per_run: int = 0,
    width_stable: bool = False,
) -> tuple[Any, float]:
    """Run the unbatched ``fn(*per_run_i, *shared)`` for every run i, in fixed-width blocks.

    Args:
      fn: a pure per-run function of unbatched arrays returning a pytree.
      per_run: pytrees whose leaves have a leading run axis of one common length.
      shared: arguments common to every run (not batched; traced, so new values
        do not recompile).
      block: runs per compiled call; results depend on it, not on the number of runs.
      devices: devices to spread the blocks over (block j on device j mod n).
      cache_key: hashable identity of ``fn``'s static configuration.
      batching: "vmap" (the block's runs vectorised together) or "map" (one after
        another inside the program, for policies whose matmuls are faster unbatched).
      working_per_run: estimated bytes of one run's temporaries, for the memory
        check made before compiling (:func:`check_memory`).
      width_stable: compile with ``modeseek._xla.WIDTH_STABLE_OPTIONS`` (the
        tabular bandit programs, whose bits then do not depend on ``block``).

    Returns:
      (outputs as NumPy arrays with the leading run axis, seconds spent
      compiling: 0 when every program was cached).
    """
    leaves = jax.tree.leaves(per_run)
    runs = int(np.shape(leaves[0])[0])
    n_blocks = -(-runs // block)
    padded = n_blocks * block
    host = jax.tree.map(lambda x: _pad(x, runs, padded), per_run)
    devs = list(devices)
    t0 = time.perf_counter()
    used = devs[: min(n_blocks, len(devs))]
    keys = [(cache_key, block, batching, d.platform, d.id, options_key(d.platform, width_stable)) for d in used]
    missing = [j for j, k in enumerate(keys) if k not in _executables]
    if missing:
        prog = _batched(fn, len(per_run), len(shared), batching)
        lowered = {}
        for j in missing:
            d = used[j]
            example = jax.tree.map(lambda x: jax.device_put(x[:block], d), host)
            lowered[j] = prog.lower(*example, *jax.device_put(shared, d))
        # Output shapes are known once traced: refuse an impossible call before compiling it.
        out_bytes = sum(int(np.prod(o.shape)) * o.dtype.itemsize for o in jax.tree.leaves(lowered[missing[0]].out_info))
        check_memory(runs, block, out_bytes, working_per_run)

        def build(j: int) -> tuple[jax.stages.Compiled, int]:
            return compile_lowered(lowered[j], used[j].platform, width_stable), out_bytes

        # One compile per device (a program is bound to its device), in parallel.
        built = _map(build, missing, len(missing))
        for j, exe in zip(missing, built):
            _executables[keys[j]] = exe
    else:
        check_memory(runs, block, _executables[keys[0]][1], working_per_run)
    exes = {j: _executables[k][0] for j, k in enumerate(keys)}
    compile_s = time.perf_counter() - t0 if missing else 0.0
    shared_on = {j: jax.device_put(shared, devs[j]) for j in exes}

    def one(b: int) -> Any:
        j = b % len(devs)
        args = jax.tree.map(lambda x: jax.device_put(x[b * block : (b + 1) * block], devs[j]), host)
        return jax.block_until_ready(exes[j](*args, *shared_on[j]))

    outs = _map(one, range(n_blocks), min(n_blocks, usable_cores()))
    return _gather(outs, runs), compile_s


def _gather(outs: list, runs: int) -> Any:
    """Concatenate the blocks' outputs into host arrays (first ``runs`` rows), releasing each block's as it is copied.

    Dropping a block's reference right after its copy lets its buffer go, so the
    peak holds about one copy of the outputs rather than the device's and the
    host's together (measured by ``experiments/benchmarks/memory.py``).
    """
    treedef = jax.tree.structure(outs[0])
    per_block = [jax.tree.leaves(o) for o in outs]
    outs.clear()
    gathered = []
    for i in range(len(per_block[0])):
        first = np.asarray(per_block[0][i])
        rows = first.shape[0]
        dst = np.empty((rows * len(per_block),) + first.shape[1:], first.dtype)
        del first
        for b, leaves in enumerate(per_block):
            dst[b * rows : (b + 1) * rows] = np.asarray(leaves[i])
            leaves[i] = None
        gathered.append(dst[:runs])
    return jax.tree.unflatten(treedef, gathered)


def _batched(fn: Callable[..., Any], n_per_run: int, n_shared: int, batching: str) -> jax.stages.Wrapped:
    _checks.choice("batching", batching, ("vmap", "map"))
    in_axes = (0,) * n_per_run + (None,) * n_shared
    if batching == "vmap":
        return jax.jit(jax.vmap(fn, in_axes=in_axes))

    def mapped(*args: Any) -> Any:
        per, shared = args[:n_per_run], args[n_per_run:]
        return jax.lax.map(lambda xs: fn(*xs, *shared), per)

    return jax.jit(mapped)
