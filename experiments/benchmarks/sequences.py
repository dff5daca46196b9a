"""Throughput of the sequence engine: on-policy REINFORCE with the gpt-nano transformer.

Usage: python -m experiments.benchmarks.sequences [--steps 50] [--repeats 2] [--quick] [--device cpu|gpu] [--out FILE.json]

B = 100 sequences per step (10 prompts x N = 10), a fresh batch every step
(reuse 1), the paper's "far" token reward, Adam. Metrics are taken at the first
and last step only, so the numbers are training throughput.

Cases:

* ``single``: one seed. With one run, the program's ``lax.map`` over runs is a
  loop of one iteration, i.e. the run is not vmapped;
* ``vmap10``: 10 seeds batched by ``vmap`` (the core engine's convention);
* ``map10``: 10 seeds run one after another inside one compiled program
  (the default for the transformer);
* ``factorised_single`` / ``factorised_vmap10``: the same with the factorised
  policy, whose steps are small enough for batching to amortise overheads;
* ``single_batch1000``: one seed with 10x the sequences per step (N = 100),
  the most favourable batching there is (shared weights);
* matmul floor: only the dense matmuls of a step, for 1 and 10 batched seeds.

Each case compiles once, then runs ``repeats`` timed calls with fresh keys.
Reported: seed-steps per second (seeds x steps / run seconds), the wall and CPU
seconds of a call, the compile seconds, and the ratio of the 10-seed wall time
to the 1-seed wall time (the issue asks for < 3). Every case runs on one
device (the first of ``--device``'s platform), so that the 10-seed cases are
not split over cores. The JSON, with the device, is written atomically beside
this script.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from experiments.benchmarks import common

DEFAULT_OUT = Path(__file__).with_name("sequences.json")

CASES = (
    ("single", "transformer", 1, "map"),
    ("vmap10", "transformer", 10, "vmap"),
    ("map10", "transformer", 10, "map"),
    ("factorised_single", "factorised", 1, "vmap"),
    ("factorised_vmap10", "factorised", 10, "vmap"),
)


def measure(policy: str, seeds: int, batching: str, steps: int, repeats: int, num_samples: int = 10) -> dict:
    import jax

    from modeseek import engine
    from modeseek.sequences import problems

    prob = problems.paper_sequence_bandit("far")
    kw = dict(
        loss="reinforce",
        sampling="on_policy",
        policy=policy,
        steps=steps,
        seeds=seeds,
        num_contexts=10,
        num_samples=num_samples,
        reuse=1,
        eval_every=steps,
        batching=batching,
        advantage="zscore",
        learning_rate=1e-3 if policy == "transformer" else 0.05,
        devices=jax.devices()[:1],
    )
    first = engine.run(prob, key=0, **kw)
    walls, cpus = [], []
    for r in range(repeats):
        c0 = time.process_time()
        tr = engine.run(prob, key=r + 1, **kw)
        cpus.append(time.process_time() - c0)
        walls.append(tr.run_seconds)
    wall = min(walls)
    return {
        "policy": policy,
        "seeds": seeds,
        "batching": batching,
        "steps": steps,
        "sequences_per_step": 10 * num_samples,
        "compile_seconds": round(first.compile_seconds, 2),
        "run_seconds": [round(w, 3) for w in walls],
        "cpu_seconds": [round(c, 3) for c in cpus],
        "seed_steps_per_second": round(seeds * steps / wall, 1),
    }


def matmul_floor(seeds: int, repeats: int = 20, vocab: int = 100, length: int = 9, layers: int = 3, embed: int = 48, batch: int = 100) -> dict:
    """Wall seconds of only the dense matmuls of one REINFORCE step, for ``seeds`` seeds.

    The weight matmuls of the gradient step (forward X W, backward dY W^T and
    X^T dY over the B (L + 1) tokens) and of sampling (L cached forwards over B
    rows, one after another), with no attention, normalisation, softmax or
    sampling logic. With several seeds every matmul is batched over them (each
    seed has its own weights), as under ``vmap``. The ratio of the 10-seed time
    to the 1-seed time is what a program made only of these matmuls would show:
    the floor of the ratio the issue bounds by 3.
    """
    import jax
    import jax.numpy as jnp

    d, t = embed, length + 1
    shapes = [(d, 3 * d), (d, d), (d, 4 * d), (4 * d, d)] * layers + [(d, vocab)]
    key = jax.random.key(seeds)
    ws = [jax.random.normal(jax.random.fold_in(key, i), (seeds, a, b)) * 0.02 for i, (a, b) in enumerate(shapes)]

    def program(ws, x_train, x_sample):
        out = 0.0
        for w in ws:
            a, b = w.shape[1:]
            x = x_train[..., :a]
            y = jnp.einsum("smk,skn->smn", x, w)
            dx = jnp.einsum("smn,skn->smk", y, w)  # backward to the input
            dw = jnp.einsum("smk,smn->skn", x, y)  # backward to the weight
            out = out + y.sum() + dx.sum() + dw.sum()

        def sample_step(h, _):
            acc = 0.0
            for w in ws:
                acc = acc + jnp.einsum("smk,skn->smn", h[..., : w.shape[1]], w).sum()
            return h * 0.5 + acc * 1e-9, None

        h, _ = jax.lax.scan(sample_step, x_sample, None, length=length)
        return out + h.sum()

    x_train = jax.random.normal(key, (seeds, batch * t, 4 * d))
    x_sample = jax.random.normal(key, (seeds, batch, 4 * d))
    fn = jax.jit(program).lower(ws, x_train, x_sample).compile()
    jax.block_until_ready(fn(ws, x_train, x_sample))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(ws, x_train, x_sample))
        best = min(best, time.perf_counter() - t0)
    return {"seeds": seeds, "seconds": round(best, 5)}


def step_gflop(vocab: int = 100, length: int = 9, layers: int = 3, embed: int = 48, batch: int = 100) -> float:
    """Floating-point work of one REINFORCE step of one seed (gradient and sampling), in GFLOP.

    Per token and layer: q/k/v, output projection and the 4x MLP are 12 d^2
    multiply-adds, attention over the t <= L + 1 positions 2 (L + 1) d; the LM
    head d V. The gradient step is a forward and a backward pass (3x a forward)
    over the B (L + 1) tokens; sampling is one cached forward over B L tokens.
    """
    t = length + 1
    per_token = layers * (12 * embed * embed + 2 * t * embed) + embed * vocab
    macs = 3 * batch * t * per_token + batch * length * per_token
    return 2 * macs / 1e9


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=None, help="steps per run (default 50; 4 with --quick)")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per case (default 3; 1 with --quick)")
    ap.add_argument("--quick", action="store_true", help="tiny budget to check the script; writes only with --out")
    ap.add_argument("--out", type=Path, default=None, help="JSON output (default: sequences.json beside this script, except with --quick)")
    ap.add_argument("--device", choices=common.DEVICES, default="cpu", help="platform to run on (exits with one line when JAX sees no GPU)")
    ap.add_argument("--host-devices", type=int, default=None, help="XLA CPU devices (default: one per usable core; the cases use the first)")
    args = ap.parse_args(argv)
    common.configure_device(args.device, args.host_devices)
    args.steps = args.steps or (4 if args.quick else 50)
    args.repeats = args.repeats or (1 if args.quick else 3)
    results = {}
    for name, policy, seeds, batching in CASES:
        results[name] = measure(policy, seeds, batching, args.steps, args.repeats)
        r = results[name]
        print(f"{name:20s} {r['seed_steps_per_second']:10.1f} seed-steps/s  run {min(r['run_seconds']):7.2f} s  cpu {min(r['cpu_seconds']):7.2f} s  compile {r['compile_seconds']:6.1f} s", flush=True)
    # One seed with 10x the batch: the same weights for every sequence, i.e. the
    # most favourable batching there is. If even this costs ~10x, the step's
    # time is proportional to its work and no batching of seeds can amortise it.
    results["single_batch1000"] = big = measure("transformer", 1, "map", args.steps, args.repeats, num_samples=100)
    print(f"{'single_batch1000':20s} {big['seed_steps_per_second']:10.1f} seed-steps/s  run {min(big['run_seconds']):7.2f} s  compile {big['compile_seconds']:6.1f} s", flush=True)
    # The one-seed time is the denominator of every ratio: measure it again at
    # the end and keep the best of both, since on a shared VM a case's wall time
    # can shift by ~50% between otherwise identical calls.
    again = measure("transformer", 1, "map", args.steps, args.repeats)
    for field in ("run_seconds", "cpu_seconds"):
        results["single"][field] += again[field]
    results["single"]["seed_steps_per_second"] = round(args.steps / min(results["single"]["run_seconds"]), 1)
    floor = {f"seeds_{n}": matmul_floor(n) for n in (1, 10)}
    floor["ten_over_one"] = round(floor["seeds_10"]["seconds"] / floor["seeds_1"]["seconds"], 2)
    print(f"matmul floor: 1 seed {floor['seeds_1']['seconds'] * 1e3:.2f} ms, 10 seeds {floor['seeds_10']['seconds'] * 1e3:.2f} ms, ratio {floor['ten_over_one']}", flush=True)
    one = min(results["single"]["run_seconds"])
    one_cpu = min(results["single"]["cpu_seconds"])
    ratios = {name: round(min(results[name]["run_seconds"]) / one, 2) for name in ("vmap10", "map10")}
    cpu_ratios = {name: round(min(results[name]["cpu_seconds"]) / one_cpu, 2) for name in ("vmap10", "map10")}
    f_ratio = round(min(results["factorised_vmap10"]["run_seconds"]) / min(results["factorised_single"]["run_seconds"]), 2)
    flop = step_gflop()
    summary = {
        "ten_seed_over_one_seed_wall": ratios,
        "ten_seed_over_one_seed_cpu": cpu_ratios,
        "factorised_ten_seed_over_one_seed_wall": f_ratio,
        "target": "< 3 (ten vmapped seeds vs one seed, transformer)",
        "meets_target": ratios["vmap10"] < 3.0,
        "gflop_per_seed_step": round(flop, 3),
        "single_seed_gflop_per_cpu_second": round(flop * args.steps / one_cpu, 1),
        "matmul_floor": floor,
        "one_seed_batch_1000_over_batch_100_wall": round(min(big["run_seconds"]) / min(results["single"]["run_seconds"]), 2),
        "single_seed_step_ms": round(one / args.steps * 1e3, 2),
        "why": (
            "on this CPU a step's time is proportional to its work, not a fixed latency that batching amortises: one seed with "
            f"10x the sequences per step (shared weights, the best case for batching) takes "
            f"{min(big['run_seconds']) / min(results['single']['run_seconds']):.1f}x as long, and the dense matmuls alone take "
            f"{floor['ten_over_one']}x as long for 10 batched seeds (own weights each) as for one; 10 seeds in < 3x one seed's time "
            "needs hardware whose single-seed step is latency-bound (an accelerator)"
        ),
    }
    print(json.dumps(summary, indent=1))
    from experiments.benchmarks.throughput import machine

    record = {
        "benchmark": "sequences: on-policy REINFORCE, gpt-nano transformer, B = 100 sequences per step",
        "quick": args.quick,
        "settings": {"steps": args.steps, "repeats": args.repeats},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(), **machine()},
        "results": results,
        "summary": summary,
    }
    common.save_report(record, args.out, args.quick, DEFAULT_OUT)


if __name__ == "__main__":
    main()
