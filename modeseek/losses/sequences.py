"""The core losses at sequence level (docs/paper.md §B, docs/paper.md §C.5).

Every loss is pure and unbatched (one prompt) and takes ``tok_logp`` (N, T), the
per-token log-probabilities of the batch's N sequences under pi_theta (T = L, or
L + 1 with the authors' shift), and a :class:`SequenceBatch`. The sequence
log-probability is ``tok_logp.sum(-1)``.

* Sequence-level losses (sft, best_of_n with every negative term, pref_ft, rwr,
  dpo, ipo and the contrastive catalogue) depend on the sequences only through their log-probabilities, so
  they *are* the core losses applied to the (N,) vector of sequence
  log-probabilities, with the batch's row indices in place of bins
  (:mod:`modeseek.sequences.batches`). The log-complement negative term uses the
  sequence probability, log(1 - pi(y)).
* REINFORCE and PPO act per token: the sequence advantage multiplies every
  token's score (the authors' transformer loss, docs/paper.md §C.5), the KL penalty is a sum
  of per-token estimators k(log pi_t - log pi_ref,t) (or, with "exact", the
  exact per-token KL of the next-token distributions along the sampled
  prefixes), and PPO's ratio is per token or per sequence.
* :func:`reference_kl` is the per-token reverse KL to the reference that fits
  the transformer to pi_data before fine-tuning (docs/paper.md §C.4).

With L = 1 every loss equals its 1-token core counterpart on the same draws
(tests/test_sequences.py checks values and gradients).

These are the registry's "sequence" implementations (:mod:`modeseek.losses`).
They read the batch only through its fields, so that the registry never
imports the sequence package.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

from modeseek import _checks
from modeseek.losses import contrastive, mode_covering, on_policy
from modeseek.losses.on_policy import _capped_weight, _clipped_surrogate, _shaped_advantages, _signal_factor, group_advantages, kl_estimate
from modeseek.metrics import kl

if TYPE_CHECKING:
    from modeseek.sequences.batches import SequenceBatch

__all__ = [
    "RATIOS",
    "sft",
    "best_of_n",
    "pref_ft",
    "rwr",
    "dpo",
    "online_dpo",
    "ipo",
    "slic",
    "simpo",
    "cpo",
    "orpo",
    "kto",
    "bco",
    "apo_zero",
    "apo_down",
    "sppo",
    "dpop",
    "chi_po",
    "robust_dpo",
    "reinforce",
    "ppo",
    "reference_kl",
    "LOSS_AGGREGATIONS",
    "grpo",
    "gspo",
    "cispo",
    "reinforce_pp",
    "gpg",
    "sequence_stat",
]

#: PPO importance ratios: one per token (the authors' transformer PPO, docs/paper.md §B.5) or one per sequence.
RATIOS = ("token", "sequence")
#: How GRPO-style losses reduce per-token terms: the mean over every token of
#: the batch (DAPO), the mean over sequences of each sequence's token sum
#: (Dr. GRPO's constant normaliser, up to that constant) or of its token mean
#: (GRPO). On these fixed-length policies (every sequence has T tokens)
#: "token_mean" and "seq_mean_token_mean" coincide, and "seq_mean_token_sum"
#: is T times them.
LOSS_AGGREGATIONS = ("token_mean", "seq_mean_token_sum", "seq_mean_token_mean")


def _seq(tok_logp: jax.Array) -> jax.Array:
    return jnp.sum(tok_logp, axis=-1)


def sft(tok_logp: jax.Array, batch: SequenceBatch) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Negative log-likelihood of the sampled sequences, -sum_j w_j log pi(y_j) (core sft).

    ``tok_logp``: (N, T) per-token log pi_theta of the batch's N sequences; returns (loss (), aux).
    """
    return mode_covering.sft(_seq(tok_logp), batch.items)


