"""The core losses at sequence level (docs/paper.md §B, docs/paper.md §C.5).

Every loss is pure and unbatched (one prompt) and takes ``tok_logp`` (N, T), the
per-token log-probabilities of the batch's N sequences under pi_theta (T = L, or
L + 1 with the authors' shift), and a :class:`SequenceBatch`. The sequence
log-probability is ``tok_logp.sum(-1)``.

* Sequence-level losses (sft, best_of_n with every negative term, pref_ft, rwr,
  dpo, ipo) depend on the sequences only through their log-probabilities, so
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

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

from modeseek import _checks
from modeseek.losses import contrastive, mode_covering
from modeseek.losses.on_policy import _clipped_surrogate, _shaped_advantages, kl_estimate
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
    "reinforce",
    "ppo",
    "reference_kl",
]

#: PPO importance ratios: one per token (the authors' transformer PPO, docs/paper.md §B.5) or one per sequence.
RATIOS = ("token", "sequence")


def _seq(tok_logp):
    return jnp.sum(tok_logp, axis=-1)


def sft(tok_logp, batch: SequenceBatch):
    """Negative log-likelihood of the sampled sequences, -sum_j w_j log pi(y_j) (core sft)."""
    return mode_covering.sft(_seq(tok_logp), batch.items)


def best_of_n(tok_logp, batch: SequenceBatch, *, negative=None, negative_coef=0.05):
    """Best-of-N maximum likelihood on sequences, with the core's negative terms (docs/paper.md §B.2)."""
    return mode_covering.best_of_n(_seq(tok_logp), batch.items, negative=negative, negative_coef=negative_coef)


def pref_ft(tok_logp, batch: SequenceBatch):
    """NLL of the chosen sequence of each pair (core pref_ft)."""
    return mode_covering.pref_ft(_seq(tok_logp), batch.items)


def rwr(tok_logp, batch: SequenceBatch, *, beta, normalize: bool = False):
    """Reward-weighted regression on sequences, weights exp(r / beta) normalised per prompt (docs/paper.md §B.3)."""
    return mode_covering.rwr(_seq(tok_logp), batch.items, beta=beta, normalize=normalize)


def dpo(tok_logp, batch: SequenceBatch, *, beta):
    """DPO on sequence log-ratios to pi_ref (docs/paper.md §B.6; pi_ref is the frozen initial policy, docs/paper.md §C.4)."""
    return contrastive.dpo(_seq(tok_logp), batch.items, ref_logp=_seq(batch.ref_logp), beta=beta)


#: Online DPO on sequences is DPO on fresh policy pairs: the same function, registered as online_dpo.
online_dpo = dpo


def ipo(tok_logp, batch: SequenceBatch, *, target_margin):
    """IPO, (h - target_margin)^2 on sequence margins (docs/paper.md §B.6; the authors' beta = 10 is the target margin)."""
    return contrastive.ipo(_seq(tok_logp), batch.items, ref_logp=_seq(batch.ref_logp), target_margin=target_margin)


def _advantages(batch: SequenceBatch, *, advantage, beta, kl_estimator, kl_placement):
    # A penalty in the reward sums the sampled tokens' estimates.
    sampled_kl = lambda est: jnp.sum(kl_estimate(batch.logq, batch.ref_logp, est), axis=-1)  # noqa: E731
    return _shaped_advantages(batch.reward, batch.items, sampled_kl, advantage=advantage, beta=beta, kl_estimator=kl_estimator, kl_placement=kl_placement)


def _penalties(tok_logp, batch: SequenceBatch, next_logp, *, beta, kl_estimator, kl_placement, entropy_coef):
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
    tok_logp,
    batch: SequenceBatch,
    *,
    next_logp=None,
    advantage: str = "mean",
    beta=0.0,
    kl_estimator=None,
    kl_placement: str = "reward",
    entropy_coef=0.0,
):
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
    tok_logp,
    batch: SequenceBatch,
    *,
    next_logp=None,
    advantage: str = "mean",
    clip_eps=0.2,
    ratio: str = "token",
    beta=0.0,
    kl_estimator=None,
    kl_placement: str = "reward",
    entropy_coef=0.0,
):
    """PPO's clipped surrogate against the sampling policy, per token or per sequence.

    "token": sum_j w_j sum_t max(-A_j rho_jt, -A_j clip(rho_jt, 1 - eps, 1 + eps)),
    rho_jt = pi_t(y_j) / q_t(y_j), the authors' transformer PPO (docs/paper.md §B.5:
    no value network, the sequence advantage on every token, summed over
    tokens). "sequence": one ratio rho_j = pi(y_j) / q(y_j) per sequence.
    Family: mode-seeking on-policy.

    Args:
      tok_logp, batch, next_logp, advantage, beta, kl_estimator, kl_placement,
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


def reference_kl(next_logp, ref_next_logp):
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
