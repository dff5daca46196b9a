"""A seed's bits depend on its key and hyperparameters only, never on what shares its call.

For every data regime and policy kind, seed i computed inside calls of any
size (1, 2, 33, 48, 64 runs and random ones), any chunking into seed ranges
(``seed_offset``) and any grid position must equal, bit for bit, the same seed
computed in one call of all the seeds. Devices are covered by
``tests/_sharding_script.py`` (a subprocess with two CPU devices).

Before the fixed-width blocks, batches of 1, of 2-33 and of 48+ runs compiled
to different vectorisations and disagreed from the first Adam step on.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import modeseek as ms
from modeseek.sequences import problems as seq_problems

TOTAL = 70  # seeds in the reference call: padded blocks (of 64 tabular runs on two cores, of 8 sequence runs)
SIZES = st.one_of(st.sampled_from([1, 2, 33, 48, 64]), st.integers(1, TOTAL))

BANDIT_CASES = {
    "tabular-offline": dict(loss="best_of_n", sampling="offline"),
    "tabular-on_policy": dict(loss="reinforce", sampling="on_policy"),
    "tabular-exact": dict(loss="reverse_kl", sampling="exact"),
    "tabular-exact_offline": dict(loss="dpo", sampling="exact_offline"),
    "tabular-on_policy-dpo": dict(loss="dpo", sampling="on_policy"),
    "mlp-on_policy": dict(loss="reinforce", sampling="on_policy", policy="mlp", num_contexts=2, num_eval_contexts=3, sft_steps=3),
    "mlp-offline": dict(loss="sft", sampling="offline", policy="mlp", num_contexts=2, num_eval_contexts=3, sft_steps=3),
}
SEQ_CASES = {
    "factorised-on_policy": dict(loss="reinforce", policy="factorised", sampling="on_policy"),
    "bigram-offline": dict(loss="best_of_n", policy="bigram", sampling="offline"),
    "transformer-on_policy": dict(loss="reinforce", policy="transformer", sampling="on_policy", layers=1, heads=1, embed=8, sft_steps=2, num_eval_contexts=2, eval_samples=2),
}


def _bandit(far, kw, seeds, seed_offset=0, **extra):
    return ms.run(far, steps=6, seeds=seeds, key=11, seed_offset=seed_offset, snapshot_every=3, **kw, **extra)


def _seq(problem, kw, seeds, seed_offset=0):
    return ms.run(problem, steps=4, seeds=seeds, key=11, seed_offset=seed_offset, num_contexts=2, num_samples=4, eval_every=2, **kw)


def _rows(traj, start, stop):
    """Every stored output of seeds [start, stop); the seed axis follows the grid's axes."""
    axis = len(traj.grid_shape)
    pick = lambda a: np.take(a, np.arange(start, stop), axis=axis)  # noqa: E731
    out = {f"metric/{n}": pick(v) for n, v in traj.metrics.items()}
    for name in ("snapshots", "final_probs", "final_probs"):
        if hasattr(traj, name):
            out[name] = pick(getattr(traj, name))
    return out


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.fixture(scope="module")
def seq_problem():
    return seq_problems.paper_sequence_bandit("far", vocab=6, length=3)


def _call(case: str, seeds: int, seed_offset: int = 0):
    if case in BANDIT_CASES:
        return _bandit(ms.paper_bandit("far"), BANDIT_CASES[case], seeds, seed_offset)
    return _seq(seq_problems.paper_sequence_bandit("far", vocab=6, length=3), SEQ_CASES[case], seeds, seed_offset)


@functools.cache
def _reference(case: str):
    """All TOTAL seeds in one call, computed once per case in the worker that needs it."""
    return _call(case, TOTAL)


@pytest.mark.parametrize("case", [*BANDIT_CASES, *SEQ_CASES])
@settings(max_examples=6)
@given(data=st.data())
def test_seed_bits_do_not_depend_on_call_size_or_chunking(case, data):
    size = data.draw(SIZES, label="seeds in the call")
    start = data.draw(st.integers(0, TOTAL - size), label="seed_offset")
    _assert_same(_rows(_call(case, size, start), 0, size), _rows(_reference(case), start, start + size))


def test_grid_position_does_not_change_a_seed(far):
    """The same (learning rate, seed) run alone, and at another place of a larger grid."""
    kw = BANDIT_CASES["tabular-on_policy"]
    alone = _bandit(far, kw, 3, seed_offset=4, learning_rate=0.05)
    grid = _bandit(far, kw, 9, learning_rate=np.array([0.2, 0.05, 0.01]), beta=np.array([0.1, 0.3]))
    _assert_same(_rows(alone, 0, 3), {n: v[1, 0] for n, v in _rows(grid, 4, 7).items()})


def test_traced_schedule_seed_bits_do_not_depend_on_call_size(far):
    kw = dict(loss="reinforce", reuse=[2, 1], num_samples=[8, 4], paired=("reuse", "num_samples"), steps=4, key=3)
    many = ms.run(far, seeds=40, **kw)
    for size, start in ((1, 0), (2, 37), (33, 5)):
        got = ms.run(far, seeds=size, seed_offset=start, **kw)
        for name in got.metrics:
            np.testing.assert_array_equal(got.metrics[name], many.metrics[name][..., start : start + size, :], err_msg=name)
        np.testing.assert_array_equal(got.final_probs, many.final_probs[..., start : start + size, :])


