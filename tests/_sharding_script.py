"""Run in a subprocess with several fake CPU devices: sharded sweeps vs one device.

Prints one JSON line per case: whether every metric, snapshot and final
probability is bit-identical between ``devices=jax.devices()[:1]`` and all devices.
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


def main():
    assert len(jax.devices()) == 2, jax.devices()
    far = ms.paper_bandit("far")
    for loss, sampling, kw in CASES:
        # 5 seeds over 2 devices also exercises the padding of the run axis.
        one = ms.run(far, loss=loss, sampling=sampling, steps=12, seeds=5, devices=jax.devices()[:1], **kw)
        two = ms.run(far, loss=loss, sampling=sampling, steps=12, seeds=5, **kw)
        same = all(np.array_equal(one.metrics[k], two.metrics[k], equal_nan=True) for k in one.metrics)
        same &= np.array_equal(one.final_probs, two.final_probs) and np.array_equal(one.snapshots, two.snapshots)
        moved = float(np.abs(one.final_probs - np.asarray(far.ref_probs)).max())
        print(json.dumps({"loss": loss, "sampling": sampling, "options": str(kw), "identical": bool(same), "moved": moved}))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
