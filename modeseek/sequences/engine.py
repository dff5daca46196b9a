"""The sequence engine: a whole run as one ``lax.scan``, many runs in one compiled program.

Same conventions as :func:`modeseek.run`: static options (:class:`SequenceRunConfig`)
compile a program once; traced hyperparameters (the core
:class:`modeseek.engine.HyperParams`) and the problems' arrays are data, swept
as 1-D arrays (an outer-product grid in the order given) without recompiling;
run i of a grid point uses ``fold_in(key, seed_offset + i)``; metrics are stacked as
grid_shape + (seeds, evaluations). The runs go through one compiled program
of ``block`` runs (:mod:`modeseek._blocks`, so a run's bits never depend on
what shares its call), batched by ``vmap`` (Markov policies) or, for the
transformer, run one after another by a ``lax.map`` inside it (``batching``; a
run's numbers do not depend on which, up to float rounding). Offline and on-policy arms with their own
hyperparameters can share a program (``arms``).

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
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from modeseek import _checks
from modeseek import losses as core_losses
from modeseek._blocks import resolve_devices, run_blocks, run_keys
from modeseek.batches import BestOfN
from modeseek.engine import HyperParams
from modeseek.problems import high_reward_mask, safe_log
from modeseek.sequences import batches as sb
from modeseek.losses import sequences as seq_losses
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
      sampling: "offline", "on_policy", or "mixed" when ``arms`` combine both
        (the regime is then a traced per-run flag).
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
      batching: how the runs of a sweep share the program: "vmap" (batched,
        the core convention) or "map" (one run after another inside the same
        compiled program). ``run`` defaults to "map" for the transformer, whose
        per-run matmuls already fill a CPU core (batched they run slower, and
        the program compiles ~30% slower), and "vmap" for the Markov policies.
      block: runs per compiled call (:mod:`modeseek._blocks`): a run's bits depend
        on it and never on how many runs share the call. ``run`` defaults to 1
        for "map" batching (no padding; the runs were sequential anyway) and 8
        for "vmap" (a Markov policy's L x V tables are vectors as wide as a
        K = 900 bandit's; see :func:`modeseek.engine.default_block`).
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
    batching: str = "map"
    block: int = 1

    @property
    def iterations(self) -> int:
        """Batch collections of an on-policy run (1 when every run is offline)."""
        return 1 if self.sampling == "offline" else self.steps // self.reuse

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


def _make_policy(cfg: SequenceRunConfig, ref_probs):
    sizes = seq_policies.TransformerSizes(cfg.layers, cfg.heads, cfg.embed, cfg.dropout)
    return seq_policies.make(cfg.policy, ref_probs, init=cfg.init, sizes=sizes, shared=cfg.shared)


def _init_one(cfg: SequenceRunConfig, key, hp: HyperParams, ref_probs):
    """The initial policy of one run, which is also its pi_ref (PAPER_NOTES C.4).

    Markov policies start exactly at i.i.d. pi_data tokens (init "reference").
    The transformer is fit to pi_data by ``sft_steps`` Adam steps on the
    per-token reverse KL. The authors score prefixes the model generates
    itself; here the prefixes are i.i.d. pi_data tokens after a uniform
    prompt, i.e. what a model that fits pi_data generates (the fixed point of
    their procedure), which keeps a sampler out of this program.
    """
    _compile_counter[0] += 1
    policy = _make_policy(cfg, ref_probs)
    k_init, k_sft = jax.random.split(jax.random.fold_in(key, 0))
    params = policy.init(k_init, vocab=cfg.vocab, length=cfg.length, init_scale=hp.init_scale)
    if cfg.policy != "transformer" or cfg.sft_steps == 0:
        return params
    target = safe_log(ref_probs)
    opt = optax.adam(hp.sft_learning_rate)
    b, L = cfg.sft_batch, cfg.length
    u = jax.random.uniform(k_sft, (cfg.sft_steps, b, L + 1))
    # Column 0 picks a uniform prompt, columns 1..L pi_data tokens, by inverse CDF.
    uniform_logits = jnp.zeros((cfg.vocab,))
    toks = jnp.concatenate(
        [
            jax.vmap(jax.vmap(lambda x: seq_sampling.inverse_cdf(uniform_logits, x)))(u[..., :1]),
            jax.vmap(jax.vmap(jax.vmap(lambda x: seq_sampling.inverse_cdf(target, x))))(u[..., 1:]),
        ],
        axis=-1,
    )
    drop_keys = jax.random.split(jax.random.fold_in(k_sft, 1), cfg.sft_steps) if cfg.dropout > 0 else jnp.zeros((cfg.sft_steps,))

    def step(carry, xs):
        p, s = carry
        tk, kd = xs

        def loss(q):
            _, nxt = seq_sampling.sequence_logprobs(policy, q, tk, dropout_key=kd if cfg.dropout > 0 else None)
            return seq_losses.reference_kl(nxt, target)

        g = jax.grad(loss)(p)
        upd, s = opt.update(g, s, p)
        return (optax.apply_updates(p, upd), s), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), (toks, drop_keys))
    return params


def _run_one(cfg: SequenceRunConfig, key, hp: HyperParams, ref_probs, reward, init_params, offline):
    """One run from its initial (= reference) parameters; all arguments unbatched.

    ``offline`` is a traced flag, so offline and on-policy arms share a program
    (``cfg.sampling == "mixed"``).
    """
    _compile_counter[0] += 1
    spec = core_losses.get(cfg.loss)
    apply = spec.bind("sequence", cfg)
    need_logq, need_ref, need_ref_next = _needs(cfg, spec)
    policy = _make_policy(cfg, ref_probs)
    L, V, P, N, T = cfg.length, cfg.vocab, cfg.num_prompts, cfg.num_samples, cfg.tokens_scored
    exact_eval = policy.markov is not None
    E, S = (0, 0) if exact_eval else (cfg.num_eval_prompts, cfg.eval_samples)
    every, snap_every = cfg.eval_every, cfg.snapshot_every
    n_eval, n_snap = len(cfg.eval_steps), len(cfg.snapshot_steps)
    all_offline = cfg.sampling == "offline"
    n_collect = cfg.iterations
    n_pairs = N * (N - 1) // 2 if cfg.pairing == "all" else N // 2

    # Every random number of the run is drawn here, by a handful of PRNG calls
    # outside the loop: each call is a kernel to compile, and the loop indexes
    # the draws instead (one uniform per sampled token, convention 5).
    k_prompts, k_evp, k_collect, k_labels, k_eval, k_drop = jax.random.split(jax.random.fold_in(key, 1), 6)
    prompts = jax.random.randint(k_prompts, (P,), 0, V)
    eval_prompts = prompts if exact_eval else jax.random.randint(k_evp, (E,), 0, V)
    u_collect = jax.random.uniform(k_collect, (n_collect, P, N, L))
    u_eval = jax.random.uniform(k_eval, (n_eval, E, S, L))
    bt = spec.batch == "pairs" and cfg.labels == "bradley_terry"
    u_labels = jax.random.uniform(k_labels, (n_collect, P, n_pairs)) if bt else None
    dropout_on = cfg.policy == "transformer" and cfg.dropout > 0

    params = init_params
    ref_params = init_params
    opt = optax.adam(hp.learning_rate) if cfg.optimizer == "adam" else optax.sgd(hp.learning_rate)
    opt_state = opt.init(params)
    compact_bon = spec.batch == "best_of_n" and cfg.negative in (None, "worst")
    batch_prompts = jnp.repeat(prompts, N)
    all_prompts = jnp.concatenate([batch_prompts, jnp.repeat(eval_prompts, S)])

    def draw(p, i, slot):
        """Sample the batch (P x N) and evaluation (E x S) sequences in one call."""
        u = jnp.concatenate([u_collect[i].reshape(P * N, L), u_eval[slot].reshape(E * S, L)])
        return jax.vmap(lambda x, row: seq_sampling.sample_with_uniforms(policy, p, x, row, full=True))(all_prompts, u)

    def ref_pass(tokens):
        return seq_sampling.sequence_logprobs(policy, ref_params, tokens, shift=cfg.shift)

    def build_one(tokens, logq, ref_tok, ref_next, lab_u):
        r = jax.vmap(reward)(tokens)
        if compact_bon:
            # best_of_n without a sum over the other draws reads only the best and
            # worst rows: keep those two, so a gradient step scores 2 sequences, not N.
            rows = jnp.stack([jnp.argmax(r), jnp.argmin(r)])
            tokens, logq, r, ref_tok = tokens[rows], logq[rows], r[rows], ref_tok[rows]
            one = jnp.ones((1,))
            items = BestOfN(jnp.zeros((1,), jnp.int32), one, jnp.ones((1,), jnp.int32), one, jnp.arange(2, dtype=jnp.int32), jnp.array([0.0, 1.0]), jnp.asarray(N, jnp.float32))
        elif spec.batch == "points":
            items = sb.points_items(r, jnp.sum(logq, -1))
        elif spec.batch == "best_of_n":
            items = sb.best_of_n_items(r)
        else:
            items = sb.pair_items(None, r, labels=cfg.labels, pairing=cfg.pairing, min_reward_gap=hp.min_reward_gap, bt_scale=hp.bt_scale, label_uniforms=lab_u if bt else None)
        return sb.SequenceBatch(tokens, r, logq, ref_tok, items, ref_next if need_ref_next else None)

    def fresh(p, t, i, slot):
        """New batch (from p's samples) and evaluation statistics at step t."""
        p = jax.lax.stop_gradient(p)
        toks, logq, nxt = draw(p, i, slot)
        btoks, blogq = toks[: P * N], logq[: P * N]
        etoks, enxt = toks[P * N :], nxt[P * N :]
        # One reference pass scores the batch (when the loss needs pi_ref) and the
        # evaluation sequences (for the KL metric) together.
        nb = P * N if need_ref else 0
        scored = jnp.concatenate([btoks[:nb], etoks])
        if scored.shape[0]:
            rtok, rnxt = ref_pass(scored)
        ref_tok = rtok[:nb].reshape(P, N, T) if nb else jnp.zeros((P, N, T))
        ref_next = rnxt[:nb].reshape(P, N, L, V) if (nb and need_ref_next) else jnp.zeros((P, N, 0, V))
        if need_logq and cfg.shift == "authors":
            blogq, _ = seq_sampling.sequence_logprobs(policy, p, btoks, shift="authors")
        elif not need_logq:
            blogq = jnp.zeros((P * N, T))
        lab = u_labels[i] if bt else jnp.zeros((P, 0))
        batch = jax.vmap(build_one)(btoks.reshape(P, N, L + 1), blogq.reshape(P, N, T), ref_tok, ref_next, lab)
        if exact_eval:
            return batch, {}
        rn = rnxt[nb:]
        probs = jnp.exp(enxt)
        r = jax.vmap(reward)(etoks)
        if reward.additive:
            er = jnp.mean(jax.vmap(reward.expected_from_marginals)(etoks[:, 0], probs))
        else:
            er = jnp.mean(r)
        stats = {
            "expected_reward": er,
            "kl_pi_ref": jnp.mean(jnp.sum(probs * (enxt - rn), axis=(-2, -1))),
            "entropy": jnp.mean(-jnp.sum(probs * enxt, axis=(-2, -1))),
            "sampled_reward": jnp.mean(r),
            "marginals": jnp.mean(probs, axis=0),
        }
        return batch, stats

    def loss_fn(p, batch, t):
        m = batch.tokens.shape[1]
        flat = batch.tokens.reshape(P * m, L + 1)
        kd = jax.random.fold_in(k_drop, t) if dropout_on else None
        tok, nxt = seq_sampling.sequence_logprobs(policy, p, flat, shift=cfg.shift, dropout_key=kd)
        tok, nxt = tok.reshape(P, m, T), nxt.reshape(P, m, L, V)
        vals, aux = jax.vmap(lambda a, b, c: apply(a, b, c, hp))(tok, batch, nxt)
        return jnp.mean(vals), jax.tree.map(jnp.mean, aux)

    high = high_reward_mask(reward.table).astype(jnp.float32)
    token_kind = reward.kind != "length"

    def exact_stats(p):
        def one(x):
            il, tl = policy.markov(p, x, L)
            ril, rtl = policy.markov(ref_params, x, L)
            ip, tp = jnp.exp(il), jnp.exp(tl)
            return {
                "expected_reward": reward.expected_markov(x, ip, tp),
                "kl_pi_ref": markov.kl(il, tl, ril, rtl),
                "entropy": markov.entropy(il, tl),
                "marginals": markov.marginals(ip, tp),
            }

        return jax.tree.map(lambda a: jnp.mean(a, axis=0), jax.vmap(one)(eval_prompts))

    def record(p, stats, loss, aux):
        m = dict(exact_stats(jax.lax.stop_gradient(p)) if exact_eval else stats)
        marg = m.pop("marginals")
        if token_kind:
            m["mass_high_reward"] = jnp.mean(marg @ high)
        return {**m, **aux, "train_loss": loss}, marg

    batch_shape, stats_shape = jax.eval_shape(lambda: fresh(params, 0, 0, 0))
    batch0 = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), batch_shape)
    stats0 = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), stats_shape)
    probe = jax.eval_shape(lambda: record(params, stats0, *loss_fn(params, batch0, 0))[0])
    buf0 = jax.tree.map(lambda s: jnp.zeros((n_eval,) + s.shape, s.dtype), probe)
    snaps0 = jnp.zeros((n_snap, L, V))

    def body(carry, t):
        # One scan over t = 0..steps: sample (a new batch when due, evaluation
        # sequences when due) with a single sampler call, score the batch,
        # record the metrics when due, update. Step ``steps`` only records (its
        # update is discarded), so the sampler, the loss and the evaluation are
        # each compiled once. Offline runs collect at t = 0 only, from the
        # initial policy, which is pi_ref. The predicates depend on t alone, so
        # under vmap the conds stay branches instead of both-sides selects.
        p, s, buf, snaps, batch = carry
        last = t == cfg.steps
        eval_due = (t % every == 0) | last
        on_schedule = (t == 0) if all_offline else ((t % cfg.reuse == 0) & ~last)
        collect_due = jnp.where(offline, t == 0, on_schedule)  # per run (offline is traced)
        i = jnp.where(offline, 0, jnp.minimum(t // cfg.reuse, n_collect - 1))
        slot = jnp.where(last, n_eval - 1, t // every)
        # The branch predicate depends on t only (a real branch under vmap);
        # which runs take the new batch is decided inside, per run.
        need_draw = on_schedule | (eval_due & (not exact_eval))

        def draw_branch(b):
            nb, st = fresh(p, t, i, slot)
            return jax.tree.map(lambda new, old: jnp.where(collect_due, new, old), nb, b), st

        batch, stats = jax.lax.cond(need_draw, draw_branch, lambda b: (b, stats0), batch)
        (loss, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(p, batch, t)

        def write(buf, snaps):
            m, marg = record(p, stats, loss, aux)
            buf = jax.tree.map(lambda b, v: b.at[slot].set(v), buf, m)
            sslot = jnp.where(last, n_snap - 1, t // snap_every)
            snaps = snaps.at[sslot].set(jnp.where((t % snap_every == 0) | last, marg, snaps[sslot]))
            return buf, snaps

        buf, snaps = jax.lax.cond(eval_due, write, lambda b, s_: (b, s_), buf, snaps)
        upd, s = opt.update(g, s, p)
        return (optax.apply_updates(p, upd), s, buf, snaps, batch), None

    (_, _, buf, snaps, _), _ = jax.lax.scan(body, (params, opt_state, buf0, snaps0, batch0), jnp.arange(cfg.steps + 1))
    return {"metrics": buf, "snapshots": snaps, "final_marginals": snaps[n_snap - 1]}


_INIT_FIELDS = ("policy", "init", "shared", "vocab", "length", "sft_steps", "sft_batch", "layers", "heads", "embed", "dropout", "batching", "block")


def _init_key(cfg: SequenceRunConfig) -> SequenceRunConfig:
    # The initialisation depends on these fields only: runs that share them share
    # the compiled initialisation (the transformer's SFT) whatever their loss.
    return SequenceRunConfig(loss="sft", sampling="offline", steps=1, reward_kind="token_mean", include_prompt=False, **{f: getattr(cfg, f) for f in _INIT_FIELDS})


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
      arm_values: with arms, name -> (A,) per-arm values ("sampling" and the
        traced hyperparameters the arms set).
      seed_offset: index of the first seed (seed column = seed_offset + i).
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
    arm_values: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    seed_offset: int = 0

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
            if name == "arm":
                for n, per_arm in self.arm_values.items():
                    cols[n] = np.repeat(np.asarray(per_arm)[idx[axis]], t)
        cols["seed"] = np.repeat(idx[-1] + self.seed_offset, t)
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
            if name not in cols:
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


# Swept values are parsed exactly as the 1-token engine parses them.
from modeseek.engine import _as_sweep  # noqa: E402


def _check_traced(name, arr):
    if name in _POSITIVE:
        _checks.positive(name, arr)
    elif name in _NONNEGATIVE:
        _checks.positive(name, arr, allow_zero=True)


def _check_arms(arms, sampling):
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
        bad = sorted(set(a) - set(_TRACED) - {"sampling", "label"})
        if bad:
            raise ValueError(f"arms[{i}] sets {bad}; an arm may set 'sampling', 'label' and traced hyperparameters ({', '.join(_TRACED)})")
        samp = a.get("sampling", sampling)
        _checks.choice(f"arms[{i}]['sampling']", samp, SAMPLINGS)
        for n, v in a.items():
            if n in _TRACED:
                if np.ndim(v):
                    raise ValueError(f"arms[{i}][{n!r}] has shape {np.shape(v)}; expected a scalar")
                _check_traced(n, v)
        samplings.append(samp)
        labels.append(str(a.get("label", f"{samp} " + " ".join(f"{n}={a[n]:g}" for n in a if n in _TRACED)).strip()))
    if len(set(labels)) != len(labels):
        raise ValueError(f"arm labels {labels} are not unique; give each arm a distinct 'label'")
    return arms, labels, samplings


def _positive_int(name, v, minimum=1):
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < minimum:
        raise ValueError(f"{name}={v!r} is invalid; expected an integer >= {minimum}")


def run(
    problem: SequenceProblem | Sequence[SequenceProblem],
    *,
    loss: str,
    sampling: str = "on_policy",
    arms: Sequence[Mapping[str, Any]] | None = None,
    steps: int = 100,
    seeds: int = 1,
    key: int | jax.Array = 0,
    policy: str = "transformer",
    eval_every: int = 1,
    snapshot_every: int | None = None,
    devices: Sequence[Any] | None = None,
    seed_offset: int = 0,
    **hyperparameters,
) -> SequenceTrajectory:
    """Run ``seeds`` sequence fine-tuning runs per grid point and return their trajectories.

    Args:
      problem: a SequenceProblem, or a sequence of them (same vocabulary, length
        and reward kind) to sweep over.
      loss: a name from ``modeseek.losses.names("sequence")``.
      sampling: "offline" (one dataset from pi_ref, the frozen initial policy)
        or "on_policy" (fresh sequences every ``reuse`` steps).
      arms: optional list of dicts, each setting "sampling" and/or traced
        hyperparameters (and an optional "label"): a zipped grid axis "arm"
        (after "problem"), e.g. the paper's offline best-of-N at lr 1e-4 and
        on-policy best-of-N at lr 3e-5. All arms share one compiled program
        (the regime is a traced flag); values set by an arm override the
        keyword values.
      steps: gradient steps per run.
      seeds: independent runs per grid point.
      key: an int in [0, 2**64), a ``jax.random.key`` or a ``PRNGKey`` array;
        run i of a grid point uses ``fold_in(key, seed_offset + i)``.
      policy: "factorised", "bigram" or "transformer".
      eval_every: metrics every this many steps (and at ``steps``).
      snapshot_every: marginal snapshots every this many steps, a multiple of
        ``eval_every`` (default about steps / 10).
      devices: devices to spread the blocks of runs over (default: all of
        ``jax.devices()``); results are bit-identical to a single-device call.
      seed_offset: index of the first seed, so that a sweep split into chunks of
        seeds reproduces the unsplit sweep's runs exactly.
      **hyperparameters: static SequenceRunConfig fields (reuse, num_samples,
        num_prompts, num_eval_prompts, eval_samples, init, shared, optimizer,
        negative, advantage, kl_estimator, kl_placement, ratio, normalize,
        labels, pairing, shift, sft_steps, sft_batch, layers, heads, embed,
        dropout, batching, block) and traced HyperParams fields (learning_rate, beta,
        negative_coef, entropy_coef, clip_eps, target_margin, min_reward_gap,
        bt_scale, init_scale, sft_learning_rate), swept when given as 1-D arrays.

    Returns:
      A SequenceTrajectory.
    """
    spec = core_losses.get(loss, "sequence")
    _checks.choice("sampling", sampling, SAMPLINGS)
    arm_list, arm_labels, arm_samplings = _check_arms(arms, sampling)
    unknown = set(hyperparameters) - _STATIC - set(_TRACED)
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {sorted(unknown)}; valid names are {', '.join(sorted(_STATIC | set(_TRACED)))}")
    core_losses.check_options(loss, hyperparameters, *(arm_list or ()), kind="sequence")
    _positive_int("steps", steps)
    _positive_int("seeds", seeds)
    _positive_int("seed_offset", seed_offset, 0)
    if seed_offset + seeds > 2**32:
        raise ValueError(f"seed_offset + seeds = {seed_offset + seeds} is too large; expected at most 2**32 seed indices")
    base_key = _checks.prng_key(key)
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
    static.setdefault("batching", "map" if policy == "transformer" else "vmap")
    _checks.choice("batching", static["batching"], ("vmap", "map"))
    static.setdefault("block", 1 if static["batching"] == "map" else 8)
    _positive_int("block", static["block"])
    seq_policies.TransformerSizes(static.get("layers", 3), static.get("heads", 3), static.get("embed", 48), float(static.get("dropout", 0.0)))
    if static.get("shift") == "authors" and policy != "transformer":
        raise ValueError(f"shift='authors' is the transformer's off-by-one log-probability; expected policy='transformer' (got {policy!r})")
    reuse = static.get("reuse", 1)
    mode = arm_samplings[0] if len(set(arm_samplings)) == 1 else "mixed"
    if mode != "offline" and steps % reuse:
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
        sampling=mode,
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
    if arm_list is not None:
        grid["arm"] = np.asarray(arm_labels)
    values: dict[str, np.ndarray] = {}
    order = [n for n in hyperparameters if n in traced] + [n for n in traced if n not in hyperparameters]
    for n in order:
        swept, arr = _as_sweep(n, traced[n])
        _check_traced(n, arr)
        (grid if swept else values)[n] = arr
    arm_set = {n for a in (arm_list or []) for n in a if n in _TRACED}
    clash = sorted(n for n in arm_set if n in grid)
    if clash:
        raise ValueError(f"{clash} are both swept and set by arms; expected each traced value in one place")

    gshape = tuple(len(v) for v in grid.values())
    runs = int(np.prod(gshape, dtype=int)) * seeds
    idx = np.indices(gshape + (seeds,)).reshape(len(gshape) + 1, runs)
    axis_of = {n: i for i, n in enumerate(grid)}

    def per_run(name, scalar=None):
        if name in grid:
            return np.asarray(grid[name])[idx[axis_of[name]]]
        return np.full(runs, scalar)

    hp_values = {n: per_run(n, values.get(n)) for n in _TRACED if n in grid or n in values}
    arm_of = idx[axis_of["arm"]] if arm_list is not None else np.zeros(runs, int)
    for n in arm_set:
        base_v = hp_values.get(n, np.full(runs, getattr(HyperParams, n) if getattr(HyperParams, n) is not None else np.nan))
        hp_values[n] = np.array([float(arm_list[a].get(n, b)) for a, b in zip(arm_of, base_v)])
    if "target_margin" not in hp_values or np.any(np.isnan(hp_values["target_margin"])):
        beta = hp_values.get("beta", per_run("beta", values.get("beta", HyperParams.beta)))
        tm = hp_values.get("target_margin", np.full(runs, np.nan))
        hp_values["target_margin"] = np.where(np.isnan(tm), 1.0 / (2.0 * beta), tm)
    hp = HyperParams(**{n: jnp.asarray(hp_values.get(n, np.full(runs, getattr(HyperParams, n))), jnp.float32) for n in _TRACED})
    offline = np.array([arm_samplings[a] == "offline" for a in arm_of])

    pi = per_run("problem", 0).astype(int) if "problem" in grid else np.zeros(runs, int)
    stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *[(p.ref_probs, p.reward) for p in problems])
    ref, rew = jax.tree.map(lambda a: jnp.asarray(a[pi]), stacked)

    keys = run_keys(base_key, idx[-1] + seed_offset)
    devs = resolve_devices(devices)
    blocked = functools.partial(run_blocks, block=cfg.block, devices=devs, batching=cfg.batching)
    icfg = _init_key(cfg)
    t0 = time.perf_counter()
    init_params, init_compile = blocked(functools.partial(_init_one, icfg), (keys, hp, ref), cache_key=("sequence-init", icfg))
    t1 = time.perf_counter()
    out, run_compile = blocked(
        functools.partial(_run_one, cfg),
        (keys, hp, ref, rew, init_params, offline),
        cache_key=("sequence-run", cfg),
        working_per_run=_working_bytes(cfg),
    )
    t2 = time.perf_counter()
    compile_s = init_compile + run_compile
    run_s = (t2 - t0) - compile_s
    shape = gshape + (seeds,)
    e = len(cfg.eval_steps)
    mets = {n: np.asarray(v).reshape(shape + (e,)) for n, v in out["metrics"].items()}
    mets["reward_queries"] = np.stack([_reward_queries(cfg, o) for o in offline]).reshape(shape + (e,))
    hp_report = {n: float(values[n]) for n in values if n not in arm_set}
    if "target_margin" not in grid and "target_margin" not in hp_report and "beta" not in grid:
        hp_report["target_margin"] = float(np.asarray(hp.target_margin)[0])
    for n in _TRACED:
        if n not in grid and n not in hp_report and n not in arm_set:
            hp_report[n] = float(np.asarray(getattr(hp, n))[0])
    arm_values = {}
    if arm_list is not None:
        arm_values["sampling"] = np.asarray(arm_samplings)
        first = {a: int(np.flatnonzero(arm_of == a)[0]) for a in range(len(arm_list))}
        for n in sorted(arm_set | ({"target_margin"} if "target_margin" not in hp_report and "target_margin" not in grid else set())):
            arm_values[n] = np.array([float(hp_values[n][first[a]]) for a in range(len(arm_list))])
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
        compile_seconds=compile_s,
        run_seconds=run_s,
        arm_values=arm_values,
        seed_offset=int(seed_offset),
    )


def _working_bytes(cfg: SequenceRunConfig) -> int:
    """A rough upper estimate of one run's temporaries (bytes), for the memory check before compiling:
    per sequence position of the train and evaluation batches, its logits and gradients over the
    vocabulary and, for the transformer, every layer's activations."""
    sequences = cfg.num_prompts * cfg.num_samples + cfg.num_eval_prompts * cfg.eval_samples
    width = cfg.vocab + (cfg.layers * 8 * cfg.embed if cfg.policy == "transformer" else 0)
    return 64 * sequences * (cfg.length + 1) * width


def _reward_queries(cfg: SequenceRunConfig, offline: bool) -> np.ndarray:
    """Reward queries behind the policy at each evaluation step (N per prompt per collection)."""
    t = cfg.eval_steps
    per = cfg.num_samples * cfg.num_prompts
    if offline:
        return np.where(t > 0, per, 0).astype(np.float64)
    return (np.ceil(t / cfg.reuse) * per).astype(np.float64)

