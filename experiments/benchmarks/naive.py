"""NAIVE BASELINE: a plain NumPy loop over runs and steps, against the engine.

Usage: python -m experiments.benchmarks.naive [--quick] [--out FILE.json]

This file is a deliberately straightforward reference point, not part of the
library: for each run, for each step, a Python loop calls NumPy on one (K,)
vector (softmax, inverse-CDF sampling, a hand-written gradient, Adam, the seven
exact metrics). It implements the same two algorithms as the engine on the same
problem (K = 100 "far" paper bandit, tabular policy initialised at pi_ref, Adam
with learning rate 0.05):

* REINFORCE, 64 on-policy samples per step, batch-mean baseline;
* DPO (beta = 0.1), 64 disjoint on-policy pairs per step (128 samples),
  labelled by the true reward, tied pairs skipped.

It draws its own random numbers (NumPy's generator), so its runs are not the
engine's bit for bit; tests/test_benchmarks.py checks that its gradients equal
the engine's losses' gradients on the same batch, and the report compares the
mean final expected reward of both.

Timing: the naive loop is timed on ``naive_seeds`` x ``naive_steps`` (a few
seeds and steps) and extrapolated linearly to S seeds x ``steps`` steps (its
cost per seed-step does not depend on S: runs are independent and nothing is
batched). The engine is timed at S = 1 and S = 1024 seeds x ``steps`` steps
(throughput.bench_case, best of ``repeats`` warm calls, compile excluded). The
speed-up is naive seconds / engine seconds, from wall time and from CPU time.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import tyro

from experiments.benchmarks import common

DEFAULT_OUT = common.HERE / "naive.json"
TARGET_SPEEDUP = 1000.0
LEARNING_RATE = 0.05
BETA = 0.1
ADAM = (0.9, 0.999, 1e-8)


# ----------------------------------------------------------------------------- the naive loop


def log_softmax(x):
    z = x - np.max(x)
    return z - np.log(np.sum(np.exp(z)))


def sample(rng, p, n):
    """n bins from probabilities p by inverse CDF."""
    cdf = np.cumsum(p)
    return np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right"), len(p) - 1)


def reinforce_grad(logits, y, reward):
    """Loss -mean_j (r_j - mean r) log pi(y_j) and its gradient in the logits."""
    logp = log_softmax(logits)
    r = reward[y]
    a = r - r.mean()
    n = len(y)
    loss = -np.mean(a * logp[y])
    # d log pi(y) / d logits = onehot(y) - pi.
    grad = -np.bincount(y, weights=a, minlength=len(logits)) / n + np.exp(logp) * a.sum() / n
    return loss, grad


def disjoint_pairs(y, reward):
    """Pairs (0,1), (2,3), ...: chosen, rejected and weights (1 / number of untied pairs)."""
    ya, yb = y[0::2][: len(y) // 2], y[1::2]
    gap = reward[ya] - reward[yb]
    counted = gap != 0
    chosen = np.where(gap > 0, ya, yb)
    rejected = np.where(gap > 0, yb, ya)
    w = counted / max(counted.sum(), 1)
    return chosen, rejected, w


def dpo_grad(logits, ref_logp, chosen, rejected, w, beta):
    """Loss sum_pairs w * -log sigmoid(beta h) and its gradient in the logits."""
    logp = log_softmax(logits)
    h = (logp[chosen] - ref_logp[chosen]) - (logp[rejected] - ref_logp[rejected])
    loss = np.sum(w * np.logaddexp(0.0, -beta * h))
    dh = -beta * w / (1.0 + np.exp(beta * h))  # d loss / d h
    k = len(logits)
    g = np.bincount(chosen, weights=dh, minlength=k) - np.bincount(rejected, weights=dh, minlength=k)
    return loss, g - np.exp(logp) * g.sum()


def metrics(logits, ref_probs, ref_logp, reward, star_logp, high, best):
    """The engine's seven exact metrics of one policy."""
    logp = log_softmax(logits)
    p = np.exp(logp)
    neg_h = p @ logp
    return {
        "expected_reward": p @ reward,
        "kl_pi_ref": neg_h - p @ ref_logp,
        "kl_ref_pi": ref_probs @ (ref_logp - logp),
        "kl_pi_star": neg_h - p @ star_logp,
        "entropy": -neg_h,
        "mass_high_reward": p @ high,
        "p_best": p[best],
    }


