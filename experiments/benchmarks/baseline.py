"""A straightforward ``jit(vmap(scan))`` of the throughput cases, timed beside the engine in the same process.

This is the comparison point of ``experiments/benchmarks/throughput.py``: what
someone would write directly in JAX for one tabular run (logits z over K bins,
optax Adam, inverse-CDF sampling with ``jnp.searchsorted``), vmapped over runs,
scanned over steps and jitted once, with the runs split over the same devices
as the engine (a sharded leading axis). It records what the engine records at
every step 0..steps (the last step's update is computed and discarded, as the
engine does): the seven exact metrics of ``modeseek.metrics.EXACT_METRICS`` as
plain separate reductions, the training loss, and for DPO the weighted pair
statistics ``chosen_logp``, ``rejected_logp`` and ``margin``.

Algorithms (K-bin tabular policy initialised at pi_ref, Adam, learning rate
0.05 unless swept; beta = 0.1, the engine's defaults):

* ``reverse_kl_exact``: loss KL(pi || pi_star), pi_star = softmax(log pi_ref + r / beta);
* ``reinforce_b64``: 64 draws per step, loss -mean((r - mean r) log pi(y));
* ``dpo_64pairs``: 128 draws paired (0, 1), (2, 3), ..., chosen by the higher
  reward, tied pairs skipped, loss sum_pairs w * -log sigmoid(beta * h),
  h = log pi/pi_ref(chosen) - log pi/pi_ref(rejected), w = 1 / (pairs counted).

It draws its own random numbers, so its runs are not the engine's bit for bit;
``tests/test_benchmarks.py`` checks that its losses are the engine's on the same
batch and that its mean curves agree with the engine's within seed noise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["CASES", "make", "Baseline"]

#: Cases of throughput.py that have a baseline here.
CASES = ("reverse_kl_exact", "reinforce_b64", "dpo_64pairs")
LEARNING_RATE = 0.05
BETA = 0.1


def _metrics(logp, c):
    # Separate reductions, as one would write them; the engine fuses them into one product.
    p = jnp.exp(logp)
    neg_h = jnp.sum(p * logp)
    return {
        "expected_reward": jnp.sum(p * c["reward"]),
        "kl_pi_ref": neg_h - jnp.sum(p * c["ref_logp"]),
        "kl_ref_pi": jnp.sum(c["ref_probs"] * (c["ref_logp"] - logp)),
        "kl_pi_star": neg_h - jnp.sum(p * c["star_logp"]),
        "entropy": -neg_h,
        "mass_high_reward": jnp.sum(p * c["high"]),
        "p_best": p[c["best"]],
    }


def _sample(key, logp, n):
    cdf = jnp.cumsum(jnp.exp(logp))
    u = jax.random.uniform(key, (n,)) * cdf[-1]
    return jnp.minimum(jnp.searchsorted(cdf, u, side="right"), logp.shape[0] - 1)


def reinforce_loss(z, y, reward):
    """-mean_j (r_j - mean r) log pi(y_j) over draws ``y`` (the engine's "mean" advantage, weights 1/N)."""
    logp = jax.nn.log_softmax(z)
    r = reward[y]
    return -jnp.mean((r - jnp.mean(r)) * logp[y])


def disjoint_pairs(y, reward):
    """(chosen, rejected, weight) of the pairs (0, 1), (2, 3), ... of ``y``; ties get weight 0."""
    a, b = y[0::2], y[1::2]
    gap = reward[a] - reward[b]
    counted = (gap != 0).astype(jnp.float32)
    w = counted / jnp.maximum(jnp.sum(counted), 1.0)
    return jnp.where(gap > 0, a, b), jnp.where(gap > 0, b, a), w


def dpo_loss(z, chosen, rejected, w, ref_logp, beta):
    """sum_pairs w * -log sigmoid(beta * h), with the pair statistics as auxiliary output."""
    logp = jax.nn.log_softmax(z)
    u = logp - ref_logp
    h = u[chosen] - u[rejected]
    total = jnp.maximum(jnp.sum(w), 1e-30)
    stats = {
        "chosen_logp": jnp.sum(w * logp[chosen]) / total,
        "rejected_logp": jnp.sum(w * logp[rejected]) / total,
        "margin": jnp.sum(w * h) / total,
    }
    return jnp.sum(w * -jax.nn.log_sigmoid(beta * h)), jax.lax.stop_gradient(stats)


def _constants(problem, beta):
    ref_probs = jnp.asarray(problem.ref_probs, jnp.float32)
    reward = jnp.asarray(problem.reward, jnp.float32)
    ref_logp = jnp.log(jnp.maximum(ref_probs, 1e-30))
    return {
        "ref_probs": ref_probs,
        "ref_logp": ref_logp,
        "reward": reward,
        "star_logp": jax.nn.log_softmax(ref_logp + reward / beta),
        "high": (reward >= 0.5 * jnp.max(reward)).astype(jnp.float32),
        "best": jnp.argmax(reward),
    }


def make(case: str, problem, steps: int, *, beta: float = BETA):
    """The per-run function ``run(key, learning_rate) -> metrics name -> (steps + 1,)`` of ``case``."""
    if case not in CASES:
        raise ValueError(f"case {case!r} has no baseline; expected one of {', '.join(CASES)}")
    c = _constants(problem, beta)

    def loss_and_aux(z, key):
        if case == "reverse_kl_exact":
            logp = jax.nn.log_softmax(z)
            return jnp.sum(jnp.exp(logp) * (logp - c["star_logp"])), {}
        logp = jax.lax.stop_gradient(jax.nn.log_softmax(z))
        if case == "reinforce_b64":
            return reinforce_loss(z, _sample(key, logp, 64), c["reward"]), {}
        chosen, rejected, w = disjoint_pairs(_sample(key, logp, 128), c["reward"])
        return dpo_loss(z, chosen, rejected, w, c["ref_logp"], beta)

    def run(key, learning_rate):
        opt = optax.adam(learning_rate)
        z0 = c["ref_logp"]

        def step(carry, t):
            z, s = carry
            (loss, aux), g = jax.value_and_grad(loss_and_aux, has_aux=True)(z, jax.random.fold_in(key, t))
            out = {**_metrics(jax.nn.log_softmax(z), c), **aux, "train_loss": loss}
            u, s = opt.update(g, s, z)
            return (optax.apply_updates(z, u), s), out

        _, hist = jax.lax.scan(step, (z0, opt.init(z0)), jnp.arange(steps + 1))
        return hist

    return run


class Baseline:
    """``make(case, ...)`` jitted over a vmapped run axis that is split evenly over ``devices``.

    Call with ``runs`` keys (ints) and learning rates; returns the metrics as
    NumPy arrays (runs, steps + 1), copied to the host like the engine's.
    """

    def __init__(self, case: str, problem, steps: int, runs: int, devices=None):
        devs = list(jax.devices() if devices is None else devices)
        while runs % len(devs):
            devs = devs[:-1]
        mesh = jax.sharding.Mesh(np.array(devs), ("runs",))
        self.sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("runs"))
        self.runs = runs
        self.fn = jax.jit(jax.vmap(make(case, problem, steps)))

    def _inputs(self, seed: int, learning_rate):
        keys = jax.vmap(jax.random.PRNGKey)(jnp.arange(self.runs, dtype=jnp.uint32) + np.uint32(seed * self.runs % 2**31))
        lr = np.broadcast_to(np.asarray(learning_rate, np.float32), (self.runs,))
        return jax.device_put(keys, self.sharding), jax.device_put(jnp.asarray(lr), self.sharding)

    def compile(self) -> float:
        """Compile (not run) the program; returns seconds."""
        import time

        t0 = time.perf_counter()
        self.fn = self.fn.lower(*self._inputs(0, LEARNING_RATE)).compile()
        return time.perf_counter() - t0

    def __call__(self, seed: int, learning_rate=LEARNING_RATE) -> dict[str, np.ndarray]:
        out = self.fn(*self._inputs(seed, learning_rate))
        return {k: np.asarray(v) for k, v in out.items()}
