"""The sequence engine: a whole run as one ``lax.scan``, many runs under ``jit(vmap)``.

Same conventions as :func:`modeseek.run`: static options (:class:`SequenceRunConfig`)
compile a program once; traced hyperparameters (the core
:class:`modeseek.engine.HyperParams`) and the problems' arrays are data, swept
as 1-D arrays (an outer-product grid in the order given) without recompiling;
run i of a grid point uses ``fold_in(key, i)``; metrics are stacked as
grid_shape + (seeds, evaluations).

One run (PAPER_NOTES C.4-C.6, Algorithm 1):

1. initialise the policy. The factorised and bigram policies start exactly at
   i.i.d. pi_data tokens; the transformer is fit to pi_data by ``sft_steps``
   Adam steps on the per-token reverse KL along prefixes it samples itself
   (``sft_batch`` sequences per step, random prompts). pi_ref is a frozen copy
   of this initial policy, evaluated without dropout;
2. draw ``num_prompts`` train prompts (uniform tokens);
3. for each of ``steps // reuse`` iterations collect N = ``num_samples``
   sequences per prompt (offline: one dataset from pi_ref; on-policy: fresh
   sequences from the current policy) and take ``reuse`` full-batch optimiser
   steps on it (the authors' T; offline runs take all ``steps`` on one dataset).

Metrics every ``eval_every`` steps (always at 0 and at ``steps``):

* factorised / bigram: exact, by dynamic programming over the Markov chain, on
  the train prompts: expected_reward (every reward kind), kl_pi_ref =
  KL(pi || pi_ref) of whole responses, entropy, per-position marginals;
* transformer: estimated from ``eval_samples`` sequences per evaluation prompt
  (``num_eval_prompts`` fresh prompts; the authors use 100 x 1, PAPER_NOTES
  A.7/C.5) by Rao-Blackwellisation: the per-position marginals are the mean of
  the next-token distributions along the sampled prefixes (unbiased), the KL
  and entropy are the sums over positions of the exact per-token KL / entropy
  along them (unbiased for the sequence KL and entropy), and an additive
  reward's expectation is read from those marginals; non-additive rewards use
  the sample mean. ``sampled_reward`` is the plain Monte-Carlo mean (the
  authors' reported reward).

Plus mass_high_reward (mean over positions of the marginal mass on tokens with
at least half the maximal per-token reward; token rewards only), train_loss,
the pair statistics of pair losses and reward_queries.
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

from modeseek import _checks
from modeseek import losses as core_losses
from modeseek.batches import BestOfN
from modeseek.engine import HyperParams
from modeseek.problems import high_reward_mask, safe_log
from modeseek.sequences import batches as sb
from modeseek.sequences import losses as seq_losses
from modeseek.sequences import markov
from modeseek.sequences import sampling as seq_sampling
from modeseek.sequences import policies as seq_policies
from modeseek.sequences.problems import SequenceProblem

__all__ = ["SequenceRunConfig", "SequenceTrajectory", "run", "SAMPLINGS", "default_learning_rate", "compile_count"]

SAMPLINGS = ("offline", "on_policy")
_TRACED = [f.name for f in dataclasses.fields(HyperParams)]
_POSITIVE = {"learning_rate", "beta", "clip_eps", "target_margin", "bt_scale", "sft_learning_rate"}
_NONNEGATIVE = {"negative_coef", "entropy_coef", "min_reward_gap", "init_scale"}
_compile_counter = [0]


def compile_count() -> int:
    """How many sequence run programs have been traced in this process."""
    return _compile_counter[0]


@dataclasses.dataclass(frozen=True)
class SequenceRunConfig:
    """Static configuration of a sequence run; a new value compiles a new program.

    Attributes beyond the core RunConfig's meaning:
      policy: "factorised", "bigram" or "transformer".
      shared: one bigram transition table for every position.
      shift: "correct" or "authors" (the off-by-one log-probability, PAPER_NOTES C.5).
      ratio: PPO ratio per "token" or per "sequence".
      num_prompts / num_eval_prompts: train prompts; fresh evaluation prompts
        (transformer only; the Markov policies are evaluated on the train prompts).
      eval_samples: sequences per evaluation prompt for the transformer's estimates.
      eval_every / snapshot_every: evaluation and marginal-snapshot periods (steps).
      sft_steps / sft_batch: the transformer's fit to pi_data (C.4: 100 steps).
      layers / heads / embed / dropout: transformer sizes (gpt-nano: 3, 3, 48; dropout 0).
    """

    loss: str
    sampling: str
    steps: int
    length: int
    vocab: int
    reward_kind: str
    include_prompt: bool
    policy: str = "transformer"
    reuse: int = 1
    num_samples: int = 10
    num_prompts: int = 10
    num_eval_prompts: int = 100
    eval_samples: int = 1
    eval_every: int = 1
    snapshot_every: int = 1
    init: str = "reference"
    shared: bool = False
    optimizer: str = "adam"
    negative: str | None = None
    advantage: str = "mean"
    kl_estimator: str | None = None
    kl_placement: str = "reward"
    ratio: str = "token"
    normalize: bool = False
    labels: str = "reward"
    pairing: str = "all"
    shift: str = "correct"
    sft_steps: int = 100
    sft_batch: int = 10
    layers: int = 3
    heads: int = 3
    embed: int = 48
    dropout: float = 0.0

    @property
    def iterations(self) -> int:
        return 1 if self.sampling == "offline" else self.steps // self.reuse

    @property
    def steps_per_batch(self) -> int:
        return self.steps if self.sampling == "offline" else self.reuse

    @property
    def eval_steps(self) -> np.ndarray:
        return _grid_steps(self.steps, self.eval_every)

    @property
    def snapshot_steps(self) -> np.ndarray:
        return _grid_steps(self.steps, self.snapshot_every)

    @property
    def tokens_scored(self) -> int:
        """T: per-token log-probabilities per sequence (L, or L + 1 with the authors' shift)."""
        return self.length + (self.shift == "authors")


def _grid_steps(steps, every):
    s = np.arange(0, steps + 1, every)
    return s if s[-1] == steps else np.append(s, steps)


_STATIC = {f.name for f in dataclasses.fields(SequenceRunConfig)} - {
    "loss",
    "sampling",
    "steps",
    "length",
    "vocab",
    "reward_kind",
    "include_prompt",
    "eval_every",
    "snapshot_every",
}


def default_learning_rate(policy: str, optimizer: str = "adam") -> float:
    """Adam 1e-3 for the transformer, 0.05 for the logit tables (SGD: x100 / x20)."""
    if policy == "transformer":
        return 1e-3 if optimizer == "adam" else 1e-1
    return 0.05 if optimizer == "adam" else 1.0


# ----------------------------------------------------------------------------- one run


def _needs(cfg: SequenceRunConfig, spec):
    """(needs logq, needs per-token ref logp, needs ref next-token distributions)."""
    kl = cfg.kl_estimator is not None and spec.name in ("reinforce", "ppo")
    logq = spec.name == "ppo" or (kl and cfg.kl_placement == "reward")
    ref = spec.batch == "pairs" or kl
    ref_next = kl and cfg.kl_estimator == "exact" and cfg.kl_placement == "loss"
    return logq, ref, ref_next


def _sft(policy, params, key, target_logp, cfg: SequenceRunConfig, lr):
    """Fit the transformer to pi_data: per-token reverse KL on self-generated prefixes (C.4)."""
    opt = optax.adam(lr)

    def step(carry, k):
        p, s = carry
        kp, ks, kd = jax.random.split(k, 3)
        prompts = jax.random.randint(kp, (cfg.sft_batch,), 0, cfg.vocab)
        u = jax.random.uniform(ks, (cfg.sft_batch, cfg.length))
        toks, _ = jax.vmap(lambda x, row: seq_sampling.sample_with_uniforms(policy, jax.lax.stop_gradient(p), x, row))(prompts, u)

        def loss(q):
            _, nxt = seq_sampling.sequence_logprobs(policy, q, toks, dropout_key=kd if cfg.dropout > 0 else None)
            return seq_losses.reference_kl(nxt, target_logp)

        g = jax.grad(loss)(p)
        upd, s = opt.update(g, s, p)
        return (optax.apply_updates(p, upd), s), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, cfg.sft_steps))
    return params