def run_naive(loss: str, ref_probs, reward, *, seeds: int, steps: int, num_samples: int, seed: int = 0) -> np.ndarray:
    """Train ``seeds`` runs one after the other, one step at a time; returns (seeds, steps + 1) expected rewards."""
    ref_probs = np.asarray(ref_probs, np.float64)
    reward = np.asarray(reward, np.float64)
    ref_logp = np.log(ref_probs)
    star_logp = log_softmax(ref_logp + reward / BETA)
    high = (reward >= 0.5 * reward.max()).astype(np.float64)
    best = int(np.argmax(reward))
    b1, b2, eps = ADAM
    out = np.zeros((seeds, steps + 1))
    for s in range(seeds):
        rng = np.random.default_rng(seed + s)
        logits = ref_logp.copy()
        m = np.zeros_like(logits)
        v = np.zeros_like(logits)
        for t in range(steps):
            out[s, t] = metrics(logits, ref_probs, ref_logp, reward, star_logp, high, best)["expected_reward"]
            p = np.exp(log_softmax(logits))
            y = sample(rng, p, num_samples)
            if loss == "reinforce":
                _, g = reinforce_grad(logits, y, reward)
            else:
                _, g = dpo_grad(logits, ref_logp, *disjoint_pairs(y, reward), BETA)
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            mhat = m / (1 - b1 ** (t + 1))
            vhat = v / (1 - b2 ** (t + 1))
            logits = logits - LEARNING_RATE * mhat / (np.sqrt(vhat) + eps)
        out[s, steps] = metrics(logits, ref_probs, ref_logp, reward, star_logp, high, best)["expected_reward"]
    return out


# ----------------------------------------------------------------------------- benchmark

CASES = {
    "reinforce_b64": ("reinforce", 64, (("num_samples", 64),)),
    "dpo_64pairs": ("dpo", 128, (("num_samples", 128), ("pairing", "disjoint"))),
}


@dataclasses.dataclass(frozen=True)
class Args:
    """Speed-up of the engine over a naive NumPy loop (REINFORCE and DPO)."""

    quick: bool = False
    """Tiny budget (engine at 1 and 16 seeds x 20 steps; naive 1 seed x 20 steps); writes only with --out."""
    steps: int | None = None
    """Steps per run (default 1000)."""
    seeds: tuple[int, ...] | None = None
    """Seed counts at which to compare (default 1 1024)."""
    naive_seeds: int | None = None
    """Seeds the naive loop is actually timed on (default 4)."""
    naive_steps: int | None = None
    """Steps the naive loop is actually timed on (default: --steps)."""
    repeats: int | None = None
    """Timed engine calls per point (default 2)."""
    only: tuple[str, ...] = ()
    """Cases to run: reinforce_b64, dpo_64pairs (default both)."""
    out: Annotated[Path | None, tyro.conf.arg(metavar="FILE.json")] = None
    """JSON output (default: naive.json beside this script, except with --quick)."""
    host_devices: int | None = None
    """XLA CPU devices the engine shards runs over (default: one per usable core)."""
    device: str = "cpu"
    """Platform to run on: "cpu", or "gpu" (exits with one line when JAX sees no GPU); recorded in the JSON."""


def time_naive(loss, ref, reward, *, seeds, steps, num_samples):
    t0, c0 = time.perf_counter(), time.process_time()
    er = run_naive(loss, ref, reward, seeds=seeds, steps=steps, num_samples=num_samples)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = seeds * steps
    return {
        "seeds": seeds,
        "steps": steps,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "wall_seconds_per_seed_step": wall / n,
        "cpu_seconds_per_seed_step": cpu / n,
        "final_expected_reward_mean": float(er[:, -1].mean()),
    }


