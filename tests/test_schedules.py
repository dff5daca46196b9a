"""The schedule runner behind figures 5 and 6: engine-equivalent, compile-once, and windows as documented."""

from __future__ import annotations

import numpy as np
import pytest

import modeseek as ms
from modeseek.paper.schedules import Schedule, minibatch_schedule, reuse_schedule, run_schedules

# The tabular policy compiles in about a second; the runner's logic does not depend on the policy.
TAB = dict(policy="tabular", num_contexts=2)


@pytest.mark.parametrize("loss", ["best_of_n", "ppo"])
def test_offline_schedule_reproduces_the_engine(far, near, loss):
    """One batch from pi_ref reused for every step is the engine's offline regime, draw for draw.

    The runner uses the engine's key roles, so the batch, the losses and the metrics
    must agree to float rounding (both batch kinds: best-of-N and points).
    """
    steps = 8
    eng = ms.run([far, near], loss=loss, sampling="offline", num_samples=6, num_contexts=2, steps=steps, seeds=3, key=4)
    sch = run_schedules([far, near], loss=loss, schedules=[Schedule(steps, 6, 6)], steps=steps, seeds=3, key=4, **TAB)
    for name in ("expected_reward", "kl_pi_ref", "train_loss", "reward_queries"):
        np.testing.assert_allclose(sch.metrics[name][0], eng.metrics[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_schedules_share_one_program_and_count_queries(far):
    kw = dict(loss="best_of_n", steps=12, seeds=2, max_batch=24, **TAB)
    first = run_schedules(far, schedules=[reuse_schedule(1, 2), reuse_schedule(3, 2)], **kw)
    # New schedule values (and a new learning rate) are traced data: no compile.
    second = run_schedules(far, schedules=[minibatch_schedule(4, 3), reuse_schedule(12, 2)], learning_rate=0.2, **kw)
    assert first.compile_seconds > 0 and second.compile_seconds == 0
    q = first.metrics["reward_queries"][:, 0, 0]  # (schedules, evaluations)
    # T = 1: a batch of 2 per context (2 contexts) before every step; T = 3: 6 per context every 3 steps.
    np.testing.assert_array_equal(q[0], np.ceil(np.arange(13) / 1) * 2 * 2)
    np.testing.assert_array_equal(q[1], np.ceil(np.arange(13) / 3) * 6 * 2)
    # Equal totals at the end: the fixed sample budget of figure 5.
    assert q[0, -1] == q[1, -1] == 48


def test_minibatch_windows_slide_and_reuse_windows_stay(far):
    """With a negligible learning rate the policy is fixed, so the loss changes only with the data a step sees.

    A reuse schedule trains on the same batch for T steps (constant loss within an
    iteration); a minibatch schedule slides a fresh window each step (the loss changes).
    """
    kw = dict(loss="best_of_n", steps=10, seeds=3, learning_rate=1e-9, **TAB)
    r = run_schedules(far, schedules=[Schedule(5, 10, 10), Schedule(5, 10, 2)], **kw)
    loss = r.metrics["train_loss"][:, 0, :, :10].reshape(2, 3, 2, 5)  # (schedule, seed, iteration, step in iteration)
    spread = loss.max(axis=-1) - loss.min(axis=-1)
    assert np.all(spread[0] < 1e-5)
    assert np.all(spread[1] > 1e-3), "each step of a minibatch schedule must see a new window of the batch"


def test_bad_input_is_rejected(far):
    with pytest.raises(ValueError, match="minibatch=5 exceeds batch=4"):
        Schedule(1, 4, 5)
    with pytest.raises(ValueError, match="reuse=0"):
        Schedule(0, 4, 4)
    with pytest.raises(ValueError, match="not a multiple of reuse"):
        run_schedules(far, loss="best_of_n", schedules=[Schedule(3, 4, 4)], steps=10, seeds=1, **TAB)
    with pytest.raises(ValueError, match="not supported by the schedule runner"):
        run_schedules(far, loss="dpo", schedules=[Schedule(1, 4, 4)], steps=2, seeds=1, **TAB)
    with pytest.raises(ValueError, match="at most one traced value"):
        run_schedules(far, loss="ppo", schedules=[Schedule(1, 4, 4)], steps=2, seeds=1, learning_rate=[0.1, 0.2], clip_eps=[0.1, 0.2], **TAB)
    with pytest.raises(ValueError, match="smaller than the largest schedule batch"):
        run_schedules(far, loss="ppo", schedules=[Schedule(1, 4, 4)], steps=2, seeds=1, max_batch=2, **TAB)
