"""Option validation: booleans are not integers; the analytic divergences' regimes.

Every case is refused before anything compiles, so these tests are cheap.
"""

from __future__ import annotations

import pytest

import modeseek as ms
from modeseek import engine
from modeseek.sequences import engine as seq_engine

_TINY = dict(sampling="on_policy", steps=2, seeds=1, num_samples=4)


def _refused(problem, message, **kw):
    before = engine.compile_count()
    with pytest.raises(ValueError, match=message) as exc:
        ms.run(problem, **{**_TINY, **kw})
    assert "\n" not in str(exc.value)  # one line
    assert engine.compile_count() == before  # refused before anything compiles
    return str(exc.value)


# ----------------------------------------------------------------------------- integers, not booleans


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(steps=True), "steps=True is invalid; expected an integer >= 1"),
        (dict(seeds=True), "seeds=True is invalid; expected an integer >= 1"),
        (dict(seed_offset=False), "seed_offset=False is invalid; expected an integer >= 0"),
        (dict(snapshot_every=True), "snapshot_every=True is invalid; expected an integer >= 1"),
        (dict(num_samples=True), "num_samples=True is invalid; expected an integer >= 1"),
        (dict(reuse=True), "reuse=True is invalid; expected an integer >= 1"),
        (dict(num_contexts=True), "num_contexts=True is invalid; expected an integer >= 1"),
        (dict(sft_steps=True), "sft_steps=True is invalid; expected an integer >= 1"),
        (dict(eval_samples=True), "eval_samples=True is invalid; expected an integer >= 0"),
    ],
)
def test_booleans_are_not_integers(far, kwargs, message):
    _refused(far, message, loss="sft", **kwargs)


def test_sequence_booleans_are_not_integers():
    # The sequence engine already refuses them (its _positive_int); keep it so.
    with pytest.raises(ValueError, match="steps=True is invalid"):
        seq_engine._positive_int("steps", True)


# ----------------------------------------------------------------------------- analytic divergences


@pytest.mark.parametrize("loss, sampling", [("forward_kl", "on_policy"), ("forward_kl", "offline"), ("reverse_kl", "offline")])
def test_analytic_divergence_message_names_both_exact_regimes(far, loss, sampling):
    msg = _refused(far, rf"loss='{loss}' is an analytic divergence", loss=loss, sampling=sampling)
    assert "'exact'" in msg and "'exact_offline'" in msg and repr(sampling) in msg