def main(argv=None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__.splitlines()[0])
    bad = sorted(set(args.only) - set(CASES))
    if bad:
        raise SystemExit(f"unknown case(s) {bad}; valid names are {', '.join(CASES)}")
    common.configure_device(args.device, args.host_devices)
    import modeseek as ms
    from experiments.benchmarks.throughput import Case, bench_case

    steps = args.steps or (20 if args.quick else 1000)
    seed_counts = args.seeds or ((1, 16) if args.quick else (1, 1024))
    naive_seeds = args.naive_seeds or (1 if args.quick else 4)
    naive_steps = args.naive_steps or steps
    repeats = args.repeats or (1 if args.quick else 2)
    far = ms.paper_bandit("far")
    report = common.header("naive", args.quick)
    report["settings"] = {
        "problem": "far",
        "num_bins": 100,
        "policy": "tabular",
        "optimizer": "adam",
        "learning_rate": LEARNING_RATE,
        "beta": BETA,
        "steps": steps,
        "seed_counts": list(seed_counts),
        "naive_seeds": naive_seeds,
        "naive_steps": naive_steps,
        "repeats": repeats,
    }
    report["extrapolation"] = (
        "naive seconds for S seeds x T steps = S x T x (measured seconds per seed-step on naive_seeds x naive_steps); the naive loop is sequential, so its cost is linear in S and T"
    )
    print(f"naive baseline vs engine: {report['machine']['jax_device_count']} engine device(s), load {report['machine']['load_average_1m_at_start']}")
    results = {}
    for name, (loss, n, opts) in CASES.items():
        if args.only and name not in args.only:
            continue
        nv = time_naive(loss, far.ref_probs, far.reward, seeds=naive_seeds, steps=naive_steps, num_samples=n)
        print(f"  {name}: naive {nv['wall_seconds_per_seed_step'] * 1e6:.0f} us per seed-step (wall), {nv['cpu_seconds_per_seed_step'] * 1e6:.0f} us (CPU)", flush=True)
        points = []
        for s in seed_counts:
            r = bench_case(Case(name, loss, "on_policy", opts), seeds=s, steps=steps, repeats=repeats)
            eng_wall, eng_cpu = min(r["run_seconds"]), min(r["cpu_seconds"])
            naive_wall = s * steps * nv["wall_seconds_per_seed_step"]
            naive_cpu = s * steps * nv["cpu_seconds_per_seed_step"]
            p = {
                "seeds": s,
                "steps": steps,
                "engine_run_seconds": eng_wall,
                "engine_cpu_seconds": eng_cpu,
                "engine_compile_seconds": r["compile_seconds"],
                "engine_devices": r["devices"],
                "naive_wall_seconds_extrapolated": naive_wall,
                "naive_cpu_seconds_extrapolated": naive_cpu,
                "speedup_wall": naive_wall / eng_wall,
                "speedup_cpu": naive_cpu / eng_cpu,
            }
            points.append(p)
            print(f"    {s:5d} seeds x {steps} steps: engine {eng_wall:.3f} s, naive {naive_wall:.1f} s (extrapolated): x{p['speedup_wall']:.0f} wall, x{p['speedup_cpu']:.0f} CPU", flush=True)
        # Same algorithm, same problem: the mean final expected reward should agree
        # up to seed noise (engine: its call with the most seeds).
        eng_mean = eng_runs = None
        if naive_steps == steps:
            eng_mean, eng_runs = r["final_expected_reward_mean_over_runs"], r["runs"]
        results[name] = {
            "loss": loss,
            "samples_per_step": n,
            "naive": nv,
            "points": points,
            "check_final_expected_reward": {
                "steps": naive_steps,
                "naive_mean": nv["final_expected_reward_mean"],
                "naive_seeds": naive_seeds,
                "engine_mean": eng_mean,
                "engine_seeds": eng_runs,
            },
        }
    big = max(seed_counts)
    report["results"] = results
    report["target"] = {
        "required_speedup": TARGET_SPEEDUP,
        "at_seeds": big,
        **{
            name: {
                "speedup_wall": next(p for p in r["points"] if p["seeds"] == big)["speedup_wall"],
                "speedup_cpu": next(p for p in r["points"] if p["seeds"] == big)["speedup_cpu"],
                "met": next(p for p in r["points"] if p["seeds"] == big)["speedup_wall"] >= TARGET_SPEEDUP,
            }
            for name, r in results.items()
        },
    }
    common.save_report(report, args.out, args.quick, DEFAULT_OUT)
    return report


if __name__ == "__main__":
    main()
