"""Sampling schedules with traced batch sizes: sample reuse and on-policyness in one program.

The engine (:func:`modeseek.run`) fixes the number of samples per batch and the
reuse T at compile time, so a sweep over T or over the batch size compiles one
program per value (several seconds each for the MLP). Figures 5 and 6 sweep
exactly these, so this module runs the same training loop with the schedule as
traced data: one compile per loss covers every schedule.

A :class:`Schedule` says, for every ``reuse`` gradient steps, collect ``batch``
responses per train context (epoch 0 from pi_data, later epochs from the
current policy, PAPER_NOTES A.6), and train each step on a window of
``minibatch`` of them that slides by ``minibatch`` per step (wrapping around):

* sample reuse (figure 5, PAPER_NOTES B.7): ``batch = minibatch = N T``, so every
  step uses the whole batch and each batch is used T times;
* on-policyness (figure 6, Algorithm 1 in D.3): ``batch = k M``, ``minibatch = M``,
  ``reuse = k``: one pass over the batch in k minibatches, so each response is
  used once and the policy that drew it is up to k - 1 steps stale.

Everything else follows the engine: the policy and its SFT to pi_ref
(:mod:`modeseek.policies`), inverse-CDF sampling (:func:`modeseek.regimes.sample_bins`),
the registered losses and their hyperparameters, Adam, and the exact metrics
on the evaluation contexts after every step. Drawing is done at the largest
batch of the sweep and masked down, so the draws of a small batch are not a
prefix-stable subset of a large one; runs with equal batch sizes are identical
to the engine's in distribution (and, offline, sample for sample).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from modeseek import _checks, losses, metrics, policies, regimes
from modeseek._blocks import resolve_devices, run_blocks, run_keys
from modeseek.batches import BestOfN, Points
from modeseek.engine import HyperParams, RunConfig, default_block
from modeseek.problems import Problem, safe_log

__all__ = ["Schedule", "ScheduleRun", "run_schedules", "reuse_schedule", "minibatch_schedule", "LOSSES", "STATIC_OPTIONS"]

#: Losses the schedule runner supports (their batches are best-of-N or points).
LOSSES = ("best_of_n", "sft", "rwr", "reinforce", "ppo")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """One sampling schedule (traced: any number of schedules share one compile).

    Attributes:
      reuse: gradient steps per collected batch (an iteration); must divide the steps.
      batch: responses drawn per train context at each collection.
      minibatch: responses per gradient step (a window sliding by ``minibatch``).
      label: legend label.
    """

    reuse: int
    batch: int
    minibatch: int
    label: str = ""

    def __post_init__(self):
        for n in ("reuse", "batch", "minibatch"):
            v = getattr(self, n)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{n}={v!r} is invalid; expected an integer >= 1")
        if self.minibatch > self.batch:
            raise ValueError(f"minibatch={self.minibatch} exceeds batch={self.batch}; expected minibatch <= batch")


def reuse_schedule(reuse: int, base: int = 10) -> Schedule:
    """Sample reuse at a fixed sample and step budget (B.7): N = base * T per batch, T steps on all of it."""
    return Schedule(reuse, base * reuse, base * reuse, label=f"T = {reuse} (N = {base * reuse})")


def minibatch_schedule(passes_per_batch: int, minibatch: int = 10) -> Schedule:
    """On-policyness (D.3): a batch of k*M per context, one pass in k minibatches of M."""
    k = passes_per_batch
    return Schedule(k, k * minibatch, minibatch, label=f"B = {k * minibatch} per context")


@dataclasses.dataclass(frozen=True)
class _Static:
    loss: str
    steps: int
    max_batch: int
    num_contexts: int
    num_eval_contexts: int
    num_bins: int
    policy: str
    sft_steps: int
    eval_samples: int
    eval_every: int
    cfg: RunConfig | None


@dataclasses.dataclass
class ScheduleRun:
    """Results of :func:`run_schedules`.

    Attributes:
      metrics: name -> (S, P[, G], seeds, E) arrays (S schedules, P problems, G
        values of the swept hyperparameter if any, E evaluations at ``steps``):
        the engine's exact metrics, "train_loss" (on the step's minibatch),
        "reward_queries" and, with ``eval_samples``, the Monte-Carlo "sampled_reward".
      probs: (S, P[, G], seeds, E, K) policy (mean over evaluation contexts) at each evaluation.
      steps: (E,) steps of the evaluations (0, eval_every, ..., steps).
      schedules: the schedules, in order.
      problem_names: the problems, in order.
      grid: {name: values} of the swept hyperparameter (empty if none).
      seeds: seeds per (schedule, problem, grid value).
      hyperparameters: the resolved traced hyperparameters (scalars).
      options: the static options (engine RunConfig fields) in use.
      compile_seconds: 0 when the program was cached.
      run_seconds: wall time of the run.
    """

    metrics: dict[str, np.ndarray]
    probs: np.ndarray
    steps: np.ndarray
    schedules: tuple[Schedule, ...]
    problem_names: tuple[str, ...]
    grid: dict[str, np.ndarray]
    seeds: int
    hyperparameters: dict[str, float]
    options: dict[str, Any]
    compile_seconds: float
    run_seconds: float

    def to_dataframe(self, names: Sequence[str] | None = None):
        """Tidy table: one row per (schedule, problem[, grid value], seed, evaluation step)."""
        import pandas as pd

        shape = self.metrics["expected_reward"].shape
        idx = np.indices(shape).reshape(len(shape), -1)
        cols: dict[str, Any] = {
            "schedule": np.asarray([sc.label for sc in self.schedules])[idx[0]],
            "reuse": np.asarray([sc.reuse for sc in self.schedules])[idx[0]],
            "batch": np.asarray([sc.batch for sc in self.schedules])[idx[0]],
            "minibatch": np.asarray([sc.minibatch for sc in self.schedules])[idx[0]],
            "problem": np.asarray(self.problem_names)[idx[1]],
        }
        for name, values in self.grid.items():
            cols[name] = np.asarray(values)[idx[2]]
        cols["seed"] = idx[-2]
        cols["step"] = np.asarray(self.steps)[idx[-1]]
        for name in names or sorted(self.metrics):
            cols[name] = self.metrics[name].reshape(-1)
        return pd.DataFrame(cols)


def _init_one(st: _Static, key, hp: HyperParams, ref_probs):
    """The initial policy of one run: parameters, train and evaluation contexts (SFT to pi_ref for the MLP).

    Same key roles as the engine, so runs start from the engine's policies.
    """
    k_init, k_eval, _, _ = jax.random.split(key, 4)
    policy = policies.make(st.policy, ref_probs)
    params, contexts = policy.init(k_init, num_bins=st.num_bins, num_contexts=st.num_contexts)
    if policy.tabular:
        return params, contexts, contexts
    params = policies.sft_to_reference(policy, params, contexts, safe_log(ref_probs), steps=st.sft_steps, learning_rate=hp.sft_learning_rate)
    _, eval_contexts = policy.init(k_eval, num_bins=st.num_bins, num_contexts=st.num_eval_contexts)
    return params, contexts, eval_contexts


def _run_one(st: _Static, key, hp: HyperParams, ref_probs, reward, init, reuse, batch, minibatch):
    """One run under one schedule from the initial policy ``init``; every argument unbatched."""
    spec = losses.get(st.loss)
    apply = spec.bind("bandit", st.cfg)
    c, k = st.num_contexts, st.num_bins
    _, k_eval, k_data, k_loop = jax.random.split(key, 4)
    ref_logp = safe_log(ref_probs)
    policy = policies.make(st.policy, ref_probs)
    params, contexts, eval_contexts = init
    opt = optax.adam(hp.learning_rate)
    opt_state = opt.init(params)
    consts = metrics.metric_constants(ref_probs, reward, hp.beta)
    data_logq = jnp.broadcast_to(jax.nn.log_softmax(ref_logp), (c, k))
    slots = jnp.arange(st.max_batch)
    k_evals = jax.random.fold_in(k_eval, 1)

    def draw(key_, logq):
        ys = jax.vmap(lambda kk, lq: regimes.sample_bins(kk, lq, st.max_batch))(jax.random.split(key_, c), logq)
        return ys, jnp.take_along_axis(logq, ys, axis=1)

    def collect(p, i):
        logq_pol = jax.nn.log_softmax(jax.lax.stop_gradient(policy.logits(p, contexts)), axis=-1)
        first = i == 0
        logq = jnp.where(first, data_logq, logq_pol)
        key_ = jnp.where(first, k_data, jax.random.fold_in(k_loop, i))
        return draw(key_, logq)

    def context_batch(ys, lqy, offset):
        valid = (slots >= offset) & (slots < offset + minibatch) & (slots < batch)
        r = reward[ys]
        m = minibatch.astype(jnp.float32)
        if spec.batch == "best_of_n":
            jb = jnp.argmax(jnp.where(valid, r, -jnp.inf))
            jw = jnp.argmin(jnp.where(valid, r, jnp.inf))
            one = jnp.ones((1,))
            others = valid.astype(jnp.float32).at[jb].set(0.0)
            return BestOfN(ys[jb][None], one, ys[jw][None], one, ys, others, m)
        return Points(ys, r, valid.astype(jnp.float32) / m, lqy, m)

    def loss_fn(p, ys, lqy, offset):
        logp = jax.nn.log_softmax(policy.logits(p, contexts), axis=-1)
        b = jax.vmap(lambda y, q: context_batch(y, q, offset))(ys, lqy)
        vals, _ = jax.vmap(lambda lp, bb: apply(lp, bb, ref_logp, hp))(logp, b)
        return jnp.mean(vals)

    def eval_metrics(p, t):
        logp = jax.nn.log_softmax(policy.logits(p, eval_contexts), axis=-1)
        m = jax.vmap(lambda lp: metrics.metrics_from_constants(lp, consts))(logp)
        m = {name: jnp.mean(v) for name, v in m.items()}
        if st.eval_samples:
            kt = jax.random.fold_in(k_evals, t)
            ys = jax.vmap(lambda kk, lp: regimes.sample_bins(kk, lp, st.eval_samples))(jax.random.split(kt, logp.shape[0]), logp)
            m["sampled_reward"] = jnp.mean(reward[ys])
        return m, jnp.mean(jnp.exp(logp), axis=0)

    shapes = jax.eval_shape(lambda: eval_metrics(params, 0))

    def step(carry, t):
        p, s, ys, lqy = carry
        i = t // reuse
        # The schedule is not batched over runs, so these conds stay conds under
        # vmap: batches are drawn once per iteration, metrics once per eval_every steps.
        ys, lqy = jax.lax.cond(t % reuse == 0, lambda: collect(p, i), lambda: (ys, lqy))
        offset = ((t % reuse) * minibatch) % batch
        loss, g = jax.value_and_grad(loss_fn)(p, ys, lqy, offset)
        m, probs = jax.lax.cond(
            t % st.eval_every == 0,
            lambda: eval_metrics(p, t),
            lambda: jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes),
        )
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s, ys, lqy), ({**m, "train_loss": loss}, probs)

    ys0 = jnp.zeros((c, st.max_batch), jnp.int32)
    lq0 = jnp.zeros((c, st.max_batch), jnp.float32)
    (params, _, ys, lqy), (hist, probs) = jax.lax.scan(step, (params, opt_state, ys0, lq0), jnp.arange(st.steps))
    t_last = st.steps
    offset = ((t_last % reuse) * minibatch) % batch
    m, p_last = eval_metrics(params, t_last)
    m = {**m, "train_loss": loss_fn(params, ys, lqy, offset)}
    hist = {n: jnp.concatenate([hist[n], m[n][None]]) for n in hist}
    return hist, jnp.concatenate([probs, p_last[None]])


_inits: dict[tuple, Any] = {}


#: Static loss options the runner accepts (RunConfig fields read by the losses).
STATIC_OPTIONS = ("advantage", "kl_estimator", "kl_placement", "negative", "normalize")
_POSITIVE = ("learning_rate", "beta", "clip_eps", "target_margin", "bt_scale", "sft_learning_rate")


def run_schedules(
    problems: Problem | Sequence[Problem],
    *,
    loss: str,
    schedules: Sequence[Schedule],
    steps: int,
    seeds: int,
    key: int | jax.Array = 0,
    seed_offset: int = 0,
    policy: str = "mlp",
    num_contexts: int = 10,
    num_eval_contexts: int = 100,
    sft_steps: int = 100,
    eval_samples: int = 0,
    eval_every: int = 1,
    max_batch: int | None = None,
    **options,
) -> ScheduleRun:
    """Train under each schedule on each problem for ``seeds`` seeds; one compile for all schedules.

    Args:
      problems: a Problem or a sequence of Problems with equal K.
      loss: one of :data:`LOSSES`.
      schedules: the schedules to compare (their values are traced; one call each).
      steps: gradient steps per run; a multiple of every schedule's ``reuse``.
      seeds: seeds per (schedule, problem, grid value); seed i uses
        ``fold_in(key, seed_offset + i)`` under every schedule, so schedules are
        compared on the same contexts and initial policies.
      key: an int in [0, 2**64), a ``jax.random.key`` or a ``PRNGKey`` array.
      seed_offset: index of the first seed (e.g. held-out tuning seeds after the reported ones).
      policy: "mlp" (the paper's network, SFT to pi_ref first) or "tabular".
      num_contexts: train contexts.
      num_eval_contexts: evaluation contexts (MLP only; tabular evaluates the train contexts).
      sft_steps: Adam steps of the SFT to pi_ref (MLP).
      eval_samples: draws per evaluation context for "sampled_reward" (0: none).
      eval_every: evaluate every this many steps (and after the last); divides ``steps``.
      max_batch: responses drawn per context and collection (default: the largest
        schedule batch). Calls with equal values share their compiled program.
      **options: traced hyperparameters (HyperParams fields; at most one may be a
        1-D array, swept as a grid axis after the problems) and the static loss
        options advantage, kl_estimator, kl_placement, negative, normalize.

    Returns:
      A :class:`ScheduleRun`; metrics have shape (schedules, problems[, grid], seeds, evaluations).
    """
    losses.get(loss)
    if loss not in LOSSES:
        raise ValueError(f"loss={loss!r} is not supported by the schedule runner; expected one of {', '.join(LOSSES)}")
    problems = list(problems) if isinstance(problems, (list, tuple)) else [problems]
    if not problems or not all(isinstance(p, Problem) for p in problems):
        raise ValueError(f"problems={problems!r} is invalid; expected a Problem or a non-empty sequence of Problems")
    kb = problems[0].num_bins
    if any(p.num_bins != kb for p in problems):
        raise ValueError(f"problems must share the number of bins; got {[p.num_bins for p in problems]}")
    schedules = tuple(schedules)
    if not schedules or not all(isinstance(s, Schedule) for s in schedules):
        raise ValueError("schedules must be a non-empty sequence of Schedule")
    for n, v in (("steps", steps), ("seeds", seeds), ("eval_every", eval_every), ("num_contexts", num_contexts)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{n}={v!r} is invalid; expected an integer >= 1")
    bad = [s.reuse for s in schedules if steps % s.reuse]
    if bad:
        raise ValueError(f"steps={steps} is not a multiple of reuse {bad}; expected steps = iterations * reuse")
    if steps % eval_every:
        raise ValueError(f"eval_every={eval_every} does not divide steps={steps}")
    if not isinstance(seed_offset, (int, np.integer)) or isinstance(seed_offset, bool) or seed_offset < 0:
        raise ValueError(f"seed_offset={seed_offset!r} is invalid; expected an integer >= 0")
    base_key = _checks.prng_key(key)
    if policy not in ("mlp", "tabular"):
        raise ValueError(f"policy={policy!r} is invalid; expected 'mlp' or 'tabular'")
    largest = max(s.batch for s in schedules)
    max_batch = largest if max_batch is None else max_batch
    if max_batch < largest:
        raise ValueError(f"max_batch={max_batch} is smaller than the largest schedule batch {largest}")
    traced_names = [f.name for f in dataclasses.fields(HyperParams)]
    unknown = set(options) - set(traced_names) - set(STATIC_OPTIONS)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; valid names are {', '.join(sorted(set(traced_names) | set(STATIC_OPTIONS)))}")
    losses.check_options(loss, options)
    static_opts = {n: options[n] for n in STATIC_OPTIONS if n in options}
    values: dict[str, np.ndarray] = {}
    grid: dict[str, np.ndarray] = {}
    for n in traced_names:
        if n not in options or options[n] is None:
            continue
        arr = np.asarray(options[n], dtype=np.float64)
        if arr.ndim > 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0) or (n in _POSITIVE and np.any(arr == 0)):
            raise ValueError(f"{n}={options[n]!r} is invalid; expected a finite {'positive' if n in _POSITIVE else 'non-negative'} scalar or 1-D array")
        (grid if arr.ndim == 1 else values)[n] = arr
    if len(grid) > 1:
        raise ValueError(f"at most one traced value may be swept; got {sorted(grid)}")
    values.setdefault("learning_rate", np.asarray(1e-3 if policy == "mlp" else 0.05))
    if "target_margin" not in values and "target_margin" not in grid:
        if "beta" in grid:
            raise ValueError("sweeping beta needs an explicit target_margin")
        values["target_margin"] = np.asarray(1.0 / (2.0 * float(values.get("beta", HyperParams.beta))))

    cfg = RunConfig(loss=loss, sampling="on_policy", steps=int(steps), num_bins=kb, policy=policy, **static_opts)
    n_eval = int(num_eval_contexts) if policy == "mlp" else int(num_contexts)
    st = _Static(loss, int(steps), int(max_batch), int(num_contexts), n_eval, kb, policy, int(sft_steps), int(eval_samples), int(eval_every), cfg)

    gname, gvals = next(iter(grid.items())) if grid else (None, np.zeros(1))
    npb, ng = len(problems), len(gvals)
    runs = npb * ng * seeds
    idx = np.indices((npb, ng, seeds)).reshape(3, runs)
    hp_cols = {}
    for n in traced_names:
        if n == gname:
            hp_cols[n] = gvals[idx[1]]
        else:
            hp_cols[n] = np.full(runs, float(values[n]) if n in values else getattr(HyperParams, n))
    hp = HyperParams(**{n: jnp.asarray(v, jnp.float32) for n, v in hp_cols.items()})
    ref = jnp.asarray(np.stack([np.asarray(p.ref_probs) for p in problems])[idx[0]])
    rew = jnp.asarray(np.stack([np.asarray(p.reward) for p in problems])[idx[0]])
    keys = run_keys(base_key, seed_offset + idx[2])
    blocked = functools.partial(run_blocks, block=default_block(policy, kb), devices=resolve_devices(None))

    # The initial policies depend neither on the schedule nor on the loss: fit
    # them once per process and start every schedule from them.
    st_init = dataclasses.replace(st, loss="", steps=0, max_batch=0, eval_samples=0, eval_every=0, cfg=None)
    memo = (st_init, runs, base_key.tobytes(), seed_offset, hp_cols["sft_learning_rate"].tobytes(), np.asarray(ref).tobytes())
    compile_s, run_s = 0.0, 0.0
    if memo not in _inits:
        t0 = time.perf_counter()
        init, c = blocked(functools.partial(_init_one, st_init), (keys, hp, ref), cache_key=("schedule-init", st_init))
        _inits.clear()  # keep one set of initial policies (they can be large)
        _inits[memo] = init
        compile_s, run_s = c, time.perf_counter() - t0 - c
    init = _inits[memo]
    hists, probs = [], []
    for sc in schedules:
        t0 = time.perf_counter()
        (h, pr), c = blocked(
            functools.partial(_run_one, st),
            (keys, hp, ref, rew, init),
            (jnp.int32(sc.reuse), jnp.int32(sc.batch), jnp.int32(sc.minibatch)),
            cache_key=("schedule-run", st),
        )
        run_s += time.perf_counter() - t0 - c
        compile_s += c
        hists.append(h)
        probs.append(pr)

    evals = np.append(np.arange(0, steps, eval_every), steps)
    shape = (len(schedules), npb) + ((ng,) if gname else ()) + (seeds, len(evals))
    mets = {n: np.stack([np.asarray(h[n])[:, evals] for h in hists]).reshape(shape) for n in hists[0]}
    # Reward queries after t steps: the batches collected so far.
    per = np.asarray([s.batch * num_contexts for s in schedules], np.float64)
    reuse = np.asarray([s.reuse for s in schedules])
    q = np.ceil(evals[None, :] / reuse[:, None]) * per[:, None]
    mets["reward_queries"] = np.broadcast_to(q.reshape((len(schedules),) + (1,) * (len(shape) - 2) + (len(evals),)), shape).copy()
    return ScheduleRun(
        metrics=mets,
        probs=np.stack([np.asarray(pr)[:, evals] for pr in probs]).reshape(shape + (kb,)),
        steps=evals,
        schedules=schedules,
        problem_names=tuple(p.name for p in problems),
        grid={gname: gvals} if gname else {},
        seeds=int(seeds),
        hyperparameters={n: float(v) for n, v in values.items()},
        options={"policy": policy, "num_contexts": num_contexts, "num_eval_contexts": n_eval, "sft_steps": sft_steps, **static_opts},
        compile_seconds=compile_s,
        run_seconds=run_s,
    )
