"""Sharded sweeps over several (fake CPU) devices give the single-device bits.

JAX fixes its device count when it initialises, so the check runs in a separate
process started with two CPU devices.
"""

import ast
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# One worker runs the script once for every test of this module.
pytestmark = pytest.mark.xdist_group("sharding")


@pytest.fixture(scope="module")
def sharding_results():
    return _script_results()


@functools.cache
def _script_results():
    # Cached per worker: a module fixture is rebuilt when other modules' tests run in between.
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    script = Path(__file__).with_name("_sharding_script.py")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_every_loss_family_and_regime_is_covered(sharding_results):
    seen = {(r["loss"], r["sampling"]) for r in sharding_results}
    assert {s for _, s in seen} == {"offline", "on_policy", "exact", "exact_offline"}
    assert {"sft", "best_of_n", "pref_ft", "rwr", "forward_kl", "dpo", "ipo", "reinforce", "ppo", "reverse_kl"} <= {loss for loss, _ in seen}


def test_every_policy_kind_is_covered(sharding_results):
    kinds = {ast.literal_eval(r["options"]).get("policy", "tabular") for r in sharding_results}
    assert kinds == {"tabular", "mlp", "factorised", "bigram", "transformer"}


def test_sharded_runs_are_bit_identical_to_one_device(sharding_results):
    bad = [r for r in sharding_results if not r["identical"]]
    assert not bad, bad


def test_calls_of_any_size_on_two_devices_equal_one_wide_call(sharding_results):
    bad = [r for r in sharding_results if not r["call_size_free"]]
    assert not bad, bad
    # The comparison means something only if the runs actually trained.
    assert all(r["moved"] > 1e-4 for r in sharding_results), sharding_results
