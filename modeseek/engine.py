"""The engine: one run loop for every policy kind, many runs per compiled program.

:func:`run` takes a bandit :class:`~modeseek.problems.Problem` (tabular or MLP
policy) or a token-sequence :class:`~modeseek.sequences.SequenceProblem`
(factorised, bigram or transformer policy), resolves the hyperparameters,
builds the flat run axis (grid x seeds), compiles one program per static
configuration (:class:`RunConfig`) and returns a :class:`Trajectory`. Traced
hyperparameters (:class:`HyperParams`, the problems' arrays, the data
distribution, the sampling regime of ``arms``, and the schedule values
``reuse``, ``num_samples`` and ``minibatch`` of a bandit run) are data: sweeping
them never recompiles.

One run (Tajwar et al. 2024, arXiv 2404.14367, Algorithm 1, §3): initialise the
policy (and fit it to pi_ref where it is not there by construction); then for
each of ``steps // reuse`` iterations collect a batch per context (offline: one
fixed dataset; on-policy: a fresh batch from the current policy; exact: the
population batch) and take ``reuse`` optimiser steps on it, recording metrics
every ``eval_every`` steps. The loop is :func:`make_train`; what differs between
policy kinds (sampling, scoring, evaluation) is a :class:`Model` built by
:func:`_bandit_model` or :func:`modeseek.sequences.model.build`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike
from numpy.typing import ArrayLike as NpArrayLike

from modeseek import _blocks, _checks, losses, metrics, policies, regimes
from modeseek._blocks import resolve_devices, run_blocks, run_keys
from modeseek.batches import BestOfN, Points, Target
from modeseek.problems import Problem, safe_log

if TYPE_CHECKING:
    import pandas as pd

    from modeseek.sequences.problems import SequenceProblem

__all__ = [
    "RunConfig",
    "HyperParams",
    "Schedule",
    "Model",
    "Trajectory",
    "run",
    "make_train",
    "SAMPLINGS",
    "OPTIMIZERS",
    "STORES",
    "BANDIT_POLICIES",
    "SEQUENCE_POLICIES",
    "compile_count",
    "enable_compilation_cache",
]

#: Data regimes. "exact" is the population update on the current policy,
#: "exact_offline" the population update on the data distribution.
SAMPLINGS = ("offline", "on_policy", "exact", "exact_offline")
OPTIMIZERS = ("adam", "sgd")
#: What :func:`run` keeps: metrics at every evaluation step, or the final step's only.
STORES = ("every", "final")
BANDIT_POLICIES = ("tabular", "mlp")
SEQUENCE_POLICIES = ("factorised", "bigram", "transformer")
_OFFLINE = ("offline", "exact_offline")
_EXACT = ("exact", "exact_offline")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Static configuration: everything that changes shapes or control flow.

    A new value of any field compiles a new program; see :class:`HyperParams`
    for what may be swept without recompiling. Fields that concern one policy
    kind only keep their defaults for the other.

    Attributes:
      loss, sampling, steps: as given to :func:`run` (sampling "mixed" when
        ``arms`` combine offline and on-policy runs; the regime is then traced).
      policy: "tabular", "mlp" (bandits), "factorised", "bigram", "transformer" (sequences).
      reuse: gradient steps per collected batch (the paper's T).
      num_samples: responses per context and collection (with ``schedule``,
        the largest value of the sweep: draws are made at this size and masked).
      num_contexts / num_eval_contexts: train contexts (prompts, for sequences)
        and evaluation contexts (MLP and transformer; the others are evaluated
        on the train contexts).
      eval_every / snapshot_every: metric and snapshot periods (always at 0 and ``steps``).
      eval_samples: Monte-Carlo draws per evaluation context (bandits: > 0 adds
        "sampled_reward"; transformer: the sequences its estimates use).
      schedule: reuse, num_samples and minibatch (bandit points and best-of-N
        batches; reuse only, for sequences) are traced values of each call,
        so sweeping them compiles one program.
      first_batch: "policy", or "data" for the paper's epoch 0 drawn from the
        data distribution in on-policy bandit runs.
      num_bins, has_target, has_train_reward: bandit problem shape and arrays.
      length, vocab, reward_kind, include_prompt: sequence problem shape.
      shared, shift, ratio, sft_batch, layers, heads, embed, dropout:
        sequence options (see :func:`run`).
      block: runs per compiled call (:mod:`modeseek._blocks`); 0 (the tabular
        policy's default) fits the width to each call (:func:`fit_block`).
      batching: "vmap" (a block's runs vectorised together) or "map" (one
        after another, unbatched: the MLP's and the transformer's default,
        see :func:`default_block`).
      scale_rewards, drop_uniform_groups: GRPO's advantage scale and DAPO's
        dynamic sampling (grpo, gspo, cispo; :mod:`modeseek.losses.on_policy`).
      loss_aggregation: how GRPO-style sequence losses reduce per-token terms
        (:data:`modeseek.losses.LOSS_AGGREGATIONS`).
      baseline: REINFORCE++-baseline (subtract the group mean before whitening).
    """

    loss: str
    sampling: str
    steps: int
    policy: str = "tabular"
    reuse: int = 1
    num_samples: int = 10
    num_contexts: int = 1
    num_eval_contexts: int = 100
    eval_every: int = 1
    snapshot_every: int = 1
    eval_samples: int = 0
    schedule: bool = False
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
    block: int = 0
    num_bins: int = 0
    has_target: bool = False
    has_train_reward: bool = False
    length: int = 0
    vocab: int = 0
    reward_kind: str = ""
    include_prompt: bool = False
    shared: bool = False
    shift: str = "correct"
    ratio: str = "token"
    sft_batch: int = 10
    layers: int = 3
    heads: int = 3
    embed: int = 48
    dropout: float = 0.0
    batching: str = "vmap"
    scale_rewards: str = "group"
    drop_uniform_groups: bool = False
    loss_aggregation: str = "seq_mean_token_mean"
    baseline: bool = False

    @property
    def kind(self) -> str:
        """ "bandit" or "sequence"."""
        return "sequence" if self.policy in SEQUENCE_POLICIES else "bandit"

    @property
    def iterations(self) -> int:
        """Batch collections (1 for offline regimes; with ``schedule``, the most any schedule needs)."""
        if self.sampling in _OFFLINE:
            return 1
        return self.steps if self.schedule else self.steps // self.reuse

    @property
    def eval_steps(self) -> np.ndarray:
        """Steps at which metrics are recorded (always includes 0 and ``steps``)."""
        return _every(self.steps, self.eval_every)

    @property
    def snapshot_steps(self) -> np.ndarray:
        """Steps at which the policy's probabilities (marginals, for sequences) are stored."""
        return _every(self.steps, self.snapshot_every)

    @property
    def tokens_scored(self) -> int:
        """Per-token log-probabilities per sequence (L, or L + 1 with the authors' shift)."""
        return self.length + (self.shift == "authors")


def _every(steps: int, every: int) -> np.ndarray:
    s = np.arange(0, steps + 1, every)
    return s if s[-1] == steps else np.append(s, steps)


