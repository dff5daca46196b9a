"""Token-sequence policies in the one run loop: what :func:`modeseek.run` calls for a SequenceProblem.

:func:`build` returns the policy-specific parts of one run (:class:`modeseek.engine.Model`):
initial parameters, the batch collector, the loss on a batch and the
evaluation; :func:`modeseek.engine.make_train` wraps them in the scan that every
policy kind shares. The transformer is fitted to pi_data by a separate
compiled program (:func:`init_params`) that runs of every loss share.

One run (docs/paper.md §C.4-docs/paper.md §C.6, Algorithm 1):

1. initialise the policy. The factorised and bigram policies start exactly at
   i.i.d. pi_data tokens; the transformer is fit to pi_data by ``sft_steps``
   Adam steps on the per-token reverse KL along prefixes it samples itself
   (``sft_batch`` sequences per step, random prompts). pi_ref is a frozen copy
   of this initial policy, evaluated without dropout;
2. draw ``num_contexts`` train prompts (uniform tokens);
3. for each of ``steps // reuse`` iterations collect N = ``num_samples``
   sequences per prompt (offline: one dataset from pi_ref; on-policy: fresh
   sequences from the current policy) and take ``reuse`` full-batch optimiser
   steps on it (the authors' T; offline runs take all ``steps`` on one dataset).

Metrics every ``eval_every`` steps (always at 0 and at ``steps``):

* factorised / bigram: exact, by dynamic programming over the Markov chain, on
  the train prompts: expected_reward (every reward kind), kl_pi_ref =
  KL(pi || pi_ref) of whole responses, entropy, per-position marginals;
* transformer: estimated from ``eval_samples`` sequences per evaluation prompt
  (``num_eval_contexts`` fresh prompts; the authors use 100 x 1, docs/paper.md
  §A.7/docs/paper.md §C.5) by Rao-Blackwellisation: the per-position marginals are the mean of
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

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import optax

from modeseek import losses
from modeseek.batches import BestOfN, Pairs, Points
from modeseek.losses import sequences as seq_losses
from modeseek.problems import high_reward_mask, safe_log
from modeseek.sequences import batches as sb
from modeseek.sequences import markov
from modeseek.sequences import policies as seq_policies
from modeseek.sequences import sampling as seq_sampling

if TYPE_CHECKING:
    from modeseek.engine import HyperParams, RunConfig, Schedule

__all__ = ["build", "init_params", "working_bytes", "INIT_FIELDS"]

#: The RunConfig fields the initial policy depends on: runs that share them share
#: the compiled initialisation (the transformer's SFT), whatever their loss.
INIT_FIELDS = ("policy", "init", "shared", "vocab", "length", "sft_steps", "sft_batch", "layers", "heads", "embed", "dropout", "batching", "block")


def _needs(cfg: RunConfig, spec: losses.LossSpec) -> tuple[bool, bool, bool]:
    """(needs logq, needs per-token ref logp, needs ref next-token distributions)."""
    opts = spec.implementation("sequence").options
    kl = cfg.kl_estimator is not None and "kl_estimator" in opts
    # Losses with an importance ratio (or a batch statistic of the KL-shaped reward) read logq.
    logq = "clip_eps" in opts or (kl and cfg.kl_placement == "reward")
    # Pair losses and the unpaired kto / bco read log-ratios to pi_ref.
    ref = spec.batch == "pairs" or spec.family == "contrastive" or kl
    ref_next = kl and cfg.kl_estimator == "exact" and cfg.kl_placement == "loss"
    return logq, ref, ref_next


def _make_policy(cfg: RunConfig, ref_probs: jax.Array) -> seq_policies.SequencePolicy:
    sizes = seq_policies.TransformerSizes(cfg.layers, cfg.heads, cfg.embed, cfg.dropout)
    return seq_policies.make(cfg.policy, ref_probs, init=cfg.init, sizes=sizes, shared=cfg.shared)


def init_params(cfg: RunConfig, key: jax.Array, hp: HyperParams, ref_probs: jax.Array) -> Any:
    """The initial policy of one run, which is also its pi_ref (docs/paper.md §C.4).

    Markov policies start exactly at i.i.d. pi_data tokens (init "reference").
    The transformer is fit to pi_data by ``sft_steps`` Adam steps on the
    per-token reverse KL. The authors score prefixes the model generates
    itself; here the prefixes are i.i.d. pi_data tokens after a uniform
    prompt, i.e. what a model that fits pi_data generates (the fixed point of
    their procedure), which keeps a sampler out of this program.
    """
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

    def step(carry: tuple[Any, Any], xs: tuple[jax.Array, jax.Array]) -> tuple[tuple[Any, Any], None]:
        p, s = carry
        tk, kd = xs

        def loss(q: Any) -> jax.Array:
            _, nxt = seq_sampling.sequence_logprobs(policy, q, tk, dropout_key=kd if cfg.dropout > 0 else None)
            return seq_losses.reference_kl(nxt, target)

        g = jax.grad(loss)(p)
        upd, s = opt.update(g, s, p)
        return (optax.apply_updates(p, upd), s), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), (toks, drop_keys))
    return params


def build(cfg: RunConfig, key: jax.Array, hp: HyperParams, a: dict[str, Any], sched: Schedule | None = None) -> dict[str, Any]:
    """The fields of a :class:`modeseek.engine.Model`: the sequence parts of one run from its initial (= reference) parameters ``a["init_params"]``.

    ``a["offline"]`` is a traced flag, so offline and on-policy arms share a
    program (``cfg.sampling == "mixed"``). With a traced ``reuse``
    (``cfg.schedule``) the uniforms are drawn for ``steps`` collections, of
    which a run reads the first ``steps // reuse``: the leading axis of a JAX
    uniform draw is prefix-stable, so these are the draws of a static reuse.
    """
    ref_probs, reward, offline = a["ref_probs"], a["reward"], a["offline"]
    spec = losses.get(cfg.loss, "sequence")
    apply = spec.bind("sequence", cfg)
    hook = spec.batch_hook("sequence", cfg)
    need_logq, need_ref, need_ref_next = _needs(cfg, spec)
    policy = _make_policy(cfg, ref_probs)
    L, V, P, N, T = cfg.length, cfg.vocab, cfg.num_contexts, cfg.num_samples, cfg.tokens_scored
    exact_eval = policy.markov is not None
    E, S = (0, 0) if exact_eval else (cfg.num_eval_contexts, cfg.eval_samples)
    n_eval = len(cfg.eval_steps)
    n_collect = cfg.iterations
    n_pairs = N * (N - 1) // 2 if cfg.pairing == "all" else N // 2

    # Every random number of the run is drawn here, by a handful of PRNG calls
    # outside the loop: each call is a kernel to compile, and the loop indexes
    # the draws instead (one uniform per sampled token).
    k_prompts, k_evp, k_collect, k_labels, k_eval, k_drop = jax.random.split(jax.random.fold_in(key, 1), 6)
    prompts = jax.random.randint(k_prompts, (P,), 0, V)
    eval_prompts = prompts if exact_eval else jax.random.randint(k_evp, (E,), 0, V)
    u_collect = jax.random.uniform(k_collect, (n_collect, P, N, L))
    u_eval = jax.random.uniform(k_eval, (n_eval, E, S, L))
    bt = spec.batch == "pairs" and cfg.labels == "bradley_terry"
    u_labels = jax.random.uniform(k_labels, (n_collect, P, n_pairs)) if bt else None
    dropout_on = cfg.policy == "transformer" and cfg.dropout > 0

    params = a["init_params"]
    ref_params = params
    compact_bon = spec.batch == "best_of_n" and cfg.negative in (None, "worst")
    batch_prompts = jnp.repeat(prompts, N)
    all_prompts = jnp.concatenate([batch_prompts, jnp.repeat(eval_prompts, S)])

    def draw(p: Any, i: jax.Array, slot: int | jax.Array) -> tuple[jax.Array, ...]:
        """Sample the batch (P x N) and evaluation (E x S) sequences in one call."""
        u = jnp.concatenate([u_collect[i].reshape(P * N, L), u_eval[slot].reshape(E * S, L)])
        return jax.vmap(lambda x, row: seq_sampling.sample_with_uniforms(policy, p, x, row, full=True))(all_prompts, u)

    def ref_pass(tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        return seq_sampling.sequence_logprobs(policy, ref_params, tokens, shift=cfg.shift)

    def build_one(tokens: jax.Array, logq: jax.Array, ref_tok: jax.Array, ref_next: jax.Array, lab_u: jax.Array) -> sb.SequenceBatch:
        r = jax.vmap(reward)(tokens)
        items: BestOfN | Points | Pairs
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

    def collect(p: Any, t: int | jax.Array, i: int | jax.Array, slot: int | jax.Array) -> tuple[sb.SequenceBatch, dict[str, jax.Array]]:
        """New batch (from p's samples) and evaluation statistics at step t."""
        i = jnp.where(offline, 0, jnp.minimum(i, n_collect - 1))
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
        lab = u_labels[i] if u_labels is not None else jnp.zeros((P, 0))
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

    def loss_fn(p: Any, batch: sb.SequenceBatch, t: int | jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        m = batch.tokens.shape[1]
        flat = batch.tokens.reshape(P * m, L + 1)
        kd = jax.random.fold_in(k_drop, t) if dropout_on else None
        tok, nxt = seq_sampling.sequence_logprobs(policy, p, flat, shift=cfg.shift, dropout_key=kd)
        tok, nxt = tok.reshape(P, m, T), nxt.reshape(P, m, L, V)
        if hook is not None:
            batch = hook(batch, None, hp, N)
        vals, aux = jax.vmap(lambda x, b, c: apply(x, b, c, hp))(tok, batch, nxt)
        return jnp.mean(vals), jax.tree.map(jnp.mean, aux)

    high = high_reward_mask(reward.table).astype(jnp.float32)
    token_kind = reward.kind != "length"

    def exact_stats(p: Any) -> dict[str, jax.Array]:
        markov_fn = policy.markov
        if markov_fn is None:
            raise ValueError(f"policy={cfg.policy!r} has no exact Markov form; expected its metrics to be sampled")

        def one(x: jax.Array) -> dict[str, jax.Array]:
            il, tl = markov_fn(p, x, L)
            ril, rtl = markov_fn(ref_params, x, L)
            ip, tp = jnp.exp(il), jnp.exp(tl)
            return {
                "expected_reward": reward.expected_markov(x, ip, tp),
                "kl_pi_ref": markov.kl(il, tl, ril, rtl),
                "entropy": markov.entropy(il, tl),
                "marginals": markov.marginals(ip, tp),
            }

        return jax.tree.map(lambda a: jnp.mean(a, axis=0), jax.vmap(one)(eval_prompts))

    def evaluate(p: Any, t: int | jax.Array, stats: dict[str, jax.Array], loss: jax.Array, aux: dict[str, jax.Array]) -> tuple[dict[str, jax.Array], jax.Array]:
        m = dict(exact_stats(jax.lax.stop_gradient(p)) if exact_eval else stats)
        marg = m.pop("marginals")
        if token_kind:
            m["mass_high_reward"] = jnp.mean(marg @ high)
        return {**m, **aux, "train_loss": loss}, marg

    batch_shape, stats_shape = jax.eval_shape(lambda: collect(params, 0, 0, 0))
    zeros = lambda shapes: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)  # noqa: E731
    return dict(
        params=params,
        batch0=zeros(batch_shape),
        stats0=zeros(stats_shape),
        collect=collect,
        loss=loss_fn,
        evaluate=evaluate,
        snapshot_shape=(L, V),
        collects_offline=True,
        draws_for_eval=not exact_eval,
    )


def working_bytes(cfg: RunConfig) -> int:
    """A rough upper estimate of one run's temporaries (bytes), for the memory check before compiling:
    per sequence position of the train and evaluation batches, its logits and gradients over the
    vocabulary and, for the transformer, every layer's activations."""
    sequences = cfg.num_contexts * cfg.num_samples + cfg.num_eval_contexts * cfg.eval_samples
    width = cfg.vocab + (cfg.layers * 8 * cfg.embed if cfg.policy == "transformer" else 0)
    return 64 * sequences * (cfg.length + 1) * width
