"""Run in a subprocess with several fake CPU devices: sharded sweeps vs one device.

Prints one JSON line per case: whether every metric, snapshot and final
probability is bit-identical between ``devices=jax.devices()[:1]`` and all
devices, and whether seeds computed in calls of 1, 2 and 33 runs on both
devices (at a seed offset) equal the same seeds of a 48-run one-device call.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"

import jax  # noqa: E402
import numpy as np  # noqa: E402

import modeseek as ms  # noqa: E402

CASES = [
    ("sft", "offline", {}),
    ("best_of_n", "offline", {"negative": "sum_worse"}),
    ("best_of_n", "exact", {}),
    ("pref_ft", "offline", {"labels": "bradley_terry"}),
    ("rwr", "on_policy", {}),
    ("forward_kl", "exact", {}),
    ("dpo", "on_policy", {}),
    ("ipo", "exact_offline", {}),
    ("reinforce", "on_policy", {"advantage": "zscore", "kl_estimator": "k3"}),
    ("ppo", "on_policy", {"reuse": 3}),
    ("reverse_kl", "exact", {"learning_rate": [0.01, 0.1]}),
    ("reinforce", "on_policy", {"policy": "mlp", "num_contexts": 2, "num_eval_contexts": 3, "sft_steps": 3}),
]


SEQ_CASES = [
    ("reinforce", "on_policy", {"policy": "factorised"}),
    ("best_of_n", "offline", {"policy": "bigram"}),
    ("reinforce", "on_policy", {"policy": "transformer", "layers": 1, "heads": 1, "embed": 8, "sft_steps": 2, "num_eval_contexts": 2, "eval_samples": 2}),
]


def _same(a, b, names=("final_probs", "snapshots")):
    same = all(np.array_equal(a.metrics[k], b.metrics[k], equal_nan=True) for k in a.metrics)
    return bool(same and all(np.array_equal(getattr(a, n), getattr(b, n)) for n in names))


def _seeds(traj, start, stop):
    """A view of ``traj`` restricted to seeds [start, stop) at every grid point."""
    import types

    axis = len(traj.grid_shape)
    pick = lambda a: np.take(a, np.arange(start, stop), axis=axis)  # noqa: E731
    return types.SimpleNamespace(
        metrics={k: pick(v) for k, v in traj.metrics.items()},
        **{n: pick(getattr(traj, n)) for n in ("final_probs", "snapshots", "final_probs") if hasattr(traj, n)},
    )


def _check(run, names, **kw):
    """(sharded == one device, every sub-call on both devices == its seeds of the wide call)."""
    one = run(seeds=48, devices=jax.devices()[:1], **kw)
    two = run(seeds=48, **kw)
    subs = all(_same(run(seeds=n, seed_offset=o, **kw), _seeds(one, o, o + n), names) for n, o in ((1, 0), (2, 7), (33, 15)))
    return one, _same(one, two, names), subs


def main():
    assert len(jax.devices()) == 2, jax.devices()
    far = ms.paper_bandit("far")
    for loss, sampling, kw in CASES:
        one, same, subs = _check(lambda **a: ms.run(far, loss=loss, sampling=sampling, steps=12, **a), ("final_probs", "snapshots"), **kw)
        moved = float(np.abs(one.final_probs - np.asarray(far.ref_probs)).max())
        print(json.dumps({"loss": loss, "sampling": sampling, "options": str(kw), "identical": same, "call_size_free": subs, "moved": moved}))
        sys.stdout.flush()
    seq = ms.sequences.paper_sequence_bandit("far", vocab=6, length=3)
    for loss, sampling, kw in SEQ_CASES:
        one, same, subs = _check(
            lambda **a: ms.run(seq, loss=loss, sampling=sampling, steps=4, num_contexts=2, num_samples=4, eval_every=2, **a),
            ("final_probs", "snapshots"),
            **kw,
        )
        moved = float(np.abs(np.diff(one.metrics["expected_reward"], axis=-1)).max())
        print(json.dumps({"loss": loss, "sampling": sampling, "options": str(kw), "identical": same, "call_size_free": subs, "moved": moved}))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