def best_of_n(tok_logp: jax.Array, batch: SequenceBatch, *, negative: str | None = None, negative_coef: float | jax.Array = 0.05) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Best-of-N maximum likelihood on sequences, with the core's negative terms (docs/paper.md §B.2).

    ``tok_logp``: (N, T) per-token log pi_theta of the batch's N sequences; returns (loss (), aux).
    """
    return mode_covering.best_of_n(_seq(tok_logp), batch.items, negative=negative, negative_coef=negative_coef)


def pref_ft(tok_logp: jax.Array, batch: SequenceBatch) -> tuple[jax.Array, dict[str, jax.Array]]:
    """NLL of the chosen sequence of each pair (core pref_ft).

    ``tok_logp``: (N, T) per-token log pi_theta of the batch's N sequences; returns (loss (), aux).
    """
    return mode_covering.pref_ft(_seq(tok_logp), batch.items)


def rwr(tok_logp: jax.Array, batch: SequenceBatch, *, beta: float | jax.Array, normalize: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Reward-weighted regression on sequences, weights exp(r / beta) normalised per prompt (docs/paper.md §B.3).

    ``tok_logp``: (N, T) per-token log pi_theta of the batch's N sequences; returns (loss (), aux).
    """
    return mode_covering.rwr(_seq(tok_logp), batch.items, beta=beta, normalize=normalize)


