"""The engine: a whole fine-tuning run as one ``lax.scan``, many runs under ``jit(vmap)``.

:func:`run` resolves hyperparameters, builds the flat run axis (grid x seeds),
compiles once per static configuration (:class:`RunConfig`) and returns a
:class:`Trajectory`. Traced hyperparameters (:class:`HyperParams`, the problem's
arrays, the data distribution) are data: changing their values, or sweeping them
as arrays of the same length, never recompiles.

One run (PAPER_NOTES A.6, Algorithm 1): initialise the policy (tabular logits,
or the MLP followed by SFT to pi_ref); then for each of ``steps // reuse``
iterations collect a batch per context (offline: the one fixed dataset drawn
from the data distribution; on-policy: a fresh batch from the current policy;
exact: the population batch) and take ``reuse`` full-batch optimiser steps on it.
Exact metrics are recorded for every policy along the way.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from modeseek import _checks, losses, metrics, policies, regimes
from modeseek._blocks import resolve_devices, run_blocks, run_keys
from modeseek.batches import Target
from modeseek.problems import Problem, safe_log

__all__ = [
    "RunConfig",
    "HyperParams",
    "Trajectory",
    "run",
    "SAMPLINGS",
    "OPTIMIZERS",
    "compile_count",
    "enable_compilation_cache",
]

#: Data regimes. "exact" is the population update on the current policy,
#: "exact_offline" the population update on the data distribution.
SAMPLINGS = ("offline", "on_policy", "exact", "exact_offline")
OPTIMIZERS = ("adam", "sgd")
_OFFLINE = ("offline", "exact_offline")
_EXACT = ("exact", "exact_offline")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Static configuration: everything that changes shapes or control flow.

    A new value of any field compiles a new program; see :class:`HyperParams`
    for what may be swept without recompiling.
    """

    loss: str
    sampling: str
    steps: int
    reuse: int = 1
    num_samples: int = 10
    num_contexts: int = 1
    num_eval_contexts: int = 100
    num_bins: int = 100
    policy: str = "tabular"
    init: str = "reference"
    optimizer: str = "adam"
    negative: str | None = None
    advantage: str = "mean"
    kl_estimator: str | None = None
    kl_placement: str = "reward"
    normalize: bool = False
    labels: str = "reward"
    pairing: str = "all"
    sft_steps: int = 100
    first_batch: str = "policy"
    eval_samples: int = 0
    snapshot_every: int = 1
    block: int = 32
    has_target: bool = False
    has_train_reward: bool = False

    @property
    def iterations(self) -> int:
        """Number of batch collections (1 for offline regimes)."""
        return 1 if self.sampling in _OFFLINE else self.steps // self.reuse

    @property
    def steps_per_batch(self) -> int:
        """Gradient steps taken on each collected batch."""
        return self.steps if self.sampling in _OFFLINE else self.reuse

    @property
    def snapshot_steps(self) -> np.ndarray:
        """Steps at which the policy's probabilities are stored (always includes 0 and ``steps``)."""
        s = np.arange(0, self.steps + 1, self.snapshot_every)
        return s if s[-1] == self.steps else np.append(s, self.steps)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class HyperParams:
    """Traced hyperparameters: may be swept as arrays without recompiling.

    Attributes:
      learning_rate: optimiser step size.
      beta: KL temperature: pi_star's temperature (default target of forward_kl /
        reverse_kl and the kl_pi_star metric), DPO's inverse temperature, RWR's
        temperature, the KL coefficient of REINFORCE/PPO when a KL estimator is set.
      negative_coef: weight of best_of_n's negative term.
      entropy_coef: weight of the exact entropy bonus (reinforce, ppo).
      clip_eps: PPO clip range.
      target_margin: IPO's target margin (default 1/(2 beta)).
      min_reward_gap: pairs whose rewards differ by less are skipped.
      bt_scale: Bradley-Terry inverse temperature for sampled labels.
      init_scale: logit noise for ``init="random"``.
      sft_learning_rate: Adam step size of the MLP's SFT to pi_ref.
    """

    learning_rate: Any = 0.05
    beta: Any = 0.1
    negative_coef: Any = 0.05
    entropy_coef: Any = 0.0
    clip_eps: Any = 0.2
    target_margin: Any = None
    min_reward_gap: Any = 0.0
    bt_scale: Any = 1.0
    init_scale: Any = 1.0
    sft_learning_rate: Any = 1e-2