WIDTH_CASES = {
    "reverse_kl-exact": dict(loss="reverse_kl", sampling="exact"),
    "reinforce-on_policy-64": dict(loss="reinforce", sampling="on_policy", num_samples=64),
    "dpo-on_policy-disjoint-128": dict(loss="dpo", sampling="on_policy", pairing="disjoint", num_samples=128),
    "sft-offline": dict(loss="sft", sampling="offline"),
    "best_of_n-offline": dict(loss="best_of_n", sampling="offline"),
}


@pytest.mark.parametrize("case", WIDTH_CASES)
def test_tabular_bits_do_not_depend_on_the_block_width(far, case):
    """Blocks of 8 and of 256 runs, and the width fitted to the call, give the same bits.

    With XLA's library fusions on (modeseek._xla turns them off for tabular programs), the 256-wide
    program rounded the sums over the bins differently from the first step on
    (REINFORCE, 64 samples: 6e-4 of expected reward after one step).
    """
    kw = WIDTH_CASES[case]
    narrow = _rows(_bandit(far, kw, 5, block=8), 0, 5)
    _assert_same(_rows(_bandit(far, kw, 5, block=256), 0, 5), narrow)
    _assert_same(_rows(_bandit(far, kw, 5), 0, 5), narrow)


def test_fitted_blocks_cover_each_part_with_one_power_of_two():
    from modeseek.engine import fit_block

    # One block per part, never a block of 1 (the unit batch axis compiles another program).
    assert [fit_block(n, 2, 100) for n in (1, 2, 3, 4, 5, 64, 65, 200, 1024)] == [2, 2, 2, 2, 4, 32, 64, 128, 128]
    # Capped by bins x runs, so wide problems keep narrow blocks (more blocks per part).
    assert fit_block(10_000, 1, 100) == 128 and fit_block(100, 2, 1000) == 16 and fit_block(100, 2, 8192) == 2 and fit_block(100, 2, 10**6) == 2


# ----------------------------------------------------------------------------- keys


def test_typed_and_legacy_keys_give_identical_runs(far):
    kw = dict(loss="reinforce", steps=5, seeds=3)
    runs = [ms.run(far, key=k, **kw) for k in (7, jax.random.key(7), jax.random.PRNGKey(7), np.asarray(jax.random.PRNGKey(7)))]
    for other in runs[1:]:
        np.testing.assert_array_equal(runs[0].metrics["expected_reward"], other.metrics["expected_reward"])
        np.testing.assert_array_equal(runs[0].final_probs, other.final_probs)


def test_typed_keys_work_for_sequences(seq_problem):
    kw = dict(SEQ_CASES["factorised-on_policy"], steps=2, seeds=2, num_contexts=2, num_samples=4)
    a = ms.run(seq_problem, key=jax.random.key(4), **kw)
    b = ms.run(seq_problem, key=4, **kw)
    np.testing.assert_array_equal(a.metrics["expected_reward"], b.metrics["expected_reward"])


def test_wide_integer_keys_never_collide_silently(far):
    kw = dict(loss="reinforce", steps=5, seeds=2)
    base = ms.run(far, key=0, **kw).final_probs
    assert not np.array_equal(ms.run(far, key=2**40, **kw).final_probs, base)
    assert not np.array_equal(ms.run(far, key=2**32, **kw).final_probs, base)
    np.testing.assert_array_equal(ms.run(far, key=2**32 - 1, **kw).final_probs, ms.run(far, key=jax.random.PRNGKey(2**32 - 1), **kw).final_probs)


@pytest.mark.parametrize(
    "key, message",
    [
        (0.5, "key=0.5 is invalid"),
        ("0", "key='0' is invalid"),
        (-1, "key=-1 is out of range"),
        (2**64, "key=18446744073709551616 is out of range"),
        (True, "key=True is invalid"),
        (np.zeros(3, np.uint32), "key has shape (3,) and dtype uint32"),
    ],
)
def test_bad_keys_get_one_line_errors(far, key, message):
    for fn in (
        lambda: ms.run(far, loss="sft", sampling="offline", steps=1, key=key),
        lambda: ms.run(seq_problems.paper_sequence_bandit("far", vocab=4, length=2), loss="sft", sampling="offline", policy="factorised", steps=1, key=key),
    ):
        with pytest.raises(ValueError) as err:
            fn()
        assert message in str(err.value) and "\n" not in str(err.value)


# ----------------------------------------------------------------------------- oversized requests


@pytest.mark.parametrize(
    "call",
    [
        # 10**12 steps: an engine that built its (steps + 1,) evaluation schedule
        # before refusing would need 8 TB for it and fail with another error.
        lambda far: ms.run(far, loss="reinforce", steps=10**12),
        lambda far: ms.run(far, loss="reinforce", steps=10, num_samples=10**9),
        lambda far: ms.run(far, loss="reverse_kl", sampling="exact", steps=10**12),
        lambda far: ms.run(seq_problems.paper_sequence_bandit("far", vocab=6, length=3), loss="reinforce", policy="factorised", steps=10, num_samples=10**9),
    ],
)
def test_calls_that_cannot_fit_in_memory_are_refused_before_compiling(far, call):
    from modeseek._blocks import MemoryEstimateError, available_bytes

    if available_bytes() is None:
        pytest.skip("this platform does not report available memory")
    with pytest.raises(MemoryEstimateError) as err:
        call(far)
    msg = str(err.value)
    assert "\n" not in msg and "GB" in msg and "available" in msg and "--chunk-seeds" in msg