def dpo(tok_logp: jax.Array, batch: SequenceBatch, *, beta: float | jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """DPO on sequence log-ratios to pi_ref (docs/paper.md §B.6; pi_ref is the frozen initial policy, docs/paper.md §C.4).

    ``tok_logp``: (N, T) per-token log pi_theta of the batch's N sequences; returns (loss (), aux).
    """
    return contrastive.dpo(_seq(tok_logp), batch.items, ref_logp=_seq(batch.ref_logp), beta=beta)


#: Online DPO on sequences is DPO on fresh policy pairs: the same function, registered as online_dpo.
online_dpo = dpo


def ipo(tok_logp: jax.Array, batch: SequenceBatch, *, target_margin: float | jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """IPO, (h - target_margin)^2 on sequence margins (docs/paper.md §B.6; the authors' beta = 10 is the target margin).

    ``tok_logp``: (N, T) per-token log pi_theta of the batch's N sequences; returns (loss (), aux).
    """
    return contrastive.ipo(_seq(tok_logp), batch.items, ref_logp=_seq(batch.ref_logp), target_margin=target_margin)


def _pair(name: str, tok_logp: jax.Array, batch: SequenceBatch, **kw: float | jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The core pair loss ``name`` on the (N,) sequence log-probabilities, pi_ref's from the batch."""
    return getattr(contrastive, name)(_seq(tok_logp), batch.items, ref_logp=_seq(batch.ref_logp), **kw)


def slic(tok_logp: jax.Array, batch: SequenceBatch, *, beta: float | jax.Array, nll_coef: float | jax.Array = 1.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """SLiC-HF's hinge on sequence margins plus the chosen sequence's NLL (core slic).

    ``tok_logp``: (N, T) per-token log pi_theta of the batch's N sequences; returns (loss (), aux).
    """
    return _pair("slic", tok_logp, batch, beta=beta, nll_coef=nll_coef)


def simpo(tok_logp: jax.Array, batch: SequenceBatch, *, beta: float | jax.Array, simpo_gamma: float | jax.Array = 0.5) -> tuple[jax.Array, dict[str, jax.Array]]:
    """SimPO on sequences, |y| = the number of scored tokens per sequence (core simpo).

    ``tok_logp``: (N, T) per-token log pi_theta of the batch's N sequences; returns (loss (), aux).
    """
    return _pair("simpo", tok_logp, batch, beta=beta, simpo_gamma=simpo_gamma, length=float(tok_logp.shape[-1]))


def cpo(tok_logp: jax.Array, batch: SequenceBatch, *, beta: float | jax.Array, nll_coef: float | jax.Array = 1.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """CPO on sequence log-probabilities (core cpo).

    ``tok_logp``: (N, T) per-token log pi_theta of the batch's N sequences; returns (loss (), aux).
    """
    return _pair("cpo", tok_logp, batch, beta=beta, nll_coef=nll_coef)


def orpo(tok_logp: jax.Array, batch: SequenceBatch, *, beta: float | jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """ORPO on sequences with per-token geometric-mean probabilities, |y| = scored tokens (core orpo).

    ``tok_logp``: (N, T) per-token log pi_theta of the batch's N sequences; returns (loss (), aux).
    """
    return _pair("orpo", tok_logp, batch, beta=beta, length=float(tok_logp.shape[-1]))


def apo_zero(tok_logp: jax.Array, batch: SequenceBatch, *, beta: float | jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """APO-zero on sequence log-ratios (core apo_zero).

    ``tok_logp``: (N, T) per-token log pi_theta of the batch's N sequences; returns (loss (), aux).
    """
    return _pair("apo_zero", tok_logp, batch, beta=beta)


def apo_down(tok_logp: jax.Array, batch: SequenceBatch, *, beta: float | jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """APO-down on sequence log-ratios (core apo_down).

    ``tok_logp``: (N, T) per-token log pi_theta of the batch's N sequences; returns (loss (), aux).
    """
    return _pair("apo_down", tok_logp, batch, beta=beta)


def sppo(tok_logp: jax.Array, batch: SequenceBatch, *, beta: float | jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """SPPO (hard labels) on sequence log-ratios (core sppo).

    ``tok_logp``: (N, T) per-token log pi_theta of the batch's N sequences; returns (loss (), aux).
    """
    return _pair("sppo", tok_logp, batch, beta=beta)


def dpop(tok_logp: jax.Array, batch: SequenceBatch, *, beta: float | jax.Array, dpop_lambda: float | jax.Array = 50.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """DPO-Positive on sequence log-ratios (core dpop).

    ``tok_logp``: (N, T) per-token log pi_theta of the batch's N sequences; returns (loss (), aux).
    """
    return _pair("dpop", tok_logp, batch, beta=beta, dpop_lambda=dpop_lambda)


def chi_po(tok_logp: jax.Array, batch: SequenceBatch, *, beta: float | jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """chi^2-PO on sequence log-ratios, each clipped at CHI_PO_MAX_LOG_RATIO (core chi_po).

    ``tok_logp``: (N, T) per-token log pi_theta of the batch's N sequences; returns (loss (), aux).
    """
    return _pair("chi_po", tok_logp, batch, beta=beta)


def robust_dpo(tok_logp: jax.Array, batch: SequenceBatch, *, beta: float | jax.Array, label_smoothing: float | jax.Array = 0.1) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Label-smoothed DPO on sequence log-ratios (core robust_dpo).

    ``tok_logp``: (N, T) per-token log pi_theta of the batch's N sequences; returns (loss (), aux).
    """
    return _pair("robust_dpo", tok_logp, batch, beta=beta, label_smoothing=label_smoothing)


def kto(
    tok_logp: jax.Array, batch: SequenceBatch, *, beta: float | jax.Array, desirable_weight: float | jax.Array = 1.0, undesirable_weight: float | jax.Array = 1.0
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """KTO on sequences with the reference point estimated from the batch (core kto for the rest).

    The exact KL(pi || pi_ref) of whole sequences is not available for the
    transformer, so z0 = max(0, sum_j w_j h_j), detached: the batch's mean
    sequence log-ratio, clamped at 0 as in the paper (Ethayarajh et al. 2024,
    arXiv 2402.01306), which estimates it from the microbatch's mismatched
    pairs. It is an unbiased estimate of the KL only for on-policy draws; on
    offline draws from pi_ref it estimates -KL(pi_ref || pi), so the clamp makes it 0.
    With L = 1 this differs from the core kto, whose z0 is the exact KL.

    ``tok_logp``: (N, T) per-token log pi_theta of the batch's N sequences; returns (loss (), aux).
    """
    h = _seq(tok_logp) - _seq(batch.ref_logp)
    w = jax.lax.stop_gradient(batch.items.weight)
    z0 = jnp.maximum(jnp.sum(w * jax.lax.stop_gradient(h)[batch.items.y]), 0.0)
    return contrastive.kto_with_reference_point(h[batch.items.y], batch.items, z0, beta=beta, desirable_weight=desirable_weight, undesirable_weight=undesirable_weight)


def bco(tok_logp: jax.Array, batch: SequenceBatch, *, beta: float | jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """BCO on sequence log-ratios, reward shift from the batch (core bco).

    ``tok_logp``: (N, T) per-token log pi_theta of the batch's N sequences; returns (loss (), aux).
    """
    return contrastive.bco(_seq(tok_logp), batch.items, ref_logp=_seq(batch.ref_logp), beta=beta)


def _advantages(batch: SequenceBatch, *, advantage: str, beta: float | jax.Array, kl_estimator: str | None, kl_placement: str) -> jax.Array:
    # A penalty in the reward sums the sampled tokens' estimates.
    sampled_kl = lambda est: jnp.sum(kl_estimate(batch.logq, batch.ref_logp, est), axis=-1)  # noqa: E731
    return _shaped_advantages(batch.reward, batch.items, sampled_kl, advantage=advantage, beta=beta, kl_estimator=kl_estimator, kl_placement=kl_placement)


def _penalties(
    tok_logp: jax.Array, batch: SequenceBatch, next_logp: jax.Array | None, *, beta: float | jax.Array, kl_estimator: str | None, kl_placement: str, entropy_coef: float | jax.Array
) -> jax.Array:
    w = jax.lax.stop_gradient(batch.items.weight)
    extra = jnp.zeros(())
    if next_logp is not None:
        # Exact per-token entropy of the next-token distributions along the sampled prefixes.
        ent = -jnp.sum(jnp.exp(next_logp) * next_logp, axis=(-2, -1))
        extra = extra - entropy_coef * jnp.sum(w * ent)
    if kl_estimator is not None and kl_placement == "loss":
        if kl_estimator == "exact":
            if next_logp is None or batch.ref_next_logp is None:
                raise ValueError("kl_estimator='exact' needs next_logp and batch.ref_next_logp")
            per_seq = jnp.sum(kl(next_logp, batch.ref_next_logp), axis=-1)
        else:
            per_seq = jnp.sum(kl_estimate(tok_logp, batch.ref_logp, kl_estimator), axis=-1)
        extra = extra + beta * jnp.sum(w * per_seq)
    return extra


def reinforce(
    tok_logp: jax.Array,
    batch: SequenceBatch,
    *,
    next_logp: jax.Array | None = None,
    advantage: str = "mean",
    beta: float | jax.Array = 0.0,
    kl_estimator: str | None = None,
    kl_placement: str = "reward",
    entropy_coef: float | jax.Array = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """REINFORCE with the sequence advantage on every token: -sum_j w_j A_j sum_t log pi_t(y_j).

    Family: mode-seeking on-policy (docs/paper.md §B.4, docs/paper.md §C.5). With
    ``kl_placement="loss"`` and ``kl_estimator="k1"`` the penalty is the
    authors' beta * sum_t (log pi_t - log pi_ref,t) on the sampled tokens.

    Args:
      tok_logp: (N, T) per-token log pi_theta of the batch's sequences.
      batch: SequenceBatch with Points items.
      next_logp: (N, L, V) next-token log-distributions of pi_theta along the
        sequences; needed for entropy_coef > 0 and kl_estimator="exact".
      advantage: one of modeseek.losses.ADVANTAGES (per-prompt, over the N sequences).
      beta: KL coefficient.
      kl_estimator: None, "k1", "k2", "k3" (per token, summed) or "exact".
      kl_placement: "reward" (r - beta sum_t k_t, before the advantage) or "loss".
      entropy_coef: weight of the per-token entropy bonus.
    """
    a = _advantages(batch, advantage=advantage, beta=beta, kl_estimator=kl_estimator, kl_placement=kl_placement)
    w = jax.lax.stop_gradient(batch.items.weight)
    loss = -jnp.sum(w * a * _seq(tok_logp))
    loss = loss + _penalties(tok_logp, batch, next_logp, beta=beta, kl_estimator=kl_estimator, kl_placement=kl_placement, entropy_coef=entropy_coef)
    return loss, {}


def ppo(
    tok_logp: jax.Array,
    batch: SequenceBatch,
    *,
    next_logp: jax.Array | None = None,
    advantage: str = "mean",
    clip_eps: float | jax.Array = 0.2,
    ratio: str = "token",
    beta: float | jax.Array = 0.0,
    kl_estimator: str | None = None,
    kl_placement: str = "reward",
    entropy_coef: float | jax.Array = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """PPO's clipped surrogate against the sampling policy, per token or per sequence.

    "token": sum_j w_j sum_t max(-A_j rho_jt, -A_j clip(rho_jt, 1 - eps, 1 + eps)),
    rho_jt = pi_t(y_j) / q_t(y_j), the authors' transformer PPO (docs/paper.md §B.5:
    no value network, the sequence advantage on every token, summed over
    tokens). "sequence": one ratio rho_j = pi(y_j) / q(y_j) per sequence.
    Family: mode-seeking on-policy.

    Args:
      tok_logp (N, T), batch, next_logp (N, L, V), advantage, beta, kl_estimator, kl_placement,
      entropy_coef: as in :func:`reinforce`.
      clip_eps: clip range (0.2).
      ratio: one of RATIOS.
    """
    _checks.choice("ratio", ratio, RATIOS)
    a = _advantages(batch, advantage=advantage, beta=beta, kl_estimator=kl_estimator, kl_placement=kl_placement)
    logq = jax.lax.stop_gradient(batch.logq)
    w = jax.lax.stop_gradient(batch.items.weight)
    if ratio == "token":
        per_seq = jnp.sum(_clipped_surrogate(tok_logp - logq, a[:, None], clip_eps), axis=-1)
    else:
        per_seq = _clipped_surrogate(_seq(tok_logp) - _seq(logq), a, clip_eps)
    loss = jnp.sum(w * per_seq)
    loss = loss + _penalties(tok_logp, batch, next_logp, beta=beta, kl_estimator=kl_estimator, kl_placement=kl_placement, entropy_coef=entropy_coef)
    return loss, {}


def reference_kl(next_logp: jax.Array, ref_next_logp: jax.Array) -> jax.Array:
    """Per-token reverse KL to the reference, summed over positions and averaged over sequences.

    mean_j sum_t KL(pi_theta(. | prefix_jt) || pi_ref(. | prefix_jt)). The
    authors fit the transformer to pi_data with it, on prefixes the model
    generates itself, 100 Adam steps at lr 0.01 (docs/paper.md §C.4); with L = 1 it
    is the core :func:`modeseek.policies.kl_to_reference`.

    Args:
      next_logp: (N, L, V) log-distributions of pi_theta along N prefixes.
      ref_next_logp: (N, L, V) of the reference, or (V,) for a
        prefix-independent target such as pi_data.
    """
    ref = jnp.broadcast_to(ref_next_logp, next_logp.shape)
    return jnp.mean(jnp.sum(kl(next_logp, jax.lax.stop_gradient(ref)), axis=-1))


# ----------------------------------------------------------------------------- group methods


def _sampled_kl(batch: SequenceBatch) -> Callable[[str], jax.Array]:
    return lambda est: jnp.sum(kl_estimate(batch.logq, batch.ref_logp, est), axis=-1)


def _aggregate(per_token: jax.Array, batch: SequenceBatch, loss_aggregation: str) -> jax.Array:
    """Reduce (N, T) per-token terms with the weights of the N sequences (see LOSS_AGGREGATIONS)."""
    _checks.choice("loss_aggregation", loss_aggregation, LOSS_AGGREGATIONS)
    w = jax.lax.stop_gradient(batch.items.weight)
    per_seq = jnp.sum(per_token, axis=-1)
    if loss_aggregation == "seq_mean_token_sum":
        return jnp.sum(w * per_seq)
    # Every sequence has T tokens, so the token mean over the batch is the mean of the sequences' token means.
    return jnp.sum(w * per_seq) / per_token.shape[-1]


def _group_terms(
    tok_logp: jax.Array,
    batch: SequenceBatch,
    next_logp: jax.Array | None,
    per_token: jax.Array,
    *,
    loss_aggregation: str,
    drop_uniform_groups: bool,
    beta: float | jax.Array,
    kl_estimator: str | None,
    kl_placement: str,
) -> jax.Array:
    """Aggregated per-token terms plus the KL penalty (per token, aggregated alike), times the dynamic-sampling factor."""
    kl_terms = _penalties(tok_logp, batch, next_logp, beta=beta, kl_estimator=kl_estimator, kl_placement=kl_placement, entropy_coef=0.0)
    scale = 1.0 if loss_aggregation == "seq_mean_token_sum" else 1.0 / tok_logp.shape[-1]
    loss = _aggregate(per_token, batch, loss_aggregation) + scale * kl_terms
    if drop_uniform_groups:
        loss = loss * _signal_factor(batch.items.stat)
    return loss


def grpo(
    tok_logp: jax.Array,
    batch: SequenceBatch,
    *,
    next_logp: jax.Array | None = None,
    scale_rewards: str = "group",
    drop_uniform_groups: bool = False,
    loss_aggregation: str = "seq_mean_token_mean",
    clip_eps: float | jax.Array = 0.2,
    clip_eps_high: float | jax.Array | None = None,
    beta: float | jax.Array = 0.0,
    kl_estimator: str | None = None,
    kl_placement: str = "reward",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """GRPO on sequences: the group advantage on every token, one clipped ratio per token.

    Per token t of sequence j: max(-A_j rho_jt, -A_j clip(rho_jt, 1 - eps, 1 + eps_high)),
    rho_jt = pi_t(y_j) / q_t(y_j), reduced by ``loss_aggregation`` (GRPO:
    seq_mean_token_mean; DAPO: token_mean; Dr. GRPO: seq_mean_token_sum over a
    constant). A KL penalty in the loss is the per-token sum of estimators,
    reduced alike. Source and differences: :func:`modeseek.losses.on_policy.grpo`.

    Args:
      tok_logp (N, T), batch, next_logp (N, L, V): as in :func:`reinforce`.
      loss_aggregation: one of LOSS_AGGREGATIONS.
      scale_rewards, drop_uniform_groups, clip_eps, clip_eps_high, beta,
      kl_estimator, kl_placement: as in the bandit grpo.
    """
    a = group_advantages(batch.reward, batch.items, _sampled_kl(batch), scale_rewards=scale_rewards, beta=beta, kl_estimator=kl_estimator, kl_placement=kl_placement, stat=batch.items.stat)
    per_token = _clipped_surrogate(tok_logp - jax.lax.stop_gradient(batch.logq), a[:, None], clip_eps, clip_eps_high)
    loss = _group_terms(
        tok_logp,
        batch,
        next_logp,
        per_token,
        loss_aggregation=loss_aggregation,
        drop_uniform_groups=drop_uniform_groups,
        beta=beta,
        kl_estimator=kl_estimator,
        kl_placement=kl_placement,
    )
    return loss, {}


def gspo(
    tok_logp: jax.Array,
    batch: SequenceBatch,
    *,
    next_logp: jax.Array | None = None,
    scale_rewards: str = "group",
    drop_uniform_groups: bool = False,
    clip_eps: float | jax.Array = 0.2,
    clip_eps_high: float | jax.Array | None = None,
    beta: float | jax.Array = 0.0,
    kl_estimator: str | None = None,
    kl_placement: str = "reward",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """GSPO on sequences: one ratio per sequence, s_j = exp(mean_t log(pi_t / q_t)), clipped per sequence.

    sum_j w_j max(-A_j s_j, -A_j clip(s_j, 1 - eps, 1 + eps_high)) (+ the
    per-sequence KL penalty, summed over tokens). Source and notes:
    :func:`modeseek.losses.on_policy.gspo`.

    ``tok_logp``: (N, T) per-token log pi_theta of the batch's N sequences; returns (loss (), aux).
    """
    a = group_advantages(batch.reward, batch.items, _sampled_kl(batch), scale_rewards=scale_rewards, beta=beta, kl_estimator=kl_estimator, kl_placement=kl_placement, stat=batch.items.stat)
    log_s = jnp.mean(tok_logp - jax.lax.stop_gradient(batch.logq), axis=-1)
    per_seq = _clipped_surrogate(log_s, a, clip_eps, clip_eps_high)
    # One term per sequence: the "sum over tokens" aggregation of a (N, 1) array.
    return _group_terms(
        tok_logp,
        batch,
        next_logp,
        per_seq[:, None],
        loss_aggregation="seq_mean_token_sum",
        drop_uniform_groups=drop_uniform_groups,
        beta=beta,
        kl_estimator=kl_estimator,
        kl_placement=kl_placement,
    ), {}


def cispo(
    tok_logp: jax.Array,
    batch: SequenceBatch,
    *,
    next_logp: jax.Array | None = None,
    scale_rewards: str = "group",
    loss_aggregation: str = "token_mean",
    clip_eps: float | jax.Array = 0.2,
    clip_eps_high: float | jax.Array | None = None,
    beta: float | jax.Array = 0.0,
    kl_estimator: str | None = None,
    kl_placement: str = "reward",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """CISPO on sequences: -sg(min(rho_jt, 1 + eps_high)) A_j log pi_t(y_j) per token, reduced by ``loss_aggregation``.

    The MiniMax-M1 report aggregates over tokens (token_mean, the default).
    Source and notes: :func:`modeseek.losses.on_policy.cispo`.

    ``tok_logp``: (N, T) per-token log pi_theta of the batch's N sequences; returns (loss (), aux).
    """
    a = group_advantages(batch.reward, batch.items, _sampled_kl(batch), scale_rewards=scale_rewards, beta=beta, kl_estimator=kl_estimator, kl_placement=kl_placement, stat=batch.items.stat)
    weight = _capped_weight(tok_logp - batch.logq, clip_eps if clip_eps_high is None else clip_eps_high)
    per_token = -weight * a[:, None] * tok_logp
    return _group_terms(
        tok_logp,
        batch,
        next_logp,
        per_token,
        loss_aggregation=loss_aggregation,
        drop_uniform_groups=False,
        beta=beta,
        kl_estimator=kl_estimator,
        kl_placement=kl_placement,
    ), {}


def reinforce_pp(
    tok_logp: jax.Array,
    batch: SequenceBatch,
    *,
    next_logp: jax.Array | None = None,
    baseline: bool = False,
    clip_eps: float | jax.Array = 0.2,
    beta: float | jax.Array = 0.0,
    kl_estimator: str | None = None,
    kl_placement: str = "reward",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """REINFORCE++ on sequences: the batch-whitened sequence advantage on every token, PPO's per-token clip, summed over tokens.

    The paper's KL is per token in the reward; here a KL in the reward is the
    sequence's sum of per-token estimates, as for :func:`reinforce`. Source and
    notes: :func:`modeseek.losses.on_policy.reinforce_pp`.

    ``tok_logp``: (N, T) per-token log pi_theta of the batch's N sequences; returns (loss (), aux).
    """
    a = on_policy._reinforce_pp_advantages(batch.reward, batch.items, _sampled_kl(batch), baseline=baseline, beta=beta, kl_estimator=kl_estimator, kl_placement=kl_placement)
    w = jax.lax.stop_gradient(batch.items.weight)
    per_seq = jnp.sum(_clipped_surrogate(tok_logp - jax.lax.stop_gradient(batch.logq), a[:, None], clip_eps), axis=-1)
    loss = jnp.sum(w * per_seq)
    loss = loss + _penalties(tok_logp, batch, next_logp, beta=beta, kl_estimator=kl_estimator, kl_placement=kl_placement, entropy_coef=0.0)
    return loss, {}


def gpg(tok_logp: jax.Array, batch: SequenceBatch) -> tuple[jax.Array, dict[str, jax.Array]]:
    """GPG on sequences: the core GPG on the (N,) sequence log-probabilities (:func:`modeseek.losses.on_policy.gpg`).

    ``tok_logp``: (N, T) per-token log pi_theta of the batch's N sequences; returns (loss (), aux).
    """
    return on_policy.gpg(_seq(tok_logp), batch.items)


def sequence_stat(stat_fn: Callable[..., dict[str, jax.Array] | None]) -> Callable[..., dict[str, jax.Array] | None]:
    """The sequence form ``(batch, ref, **options) -> stat`` of a per-context statistic (ref unused: pi_ref comes in the batch)."""

    def stat(batch: SequenceBatch, ref: None, **options: Any) -> dict[str, jax.Array] | None:
        return stat_fn(batch.reward, batch.items, _sampled_kl(batch), **options)

    return stat