_STATIC_FIELDS = {f.name for f in dataclasses.fields(RunConfig)} - {"loss", "sampling", "steps", "num_bins", "has_target"}
_TRACED_FIELDS = [f.name for f in dataclasses.fields(HyperParams)]
_POSITIVE = {"learning_rate", "beta", "clip_eps", "target_margin", "bt_scale", "sft_learning_rate"}
_NONNEGATIVE = {"negative_coef", "entropy_coef", "min_reward_gap", "init_scale"}

_compile_counter = [0]


def compile_count() -> int:
    """How many run programs have been traced and compiled in this process."""
    return _compile_counter[0]


def enable_compilation_cache(path: str | None = None) -> str:
    """Turn on JAX's persistent compilation cache so later processes skip XLA compiles.

    A rerun of the same configuration then loads the compiled program from disk
    (measured: an MLP run's compile drops from ~19 s to ~2 s, the rest being
    tracing). Opt-in, since it writes to disk: ``make figures`` and the CLI call it.

    Args:
      path: cache folder (default $MODESEEK_CACHE_DIR or ~/.cache/modeseek/jax).

    Returns:
      The folder used.
    """
    import os

    path = path or os.environ.get("MODESEEK_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "modeseek", "jax")
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    # Most programs compile in well under a second at modeseek's compile options;
    # caching them too is what makes a rerun cheap (loading one takes milliseconds).
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.05)
    return path


def default_learning_rate(policy: str, optimizer: str) -> float:
    """Defaults that make every loss progress on the paper problems in a few hundred steps."""
    if policy == "mlp":
        return 1e-3 if optimizer == "adam" else 1e-1
    return 0.05 if optimizer == "adam" else 1.0


def default_block(policy: str, num_bins: int = 100) -> int:
    """Runs per compiled call (see :mod:`modeseek._blocks`); a seed's bits depend on it, never on the call's size.

    Chosen from ``experiments/benchmarks/blocks.py`` (README, "Reproducibility"):
    large enough that a block runs near the throughput of one wide program, small
    enough that a single seed does not pay for many padded ones. Measured at
    K = 100 (1 CPU device, blocks on both cores): blocks of 32 ran 1024 runs in
    0.79x (REINFORCE, 64 samples) and 0.95x (exact reverse KL) the time of one
    1024-wide program, and one seed in 16x and 5x the time of a 1-wide one
    (0.20 s and 0.04 s per 1000 steps). Runs with many bins already fill the
    vector units on their own, so they get smaller blocks (not measured; a
    single K = 8192 run does not pay for 31 padded ones).
    """
    if policy == "mlp":
        # Its matmuls gain nothing from batching runs (32 runs in blocks of 1 ran
        # 0.94x the time of one 32-wide program), so a single seed pays nothing.
        return 1
    return 32 if num_bins <= 128 else 8 if num_bins <= 1024 else 1


# ----------------------------------------------------------------------------- one run


def _collector(spec, cfg: RunConfig, exact: bool, hp: HyperParams, reward):
    """A function (key, logq (K,)) -> batch for one context."""
    n = cfg.num_samples
    if spec.batch == "points":
        return (lambda key, lq: regimes.exact_points(lq, reward)) if exact else (
            lambda key, lq: regimes.sample_points(key, lq, reward, n)
        )
    if spec.batch == "best_of_n":
        if exact:
            # The reward's sort order is fixed for the run: sort it once, outside the loop.
            order = regimes.reward_order(reward)
            return lambda key, lq: regimes.exact_best_of_n(lq, reward, n, order=order)
        return lambda key, lq: regimes.sample_best_of_n(key, lq, reward, n)
    if spec.batch == "pairs":
        kw = dict(labels=cfg.labels, min_reward_gap=hp.min_reward_gap, bt_scale=hp.bt_scale)
        if exact:
            return lambda key, lq: regimes.exact_pairs(lq, reward, **kw)
        return lambda key, lq: regimes.sample_pairs(key, lq, reward, n, pairing=cfg.pairing, **kw)
    raise AssertionError(spec.batch)