def _run_one(cfg: SequenceRunConfig, key, hp: HyperParams, ref_probs, reward):
    """One run (all arguments unbatched). Returns a dict of stacked outputs."""
    _compile_counter[0] += 1
    spec = seq_losses.get(cfg.loss)
    need_logq, need_ref, need_ref_next = _needs(cfg, spec)
    sizes = seq_policies.TransformerSizes(cfg.layers, cfg.heads, cfg.embed, cfg.dropout)
    policy = seq_policies.make(cfg.policy, ref_probs, init=cfg.init, sizes=sizes, shared=cfg.shared)
    k_init, k_sft, k_prompts, k_evp, k_data, k_loop, k_eval, k_drop = jax.random.split(key, 8)
    L, V, P, N, T = cfg.length, cfg.vocab, cfg.num_prompts, cfg.num_samples, cfg.tokens_scored
    data_logp = safe_log(ref_probs)

    params = policy.init(k_init, vocab=V, length=L, init_scale=hp.init_scale)
    if cfg.policy == "transformer" and cfg.sft_steps > 0:
        params = _sft(policy, params, k_sft, data_logp, cfg, hp.sft_learning_rate)
    ref_params = params
    prompts = jax.random.randint(k_prompts, (P,), 0, V)
    eval_prompts = jax.random.randint(k_evp, (cfg.num_eval_prompts,), 0, V) if policy.generalises else prompts

    opt = optax.adam(hp.learning_rate) if cfg.optimizer == "adam" else optax.sgd(hp.learning_rate)
    opt_state = opt.init(params)
    dropout_on = cfg.policy == "transformer" and cfg.dropout > 0
    compact_bon = spec.batch == "best_of_n" and cfg.negative in (None, "worst")

    def collect_one(k, prompt, p):
        ks, kl = sb.split_pair_key(k) if spec.batch == "pairs" else (k, None)
        tokens, logq = seq_sampling.sample(policy, p, ks, prompt, N, L)
        r = jax.vmap(reward)(tokens)
        if compact_bon:
            # best_of_n without a sum over the other draws reads only the best and
            # worst rows: keep those two, so the gradient step scores 2 sequences, not N.
            jb, jw = jnp.argmax(r), jnp.argmin(r)
            rows = jnp.stack([jb, jw])
            tokens, logq, r = tokens[rows], logq[rows], r[rows]
            one = jnp.ones((1,))
            items = BestOfN(
                jnp.zeros((1,), jnp.int32), one, jnp.ones((1,), jnp.int32), one, jnp.arange(2, dtype=jnp.int32), jnp.array([0.0, 1.0]), jnp.asarray(N, jnp.float32)
            )
        m = tokens.shape[0]
        if need_logq and cfg.shift == "authors":
            logq, _ = seq_sampling.sequence_logprobs(policy, p, tokens, shift="authors")
        elif not need_logq:
            logq = jnp.zeros((m, T))
        if need_ref:
            ref_tok, ref_next = seq_sampling.sequence_logprobs(policy, ref_params, tokens, shift=cfg.shift)
        else:
            ref_tok, ref_next = jnp.zeros((m, T)), None
        if not compact_bon:
            if spec.batch == "points":
                items = sb.points_items(r, jnp.sum(logq, -1))
            elif spec.batch == "best_of_n":
                items = sb.best_of_n_items(r)
            else:
                items = sb.pair_items(kl, r, labels=cfg.labels, pairing=cfg.pairing, min_reward_gap=hp.min_reward_gap, bt_scale=hp.bt_scale)
        return sb.SequenceBatch(tokens, r, jax.lax.stop_gradient(logq), ref_tok, items, ref_next if need_ref_next else None)

    def collect(k, p):
        p = jax.lax.stop_gradient(p)
        return jax.vmap(collect_one, (0, 0, None))(jax.random.split(k, P), prompts, p)

    def loss_fn(p, batch, kd):
        m = batch.tokens.shape[1]
        flat = batch.tokens.reshape(P * m, L + 1)
        tok, nxt = seq_sampling.sequence_logprobs(policy, p, flat, shift=cfg.shift, dropout_key=kd if dropout_on else None)
        tok, nxt = tok.reshape(P, m, T), nxt.reshape(P, m, L, V)
        vals, aux = jax.vmap(lambda a, b, c: spec.apply(a, b, c, hp, cfg))(tok, batch, nxt)
        return jnp.mean(vals), jax.tree.map(jnp.mean, aux)

    table = reward.table
    high = high_reward_mask(table).astype(jnp.float32)
    token_kind = reward.kind != "length"

    def eval_markov(p):
        def one(x):
            il, tl = policy.markov(p, x, L)
            ril, rtl = policy.markov(ref_params, x, L)
            ip, tp = jnp.exp(il), jnp.exp(tl)
            marg = markov.marginals(ip, tp)
            out = {
                "expected_reward": reward.expected_markov(x, ip, tp),
                "kl_pi_ref": markov.kl(il, tl, ril, rtl),
                "entropy": markov.entropy(il, tl),
            }
            return out, marg

        m, marg = jax.vmap(one)(eval_prompts)
        return jax.tree.map(jnp.mean, m), jnp.mean(marg, axis=0)

    def eval_sampled(p, k):
        ne = eval_prompts.shape[0]
        u = jax.random.uniform(k, (ne, cfg.eval_samples, L))
        toks, _ = jax.vmap(lambda x, rows: jax.vmap(lambda row: seq_sampling.sample_with_uniforms(policy, p, x, row))(rows))(eval_prompts, u)
        toks = toks.reshape(ne * cfg.eval_samples, L + 1)
        _, nxt = seq_sampling.sequence_logprobs(policy, p, toks)
        _, rnxt = seq_sampling.sequence_logprobs(policy, ref_params, toks)
        probs = jnp.exp(nxt)
        r = jax.vmap(reward)(toks)
        if reward.additive:
            er = jnp.mean(jax.vmap(reward.expected_from_marginals)(toks[:, 0], probs))
        else:
            er = jnp.mean(r)
        out = {
            "expected_reward": er,
            "kl_pi_ref": jnp.mean(jnp.sum(jnp.sum(probs * (nxt - rnxt), -1), -1)),
            "entropy": jnp.mean(-jnp.sum(probs * nxt, axis=(-2, -1))),
            "sampled_reward": jnp.mean(r),
        }
        return out, jnp.mean(probs, axis=0)

    def eval_metrics(p, k):
        p = jax.lax.stop_gradient(p)
        m, marg = eval_markov(p) if policy.markov is not None else eval_sampled(p, k)
        if token_kind:
            m["mass_high_reward"] = jnp.mean(marg @ high)
        return m, marg

    every, snap_every = cfg.eval_every, cfg.snapshot_every
    n_eval, n_snap = len(cfg.eval_steps), len(cfg.snapshot_steps)
    batch0 = jax.tree.map(jnp.zeros_like, jax.eval_shape(collect, k_loop, params))

    def record(p, loss, aux, k):
        m, marg = eval_metrics(p, k)
        return {**m, **aux, "train_loss": loss}, marg

    def probe():
        loss, aux = loss_fn(params, batch0, k_drop)
        return record(params, loss, aux, k_eval)[0]

    buf0 = jax.tree.map(lambda s: jnp.zeros((n_eval,) + s.shape, s.dtype), jax.eval_shape(probe))
    snaps0 = jnp.zeros((n_snap, L, V))

    def inner(carry, t):
        p, s, buf, snaps, batch = carry
        (loss, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(p, batch, jax.random.fold_in(k_drop, t))

        def write(buf, snaps):
            m, marg = record(p, loss, aux, jax.random.fold_in(k_eval, t))
            buf = jax.tree.map(lambda b, v: b.at[t // every].set(v), buf, m)
            slot = jnp.minimum(t // snap_every, n_snap - 1)
            snaps = snaps.at[slot].set(jnp.where(t % snap_every == 0, marg, snaps[slot]))
            return buf, snaps

        buf, snaps = jax.lax.cond(t % every == 0, write, lambda b, s_: (b, s_), buf, snaps)
        upd, s = opt.update(g, s, p)
        return (optax.apply_updates(p, upd), s, buf, snaps, batch), None

    def outer(carry, xs):
        i, k = xs
        p, s, buf, snaps, _ = carry
        batch = collect(k, p)
        ts = i * cfg.steps_per_batch + jnp.arange(cfg.steps_per_batch)
        carry, _ = jax.lax.scan(inner, (p, s, buf, snaps, batch), ts)
        return carry, None

    if cfg.sampling == "offline":
        fixed = collect(k_data, ref_params)
        init_batch = fixed

        def outer_offline(carry, xs):
            p, s, buf, snaps, _ = carry
            i, _k = xs
            ts = i * cfg.steps_per_batch + jnp.arange(cfg.steps_per_batch)
            carry, _ = jax.lax.scan(inner, (p, s, buf, snaps, fixed), ts)
            return carry, None

        body = outer_offline
    else:
        init_batch = batch0
        body = outer

    xs = (jnp.arange(cfg.iterations), jax.random.split(k_loop, cfg.iterations))
    (params, _, buf, snaps, last), _ = jax.lax.scan(body, (params, opt_state, buf0, snaps0, init_batch), xs)
    loss, aux = loss_fn(params, last, jax.random.fold_in(k_drop, cfg.steps))
    m, marg = record(params, loss, aux, jax.random.fold_in(k_eval, cfg.steps))
    buf = jax.tree.map(lambda b, v: b.at[n_eval - 1].set(v), buf, m)
    snaps = snaps.at[n_snap - 1].set(marg)
    return {"metrics": buf, "snapshots": snaps, "final_marginals": marg}


@functools.lru_cache(maxsize=None)
def _program(cfg: SequenceRunConfig):
    return jax.jit(jax.vmap(functools.partial(_run_one, cfg)))


_executables: dict[tuple, Any] = {}


def _executable(cfg: SequenceRunConfig, runs: int, args):
    key = (cfg, runs)
    if key in _executables:
        return _executables[key], False
    exe = _program(cfg).lower(*args).compile()
    _executables[key] = exe
    return exe, True


# ----------------------------------------------------------------------------- results


@dataclasses.dataclass
class SequenceTrajectory:
    """The stacked outputs of a sequence sweep.

    Attributes:
      metrics: name -> grid_shape + (seeds, len(eval_steps)); index 0 is the
        initial policy (pi_ref). See the module docstring for the keys.
      eval_steps: (E,) steps of the metrics' last axis.
      snapshots: grid_shape + (seeds, len(snapshot_steps), L, V) per-position
        marginals (mean over evaluation prompts).
      snapshot_steps: (S,) steps of the snapshots.
      final_marginals: grid_shape + (seeds, L, V).
      grid, hyperparameters, config, problem_names, seeds, compile_seconds,
      run_seconds: as in :class:`modeseek.Trajectory`.
    """

    metrics: dict[str, np.ndarray]
    eval_steps: np.ndarray
    snapshots: np.ndarray
    snapshot_steps: np.ndarray
    final_marginals: np.ndarray
    grid: dict[str, np.ndarray]
    hyperparameters: dict[str, Any]
    config: SequenceRunConfig
    problem_names: tuple[str, ...]
    seeds: int
    compile_seconds: float
    run_seconds: float

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.grid.values())

    def _index_columns(self, t: int):
        gshape = self.grid_shape
        runs = int(np.prod(gshape, dtype=int)) * self.seeds
        idx = np.indices(gshape + (self.seeds,)).reshape(len(gshape) + 1, runs)
        cols: dict[str, Any] = {}
        for axis, (name, values) in enumerate(self.grid.items()):
            cols[name] = np.repeat(np.asarray(values)[idx[axis]], t)
        cols["seed"] = np.repeat(idx[-1], t)
        return cols, runs

    def to_dataframe(self):
        """Tidy metrics: one row per (grid point, seed, evaluation step)."""
        import pandas as pd

        t = len(self.eval_steps)
        cols, runs = self._index_columns(t)
        cols["step"] = np.tile(self.eval_steps, runs)
        for name, value in self.hyperparameters.items():
            if name not in self.grid:
                cols[name] = value
        for name in ("loss", "sampling", "policy", "reuse", "num_samples", "num_prompts", "negative", "advantage", "kl_estimator", "ratio", "shift"):
            v = getattr(self.config, name)
            cols[name] = "none" if v is None else v
        if "problem" not in self.grid:
            cols["problem"] = self.problem_names[0]
        for name, arr in self.metrics.items():
            cols[name] = np.asarray(arr).reshape(runs * t)
        return pd.DataFrame(cols)

    def marginals_dataframe(self, *, mean_over_seeds: bool = True):
        """Per-position marginals at the snapshot steps: one row per (grid point, [seed,] step, position, token)."""
        import pandas as pd

        snaps = np.asarray(self.snapshots)
        gshape = self.grid_shape
        if mean_over_seeds:
            snaps = snaps.mean(axis=len(gshape))
        s, L, V = snaps.shape[-3:]
        lead = snaps.shape[:-3]
        idx = np.indices(lead).reshape(len(lead), -1)
        rows = int(np.prod(lead, dtype=int))
        per = s * L * V
        cols: dict[str, Any] = {}
        for axis, (name, values) in enumerate(self.grid.items()):
            cols[name] = np.repeat(np.asarray(values)[idx[axis]], per)
        if not mean_over_seeds:
            cols["seed"] = np.repeat(idx[-1], per)
        cols["step"] = np.tile(np.repeat(self.snapshot_steps, L * V), rows)
        cols["position"] = np.tile(np.repeat(np.arange(1, L + 1), V), rows * s)
        cols["token"] = np.tile(np.arange(V), rows * s * L)
        cols["prob"] = snaps.reshape(-1)
        return pd.DataFrame(cols)


# ----------------------------------------------------------------------------- run()


def _as_sweep(name, value):
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim > 1:
        raise ValueError(f"{name} has shape {arr.shape}; expected a scalar or a 1-D array of values to sweep")
    if arr.ndim == 1 and arr.size == 0:
        raise ValueError(f"{name} is an empty array; expected at least one value to sweep")
    return arr.ndim == 1, arr


def _positive_int(name, v, minimum=1):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < minimum:
        raise ValueError(f"{name}={v!r} is invalid; expected an integer >= {minimum}")


def run(
    problem: SequenceProblem | Sequence[SequenceProblem],
    *,
    loss: str,
    sampling: str = "on_policy",
    steps: int = 100,
    seeds: int = 1,
    key: int | jax.Array = 0,
    policy: str = "transformer",
    eval_every: int = 1,
    snapshot_every: int | None = None,
    **hyperparameters,
) -> SequenceTrajectory:
    """Run ``seeds`` sequence fine-tuning runs per grid point and return their trajectories.

    Args:
      problem: a SequenceProblem, or a sequence of them (same vocabulary, length
        and reward kind) to sweep over.
      loss: a name from :func:`modeseek.sequences.losses.names`.
      sampling: "offline" (one dataset from pi_ref, the frozen initial policy)
        or "on_policy" (fresh sequences every ``reuse`` steps).
      steps: gradient steps per run.
      seeds: independent runs per grid point.
      key: PRNG key or integer seed.
      policy: "factorised", "bigram" or "transformer".
      eval_every: metrics every this many steps (and at ``steps``).
      snapshot_every: marginal snapshots every this many steps, a multiple of
        ``eval_every`` (default about steps / 10).
      **hyperparameters: static SequenceRunConfig fields (reuse, num_samples,
        num_prompts, num_eval_prompts, eval_samples, init, shared, optimizer,
        negative, advantage, kl_estimator, kl_placement, ratio, normalize,
        labels, pairing, shift, sft_steps, sft_batch, layers, heads, embed,
        dropout) and traced HyperParams fields (learning_rate, beta,
        negative_coef, entropy_coef, clip_eps, target_margin, min_reward_gap,
        bt_scale, init_scale, sft_learning_rate), swept when given as 1-D arrays.

    Returns:
      A SequenceTrajectory.
    """
    spec = seq_losses.get(loss)
    _checks.choice("sampling", sampling, SAMPLINGS)
    unknown = set(hyperparameters) - _STATIC - set(_TRACED)
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {sorted(unknown)}; valid names are {', '.join(sorted(_STATIC | set(_TRACED)))}")
    _positive_int("steps", steps)
    _positive_int("seeds", seeds)
    _positive_int("eval_every", eval_every)
    _checks.choice("policy", policy, seq_policies.names())

    problems = list(problem) if isinstance(problem, (list, tuple)) else [problem]
    for p in problems:
        if not isinstance(p, SequenceProblem):
            raise ValueError(f"problem={p!r} is not a modeseek.sequences.SequenceProblem")
    p0 = problems[0]
    sig = lambda p: (p.vocab, p.length, p.reward.kind, p.reward.include_prompt)  # noqa: E731
    if any(sig(p) != sig(p0) for p in problems):
        raise ValueError(f"swept problems must share vocab, length and reward kind/include_prompt; got {[sig(p) for p in problems]}")

    static = {n: hyperparameters[n] for n in _STATIC if n in hyperparameters}
    static["policy"] = policy
    for n in ("reuse", "num_samples", "num_prompts", "num_eval_prompts", "eval_samples", "sft_batch", "layers", "heads", "embed"):
        if n in static:
            _positive_int(n, static[n])
    if "sft_steps" in static:
        _positive_int("sft_steps", static["sft_steps"], 0)
    _checks.choice("init", static.get("init", "reference"), seq_policies.INITS)
    _checks.choice("optimizer", static.get("optimizer", "adam"), ("adam", "sgd"))
    _checks.choice("negative", static.get("negative"), (None,) + core_losses.NEGATIVE_TERMS)
    _checks.choice("advantage", static.get("advantage", "mean"), core_losses.ADVANTAGES)
    _checks.choice("kl_estimator", static.get("kl_estimator"), (None,) + core_losses.KL_ESTIMATORS)
    _checks.choice("kl_placement", static.get("kl_placement", "reward"), core_losses.KL_PLACEMENTS)
    _checks.choice("ratio", static.get("ratio", "token"), seq_losses.RATIOS)
    _checks.choice("shift", static.get("shift", "correct"), seq_sampling.SHIFTS)
    _checks.choice("labels", static.get("labels", "reward"), ("reward", "bradley_terry"))
    _checks.choice("pairing", static.get("pairing", "all"), ("all", "disjoint"))
    seq_policies.TransformerSizes(static.get("layers", 3), static.get("heads", 3), static.get("embed", 48), float(static.get("dropout", 0.0)))
    if static.get("shift") == "authors" and policy != "transformer":
        raise ValueError(f"shift='authors' is the transformer's off-by-one log-probability; expected policy='transformer' (got {policy!r})")
    reuse = static.get("reuse", 1)
    if sampling == "on_policy" and steps % reuse:
        raise ValueError(f"steps={steps} is not a multiple of reuse={reuse}; expected steps = iterations * reuse")
    if spec.batch == "pairs" and static.get("num_samples", 10) < 2:
        raise ValueError(f"num_samples={static.get('num_samples')} is too small for pair losses; expected >= 2")
    if snapshot_every is None:
        snapshot_every = max(eval_every, (steps // 10) // eval_every * eval_every)
    _positive_int("snapshot_every", snapshot_every)
    if snapshot_every % eval_every:
        raise ValueError(f"snapshot_every={snapshot_every} is not a multiple of eval_every={eval_every}")
    if "dropout" in static:
        static["dropout"] = float(static["dropout"])
    cfg = SequenceRunConfig(
        loss=loss,
        sampling=sampling,
        steps=int(steps),
        length=p0.length,
        vocab=p0.vocab,
        reward_kind=p0.reward.kind,
        include_prompt=p0.reward.include_prompt,
        eval_every=int(eval_every),
        snapshot_every=int(snapshot_every),
        **static,
    )

    traced = {n: hyperparameters[n] for n in _TRACED if n in hyperparameters}
    traced.setdefault("learning_rate", default_learning_rate(policy, cfg.optimizer))
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
        (grid if swept else values)[n] = arr

    gshape = tuple(len(v) for v in grid.values())
    runs = int(np.prod(gshape, dtype=int)) * seeds
    idx = np.indices(gshape + (seeds,)).reshape(len(gshape) + 1, runs)
    axis_of = {n: i for i, n in enumerate(grid)}

    def per_run(name, scalar=None):
        if name in grid:
            return np.asarray(grid[name])[idx[axis_of[name]]]
        return np.full(runs, scalar)

    hp_values = {n: per_run(n, values.get(n)) for n in _TRACED if n in grid or n in values}
    if "target_margin" not in hp_values:
        hp_values["target_margin"] = 1.0 / (2.0 * per_run("beta", values.get("beta", HyperParams.beta)))
    hp = HyperParams(**{n: jnp.asarray(hp_values.get(n, np.full(runs, getattr(HyperParams, n))), jnp.float32) for n in _TRACED})

    pi = per_run("problem", 0).astype(int) if "problem" in grid else np.zeros(runs, int)
    stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *[(p.ref_probs, p.reward) for p in problems])
    ref, rew = jax.tree.map(lambda a: jnp.asarray(a[pi]), stacked)

    base = jax.random.PRNGKey(key) if isinstance(key, (int, np.integer)) else key
    keys = jax.vmap(jax.random.fold_in, (None, 0))(base, jnp.asarray(idx[-1], jnp.uint32))
    args = (keys, hp, ref, rew)
    t0 = time.perf_counter()
    compiled, fresh = _executable(cfg, runs, args)
    t1 = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    t2 = time.perf_counter()

    shape = gshape + (seeds,)
    e = len(cfg.eval_steps)
    mets = {n: np.asarray(v).reshape(shape + (e,)) for n, v in out["metrics"].items()}
    mets["reward_queries"] = np.broadcast_to(_reward_queries(cfg), shape + (e,)).copy()
    hp_report = {n: float(values[n]) for n in values}
    if "target_margin" not in grid and "target_margin" not in hp_report and "beta" not in grid:
        hp_report["target_margin"] = float(np.asarray(hp.target_margin)[0])
    for n in _TRACED:
        if n not in grid and n not in hp_report:
            hp_report[n] = float(np.asarray(getattr(hp, n))[0])
    return SequenceTrajectory(
        metrics=mets,
        eval_steps=cfg.eval_steps,
        snapshots=np.asarray(out["snapshots"]).reshape(shape + (len(cfg.snapshot_steps), cfg.length, cfg.vocab)),
        snapshot_steps=cfg.snapshot_steps,
        final_marginals=np.asarray(out["final_marginals"]).reshape(shape + (cfg.length, cfg.vocab)),
        grid={n: (np.asarray([p.name for p in problems]) if n == "problem" else v) for n, v in grid.items()},
        hyperparameters=hp_report,
        config=cfg,
        problem_names=tuple(p.name for p in problems),
        seeds=int(seeds),
        compile_seconds=(t1 - t0) if fresh else 0.0,
        run_seconds=t2 - t1,
    )


def _reward_queries(cfg: SequenceRunConfig) -> np.ndarray:
    """Reward queries behind the policy at each evaluation step (N per prompt per collection)."""
    t = cfg.eval_steps
    per = cfg.num_samples * cfg.num_prompts
    if cfg.sampling == "offline":
        return np.where(t > 0, per, 0).astype(np.float64)
    return (np.ceil(t / cfg.reuse) * per).astype(np.float64)

