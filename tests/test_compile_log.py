"""CompileLog: compile statistics recorded from JAX's monitoring events inside a block."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from modeseek.compile_log import CompileLog


def _fresh_program(scale: float):
    # A new Python function each call, so jit must trace and compile it again.
    return jax.jit(lambda x: jnp.sin(x) * scale + jnp.cumsum(x))


def test_records_a_compile_inside_the_block_only():
    x = jnp.arange(8.0)
    with CompileLog() as log:
        _fresh_program(2.0)(x).block_until_ready()
    assert log.programs >= 1
    assert log.trace_seconds > 0 and log.lower_seconds > 0 and log.xla_seconds > 0
    assert sum(log.xla_by_function.values()) == log.xla_seconds and "<lambda>" in log.slowest(1)[0][0]
    assert abs(log.total_seconds - (log.trace_seconds + log.lower_seconds + log.xla_seconds)) < 1e-12
    before = log.as_dict()
    _fresh_program(3.0)(x).block_until_ready()  # outside the block: not counted
    assert log.as_dict() == before


def test_cached_call_compiles_nothing_and_nested_logs_both_count():
    x = jnp.arange(8.0)
    f = _fresh_program(4.0)
    f(x).block_until_ready()
    with CompileLog() as outer:
        f(x).block_until_ready()  # already compiled in this process
        assert outer.programs == 0
        with CompileLog() as inner:
            _fresh_program(5.0)(x).block_until_ready()
    assert inner.programs >= 1
    assert outer.programs == inner.programs
    assert outer.xla_seconds == inner.xla_seconds


def test_sum_and_summary():
    a = CompileLog(trace_seconds=1.0, lower_seconds=0.5, xla_seconds=2.0, programs=3, cache_hits=1)
    b = CompileLog(trace_seconds=0.25, xla_seconds=1.0, programs=1)
    a.xla_by_function.update(f=1.5, g=0.5)
    b.xla_by_function.update(f=1.0)
    total = sum([a, b], CompileLog())
    assert total.xla_by_function == {"f": 2.5, "g": 0.5} and total.slowest(1) == [("f", 2.5)]
    assert total.programs == 4 and total.cache_hits == 1
    assert total.total_seconds == 4.75
    assert "compile 4.8 s" in total.summary() and "4 programs, 1 from the persistent cache" in total.summary()
    assert total.as_dict()["total_seconds"] == 4.75
