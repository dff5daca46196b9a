"""Where compile time goes: tracing, lowering and XLA compiles recorded while a block runs.

``make figures`` and ``modeseek reproduce`` report these per figure piece, so the
compile budget of the whole pipeline is measured rather than guessed. The
numbers come from JAX's own monitoring events, so they cover every program
(run programs, initialisations, helper jits), not only the engine's.

Usage::

    with CompileLog() as log:
        modeseek.run(...)
    print(log.summary())

Compiles for several devices run in parallel threads (:func:`modeseek.run`
with ``devices``), so ``xla_seconds`` is summed over threads and can exceed
the wall time of the block.
"""

from __future__ import annotations

import dataclasses
import threading

import jax.monitoring

__all__ = ["CompileLog"]

_TRACE = "/jax/core/compile/jaxpr_trace_duration"
_LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"
_XLA = "/jax/core/compile/backend_compile_duration"
_CACHE_HITS = "/jax/compilation_cache/cache_hits"
_SAVED = "/jax/compilation_cache/compile_time_saved_sec"

_lock = threading.Lock()
_active: list[CompileLog] = []


def _on_duration(event: str, duration_secs: float, **kwargs: str | int) -> None:
    with _lock:
        for log in _active:
            log._add_duration(event, duration_secs, str(kwargs.get("fun_name", "?")))


def _on_event(event: str, **_: object) -> None:
    if event == _CACHE_HITS:
        with _lock:
            for log in _active:
                log.cache_hits += 1


@dataclasses.dataclass
class CompileLog:
    """Compile statistics of the code run inside ``with CompileLog() as log:``.

    Attributes:
      trace_seconds: Python tracing to a jaxpr.
      lower_seconds: jaxpr to MLIR lowering.
      xla_seconds: XLA backend compiles, including loads from the persistent
        compilation cache (a load is counted as its, much shorter, duration).
      programs: backend compile requests (one per compiled program).
      cache_hits: programs loaded from the persistent cache instead of compiled.
      seconds_saved: compile seconds the cache hits avoided (JAX's estimate).
      xla_by_function: XLA seconds per jitted function name (summed over its
        programs), to find what dominates.
    """

    trace_seconds: float = 0.0
    lower_seconds: float = 0.0
    xla_seconds: float = 0.0
    programs: int = 0
    cache_hits: int = 0
    seconds_saved: float = 0.0
    xla_by_function: dict = dataclasses.field(default_factory=dict)

    @property
    def total_seconds(self) -> float:
        """Tracing + lowering + XLA compile seconds."""
        return self.trace_seconds + self.lower_seconds + self.xla_seconds

    def __add__(self, other: CompileLog) -> CompileLog:
        out = CompileLog(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self) if f.name != "xla_by_function"})
        for log in (self, other):
            for name, secs in log.xla_by_function.items():
                out.xla_by_function[name] = out.xla_by_function.get(name, 0.0) + secs
        return out

    def slowest(self, n: int = 5) -> list[tuple[str, float]]:
        """The n function names with the most XLA compile seconds."""
        return sorted(self.xla_by_function.items(), key=lambda kv: -kv[1])[:n]

    def _add_duration(self, event: str, duration: float, fun_name: str = "?") -> None:
        if event == _TRACE:
            self.trace_seconds += duration
        elif event == _LOWER:
            self.lower_seconds += duration
        elif event == _XLA:
            self.xla_seconds += duration
            self.programs += 1
            self.xla_by_function[fun_name] = self.xla_by_function.get(fun_name, 0.0) + duration
        elif event == _SAVED:
            self.seconds_saved += duration

    def __enter__(self) -> CompileLog:
        with _lock:
            if not _active:
                jax.monitoring.register_event_duration_secs_listener(_on_duration)
                jax.monitoring.register_event_listener(_on_event)
            _active.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        with _lock:
            _active.remove(self)
            if not _active:
                jax.monitoring.unregister_event_duration_listener(_on_duration)
                jax.monitoring.unregister_event_listener(_on_event)

    def summary(self) -> str:
        """One line: total, its parts, programs and persistent-cache hits."""
        return (
            f"compile {self.total_seconds:.1f} s (trace {self.trace_seconds:.1f}, lower {self.lower_seconds:.1f}, "
            f"XLA {self.xla_seconds:.1f}; {self.programs} programs, {self.cache_hits} from the persistent cache)"
        )

    def as_dict(self) -> dict:
        """The statistics as a JSON-ready dict (seconds rounded to 0.01)."""
        d = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in dataclasses.asdict(self).items() if k != "xla_by_function"}
        d["xla_by_function"] = {k: round(v, 2) for k, v in self.slowest(len(self.xla_by_function))}
        d["total_seconds"] = round(self.total_seconds, 2)
        return d