def _run_one(cfg: RunConfig, key, hp: HyperParams, ref_probs, reward, train_reward, data_probs, target_probs):
    """One run; every array argument is unbatched. Returns a dict of stacked outputs.

    ``reward`` is the gold reward behind every metric; ``train_reward`` is what the
    learner sees (its batches' rewards, the default target pi_star); the two
    differ only when a proxy reward model is given.
    """
    _compile_counter[0] += 1  # Python side effect: runs once per trace.
    spec = losses.get(cfg.loss)
    apply = spec.bind("bandit", cfg)
    k_init, k_eval, k_data, k_loop = jax.random.split(key, 4)
    ref_logp = safe_log(ref_probs)
    policy = policies.make(cfg.policy, ref_probs, init=cfg.init, init_scale=hp.init_scale)
    params, contexts = policy.init(k_init, num_bins=cfg.num_bins, num_contexts=cfg.num_contexts)
    if policy.tabular:
        eval_contexts = contexts
    else:
        params = policies.sft_to_reference(
            policy, params, contexts, ref_logp, steps=cfg.sft_steps, learning_rate=hp.sft_learning_rate
        )
        _, eval_contexts = policy.init(k_eval, num_bins=cfg.num_bins, num_contexts=cfg.num_eval_contexts)

    if cfg.optimizer == "adam":
        opt = optax.adam(hp.learning_rate)
    else:
        opt = optax.sgd(hp.learning_rate)
    opt_state = opt.init(params)

    beta = hp.beta
    c = cfg.num_contexts
    exact = cfg.sampling in _EXACT
    if spec.batch == "target":
        target = target_probs if cfg.has_target else jax.nn.softmax(ref_logp + train_reward / beta)
        fixed = Target(jnp.broadcast_to(target, (c, cfg.num_bins)))
        collect = lambda k, p: fixed  # noqa: E731
    else:
        one = _collector(spec, cfg, exact, hp, train_reward)

        def batch_for(k, logq):
            return jax.vmap(one)(jax.random.split(k, c), logq)

        if cfg.sampling in _OFFLINE:
            fixed = batch_for(k_data, jnp.broadcast_to(safe_log(data_probs), (c, cfg.num_bins)))
            collect = lambda k, p: fixed  # noqa: E731
        else:

            def collect(k, p):
                logits = jax.lax.stop_gradient(policy.logits(p, contexts))
                return batch_for(k, jax.nn.log_softmax(logits, axis=-1))

            if cfg.first_batch == "data":
                # The paper's epoch 0 samples from pi_data, later epochs from the policy (A.6).
                on_policy_collect = collect
                data_logq = jnp.broadcast_to(safe_log(data_probs), (c, cfg.num_bins))

                def collect(k, p, i=None):
                    if i is None:
                        return on_policy_collect(k, p)
                    return jax.lax.cond(i == 0, lambda: batch_for(k, data_logq), lambda: on_policy_collect(k, p))

    def loss_fn(p, batch):
        logp = jax.nn.log_softmax(policy.logits(p, contexts), axis=-1)
        vals, aux = jax.vmap(lambda lp, b: apply(lp, b, ref_logp, hp))(logp, batch)
        return jnp.mean(vals), jax.tree.map(jnp.mean, aux)

    consts = metrics.metric_constants(ref_probs, reward, beta)

    def eval_metrics(p, k=None):
        logp = jax.nn.log_softmax(policy.logits(p, eval_contexts), axis=-1)
        m = jax.vmap(lambda lp: metrics.metrics_from_constants(lp, consts))(logp)
        m = {name: jnp.mean(v) for name, v in m.items()}
        if cfg.has_train_reward:
            m["expected_train_reward"] = jnp.mean(jnp.exp(logp) @ train_reward)
        if cfg.eval_samples:
            # Monte-Carlo reward as the paper reports it: eval_samples draws per eval context.
            ys = jax.vmap(lambda kk, lp: regimes.sample_bins(kk, lp, cfg.eval_samples))(
                jax.random.split(k, logp.shape[0]), logp
            )
            m["sampled_reward"] = jnp.mean(reward[ys])
        return m, jnp.mean(jnp.exp(logp), axis=0)

    n_snap = len(cfg.snapshot_steps)
    every = cfg.snapshot_every

    k_evals = jax.random.fold_in(k_eval, 1)

    offline = cfg.sampling in _OFFLINE or spec.batch == "target"
    iters = cfg.iterations
    batch_keys = jax.random.split(k_loop, iters)

    def step(carry, t):
        # One loop body for every evaluation point t = 0..steps, the last one
        # included: code outside the loop is compiled per batch shape and may
        # round differently, which would break bit-identity across shardings.
        p, s, snaps, batch = carry
        if not offline:
            i = t // cfg.reuse
            fresh = (t % cfg.reuse == 0) & (t < cfg.steps)
            # t is not batched over runs, so this cond runs one branch, not both.
            if cfg.first_batch == "data" and cfg.sampling == "on_policy":
                batch = jax.lax.cond(fresh, lambda: collect(batch_keys[i], p, i), lambda: batch)
            else:
                batch = jax.lax.cond(fresh, lambda: collect(batch_keys[i], p), lambda: batch)
        (loss, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(p, batch)
        m, probs = eval_metrics(p, jax.random.fold_in(k_evals, t))
        slot = jnp.where(t == cfg.steps, n_snap - 1, jnp.minimum(t // every, n_snap - 1))
        keep = (t % every == 0) | (t == cfg.steps)
        snaps = snaps.at[slot].set(jnp.where(keep, probs, snaps[slot]))
        u, s_new = opt.update(g, s, p)
        p, s = jax.lax.cond(t < cfg.steps, lambda: (optax.apply_updates(p, u), s_new), lambda: (p, s))
        return (p, s, snaps, batch), {**m, **aux, "train_loss": loss}

    if offline:
        batch0 = collect(k_loop, params)
    else:
        batch0 = jax.tree.map(jnp.zeros_like, jax.eval_shape(collect, k_loop, params))
    snaps0 = jnp.zeros((n_snap, cfg.num_bins))
    (params, _, snaps, _), hist = jax.lax.scan(step, (params, opt_state, snaps0, batch0), jnp.arange(cfg.steps + 1))
    return {"metrics": hist, "snapshots": snaps, "final_probs": snaps[n_snap - 1]}


# ----------------------------------------------------------------------------- results


@dataclasses.dataclass
class Trajectory:
    """The stacked outputs of a sweep.

    Attributes:
      metrics: dict name -> array of shape grid_shape + (seeds, steps + 1); index 0
        is the initial policy. Keys: metrics.EXACT_METRICS, "train_loss" (the loss on the current batch),
        "reward_queries", and metrics.PAIR_METRICS for pair losses.
      final_probs: grid_shape + (seeds, K) final policy (mean over eval contexts).
      snapshots: grid_shape + (seeds, len(snapshot_steps), K) policy snapshots.
      snapshot_steps: (S,) steps of the snapshots.
      grid: ordered dict of swept hyperparameter name -> (G_i,) values.
      axes: the grid's axes, each a tuple of the names that vary along it (one
        name per axis unless ``run(paired=...)`` zipped several into one).
      hyperparameters: every resolved hyperparameter (scalars for unswept ones).
      config: the static RunConfig.
      problem_names: names of the problems (one per grid value when swept).
      seeds: number of seeds.
      seed_offset: index of the first seed (seed column = seed_offset + i).
      compile_seconds, run_seconds: wall times (compile 0 when the program was cached).
    """

    metrics: dict[str, np.ndarray]
    final_probs: np.ndarray
    snapshots: np.ndarray
    snapshot_steps: np.ndarray
    grid: dict[str, np.ndarray]
    hyperparameters: dict[str, Any]
    config: RunConfig
    problem_names: tuple[str, ...]
    seeds: int
    compile_seconds: float
    run_seconds: float
    seed_offset: int = 0
    axes: tuple[tuple[str, ...], ...] | None = None

    def __post_init__(self):
        if self.axes is None:
            self.axes = tuple((name,) for name in self.grid)

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Lengths of the grid's axes, in the order they were given (paired names share one axis)."""
        return tuple(len(self.grid[names[0]]) for names in self.axes)

    @property
    def steps(self) -> np.ndarray:
        """(steps + 1,) step index of the metrics' last axis."""
        return np.arange(self.config.steps + 1)

    def to_dataframe(self):
        """A tidy pandas DataFrame: one row per (grid point, seed, step)."""
        import pandas as pd

        gshape = self.grid_shape
        runs = int(np.prod(gshape, dtype=int)) * self.seeds
        t = self.config.steps + 1
        cols: dict[str, Any] = {}
        idx = np.indices(gshape + (self.seeds,)).reshape(len(gshape) + 1, runs)
        axis_of = {name: axis for axis, names in enumerate(self.axes) for name in names}
        for name, values in self.grid.items():
            vals = np.asarray(values)[idx[axis_of[name]]]
            cols[name] = np.repeat(vals, t)
        cols["seed"] = np.repeat(idx[-1] + self.seed_offset, t)
        cols["step"] = np.tile(np.arange(t), runs)
        for name, value in self.hyperparameters.items():
            if name not in self.grid:
                cols[name] = value
        for name in ("loss", "sampling", "policy", "optimizer", "reuse", "num_samples", "num_contexts", "negative", "advantage", "kl_estimator"):
            if name not in cols:
                v = getattr(self.config, name)
                cols[name] = "none" if v is None else v
        if "problem" not in self.grid:
            cols["problem"] = self.problem_names[0]
        for name, arr in self.metrics.items():
            cols[name] = np.asarray(arr).reshape(runs * t)
        return pd.DataFrame(cols)


# ----------------------------------------------------------------------------- run()


def _as_sweep(name, value):
    """Return (is_swept, numpy value)."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim > 1:
        raise ValueError(f"{name} has shape {arr.shape}; expected a scalar or a 1-D array of values to sweep")
    if arr.ndim == 1 and arr.size == 0:
        raise ValueError(f"{name} is an empty array; expected at least one value to sweep")
    return arr.ndim == 1, arr


def run(
    problem: Problem | Sequence[Problem],
    *,
    loss: str,
    sampling: str = "on_policy",
    steps: int = 500,
    seeds: int = 1,
    key: int | jax.Array = 0,
    data=None,
    target=None,
    train_reward=None,
    snapshot_every: int | None = None,
    devices: Sequence[Any] | None = None,
    seed_offset: int = 0,
    paired: Sequence[str] | Sequence[Sequence[str]] = (),
    **hyperparameters,
) -> Trajectory:
    """Run ``seeds`` independent fine-tuning runs (per grid point) and return their trajectories.

    Args:
      problem: a Problem, or a sequence of Problems with equal K to sweep over.
      loss: a name from ``modeseek.losses.names()``.
      sampling: "offline", "on_policy", "exact" (population update on the current
        policy) or "exact_offline" (population update on the data distribution).
      steps: gradient steps per run.
      seeds: independent runs per grid point; seed i uses ``fold_in(key, seed_offset + i)``.
      key: an int in [0, 2**64), a ``jax.random.key`` (threefry) or a legacy
        ``PRNGKey`` array; ``key(n)`` and ``PRNGKey(n)`` give the same bits, and
        distinct ints never share runs (see :func:`modeseek._checks.prng_key`).
      data: (K,) offline data distribution (default pi_ref), or (G, K) to sweep.
      target: (K,) target for forward_kl / reverse_kl (default pi_star(beta)).
      train_reward: (K,) reward the learner sees instead of the problem's (a
        proxy or learned reward model), or (G, K) to sweep; metrics stay on the
        problem's (gold) reward and add "expected_train_reward".
      snapshot_every: store the policy every this many steps (default steps // 10).
      devices: devices to spread the runs over (default: all of ``jax.devices()``).
        The flattened grid x seeds axis is cut into blocks of ``block`` runs
        (the last padded by repeating its last run), every block computed by
        the same fixed-width program, block j on device j mod n. A run's bits
        therefore depend on its key, hyperparameters and ``block`` only: not
        on the number of seeds, the grid, the chunking or the devices.
      seed_offset: index of the first seed, so that a sweep split into chunks of
        seeds (or over hosts) reproduces the unsplit sweep's runs exactly.
      paired: names of swept axes to zip instead of crossing: they must have
        equal lengths and vary together along one grid axis, placed where the
        first of them is (e.g. ``("problem", "data")`` with G problems and a
        (G, K) data array runs problem i on data i: G grid points, not G x G).
        Names: "problem", "data", "train_reward" or a swept traced
        hyperparameter; several groups as a sequence of sequences.
      **hyperparameters: static options (RunConfig fields: reuse, num_samples,
        num_contexts, num_eval_contexts, policy, init, optimizer, negative,
        advantage, kl_estimator, kl_placement, normalize, labels, pairing,
        sft_steps, block (runs per compiled call, default :func:`default_block`),
        first_batch ("policy", or "data" for the paper's epoch 0
        drawn from the data distribution in on-policy runs), eval_samples (> 0
        adds a Monte-Carlo "sampled_reward" metric with that many draws per
        evaluation context)) and traced values (HyperParams fields: learning_rate, beta,
        negative_coef, entropy_coef, clip_eps, target_margin, min_reward_gap,
        bt_scale, init_scale, sft_learning_rate). A traced value given as a 1-D
        array is swept; several swept values form an outer-product grid in the
        order given (zip some of them with ``paired``).

    Returns:
      A Trajectory.
    """
    spec = losses.get(loss)
    _checks.choice("sampling", sampling, SAMPLINGS)
    unknown = set(hyperparameters) - _STATIC_FIELDS - set(_TRACED_FIELDS)
    if unknown:
        valid = sorted(_STATIC_FIELDS | set(_TRACED_FIELDS))
        raise ValueError(f"unknown hyperparameter(s) {sorted(unknown)}; valid names are {', '.join(valid)}")
    losses.check_options(loss, hyperparameters)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps={steps!r} is invalid; expected an integer >= 1")
    if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds < 1:
        raise ValueError(f"seeds={seeds!r} is invalid; expected an integer >= 1")
    if isinstance(seed_offset, bool) or not isinstance(seed_offset, (int, np.integer)) or seed_offset < 0:
        raise ValueError(f"seed_offset={seed_offset!r} is invalid; expected an integer >= 0")
    if seed_offset + seeds > 2**32:
        raise ValueError(f"seed_offset + seeds = {seed_offset + seeds} is too large; expected at most 2**32 seed indices")
    base_key = _checks.prng_key(key)

    # Problems: a single one, or a sweep.
    problems = list(problem) if isinstance(problem, (list, tuple)) else [problem]
    for p in problems:
        if not isinstance(p, Problem):
            raise ValueError(f"problem={p!r} is not a modeseek.Problem")
    k = problems[0].num_bins
    if any(p.num_bins != k for p in problems):
        raise ValueError(f"swept problems must share the number of bins; got {[p.num_bins for p in problems]}")

    static = {n: hyperparameters[n] for n in _STATIC_FIELDS if n in hyperparameters}
    policy = static.get("policy", "tabular")
    _checks.choice("policy", policy, policies.names())
    optimizer = static.get("optimizer", "adam")
    _checks.choice("optimizer", optimizer, OPTIMIZERS)
    static.setdefault("num_contexts", 1 if policy == "tabular" else 10)
    if policy == "tabular":
        static["num_eval_contexts"] = static["num_contexts"]
    _checks.choice("init", static.get("init", "reference"), ("reference", "zeros", "random"))
    _checks.choice("negative", static.get("negative"), (None,) + losses.NEGATIVE_TERMS)
    _checks.choice("advantage", static.get("advantage", "mean"), losses.ADVANTAGES)
    _checks.choice("kl_estimator", static.get("kl_estimator"), (None,) + losses.KL_ESTIMATORS)
    _checks.choice("kl_placement", static.get("kl_placement", "reward"), losses.KL_PLACEMENTS)
    _checks.choice("labels", static.get("labels", "reward"), regimes.PAIR_LABELS)
    _checks.choice("pairing", static.get("pairing", "all"), regimes.PAIRINGS)
    _checks.choice("first_batch", static.get("first_batch", "policy"), ("policy", "data"))
    if "eval_samples" in static and (isinstance(static["eval_samples"], bool) or not isinstance(static["eval_samples"], (int, np.integer)) or static["eval_samples"] < 0):
        raise ValueError(f"eval_samples={static['eval_samples']!r} is invalid; expected an integer >= 0")
    static.setdefault("block", default_block(policy, k))
    for n in ("reuse", "num_samples", "num_contexts", "num_eval_contexts", "sft_steps", "block"):
        if n in static and (isinstance(static[n], bool) or not isinstance(static[n], (int, np.integer)) or static[n] < 1):
            raise ValueError(f"{n}={static[n]!r} is invalid; expected an integer >= 1")
    if static.get("first_batch", "policy") == "data" and sampling == "exact":
        raise ValueError("first_batch='data' applies to sampling='on_policy' only (offline regimes always use the data); got sampling='exact'")
    if sampling in _OFFLINE:
        # Offline regimes collect once and never use these: normalising them lets
        # equal offline runs from different callers share one compiled program.
        static["reuse"], static["first_batch"] = 1, "policy"
    reuse = static.get("reuse", 1)
    if sampling not in _OFFLINE and steps % reuse:
        raise ValueError(f"steps={steps} is not a multiple of reuse={reuse}; expected steps = iterations * reuse")
    if spec.batch == "target" and sampling not in _EXACT:
        raise ValueError(f"loss={loss!r} is an analytic divergence; expected sampling='exact' or 'exact_offline' (got {sampling!r})")
    if spec.batch != "target" and target is not None:
        raise ValueError(f"target is only used by forward_kl and reverse_kl, not loss={loss!r}")
    n_samples = static.get("num_samples", 10)
    if spec.batch == "pairs" and n_samples < 2:
        raise ValueError(f"num_samples={n_samples} is too small for pair losses; expected >= 2")
    if snapshot_every is None:
        snapshot_every = max(1, steps // 10)
    if isinstance(snapshot_every, bool) or not isinstance(snapshot_every, (int, np.integer)) or snapshot_every < 1:
        raise ValueError(f"snapshot_every={snapshot_every!r} is invalid; expected an integer >= 1")
    cfg = RunConfig(loss=loss, sampling=sampling, steps=int(steps), num_bins=k, snapshot_every=int(snapshot_every), has_target=target is not None, has_train_reward=train_reward is not None, **static)

    # Traced values and the grid.
    traced = {n: hyperparameters[n] for n in _TRACED_FIELDS if n in hyperparameters}
    traced.setdefault("learning_rate", default_learning_rate(policy, optimizer))
    grid: dict[str, np.ndarray] = {}
    if len(problems) > 1:
        grid["problem"] = np.arange(len(problems))
    values: dict[str, np.ndarray] = {}
    order = [n for n in hyperparameters if n in traced] + [n for n in traced if n not in hyperparameters]
    for n in order:
        swept, arr = _as_sweep(n, traced[n])
        if n in _POSITIVE:
            _checks.positive(n, arr)
        elif n in _NONNEGATIVE:
            _checks.positive(n, arr, allow_zero=True)
        if swept:
            grid[n] = arr
        else:
            values[n] = arr
    data_arr = None
    if data is not None:
        d = np.asarray(data, dtype=np.float64)
        rows = d[None] if d.ndim == 1 else d
        if rows.ndim != 2 or rows.shape[1] != k:
            raise ValueError(f"data has shape {d.shape}; expected ({k},) or (G, {k})")
        rows = np.stack([_checks.probability_vector(f"data[{i}]", r) for i, r in enumerate(rows)])
        if d.ndim == 2:
            grid["data"] = np.arange(len(rows))
        data_arr = rows
    train_arr = None
    if train_reward is not None:
        tr_rows = np.asarray(train_reward, dtype=np.float64)
        tr_rows = tr_rows[None] if tr_rows.ndim == 1 else tr_rows
        if tr_rows.ndim != 2 or tr_rows.shape[1] != k:
            raise ValueError(f"train_reward has shape {np.shape(train_reward)}; expected ({k},) or (G, {k})")
        if not np.all(np.isfinite(tr_rows)):
            raise ValueError("train_reward has non-finite entries; expected finite rewards")
        if np.ndim(train_reward) == 2:
            grid["train_reward"] = np.arange(len(tr_rows))
        train_arr = tr_rows
    target_arr = None
    if target is not None:
        target_arr = _checks.probability_vector("target", target)
        if target_arr.shape[0] != k:
            raise ValueError(f"target has {target_arr.shape[0]} bins; expected {k}")

    axes = _grid_axes(grid, paired)
    gshape = tuple(len(grid[names[0]]) for names in axes)
    runs = int(np.prod(gshape, dtype=int)) * seeds
    idx = np.indices(gshape + (seeds,)).reshape(len(gshape) + 1, runs)
    devs = resolve_devices(devices)
    axis_of = {n: i for i, names in enumerate(axes) for n in names}

    def per_run(name, scalar=None):
        if name in grid:
            return np.asarray(grid[name])[idx[axis_of[name]]]
        return np.full(runs, scalar)

    hp_values = {}
    for n in _TRACED_FIELDS:
        if n in grid or n in values:
            hp_values[n] = per_run(n, values.get(n))
    if "target_margin" not in hp_values:
        hp_values["target_margin"] = 1.0 / (2.0 * per_run("beta", values.get("beta", HyperParams.beta)))
    hp = HyperParams(**{n: jnp.asarray(hp_values.get(n, np.full(runs, getattr(HyperParams, n))), jnp.float32) for n in _TRACED_FIELDS})

    pi = per_run("problem", 0).astype(int) if "problem" in grid else np.zeros(runs, int)
    ref = jnp.asarray(np.stack([np.asarray(p.ref_probs) for p in problems])[pi])
    rew = jnp.asarray(np.stack([np.asarray(p.reward) for p in problems])[pi])
    if data_arr is None:
        dat = ref
    else:
        di = per_run("data", 0).astype(int) if "data" in grid else np.zeros(runs, int)
        dat = jnp.asarray(data_arr[di], jnp.float32)
    if train_arr is None:
        trw = rew
    else:
        ti = per_run("train_reward", 0).astype(int) if "train_reward" in grid else np.zeros(runs, int)
        trw = jnp.asarray(train_arr[ti], jnp.float32)
    tgt = jnp.asarray(np.broadcast_to(target_arr if target_arr is not None else np.zeros(k), (runs, k)), jnp.float32)

    keys = run_keys(base_key, idx[-1] + seed_offset)

    t0 = time.perf_counter()
    out, compile_s = run_blocks(
        functools.partial(_run_one, cfg),
        (keys, hp, ref, rew, trw, dat, tgt),
        block=cfg.block,
        devices=devs,
        cache_key=("bandit", cfg),
        working_per_run=_working_bytes(cfg, spec),
    )
    run_s = time.perf_counter() - t0 - compile_s
    shape = gshape + (seeds,)
    mets = {n: np.asarray(v).reshape(shape + (steps + 1,)) for n, v in out["metrics"].items()}
    mets["reward_queries"] = np.broadcast_to(_reward_queries(cfg, spec), shape + (steps + 1,)).copy()
    hp_report = {n: (float(values[n]) if n in values else None) for n in _TRACED_FIELDS if n not in grid}
    hp_report = {n: v for n, v in hp_report.items() if v is not None}
    if "target_margin" not in grid and "target_margin" not in hp_report and "beta" not in grid:
        hp_report["target_margin"] = float(np.asarray(hp.target_margin)[0])
    for n in _TRACED_FIELDS:
        if n not in grid and n not in hp_report:
            hp_report[n] = float(np.asarray(getattr(hp, n))[0])
    return Trajectory(
        metrics=mets,
        final_probs=np.asarray(out["final_probs"]).reshape(shape + (k,)),
        snapshots=np.asarray(out["snapshots"]).reshape(shape + (len(cfg.snapshot_steps), k)),
        snapshot_steps=cfg.snapshot_steps,
        grid={n: (np.asarray([p.name for p in problems]) if n == "problem" else v) for n, v in grid.items()},
        hyperparameters=hp_report,
        config=cfg,
        problem_names=tuple(p.name for p in problems),
        seeds=int(seeds),
        compile_seconds=compile_s,
        run_seconds=run_s,
        seed_offset=int(seed_offset),
        axes=axes,
    )


def _grid_axes(grid: dict, paired) -> tuple[tuple[str, ...], ...]:
    """The grid's axes: one per swept name, except that each ``paired`` group shares one."""
    if isinstance(paired, str):
        raise ValueError(f"paired={paired!r} is a single name; expected a sequence of names, e.g. ('problem', 'data')")
    groups = [tuple(paired)] if paired and all(isinstance(n, str) for n in paired) else [tuple(g) for g in paired]
    seen: set[str] = set()
    for g in groups:
        if len(g) < 2 or not all(isinstance(n, str) for n in g):
            raise ValueError(f"paired group {g!r} is invalid; expected two or more axis names")
        for n in g:
            if n not in grid:
                swept = ", ".join(grid) or "none"
                raise ValueError(f"paired name {n!r} is not a swept axis; swept axes here: {swept}")
            if n in seen:
                raise ValueError(f"paired name {n!r} appears in more than one group; expected each axis once")
            seen.add(n)
        lengths = {n: len(grid[n]) for n in g}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"paired axes must have equal lengths; got {lengths}")
    group_of = {n: g for g in groups for n in g}
    order = list(grid)
    axes: list[tuple[str, ...]] = []
    for n in order:
        # A group sits where its first name is, its names in grid order.
        g = tuple(sorted(group_of.get(n, (n,)), key=order.index))
        if g not in axes:
            axes.append(g)
    return tuple(axes)


def _working_bytes(cfg: RunConfig, spec) -> int:
    """A rough upper estimate of one run's temporaries (bytes), for the memory check before compiling.

    Per context and step: a sample's index, reward, log-probability and weights
    (plus their gradients), each pair's pair of them, and a few (K,) vectors;
    exact pair batches hold (256, K) blocks of the pair table; the MLP's hidden activations per
    context; the evaluation draws.
    """
    n, k, c = cfg.num_samples, cfg.num_bins, cfg.num_contexts
    per_context = 64 * n + 64 * k
    if spec.batch == "pairs":
        pairs = n * (n - 1) // 2 if cfg.pairing == "all" else n // 2
        # Exact pair batches are factored over blocks of 256 rows of the pair table.
        per_context += 64 * (256 * k if cfg.sampling in _EXACT else pairs)
    evals = cfg.num_eval_contexts * (64 * k + 8 * cfg.eval_samples)
    hidden = 64 * (c + cfg.num_eval_contexts) * (k + 256) if cfg.policy == "mlp" else 0
    return c * per_context + evals + hidden


def _reward_queries(cfg: RunConfig, spec) -> np.ndarray:
    """Reward queries used to produce the policy after t steps, t = 0..steps."""
    t = np.arange(cfg.steps + 1)
    if spec.batch == "target" or cfg.sampling in _EXACT:
        # Exact updates read the reward table once per context (K queries).
        per = cfg.num_bins * cfg.num_contexts
        return np.where(t > 0, per, 0).astype(np.float64)
    per = cfg.num_samples * cfg.num_contexts
    if cfg.sampling in _OFFLINE:
        return np.where(t > 0, per, 0).astype(np.float64)
    return (np.ceil(t / cfg.reuse) * per).astype(np.float64)