def _count_every(steps: int, every: int) -> int:
    """``len(_every(steps, every))`` without building the array (a refused call must not allocate it)."""
    return steps // every + 1 + (steps % every != 0)


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
      target_margin: IPO's target margin (default 1/(2 beta), per run).
      min_reward_gap: pairs whose rewards differ by less are skipped.
      bt_scale: Bradley-Terry inverse temperature for sampled labels.
      init_scale: logit noise for ``init="random"``.
      sft_learning_rate: Adam step size of the SFT to pi_ref (MLP, transformer).
      clip_eps_high: upper clip range of grpo / gspo (DAPO's clip-higher) and
        the cap 1 + clip_eps_high on CISPO's weight (default clip_eps, per run).
      nll_coef: weight of the chosen response's NLL in slic and cpo.
      simpo_gamma: SimPO's target reward margin gamma.
      desirable_weight, undesirable_weight: KTO's lambda_D and lambda_U.
      dpop_lambda: DPO-Positive's penalty weight lambda.
      label_smoothing: robust_dpo's label-flip probability eps, in [0, 0.5).
      mixture_alpha: Nash-MD's opponent pi^(1-alpha) pi_ref^alpha, alpha in [0, 1].
      xpo_alpha: weight of XPO's exploration term alpha * log pi(y_ref), >= 0.
      eta: step size of the exact mirror-descent update (mirror_descent, spo_exact).
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
    clip_eps_high: Any = None
    nll_coef: Any = 1.0
    simpo_gamma: Any = 0.5
    desirable_weight: Any = 1.0
    undesirable_weight: Any = 1.0
    dpop_lambda: Any = 50.0
    label_smoothing: Any = 0.1
    mixture_alpha: Any = 0.5
    xpo_alpha: Any = 0.01
    eta: Any = 1.0


class Schedule(NamedTuple):
    """The traced sampling schedule of one call (``RunConfig.schedule``): int32 scalars.

    Every ``reuse`` steps, collect ``num_samples`` responses per context (drawn
    at the static ``RunConfig.num_samples`` and masked), and train each step on
    a window of ``minibatch`` of them that slides by ``minibatch`` per step,
    wrapping around. Sample reuse (§5.2 of the paper): minibatch = num_samples,
    each batch used ``reuse`` times. On-policyness (Algorithm 1): num_samples =
    k M, minibatch = M, reuse = k, one pass over each batch.
    """

    reuse: Any
    num_samples: Any
    minibatch: Any


class Model(NamedTuple):
    """The policy-specific parts of one run, built inside the traced run function.

    Attributes:
      params: initial parameters.
      batch0: the batch before the first collection (the fixed dataset when
        the batch never changes; zeros of the right shape otherwise).
      stats0: zeros shaped like the statistics ``collect`` returns with a batch.
      collect: ``(params, t, i, slot) -> (batch, stats)``: the i-th batch,
        collected at step t, and statistics of evaluation draws made with it
        (evaluation slot ``slot``).
      loss: ``(params, batch, t) -> (loss, aux)``.
      evaluate: ``(params, t, stats, loss, aux) -> (metrics, snapshot)``.
      snapshot_shape: shape of one snapshot.
      collects_offline: offline runs collect their dataset at step 0 (from
        the initial policy) instead of having it in ``batch0``.
      draws_for_eval: evaluation needs ``collect``'s draws at evaluation steps.
      fixed: the batch never changes (analytic targets, offline bandit data).
    """

    params: Any
    batch0: Any
    stats0: Any
    collect: Callable
    loss: Callable
    evaluate: Callable
    snapshot_shape: tuple[int, ...]
    collects_offline: bool = False
    draws_for_eval: bool = False
    fixed: bool = False


_compile_counter = [0]
#: Metrics every run stores at each evaluation step, at least (a sequence run's
#: expected_reward, kl_pi_ref, entropy, mass_high_reward and train_loss; a bandit run stores more).
_FEWEST_METRICS = 5


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


def default_learning_rate(policy: str, optimizer: str = "adam") -> float:
    """Defaults that make every loss progress on the paper problems in a few hundred steps:
    Adam 1e-3 for the networks (MLP, transformer), 0.05 for logit tables (SGD: x100 / x20)."""
    if policy in ("mlp", "transformer"):
        return 1e-3 if optimizer == "adam" else 1e-1
    return 0.05 if optimizer == "adam" else 1.0


def default_block(policy: str, num_bins: int = 100) -> int:
    """Runs per compiled call (see :mod:`modeseek._blocks`); 0 for the tabular policy: a width fitted to each call.

    A tabular bandit run has the same bits in every vmapped block of 2 runs or
    more (the compiler options of :mod:`modeseek._xla` keep XLA's reductions
    out of the library fusions whose rounding depended on the width; checked at
    2 to 1024 runs and K = 100, 1000 and 8192 bins, and by
    ``tests/test_reproducibility.py``), so its block is :func:`fit_block`'s
    width for the call rather than a fixed one: wide blocks for wide calls
    (less fixed cost per block-step), narrow ones for small calls (less
    padding); ``num_bins`` bounds the width there. Only a block of exactly 1
    run differs (XLA drops the unit batch axis and compiles another program),
    so a tabular run never gets one by default.

    The other kinds keep a fixed width, on which their bits depend. The MLP's
    and the transformer's matmuls gain nothing from batching runs (32 MLP runs
    in blocks of 1 ran 0.94x the time of one 32-wide program): 1, and by
    default (``batching="map"``) such a run is one unbatched program: the
    paper's MLP protocol takes 25-35% less time per step than as a vmap of
    width 1 (``batching="vmap"``, the MLP's default before), whose layouts put
    transposes into Adam's updates (``experiments/benchmarks/paper_mlp.py``).
    The two sum the weight gradients in another order, so their last bits
    differ (Adam amplifies them where a gradient is near zero). A Markov sequence policy's L x V tables
    are vectors as wide as a K = 900 bandit's: 8 (a factorised sequence run
    has other bits in blocks of 2 than of 8 or 64).
    """
    if policy in ("mlp", "transformer"):
        return 1
    if policy in SEQUENCE_POLICIES:
        return 8
    return 0


#: Most bins x runs in one fitted block (K = 100: blocks of up to 128 runs). Measured
#: in one process, 1024 runs x 1000 steps on two devices, against the baseline of
#: experiments/benchmarks/throughput.py: blocks of 128 ran exact reverse KL,
#: REINFORCE B = 64 and DPO 64 pairs at x0.77, x0.87, x0.94 of the baseline's speed,
#: blocks of 256 at x0.77, x0.88, x0.90, one 512-run block per device at x0.72,
#: x0.87, x0.86, fixed blocks of 32 (before) at x0.68, x0.74, x0.88.
FIT_BLOCK_ELEMENTS = 2**14


def fit_block(runs: int, parts: int, num_bins: int) -> int:
    """The block width of a call of ``runs`` tabular runs spread over ``parts`` devices or cores.

    The smallest power of two (at least 2) that covers each part's share of the
    runs, so that a small call pads less than half a block and every call
    compiles one of a few programs; at most ``FIT_BLOCK_ELEMENTS / num_bins``
    runs (128 at K = 100: wider blocks were no faster, see the constant), so
    that wide calls take several blocks per part and wide problems narrow ones.
    A run's bits do not depend on the width (:func:`default_block`).
    """
    share = -(-runs // max(1, parts))
    width = 1 << max(1, (share - 1).bit_length())
    cap = 1 << max(1, (FIT_BLOCK_ELEMENTS // max(1, num_bins)).bit_length() - 1)
    return min(width, cap)


# ----------------------------------------------------------------------------- the one run loop


def make_train(cfg: RunConfig) -> Callable:
    """The function that computes one run: ``train(key, hp, arrays, schedule=None) -> outputs``.

    Pure and unbatched, so it may be jitted, vmapped or differentiated by the
    caller (:func:`run` vmaps it over blocks of runs). ``key`` is a (2,) uint32
    key, ``hp`` a :class:`HyperParams` of scalars, ``schedule`` a
    :class:`Schedule` when ``cfg.schedule``, and ``arrays`` a dict of the
    problem's arrays: bandits "ref_probs", "reward", "train_reward",
    "data_probs", "target_probs" (each (K,)) and "offline" (a bool: the arm's
    regime when ``cfg.sampling == "mixed"``); sequences "ref_probs" (V,),
    "reward" (a SequenceReward), "offline" and "init_params" (from
    :func:`modeseek.sequences.model.init_params`). Returns ``{"metrics": name -> (E,), "snapshots":
    (S,) + snapshot shape, "final": snapshot shape}`` with E = len(cfg.eval_steps).
    """
    return functools.partial(_train, cfg)


def _train(cfg: RunConfig, key: jax.Array, hp: HyperParams, arrays: dict[str, Any], sched: Schedule | None = None) -> dict[str, Any]:
    # The loop is written once: every policy kind supplies a Model and this scan
    # schedules collections, steps, evaluations and snapshots for all of them.
    _compile_counter[0] += 1  # Python side effect: runs once per trace.
    if cfg.kind == "sequence":
        from modeseek.sequences import model as sequence_model

        m = Model(**sequence_model.build(cfg, key, hp, arrays, sched))
    else:
        m = _bandit_model(cfg, key, hp, arrays, sched)
    reuse = sched.reuse if sched is not None else cfg.reuse
    opt = optax.adam(hp.learning_rate) if cfg.optimizer == "adam" else optax.sgd(hp.learning_rate)
    params = m.params
    n_eval, n_snap = len(cfg.eval_steps), len(cfg.snapshot_steps)
    every, snap_every = cfg.eval_every, cfg.snapshot_every
    mixed = cfg.sampling == "mixed"
    offline = arrays["offline"]
    all_offline = cfg.sampling in _OFFLINE
    dense = every == 1

    def snapshot(snaps: jax.Array, t: jax.Array, snap: jax.Array) -> jax.Array:
        slot = jnp.where(t == cfg.steps, n_snap - 1, jnp.minimum(t // snap_every, n_snap - 1))
        if snap_every == 1:
            return snaps.at[slot].set(snap)
        # A branch on t (unbatched): the other steps skip the write (measured 6% of
        # an exact reverse KL step with snapshots at 0 and `steps` only; same values).
        keep = (t % snap_every == 0) | (t == cfg.steps)
        return jax.lax.cond(keep, lambda sn: sn.at[slot].set(snap), lambda sn: sn, snaps)

    def body(carry: tuple[Any, ...], t: jax.Array) -> tuple[tuple[Any, ...], Any]:
        # One loop body for every evaluation point t = 0..steps, the last one
        # included (its update is discarded): code outside the loop is compiled
        # per batch shape and may round differently, which would break
        # bit-identity across shardings. The branch predicates depend on t
        # alone (and on the schedule, which is not batched over runs), so under
        # vmap the conds stay branches instead of both-sides selects.
        p, s, batch, buf, snaps = carry
        last = t == cfg.steps
        eval_due = (t % every == 0) | last
        slot = jnp.where(last, n_eval - 1, t // every)
        stats = m.stats0
        if not m.fixed:
            on_schedule = (t == 0) if all_offline else ((t % reuse == 0) & ~last)
            need = on_schedule | (eval_due & m.draws_for_eval)

            def draw(b: Any) -> tuple[Any, Any]:
                nb, st = m.collect(p, t, t // reuse, slot)
                if mixed or m.draws_for_eval:
                    # A draw made for the evaluation alone keeps the batch, and so
                    # do offline runs (a traced flag) after their one collection.
                    due = jnp.where(offline, (t == 0) & m.collects_offline, on_schedule) if mixed else on_schedule
                    nb = jax.tree.map(lambda new, old: jnp.where(due, new, old), nb, b)
                return nb, st

            if cfg.kind == "bandit" and cfg.reuse == 1 and not (cfg.schedule or mixed or all_offline or m.draws_for_eval):
                # A fresh batch at every step but the last: drawing at every step and
                # keeping the old batch at the last one is cheaper than a branch per
                # step (measured 4-9% of an on-policy step at 32 runs per block) and
                # gives the same values (the last draw, past the keys, is discarded).
                nb, _ = m.collect(p, t, t, slot)
                batch = jax.tree.map(lambda new, old: jnp.where(need, new, old), nb, batch)
            else:
                batch, stats = jax.lax.cond(need, draw, lambda b: (b, m.stats0), batch)
        (loss, aux), g = jax.value_and_grad(m.loss, has_aux=True)(p, batch, t)
        if dense:
            out, snap = m.evaluate(p, t, stats, loss, aux)
            snaps = snapshot(snaps, t, snap)
        else:

            def write(buf: Any, snaps: jax.Array) -> tuple[Any, jax.Array]:
                out, snap = m.evaluate(p, t, stats, loss, aux)
                return jax.tree.map(lambda b_, v: b_.at[slot].set(v), buf, out), snapshot(snaps, t, snap)

            buf, snaps = jax.lax.cond(eval_due, write, lambda b_, s_: (b_, s_), buf, snaps)
            out = None
        u, s_new = opt.update(g, s, p)
        if cfg.batching == "map" and cfg.kind != "sequence":
            # The update made at t == steps is never read (the scan's final carry
            # is dropped), so an unbatched bandit program (the MLP's) applies it
            # unconditionally and saves the cond's copies of the parameters and
            # optimiser state (14% of the MLP's CPU time per step). The barrier
            # keeps the add a pass of its own, as in the cond's branch. Results
            # still differ from the cond's in the last bits (XLA fuses the rest
            # of the update differently; paper's MLP protocol, 300 steps: 2e-7 of
            # expected reward), which the unbatched program's gradients already
            # do; the vmapped programs and the transformer keep the cond and
            # their bits.
            p, s = optax.apply_updates(p, jax.lax.optimization_barrier(u)), s_new
        else:
            p, s = jax.lax.cond(t < cfg.steps, lambda: (optax.apply_updates(p, u), s_new), lambda: (p, s))
        return (p, s, batch, buf, snaps), out

    buf0 = None
    if not dense:
        probe = jax.eval_shape(lambda: m.evaluate(params, 0, m.stats0, *m.loss(params, m.batch0, 0))[0])
        buf0 = jax.tree.map(lambda a: jnp.zeros((n_eval,) + a.shape, a.dtype), probe)
    snaps0 = jnp.zeros((n_snap,) + tuple(m.snapshot_shape))
    carry0 = (params, opt.init(params), m.batch0, buf0, snaps0)
    (_, _, _, buf, snaps), hist = jax.lax.scan(body, carry0, jnp.arange(cfg.steps + 1))
    return {"metrics": hist if dense else buf, "snapshots": snaps, "final": snaps[n_snap - 1]}


# ----------------------------------------------------------------------------- bandit policies


def _collector(spec: losses.LossSpec, cfg: RunConfig, exact: bool, hp: HyperParams, reward: jax.Array, ref_logp: jax.Array | None = None) -> Callable[[jax.Array, jax.Array], Any]:
    """A function (key, logq (K,)) -> batch for one context (``ref_logp``: pi_ref, for duels' opponents)."""
    n = cfg.num_samples
    if cfg.schedule:
        # Raw draws at the largest size; the loss masks them to the schedule's window.
        def draws(key: jax.Array, lq: jax.Array) -> tuple[jax.Array, jax.Array]:
            y = regimes.sample_bins(key, lq, n)
            return y, jax.nn.log_softmax(lq)[y]

        return draws
    if spec.batch == "points":
        points = (lambda key, lq: regimes.exact_points(lq, reward)) if exact else (lambda key, lq: regimes.sample_points(key, lq, reward, n))
        if spec.greedy_reward:
            # ReMax's baseline: the reward of the sampling policy's greedy (argmax) response.
            return lambda key, lq: points(key, lq)._replace(greedy_reward=reward[jnp.argmax(lq)])
        return points
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
    if spec.batch == "duels":
        # Duel losses always receive pi_ref's log-probabilities from _bandit_model.
        return _duel_collector(spec, cfg, exact, hp, reward, cast("jax.Array", ref_logp))
    raise AssertionError(spec.batch)


def _duel_collector(spec: losses.LossSpec, cfg: RunConfig, exact: bool, hp: HyperParams, reward: jax.Array, ref_logp: jax.Array) -> Callable[[jax.Array, jax.Array], Any]:
    """Duels of the sampling distribution against the loss's opponent (losses.self_play.OPPONENTS)."""
    kw = dict(labels=cfg.labels, min_reward_gap=hp.min_reward_gap, bt_scale=hp.bt_scale)
    if losses.self_play.OPPONENTS[spec.name] == "mixture":
        opponent = lambda lq: regimes.geometric_mixture(lq, ref_logp, hp.mixture_alpha)  # noqa: E731
    else:
        opponent = lambda lq: ref_logp  # noqa: E731
    if exact:
        return lambda key, lq: regimes.exact_duels(lq, opponent(lq), reward, **kw)
    return lambda key, lq: regimes.sample_duels(key, lq, opponent(lq), reward, cfg.num_samples, **kw)


def _window(spec: losses.LossSpec, reward: jax.Array, sched: Schedule, t: ArrayLike, num_slots: int) -> Callable[[jax.Array, jax.Array], BestOfN | Points]:
    """The loss's batch at step t from one context's raw draws (ys, logq(ys)), under a traced schedule."""
    slots = jnp.arange(num_slots)
    offset = ((t % sched.reuse) * sched.minibatch) % sched.num_samples
    m = sched.minibatch.astype(jnp.float32)

    def one(ys: jax.Array, lqy: jax.Array) -> BestOfN | Points:
        valid = (slots >= offset) & (slots < offset + sched.minibatch) & (slots < sched.num_samples)
        r = reward[ys]
        if spec.batch == "best_of_n":
            jb = jnp.argmax(jnp.where(valid, r, -jnp.inf))
            jw = jnp.argmin(jnp.where(valid, r, jnp.inf))
            one_ = jnp.ones((1,))
            return BestOfN(ys[jb][None], one_, ys[jw][None], one_, ys, valid.astype(jnp.float32).at[jb].set(0.0), m)
        return Points(ys, r, valid.astype(jnp.float32) / m, lqy, m)

    return one


def _bandit_model(cfg: RunConfig, key: jax.Array, hp: HyperParams, a: Mapping[str, Any], sched: Schedule | None) -> Model:
    """The bandit parts of one run (tabular logits or the MLP; SFT to pi_ref first for the MLP).

    ``a["reward"]`` is the gold reward behind every metric; ``a["train_reward"]``
    is what the learner sees (its batches' rewards, the default target
    pi_star); the two differ only when a proxy reward model is given.
    """
    spec = losses.get(cfg.loss)
    apply = spec.bind("bandit", cfg)
    hook = spec.batch_hook("bandit", cfg)
    ref_probs, reward, train_reward = a["ref_probs"], a["reward"], a["train_reward"]
    k_init, k_eval, k_data, k_loop = jax.random.split(key, 4)
    ref_logp = safe_log(ref_probs)
    policy = policies.make(cfg.policy, ref_probs, init=cfg.init, init_scale=hp.init_scale)
    params, contexts = policy.init(k_init, num_bins=cfg.num_bins, num_contexts=cfg.num_contexts)
    if policy.tabular:
        eval_contexts = contexts
    else:
        params = policies.sft_to_reference(policy, params, contexts, ref_logp, steps=cfg.sft_steps, learning_rate=hp.sft_learning_rate)
        _, eval_contexts = policy.init(k_eval, num_bins=cfg.num_bins, num_contexts=cfg.num_eval_contexts)

    c = cfg.num_contexts
    exact = cfg.sampling in _EXACT
    data_logq = jnp.broadcast_to(safe_log(a["data_probs"]), (c, cfg.num_bins))
    fixed = spec.batch == "target" or cfg.sampling in _OFFLINE
    if spec.batch == "target":
        target = a["target_probs"] if cfg.has_target else jax.nn.softmax(ref_logp + train_reward / hp.beta)
        batch0 = Target(jnp.broadcast_to(target, (c, cfg.num_bins)))
    one: Callable[[jax.Array, jax.Array], Any] | None = None if spec.batch == "target" else _collector(spec, cfg, exact, hp, train_reward, ref_logp)

    def batch_for(k: jax.Array, logq: jax.Array) -> Any:
        # Only called for sampled batches, where `one` is set.
        return jax.vmap(cast("Callable[[jax.Array, jax.Array], Any]", one))(jax.random.split(k, c), logq)

    if spec.batch != "target" and (fixed or cfg.sampling == "mixed"):
        batch0 = batch_for(k_data, data_logq)
    batch_keys = jax.random.split(k_loop, cfg.iterations)

    def on_policy(p: Any, i: ArrayLike) -> Any:
        logits = jax.lax.stop_gradient(policy.logits(p, contexts))
        return batch_for(batch_keys[i], jax.nn.log_softmax(logits, axis=-1))

    def collect(p: Any, t: ArrayLike, i: ArrayLike, slot: ArrayLike) -> tuple[Any, dict[str, jax.Array]]:
        if cfg.first_batch == "data":
            # The paper's epoch 0 samples from pi_data, later epochs from the policy (docs/paper.md §A.6).
            return jax.lax.cond(i == 0, lambda: batch_for(batch_keys[i], data_logq), lambda: on_policy(p, i)), {}
        return on_policy(p, i), {}

    def loss_fn(p: Any, batch: Any, t: ArrayLike) -> tuple[jax.Array, Any]:
        logp = jax.nn.log_softmax(policy.logits(p, contexts), axis=-1)
        if cfg.schedule:
            batch = jax.vmap(_window(spec, train_reward, cast("Schedule", sched), t, cfg.num_samples))(*batch)
        if hook is not None:
            batch = hook(batch, ref_logp, hp, cfg.num_samples)
        vals, aux = jax.vmap(lambda lp, b: apply(lp, b, ref_logp, hp))(logp, batch)
        return jnp.mean(vals), jax.tree.map(jnp.mean, aux)

    consts = metrics.metric_constants(ref_probs, reward, hp.beta)
    k_evals = jax.random.fold_in(k_eval, 1)

    def evaluate(p: Any, t: ArrayLike, stats: Any, loss: jax.Array, aux: Mapping[str, jax.Array]) -> tuple[dict[str, jax.Array], jax.Array]:
        logp = jax.nn.log_softmax(policy.logits(p, eval_contexts), axis=-1)
        m = jax.vmap(lambda lp: metrics.metrics_from_constants(lp, consts))(logp)
        m = {name: jnp.mean(v) for name, v in m.items()}
        if cfg.has_train_reward:
            m["expected_train_reward"] = jnp.mean(jnp.exp(logp) @ train_reward)
        if cfg.eval_samples:
            # Monte-Carlo reward as the paper reports it: eval_samples draws per eval context.
            kt = jax.random.fold_in(k_evals, t)
            ys = jax.vmap(lambda kk, lp: regimes.sample_bins(kk, lp, cfg.eval_samples))(jax.random.split(kt, logp.shape[0]), logp)
            m["sampled_reward"] = jnp.mean(reward[ys])
        return {**m, **aux, "train_loss": loss}, jnp.mean(jnp.exp(logp), axis=0)

    if not fixed and cfg.sampling != "mixed":
        batch0 = jax.tree.map(jnp.zeros_like, jax.eval_shape(lambda: collect(params, 0, 0, 0)[0]))
    return Model(
        params=params,
        batch0=batch0,
        stats0={},
        collect=collect,
        loss=loss_fn,
        evaluate=evaluate,
        snapshot_shape=(cfg.num_bins,),
        fixed=fixed,
    )


# ----------------------------------------------------------------------------- results


@dataclasses.dataclass
class Trajectory:
    """The stacked outputs of :func:`run`, for every policy kind.

    Attributes:
      metrics: name -> grid_shape + (seeds, len(eval_steps)); index 0 is the
        initial policy. Keys: bandits: metrics.EXACT_METRICS (plus
        "expected_train_reward" with a proxy reward, "sampled_reward" with
        eval_samples); sequences: expected_reward, kl_pi_ref, entropy,
        mass_high_reward (token rewards), sampled_reward (transformer); both:
        "train_loss" (the loss on the current batch), the loss's statistics
        (metrics.PAIR_METRICS for pair losses) and "reward_queries".
      eval_steps: (E,) steps of the metrics' last axis.
      final_probs: grid_shape + (seeds,) + snapshot shape: the final policy
        (bandits: (K,), mean over evaluation contexts; sequences: (L, V)
        per-position marginals, mean over evaluation prompts).
      snapshots: grid_shape + (seeds, len(snapshot_steps)) + snapshot shape.
      snapshot_steps: (S,) steps of the snapshots.
      grid: ordered dict of swept name -> (G_i,) values.
      axes: the grid's axes, each a tuple of the names that vary along it (one
        name per axis unless ``run(paired=...)`` zipped several into one).
      hyperparameters: every resolved hyperparameter (scalars for unswept ones).
      config: the static RunConfig.
      problem_names: names of the problems (one per grid value when swept).
      seeds: number of seeds.
      seed_offset: index of the first seed (seed column = seed_offset + i).
      compile_seconds, run_seconds: wall times (compile 0 when the program was cached).
      arm_values: with arms, name -> (A,) per-arm values ("sampling" and the
        traced hyperparameters the arms set).
    """

    metrics: dict[str, np.ndarray]
    eval_steps: np.ndarray
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
    arm_values: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.axes is None:
            self.axes = tuple((name,) for name in self.grid)

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Lengths of the grid's axes, in the order they were given (paired names share one axis)."""
        return tuple(len(self.grid[names[0]]) for names in self.axes or ())

    @property
    def steps(self) -> np.ndarray:
        """(E,) step index of the metrics' last axis (``eval_steps``)."""
        return self.eval_steps

    def _columns(self, t: int) -> tuple[dict[str, Any], int]:
        gshape = self.grid_shape
        runs = int(np.prod(gshape, dtype=int)) * self.seeds
        idx = np.indices(gshape + (self.seeds,)).reshape(len(gshape) + 1, runs)
        axis_of = {name: axis for axis, names in enumerate(self.axes or ()) for name in names}
        cols: dict[str, Any] = {}
        for name, values in self.grid.items():
            cols[name] = np.repeat(np.asarray(values)[idx[axis_of[name]]], t)
            if name == "arm":
                for n, per_arm in self.arm_values.items():
                    cols[n] = np.repeat(np.asarray(per_arm)[idx[axis_of[name]]], t)
        cols["seed"] = np.repeat(idx[-1] + self.seed_offset, t)
        return cols, runs

    def to_dataframe(self) -> pd.DataFrame:
        """A tidy pandas DataFrame: one row per (grid point, seed, evaluation step)."""
        import pandas as pd

        t = len(self.eval_steps)
        cols, runs = self._columns(t)
        cols["step"] = np.tile(self.eval_steps, runs)
        for name, value in self.hyperparameters.items():
            if name not in cols:
                cols[name] = value
        names = ["loss", "sampling", "policy", "optimizer", "reuse", "num_samples", "num_contexts", "negative", "advantage", "kl_estimator"]
        if self.config.kind == "sequence":
            names += ["ratio", "shift"]
        for name in names:
            if name not in cols:
                v = getattr(self.config, name)
                cols[name] = "none" if v is None else v
        if "problem" not in self.grid:
            cols["problem"] = self.problem_names[0]
        for name, arr in self.metrics.items():
            cols[name] = np.asarray(arr).reshape(runs * t)
        return pd.DataFrame(cols)

    def snapshots_dataframe(self, *, mean_over_seeds: bool = True) -> pd.DataFrame:
        """The policy at the snapshot steps, one row per (grid point, [seed,] step, bin): bandits
        have a "bin" column, sequences "position" (1..L) and "token" (their per-position marginals)."""
        import pandas as pd

        snaps = np.asarray(self.snapshots)
        lead = len(self.grid_shape) + 1
        if mean_over_seeds:
            snaps = snaps.mean(axis=lead - 1)
            lead -= 1
        idx = np.indices(snaps.shape).reshape(snaps.ndim, -1)
        axis_of = {name: axis for axis, names in enumerate(self.axes or ()) for name in names}
        cols: dict[str, Any] = {name: np.asarray(values)[idx[axis_of[name]]] for name, values in self.grid.items()}
        if not mean_over_seeds:
            cols["seed"] = idx[lead - 1] + self.seed_offset
        cols["step"] = np.asarray(self.snapshot_steps)[idx[lead]]
        if self.config.kind == "sequence":
            cols["position"], cols["token"] = idx[lead + 1] + 1, idx[lead + 2]
        else:
            cols["bin"] = idx[lead + 1]
        cols["prob"] = snaps.reshape(-1)
        return pd.DataFrame(cols)


# ----------------------------------------------------------------------------- run()

_DERIVED = {"loss", "sampling", "steps", "num_bins", "has_target", "has_train_reward", "length", "vocab", "reward_kind", "include_prompt", "schedule", "eval_every", "snapshot_every"}
_STATIC_FIELDS = {f.name for f in dataclasses.fields(RunConfig)} - _DERIVED
_SEQUENCE_ONLY = {"shared", "shift", "ratio", "sft_batch", "layers", "heads", "embed", "dropout", "loss_aggregation"}
_BANDIT_ONLY = {"first_batch", "minibatch", "max_samples"}
_SCHEDULE = ("reuse", "num_samples", "minibatch")
_TRACED_FIELDS = [f.name for f in dataclasses.fields(HyperParams)]
_POSITIVE = {"learning_rate", "beta", "clip_eps", "target_margin", "bt_scale", "sft_learning_rate", "clip_eps_high", "eta"}
_NONNEGATIVE = {"negative_coef", "entropy_coef", "min_reward_gap", "init_scale", "nll_coef", "simpo_gamma", "desirable_weight", "undesirable_weight", "dpop_lambda", "label_smoothing", "xpo_alpha"}
_UNIT = {"mixture_alpha"}
_CHOICES: dict[str, Sequence[str | bool | None]] = {
    "init": ("reference", "zeros", "random"),
    "optimizer": OPTIMIZERS,
    "negative": (None,) + losses.NEGATIVE_TERMS,
    "advantage": losses.ADVANTAGES,
    "kl_estimator": (None,) + losses.KL_ESTIMATORS,
    "kl_placement": losses.KL_PLACEMENTS,
    "labels": regimes.PAIR_LABELS,
    "pairing": regimes.PAIRINGS,
    "first_batch": ("policy", "data"),
    "ratio": ("token", "sequence"),
    "shift": ("correct", "authors"),
    "batching": ("vmap", "map"),
    "scale_rewards": losses.SCALE_REWARDS,
    "drop_uniform_groups": (False, True),
    "loss_aggregation": losses.LOSS_AGGREGATIONS,
    "baseline": (False, True),
}
_INTEGERS = {
    "reuse": 1,
    "num_samples": 1,
    "num_contexts": 1,
    "num_eval_contexts": 1,
    "eval_samples": 0,
    "sft_steps": 0,
    "block": 1,
    "sft_batch": 1,
    "layers": 1,
    "heads": 1,
    "embed": 1,
    "minibatch": 1,
}


def _as_sweep(name: str, value: NpArrayLike) -> tuple[bool, np.ndarray]:
    """Return (is_swept, numpy value)."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim > 1:
        raise ValueError(f"{name} has shape {arr.shape}; expected a scalar or a 1-D array of values to sweep")
    if arr.ndim == 1 and arr.size == 0:
        raise ValueError(f"{name} is an empty array; expected at least one value to sweep")
    return arr.ndim == 1, arr


def _check_traced(name: str, arr: NpArrayLike) -> None:
    if name in _POSITIVE:
        _checks.positive(name, arr)
    elif name in _NONNEGATIVE:
        _checks.positive(name, arr, allow_zero=True)
    if name == "label_smoothing":
        for v in np.ravel(arr):
            # eps = 0.5 makes both labels equally likely: no signal.
            _checks.interval(name, float(v), 0.0, 0.5, high_open=True, what="a label-flip probability")
    if name in _UNIT:
        a = np.asarray(arr, dtype=np.float64)
        bad = ~np.isfinite(a) | (a < 0) | (a > 1)
        if np.any(bad):
            raise ValueError(f"{name}={float(a[bad].ravel()[0]) if a.ndim else float(a)!r} is invalid; expected a value in [0, 1]")


def _check_arms(arms: Sequence[Mapping[str, Any]] | None, sampling: str) -> tuple[list[Mapping[str, Any]] | None, list[str], list[str]]:
    """(arms or None, labels, per-arm sampling); without arms, one implicit arm."""
    if arms is None:
        return None, [sampling], [sampling]
    arms = list(arms)
    if not arms:
        raise ValueError("arms is empty; expected at least one dict of per-arm settings")
    labels, samplings = [], []
    for i, a in enumerate(arms):
        if not isinstance(a, Mapping):
            raise ValueError(f"arms[{i}]={a!r} is not a dict; expected a dict of per-arm settings")
        bad = sorted(set(a) - set(_TRACED_FIELDS) - {"sampling", "label"})
        if bad:
            raise ValueError(f"arms[{i}] sets {bad}; an arm may set 'sampling', 'label' and traced hyperparameters ({', '.join(_TRACED_FIELDS)})")
        samp = a.get("sampling", sampling)
        _checks.choice(f"arms[{i}]['sampling']", samp, ("offline", "on_policy"))
        for n, v in a.items():
            if n in _TRACED_FIELDS:
                if np.ndim(v):
                    raise ValueError(f"arms[{i}][{n!r}] has shape {np.shape(v)}; expected a scalar")
                _check_traced(n, v)
        samplings.append(samp)
        labels.append(str(a.get("label", f"{samp} " + " ".join(f"{n}={a[n]:g}" for n in a if n in _TRACED_FIELDS)).strip()))
    if len(set(labels)) != len(labels):
        raise ValueError(f"arm labels {labels} are not unique; give each arm a distinct 'label'")
    return arms, labels, samplings


def run(
    problem: Problem | SequenceProblem | Sequence[Problem | SequenceProblem],
    *,
    loss: str,
    sampling: str = "on_policy",
    steps: int = 500,
    seeds: int = 1,
    key: int | jax.Array = 0,
    data: NpArrayLike | None = None,
    target: NpArrayLike | None = None,
    train_reward: NpArrayLike | None = None,
    arms: Sequence[Mapping[str, Any]] | None = None,
    eval_every: int = 1,
    snapshot_every: int | None = None,
    store: str = "every",
    devices: Sequence[Any] | None = None,
    seed_offset: int = 0,
    paired: Sequence[str] | Sequence[Sequence[str]] = (),
    **hyperparameters: Any,
) -> Trajectory:
    """Run ``seeds`` independent fine-tuning runs (per grid point) and return their trajectories.

    Args:
      problem: a Problem (a 1-token bandit) or a SequenceProblem (token
        sequences), or a sequence of them of one kind and equal shape to sweep over.
      loss: a name from ``modeseek.losses.names()``.
      sampling: "offline", "on_policy", "exact" (population update on the current
        policy) or "exact_offline" (population update on the data distribution);
        sequences: "offline" (one dataset from pi_ref) or "on_policy".
      steps: gradient steps per run.
      seeds: independent runs per grid point; seed i uses ``fold_in(key, seed_offset + i)``.
      key: an int in [0, 2**64), a ``jax.random.key`` (threefry) or a legacy
        ``PRNGKey`` array; ``key(n)`` and ``PRNGKey(n)`` give the same bits, and
        distinct ints never share runs (see :func:`modeseek._checks.prng_key`).
      data: bandits: (K,) offline data distribution (default pi_ref), or (G, K) to sweep.
      target: bandits: (K,) target for forward_kl / reverse_kl (default pi_star(beta)).
      train_reward: bandits: (K,) reward the learner sees instead of the
        problem's (a proxy or learned reward model), or (G, K) to sweep; metrics
        stay on the problem's (gold) reward and add "expected_train_reward".
      arms: optional list of dicts, each setting "sampling" ("offline" or
        "on_policy") and/or traced hyperparameters (and an optional "label"): a
        zipped grid axis "arm" (after "problem"), e.g. the paper's offline
        best-of-N at one learning rate and on-policy best-of-N at another. All
        arms share one compiled program (the regime is a traced flag); values
        set by an arm override the keyword values.
      eval_every: record metrics every this many steps (and at ``steps``).
      snapshot_every: store the policy every this many steps, a multiple of
        ``eval_every`` (default about steps / 10).
      store: "every" keeps the metrics at every evaluation step and the
        snapshots; "final" keeps only the last step's metrics (a last axis of
        length 1, ``eval_steps == [steps]``) and the final policy as the one
        snapshot, so that memory grows with the runs alone, not with the steps
        (for huge sweeps). The runs are the same: the final values equal the
        last step of ``store="every"`` bit for bit. Refuses ``eval_every`` and
        ``snapshot_every``, which it sets itself.
      devices: devices to spread the runs over (default: all of ``jax.devices()``).
        The flattened grid x seeds axis is cut into blocks of ``block`` runs
        (the last padded by repeating its last run), every block computed by
        the same fixed-width program, block j on device j mod n. A run's bits
        therefore depend on its key, hyperparameters and ``block`` only: not
        on the number of seeds, the grid, the chunking or the devices. A
        tabular run's bits are the same in every block of 2 runs or more, so
        its default block is fitted to the call (:func:`default_block`).
      seed_offset: index of the first seed, so that a sweep split into chunks of
        seeds (or over hosts) reproduces the unsplit sweep's runs exactly.
      paired: names of swept axes to zip instead of crossing: they must have
        equal lengths and vary together along one grid axis, placed where the
        first of them is (e.g. ``("problem", "data")`` with G problems and a
        (G, K) data array runs problem i on data i: G grid points, not G x G).
        Several groups as a sequence of sequences.
      **hyperparameters: static options (RunConfig fields: policy (default
        "tabular" for a Problem, "transformer" for a SequenceProblem),
        num_contexts, num_eval_contexts, eval_samples, init, optimizer,
        negative, advantage, kl_estimator, kl_placement, normalize, labels,
        pairing, sft_steps, block, batching ("vmap" or "map": see
        RunConfig; default "map" for the MLP and the transformer, else "vmap");
        bandits: first_batch ("policy", or "data" for the paper's epoch 0
        drawn from the data distribution); sequences: shared, shift, ratio,
        sft_batch, layers, heads, embed, dropout); the schedule values reuse, num_samples and, for bandits,
        minibatch (an array of values sweeps them in one compiled program, as
        does giving ``minibatch``: see :class:`Schedule`; sequence runs sweep
        reuse only; ``max_samples``
        sets the draws per context behind them, default the largest
        num_samples, so that calls with equal values share a program); and traced values
        (HyperParams fields). A traced value given as a 1-D array is swept;
        several swept values form an outer-product grid in the order given
        (zip some of them with ``paired``).

    Returns:
      A Trajectory.
    """
    from modeseek.sequences.problems import SequenceProblem

    spec = losses.get(loss)
    # Elements are checked to be all Problems or all SequenceProblems just below.
    problems: list[Any] = list(problem) if isinstance(problem, (list, tuple)) else [problem]
    if not problems:
        raise ValueError("problem is an empty list; expected a Problem, a SequenceProblem or a list of them")
    seq = isinstance(problems[0], SequenceProblem)
    kind_type = SequenceProblem if seq else Problem
    for p in problems:
        if not isinstance(p, kind_type):
            raise ValueError(f"problem={p!r} is not a modeseek.{'sequences.SequenceProblem' if seq else 'Problem'}; expected problems of one kind")
    _checks.choice("sampling", sampling, ("offline", "on_policy") if seq else SAMPLINGS)
    unknown = set(hyperparameters) - _STATIC_FIELDS - set(_TRACED_FIELDS) - _BANDIT_ONLY
    if unknown:
        valid = sorted(_STATIC_FIELDS | set(_TRACED_FIELDS) | _BANDIT_ONLY)
        raise ValueError(f"unknown hyperparameter(s) {sorted(unknown)}; valid names are {', '.join(valid)}")
    wrong = sorted(set(hyperparameters) & (_BANDIT_ONLY if seq else _SEQUENCE_ONLY))
    if wrong:
        raise ValueError(f"{', '.join(wrong)} {'apply' if len(wrong) > 1 else 'applies'} to {'bandit' if seq else 'sequence'} problems only; this is a {'sequence' if seq else 'bandit'} problem")
    if seq and (data is not None or target is not None or train_reward is not None):
        raise ValueError("data, target and train_reward apply to bandit problems only; sequence runs draw their offline data from pi_ref")
    arm_list, arm_labels, arm_samplings = _check_arms(arms, sampling)
    kind = "sequence" if seq else "bandit"
    if loss in losses.names(kind):
        hyperparameters = losses.apply_preset(loss, hyperparameters, kind)
        for a in arm_list or ():
            losses.apply_preset(loss, {n: a[n] for n in a if n in spec.preset}, kind)
    if arm_list is not None and sampling not in ("offline", "on_policy"):
        raise ValueError(f"arms mix offline and on-policy sampling; expected sampling='offline' or 'on_policy', got {sampling!r}")
    losses.self_play.check_kind(loss, "sequence" if seq else "bandit")
    losses.check_options(loss, hyperparameters, *(arm_list or ()), kind="sequence" if seq else "bandit")
    losses.self_play.check_sampling(loss, arm_samplings[0] if len(set(arm_samplings)) == 1 else "mixed")
    steps = _checks.integer("steps", steps)
    seeds = _checks.integer("seeds", seeds)
    seed_offset = _checks.integer("seed_offset", seed_offset, 0)
    eval_every = _checks.integer("eval_every", eval_every)
    _checks.choice("store", store, STORES)
    if store == "final":
        if eval_every != 1 or snapshot_every is not None:
            raise ValueError(f"store='final' keeps the last step only; expected no eval_every or snapshot_every (got eval_every={eval_every}, snapshot_every={snapshot_every})")
        # Evaluating at 0 and `steps` only leaves the runs' bits unchanged (the
        # evaluation never feeds back into training); step 0 is dropped below.
        eval_every = snapshot_every = steps
    if seed_offset + seeds > 2**32:
        raise ValueError(f"seed_offset + seeds = {seed_offset + seeds} is too large; expected at most 2**32 seed indices")
    base_key = _checks.prng_key(key)

    static = {n: hyperparameters[n] for n in _STATIC_FIELDS if n in hyperparameters and n not in _SCHEDULE}
    policy = static.setdefault("policy", "transformer" if seq else "tabular")
    _checks.choice("policy", policy, SEQUENCE_POLICIES if seq else BANDIT_POLICIES)
    for n, choices in _CHOICES.items():
        if n in static:
            _checks.choice(n, static[n], choices)
    for n, minimum in _INTEGERS.items():
        if n in static:
            static[n] = _checks.integer(n, static[n], minimum)
    if seq:
        p0 = problems[0]
        sig = lambda p: (p.vocab, p.length, p.reward.kind, p.reward.include_prompt)  # noqa: E731
        if any(sig(p) != sig(p0) for p in problems):
            raise ValueError(f"swept problems must share vocab, length and reward kind/include_prompt; got {[sig(p) for p in problems]}")
        shape: dict[str, Any] = dict(length=p0.length, vocab=p0.vocab, reward_kind=p0.reward.kind, include_prompt=p0.reward.include_prompt)
        from modeseek.sequences import policies as seq_policies

        seq_policies.TransformerSizes(static.get("layers", 3), static.get("heads", 3), static.get("embed", 48), float(static.get("dropout", 0.0)))
        if "dropout" in static:
            static["dropout"] = float(static["dropout"])
        if static.get("shift") == "authors" and policy != "transformer":
            raise ValueError(f"shift='authors' is the transformer's off-by-one log-probability; expected policy='transformer' (got {policy!r})")
        static.setdefault("num_contexts", 10)
        static.setdefault("eval_samples", 1)
        static.setdefault("batching", "map" if policy == "transformer" else "vmap")
        static.setdefault("block", 1 if static["batching"] == "map" else default_block(policy))
        if spec.batch == "target":
            raise ValueError(f"loss={loss!r} is an analytic bandit divergence; expected a bandit Problem")
    else:
        k = problems[0].num_bins
        if any(p.num_bins != k for p in problems):
            raise ValueError(f"swept problems must share the number of bins; got {[p.num_bins for p in problems]}")
        shape = dict(num_bins=k, has_target=target is not None, has_train_reward=train_reward is not None)
        static.setdefault("num_contexts", 1 if policy == "tabular" else 10)
        if policy == "tabular":
            static["num_eval_contexts"] = static["num_contexts"]
        static.setdefault("batching", "map" if policy == "mlp" else "vmap")
        static.setdefault("block", default_block(policy, k))
        if static.get("first_batch", "policy") == "data" and sampling == "exact":
            raise ValueError("first_batch='data' applies to sampling='on_policy' only (offline regimes always use the data); got sampling='exact'")
        if spec.batch == "target" and sampling not in _EXACT:
            raise ValueError(f"loss={loss!r} is an analytic divergence; expected sampling='exact' or 'exact_offline' (got {sampling!r})")
        if spec.batch != "target" and target is not None:
            raise ValueError(f"target is only used by forward_kl and reverse_kl, not loss={loss!r}")

    # The schedule: static values, or traced ones (swept, or a minibatch given).
    sched_values = {n: hyperparameters[n] for n in _SCHEDULE if n in hyperparameters}
    traced_schedule = "minibatch" in sched_values or any(np.ndim(v) for v in sched_values.values())
    sched_arrays: dict[str, np.ndarray] = {}
    for n, v in sched_values.items():
        arr = np.asarray(v)
        if arr.ndim > 1 or (arr.ndim == 1 and arr.size == 0):
            raise ValueError(f"{n} has shape {arr.shape}; expected an integer or a 1-D array of integers to sweep")
        for x in arr.tolist() if arr.ndim else [v]:
            _checks.integer(n, x)
        sched_arrays[n] = arr.astype(np.int64)
    if traced_schedule and seq:
        if np.ndim(sched_values.get("num_samples", 0)):
            raise ValueError("sequence runs sweep reuse only; num_samples is one integer for sequence problems")
        static["num_samples"] = int(sched_arrays.get("num_samples", 10))
        static["reuse"] = 1
    elif traced_schedule:
        if spec.batch not in ("points", "best_of_n") or sampling != "on_policy" or arm_list is not None:
            raise ValueError(
                f"a traced schedule (swept reuse/num_samples, or minibatch) needs sampling='on_policy' without arms and a points or best-of-N loss; got loss={loss!r}, sampling={sampling!r}"
            )
        if spec.greedy_reward:
            raise ValueError(f"loss={loss!r} needs the greedy response's reward, which a traced schedule's windows do not carry; expected a static reuse and num_samples without minibatch")
        if spec.batch == "best_of_n" and static.get("negative") not in (None, "worst"):
            raise ValueError(f"negative={static.get('negative')!r} reads every draw; a traced schedule supports best_of_n without a negative term or with negative='worst'")
        largest = int(np.max(sched_arrays.get("num_samples", 10)))
        static["num_samples"] = _checks.integer("max_samples", hyperparameters.get("max_samples", largest), largest)
        static["reuse"] = 1
    elif "max_samples" in hyperparameters:
        raise ValueError("max_samples applies to a traced schedule (swept reuse or num_samples, or a minibatch); expected it only with one")
    else:
        for n in ("reuse", "num_samples"):
            if n in sched_arrays:
                static[n] = int(sched_arrays[n])
    reuse = static.get("reuse", 1)
    mode = arm_samplings[0] if len(set(arm_samplings)) == 1 else "mixed"
    if mode in _OFFLINE and not seq:
        # Offline regimes collect once and never use these: normalising them lets
        # equal offline runs from different callers share one compiled program.
        static["reuse"], static["first_batch"] = 1, "policy"
    elif mode not in _OFFLINE and not traced_schedule and steps % reuse:
        raise ValueError(f"steps={steps} is not a multiple of reuse={reuse}; expected steps = iterations * reuse")
    if spec.batch == "pairs" and static.get("num_samples", 10) < 2:
        raise ValueError(f"num_samples={static.get('num_samples')} is too small for pair losses; expected >= 2")
    if snapshot_every is None:
        snapshot_every = max(eval_every, (steps // 10) // eval_every * eval_every)
    snapshot_every = _checks.integer("snapshot_every", snapshot_every)
    if snapshot_every % eval_every:
        raise ValueError(f"snapshot_every={snapshot_every} is not a multiple of eval_every={eval_every}")
    cfg = RunConfig(loss=loss, sampling=mode, steps=steps, eval_every=eval_every, snapshot_every=snapshot_every, schedule=traced_schedule, **shape, **static)

    # Traced values and the grid.
    traced = {n: hyperparameters[n] for n in _TRACED_FIELDS if n in hyperparameters}
    traced.setdefault("learning_rate", default_learning_rate(policy, cfg.optimizer))
    grid: dict[str, np.ndarray] = {}
    if len(problems) > 1:
        grid["problem"] = np.arange(len(problems))
    if arm_list is not None:
        grid["arm"] = np.asarray(arm_labels)
    values: dict[str, np.ndarray] = {}
    order = [n for n in hyperparameters if n in traced or n in sched_arrays] + [n for n in traced if n not in hyperparameters]
    for n in order:
        if n in sched_arrays:
            if traced_schedule:
                arr = sched_arrays[n]
                (grid if np.ndim(sched_values[n]) else values)[n] = arr
            continue
        swept, arr = _as_sweep(n, traced[n])
        _check_traced(n, arr)
        (grid if swept else values)[n] = arr
    arm_set = {n for a in (arm_list or []) for n in a if n in _TRACED_FIELDS}
    clash = sorted(n for n in arm_set if n in grid)
    if clash:
        raise ValueError(f"{clash} are both swept and set by arms; expected each traced value in one place")
    data_arr = _rows("data", data, cfg.num_bins, grid, _checks.probability_vector)
    train_arr = _rows("train_reward", train_reward, cfg.num_bins, grid, _checks.vector)
    target_arr = None
    if target is not None:
        target_arr = _checks.probability_vector("target", target)
        if target_arr.shape[0] != cfg.num_bins:
            raise ValueError(f"target has {target_arr.shape[0]} bins; expected {cfg.num_bins}")

    axes = _grid_axes(grid, paired)
    gshape = tuple(len(grid[names[0]]) for names in axes)
    runs = int(np.prod(gshape, dtype=int)) * seeds
    # Refuse a call whose stored outputs alone cannot fit before building any
    # array that grows with the steps (the evaluation schedule, reward queries):
    # at 10**9 steps the schedule alone is 8 GB. A lower bound (the fewest
    # metrics any run stores, the bandit policy's snapshots); the full estimate
    # follows in run_blocks once the program's outputs are known.
    snap_elems = cfg.num_bins if cfg.kind == "bandit" else 0
    stored = 4 * (_count_every(steps, cfg.eval_every) * _FEWEST_METRICS + _count_every(steps, cfg.snapshot_every) * snap_elems)
    _blocks.check_memory(runs, runs, runs * stored, 0)
    idx = np.indices(gshape + (seeds,)).reshape(len(gshape) + 1, runs)
    axis_of = {n: i for i, names in enumerate(axes) for n in names}

    def per_run(name: str, scalar: Any = None) -> np.ndarray:
        if name in grid:
            return np.asarray(grid[name])[idx[axis_of[name]]]
        return np.full(runs, scalar)

    hp_values = {n: per_run(n, values.get(n)) for n in _TRACED_FIELDS if n in grid or n in values}
    arm_of = idx[axis_of["arm"]] if arm_list is not None else np.zeros(runs, int)
    for n in arm_set:
        base_v = hp_values.get(n, np.full(runs, getattr(HyperParams, n) if getattr(HyperParams, n) is not None else np.nan))
        hp_values[n] = np.array([float(cast("list[Mapping[str, Any]]", arm_list)[a].get(n, b)) for a, b in zip(arm_of, base_v)])
    if "target_margin" not in hp_values or np.any(np.isnan(hp_values["target_margin"])):
        beta = hp_values.get("beta", np.full(runs, HyperParams.beta))
        tm = hp_values.get("target_margin", np.full(runs, np.nan))
        hp_values["target_margin"] = np.where(np.isnan(tm), 1.0 / (2.0 * beta), tm)
    if "clip_eps_high" not in hp_values or np.any(np.isnan(hp_values["clip_eps_high"])):
        eps = hp_values.get("clip_eps", np.full(runs, HyperParams.clip_eps))
        high = hp_values.get("clip_eps_high", np.full(runs, np.nan))
        hp_values["clip_eps_high"] = np.where(np.isnan(high), eps, high)
    hp = HyperParams(**{n: jnp.asarray(hp_values.get(n, np.full(runs, getattr(HyperParams, n))), jnp.float32) for n in _TRACED_FIELDS})
    offline = np.array([arm_samplings[a] in _OFFLINE for a in arm_of])

    pi, di, ti = (per_run(n, 0).astype(int) for n in ("problem", "data", "train_reward"))
    stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *[(p.ref_probs, p.reward) for p in problems])
    ref, rew = jax.tree.map(lambda x: jnp.asarray(x[pi]), stacked)
    arrays = {"ref_probs": ref, "reward": rew, "offline": jnp.asarray(offline)}
    if not seq:
        arrays["train_reward"] = rew if train_arr is None else jnp.asarray(train_arr[ti], jnp.float32)
        arrays["data_probs"] = ref if data_arr is None else jnp.asarray(data_arr[di], jnp.float32)
        arrays["target_probs"] = jnp.asarray(np.broadcast_to(target_arr if target_arr is not None else np.zeros(cfg.num_bins), (runs, cfg.num_bins)), jnp.float32)
    keys = run_keys(base_key, idx[-1] + seed_offset)
    devs = resolve_devices(devices)
    # Blocks run one per device, or one per core on a single device (modeseek._blocks).
    parts = len(devs) if len(devs) > 1 else _blocks.usable_cores()
    blocked = functools.partial(run_blocks, devices=devs, batching=cfg.batching)

    t0 = time.perf_counter()
    compile_s = 0.0
    if seq:
        from modeseek.sequences import model as sequence_model

        icfg = RunConfig(loss="sft", sampling="offline", steps=1, **{f: getattr(cfg, f) for f in sequence_model.INIT_FIELDS})
        arrays["init_params"], compile_s = blocked(functools.partial(sequence_model.init_params, icfg), (keys, hp, ref), block=cfg.block, cache_key=("init", icfg))
        working = sequence_model.working_bytes(cfg)
    else:
        working = _working_bytes(cfg, spec)
    sched_cols = {n: per_run(n, int(values[n]) if n in values else (cfg.num_samples if n != "reuse" else 1)) for n in _SCHEDULE} if traced_schedule else {}
    if traced_schedule and "minibatch" not in grid and "minibatch" not in values:
        sched_cols["minibatch"] = sched_cols["num_samples"]
    groups: list = sorted(set(zip(*(sched_cols[n] for n in _SCHEDULE)))) if traced_schedule else [None]
    for r_, n_, m_ in groups if traced_schedule else ():
        if steps % r_:
            raise ValueError(f"steps={steps} is not a multiple of reuse={r_}; expected steps = iterations * reuse")
        if m_ > n_:
            raise ValueError(f"minibatch={m_} exceeds num_samples={n_}; expected minibatch <= num_samples")
    outs = []
    for g in groups:
        # Runs of one schedule share a call: the schedule is then an unbatched
        # value of the one compiled program, so its conds stay branches.
        sel = np.flatnonzero(np.all(np.stack([sched_cols[n] for n in _SCHEDULE]) == np.asarray(g)[:, None], axis=0)) if g else np.arange(runs)
        take = (lambda x: x[sel]) if g else (lambda x: x)
        shared = (Schedule(*(jnp.int32(v) for v in g)),) if g else ()
        out, c = blocked(
            make_train(cfg),
            (take(keys), jax.tree.map(take, hp), jax.tree.map(take, arrays)),
            shared,
            block=cfg.block or fit_block(len(sel), parts, cfg.num_bins),
            width_stable=cfg.policy == "tabular",
            cache_key=("run", cfg),
            working_per_run=working,
        )
        compile_s += c
        outs.append((sel, out))
    if len(outs) == 1:
        out = outs[0][1]
    else:
        out = jax.tree.map(lambda *xs: np.empty((runs,) + xs[0].shape[1:], xs[0].dtype), *[o for _, o in outs])
        for sel, o in outs:
            jax.tree.map(lambda dst, src: dst.__setitem__(sel, src), out, o)
    run_s = time.perf_counter() - t0 - compile_s
    shape_ = gshape + (seeds,)
    e = len(cfg.eval_steps)
    mets = {n: np.asarray(v).reshape(shape_ + (e,)) for n, v in out["metrics"].items()}
    n_col = sched_cols.get("num_samples", np.full(runs, cfg.num_samples))
    r_col = sched_cols.get("reuse", np.full(runs, cfg.reuse))
    mets["reward_queries"] = _reward_queries(cfg, spec, offline, r_col, n_col).reshape(shape_ + (e,))
    hp_report = {n: float(values[n]) for n in _TRACED_FIELDS if n in values and n not in arm_set}
    hp_report.update({n: int(values[n]) for n in _SCHEDULE if n in values})
    if "target_margin" not in grid and "target_margin" not in hp_report and "beta" not in grid:
        hp_report["target_margin"] = float(np.asarray(hp.target_margin)[0])
    if "clip_eps_high" not in grid and "clip_eps_high" not in hp_report and "clip_eps" not in grid:
        hp_report["clip_eps_high"] = float(np.asarray(hp.clip_eps_high)[0])
    for n in _TRACED_FIELDS:
        if n not in grid and n not in hp_report and n not in arm_set:
            hp_report[n] = float(np.asarray(getattr(hp, n))[0])
    arm_values = {}
    if arm_list is not None:
        arm_values["sampling"] = np.asarray(arm_samplings)
        first = {a: int(np.flatnonzero(arm_of == a)[0]) for a in range(len(arm_list))}
        for n in sorted(arm_set | ({"target_margin"} if "target_margin" not in hp_report and "target_margin" not in grid else set())):
            arm_values[n] = np.array([float(hp_values[n][first[a]]) for a in range(len(arm_list))])
    snap_shape = (cfg.length, cfg.vocab) if seq else (cfg.num_bins,)
    final = np.asarray(out["final"]).reshape(shape_ + snap_shape)
    eval_steps, snapshots, snapshot_steps = cfg.eval_steps, np.asarray(out["snapshots"]).reshape(shape_ + (len(cfg.snapshot_steps),) + snap_shape), cfg.snapshot_steps
    if store == "final":
        mets = {n: np.ascontiguousarray(v[..., -1:]) for n, v in mets.items()}
        eval_steps, snapshots, snapshot_steps = cfg.eval_steps[-1:], np.expand_dims(final, len(shape_)), cfg.snapshot_steps[-1:]
    return Trajectory(
        metrics=mets,
        eval_steps=eval_steps,
        final_probs=final,
        snapshots=snapshots,
        snapshot_steps=snapshot_steps,
        grid={n: (np.asarray([p.name for p in problems]) if n == "problem" else v) for n, v in grid.items()},
        hyperparameters=hp_report,
        config=cfg,
        problem_names=tuple(p.name for p in problems),
        seeds=int(seeds),
        compile_seconds=compile_s,
        run_seconds=run_s,
        seed_offset=int(seed_offset),
        axes=axes,
        arm_values=arm_values,
    )


def _rows(name: str, value: NpArrayLike | None, k: int, grid: dict, check: Callable[[str, Any], np.ndarray]) -> np.ndarray | None:
    """A (K,) or (G, K) bandit array as (rows, K), each row checked; (G, K) adds a grid axis ``name``."""
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64)
    rows = arr[None] if arr.ndim == 1 else arr
    if rows.ndim != 2 or rows.shape[1] != k:
        raise ValueError(f"{name} has shape {arr.shape}; expected ({k},) or (G, {k})")
    if arr.ndim == 2:
        grid[name] = np.arange(len(rows))
    return np.stack([check(f"{name}[{i}]", r) for i, r in enumerate(rows)])


def _grid_axes(grid: dict, paired: Sequence[Any]) -> tuple[tuple[str, ...], ...]:
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


def _working_bytes(cfg: RunConfig, spec: losses.LossSpec) -> int:
    """A rough upper estimate of one bandit run's temporaries (bytes), for the memory check before compiling.

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
    if spec.batch == "duels":
        # Exact duels materialise all K x K pairs.
        per_context += 64 * (k * k if cfg.sampling in _EXACT else n)
    evals = cfg.num_eval_contexts * (64 * k + 8 * cfg.eval_samples)
    hidden = 64 * (c + cfg.num_eval_contexts) * (k + 256) if cfg.policy == "mlp" else 0
    return c * per_context + evals + hidden


def _reward_queries(cfg: RunConfig, spec: losses.LossSpec, offline: np.ndarray, reuse: np.ndarray, num_samples: np.ndarray) -> np.ndarray:
    """(runs, E) reward queries used to produce the policy at each evaluation step.

    Exact updates read the reward table once per context (K queries); offline
    runs read their one dataset; on-policy runs N per context and collection.
    """
    t = cfg.eval_steps[None, :]
    if cfg.kind == "bandit" and (spec.batch == "target" or cfg.sampling in _EXACT):
        per = np.full((len(offline), 1), float(cfg.num_bins * cfg.num_contexts))
        return np.broadcast_to(np.where(t > 0, per, 0.0), (len(offline), t.shape[1])).astype(np.float64)
    # A duel reads the rewards of both its responses.
    draws = 2 if spec.batch == "duels" else 1
    per = (np.asarray(num_samples, np.float64) * cfg.num_contexts * draws)[:, None]
    collections = np.where(np.asarray(offline)[:, None], np.minimum(t, 1), np.ceil(t / np.asarray(reuse)[:, None])).astype(np.float64, copy=False)
    collections *= per  # in place: one (runs, E) array at a time
    return collections
