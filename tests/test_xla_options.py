"""Compiler options: -O1 on CPU for every program, fast_compile() scoping, and cache keys that include them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import modeseek
from modeseek import _xla
from modeseek.compile_log import CompileLog


def test_options_key_and_fast_compile_scope():
    base = _xla.options_key("cpu")
    assert dict(base) == _xla.CPU_COMPILER_OPTIONS
    assert _xla.options_key("gpu") == ()
    with modeseek.fast_compile():
        fast = _xla.options_key("cpu")
        with modeseek.fast_compile():
            assert _xla.options_key("cpu") == fast
        assert _xla.options_key("cpu") == fast  # the inner block's exit leaves the outer one on
    assert _xla.options_key("cpu") == base
    assert dict(fast) == {**_xla.CPU_COMPILER_OPTIONS, **_xla.FAST_COMPILE_OPTIONS}


def test_compile_lowered_matches_jit():
    def f(x):
        return jnp.cumsum(jnp.exp(-x) * jnp.sin(3 * x))

    x = jnp.linspace(0.0, 4.0, 257)
    exe = _xla.compile_lowered(jax.jit(f).lower(x))
    np.testing.assert_allclose(np.asarray(exe(x)), np.asarray(jax.jit(f)(x)), rtol=1e-6, atol=1e-6)
    with modeseek.fast_compile():
        exe_fast = _xla.compile_lowered(jax.jit(f).lower(x))
    np.testing.assert_allclose(np.asarray(exe_fast(x)), np.asarray(exe(x)), rtol=1e-6, atol=1e-6)


def test_engine_caches_programs_per_option_set():
    far = modeseek.paper_bandit("far")
    kw = dict(loss="reinforce", sampling="on_policy", steps=30, seeds=3, key=7, num_samples=5)
    first = modeseek.run(far, **kw)
    with CompileLog() as same:
        again = modeseek.run(far, **kw)
    with CompileLog() as other, modeseek.fast_compile():
        fast = modeseek.run(far, **kw)
    assert "jit(_train)" not in same.xla_by_function, "same options: the cached program is reused"
    assert "jit(_train)" in other.xla_by_function, "other options: a separate program"
    np.testing.assert_array_equal(first.metrics["expected_reward"], again.metrics["expected_reward"])
    # Same run, other rounding at most: the trajectories agree closely.
    np.testing.assert_allclose(fast.metrics["expected_reward"], first.metrics["expected_reward"], atol=1e-4)
