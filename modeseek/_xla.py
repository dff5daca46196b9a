"""Compiler options shared by every modeseek program, and a faster-compiling mode for short runs.

XLA's CPU backend runs LLVM at -O2 by default. At -O1 the programs here compile
about twice as fast (an MLP run program 4.5 s -> 2.1 s, a tabular REINFORCE one
1.4 s -> 0.9 s on the 2-core CPU) and run as fast (the throughput benchmark's
rates are unchanged within noise): their loops are dominated by small kernels
that the extra LLVM optimisation does not speed up. So every CPU program is
compiled at -O1.

:func:`fast_compile` goes one step further for workloads that are mostly
compile time, such as the figure pipeline, whose ~40 programs each run for a
few seconds: it also turns off XLA's fusion emitters, which cuts compile time
by another ~30% and costs ~10% of run time (measured: MLP DPO program 2.4 s ->
1.7 s compile, 0.92 s -> 1.00 s run; tabular REINFORCE 0.85 s -> 0.42 s
compile, 0.34 s -> 0.38 s run).

XLA's CPU backend also hands some element-wise and reduction fusions to
YNNPACK library kernels once the arrays are large enough; those kernels sum in
another order than XLA's own loops, so a batched program's bits depended on
its batch width (a sum over K = 100 bins matched the 32-run block's bits up to
33 runs only, and a REINFORCE run moved by 6e-4 of expected reward after one
step between blocks of 8 and of 256). ``WIDTH_STABLE_OPTIONS`` turns them off
(``xla_cpu_experimental_ynn_fusion_type`` set to no fusion types): a tabular
run then has the same bits in blocks of any width from 2 to 1024
(:mod:`modeseek._blocks`), and tabular runs at the old width of 32 kept their
bits. Only the tabular bandit programs get it: it cost nothing measurable
there at 32 runs per block, but the transformer's unbatched program ran 1.4x
slower without the library fusions (and the MLP's about 1.1x; one same-process
measurement each on the shared 2-core machine), and their
blocks keep a fixed width anyway. jaxlib releases without YNNPACK fusions do
not know the option; it is then left out.

Results are deterministic for a given option set but may differ in the last
bits between option sets, so the options are part of every compiled-program
cache key (in-process and JAX's persistent cache alike).

Across machines, XLA compiles for the host's instruction set by default: on a
CPU with AVX-512 the wider vectors change the order of reductions, and
on-policy sampling amplifies the rounding (the committed figures once moved by
0.05 of expected reward between two x86-64 machines with identical versions).
So on x86-64 modeseek caps XLA's code generation at AVX2
(``--xla_cpu_max_isa=AVX2`` in ``XLA_FLAGS``, which every x86-64 machine of the
last decade supports); then the same versions give the same bits on any of
them. XLA reads the flag once, when its CPU backend starts, so the cap is set
when this module is imported, if the backend has not started yet (a per-compile
option is silently ignored: measured, SSE4_2 as a compile option gave the AVX2
bits, as a flag it did not). ``MODESEEK_CPU_ISA`` sets another ceiling
("native" lifts it), an ``--xla_cpu_max_isa`` already in ``XLA_FLAGS`` is left
alone, and :func:`provenance` records the ceiling in force with the CPU's own
flags and the package versions.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import threading
from typing import TYPE_CHECKING

from modeseek._isa import cpu_isa  # sets the ceiling, if it still can, before jax is imported

# isort: split
import jax  # noqa: E402
import numpy as np  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["CPU_COMPILER_OPTIONS", "WIDTH_STABLE_OPTIONS", "FAST_COMPILE_OPTIONS", "compile_lowered", "options_key", "fast_compile", "cpu_isa", "provenance"]


#: Options passed to ``Lowered.compile`` for every CPU program.
CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}
#: Added for programs whose bits must not depend on their batch width (tabular bandit blocks; see the module docstring).
WIDTH_STABLE_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
#: Added inside :func:`fast_compile`.
FAST_COMPILE_OPTIONS = {"xla_cpu_use_fusion_emitters": False}

_lock = threading.Lock()
# A plain global rather than a context variable: compiles for several devices
# run in worker threads, which must see the caller's setting.
_fast_depth = [0]


#: Options that older jaxlib releases do not know (they have no YNNPACK fusions to turn off).
_OPTIONAL = ("xla_cpu_experimental_ynn_fusion_type",)


@functools.cache
def _known(name: str) -> bool:
    """Whether this jaxlib's CPU compiler accepts the option ``name`` (always True outside ``_OPTIONAL``)."""
    if name not in _OPTIONAL:
        return True
    try:
        probe = jax.jit(lambda x: x + 1).trace(np.float32(0)).lower(lowering_platforms=("cpu",))
        probe.compile(compiler_options={name: WIDTH_STABLE_OPTIONS[name]})
    except Exception:  # jaxlib raises its own error type for an unknown option
        return False
    return True


def options_key(platform: str | None = None, width_stable: bool = False) -> tuple:
    """The current compiler options for ``platform`` as a hashable cache-key part (with ``WIDTH_STABLE_OPTIONS`` if ``width_stable``)."""
    platform = platform or jax.default_backend()
    opts = {**CPU_COMPILER_OPTIONS, **(WIDTH_STABLE_OPTIONS if width_stable else {}), **(FAST_COMPILE_OPTIONS if _fast_depth[0] else {})}
    return tuple(sorted((k, v) for k, v in opts.items() if _known(k))) if platform == "cpu" else ()


def compile_lowered(lowered: jax.stages.Lowered, platform: str | None = None, width_stable: bool = False) -> jax.stages.Compiled:
    """Compile a ``jax.stages.Lowered`` with modeseek's options for ``platform`` (default: the default backend)."""
    return lowered.compile(compiler_options=dict(options_key(platform, width_stable)) or None)


@contextlib.contextmanager
def fast_compile() -> Iterator[None]:
    """Compile CPU programs for compile speed inside the block (about 30% faster compiles, about 10% slower runs).

    ``make figures`` and ``modeseek reproduce`` run under it; see the module docstring.
    """
    with _lock:
        _fast_depth[0] += 1
    try:
        yield
    finally:
        with _lock:
            _fast_depth[0] -= 1


def _cpu_flags() -> list[str]:
    """The vector extensions the CPU reports (Linux), for the record."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    found = set(line.split(":", 1)[1].split())
                    return sorted(x for x in found if x.startswith(("sse4", "avx", "fma", "asimd", "sve", "neon")))
    except OSError:
        pass
    return []


def provenance() -> dict:
    """What fixes a result's bits: package versions, compiler options, the CPU and its vector extensions."""
    import importlib.metadata as md

    def version(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    return {
        "versions": {n: version(n) for n in ("modeseek", "jax", "jaxlib", "optax", "numpy", "pandas", "pyarrow")} | {"python": platform.python_version()},
        "backend": jax.default_backend(),
        "compiler_options": dict(options_key("cpu")),
        "width_stable_compiler_options": dict(options_key("cpu", width_stable=True)),
        "cpu_isa_ceiling": cpu_isa(),
        "machine": platform.machine(),
        "cpu_flags": _cpu_flags(),
        "cpu_count": os.cpu_count(),
    }
