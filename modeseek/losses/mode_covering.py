"""Mode-covering objectives: forward KL and (weighted) maximum likelihood.

Each of these maximises a weighted log-likelihood of responses drawn from a
fixed or reweighted distribution; in the population limit this is a forward KL,
KL(p_data^w || pi_theta), which spreads mass over everything the data covers
(docs/paper.md §E.2: Pref-FT, offline best-of-N, offline RWR). Used on-policy,
the same losses become iterated best-of-N / ReST / RWR.

All functions are unbatched: ``logp`` is the (K,) log-probability vector of one
context; batch over contexts with ``jax.vmap``. Each returns ``(loss, aux)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from modeseek.batches import BestOfN, Pairs, PairTable, Points, Target, pair_expectation
from modeseek.losses.contrastive import log1mexp
from modeseek.losses.on_policy import advantages

__all__ = ["sft", "best_of_n", "pref_ft", "rwr", "forward_kl", "NEGATIVE_TERMS"]

NEGATIVE_TERMS = ("worst", "mean_worse", "sum_worse", "log_complement")


def _wsum(w: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.sum(jax.lax.stop_gradient(w) * x)


def sft(logp: jax.Array, batch: Points) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Negative log-likelihood of the batch responses: -sum_j w_j log pi(y_j).

    Family: mode-covering. Exact on q it is the cross-entropy H(q, pi), i.e.
    forward KL(q || pi) up to a constant.

    Args:
      logp: (K,) log pi_theta(.|x).
      batch: Points (only y and weight are used).
    """
    return -_wsum(batch.weight, logp[batch.y]), {}


def log_complement(logp_y: jax.Array) -> jax.Array:
    """log(1 - pi(y)) from log pi(y) (:func:`modeseek.losses.contrastive.log1mexp`).

    log p is capped at -1e-6, so that the term stays finite (at most 13.8 per
    sample) once the policy has concentrated on y.
    """
    return log1mexp(logp_y)


def best_of_n(logp: jax.Array, batch: BestOfN, *, negative: str | None = None, negative_coef: float | jax.Array = 0.05) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Best-of-N maximum likelihood, optionally with an explicit negative gradient.

    Family: mode-covering without ``negative`` (offline: Pref-FT / filtered BC;
    on-policy: iterated best-of-N / ReST / RAFT). With ``negative`` it gains a
    negative gradient (docs/paper.md §B.2, Lemma 6.2 with c2 = negative_coef):

    * None: -log pi(y_best)
    * "worst": ... + coef * log pi(y_worst)
    * "mean_worse": ... + coef/(N-1) * sum_{j != best} log pi(y_j)
    * "sum_worse": ... + coef * sum_{j != best} log pi(y_j)
    * "log_complement": ... - coef * sum_{j != best} log(1 - pi(y_j))

    The "worse" samples are all draws other than the best one, duplicates of the
    best bin included, as in the paper's code.

    Args:
      logp: (K,) log pi_theta(.|x).
      batch: BestOfN order statistics (sampled or exact).
      negative: None or one of NEGATIVE_TERMS.
      negative_coef: c2 >= 0 (the paper code's beta, default 0.05).
    """
    loss = -_wsum(batch.best_weight, logp[batch.best])
    if negative is None:
        return loss, {}
    if negative == "worst":
        neg = _wsum(batch.worst_weight, logp[batch.worst])
    elif negative == "sum_worse":
        neg = _wsum(batch.others_weight, logp[batch.others])
    elif negative == "mean_worse":
        neg = _wsum(batch.others_weight, logp[batch.others]) / jnp.maximum(batch.num_samples - 1.0, 1.0)
    elif negative == "log_complement":
        neg = -_wsum(batch.others_weight, log_complement(logp[batch.others]))
    else:
        raise ValueError(f"negative={negative!r} is not valid; expected None or one of {', '.join(NEGATIVE_TERMS)}")
    return loss + negative_coef * neg, {}


def pref_ft(logp: jax.Array, batch: Pairs | PairTable) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Preference fine-tuning: NLL of the chosen response of each pair, -sum w log pi(y_w).

    Family: mode-covering (forward KL to the distribution of preferred responses).

    Args:
      logp: (K,) log pi_theta(.|x).
      batch: Pairs ((M,) sampled pairs) or PairTable (all K x K pairs, exact).
    """
    if isinstance(batch, PairTable):
        k = logp.shape[0]
        return pair_expectation(batch, lambda rows: jnp.broadcast_to(-logp[rows][:, None], (rows.shape[0], k))), {}
    return -_wsum(batch.weight, logp[batch.chosen]), {}


def rwr(logp: jax.Array, batch: Points, *, beta: float | jax.Array, normalize: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Reward-weighted regression: NLL weighted by exp(r / beta), self-normalised per context.

    Family: mode-covering. The weights w_j exp(r_j/beta) are normalised to sum to 1
    within the context (computed in log space, so any beta > 0 is safe); exact on
    q this is the forward KL(q exp(r/beta)/Z || pi) (docs/paper.md §E.2). The paper
    code uses unnormalised weights; the two differ by a positive per-batch factor.

    Args:
      logp: (K,) log pi_theta(.|x).
      batch: Points.
      beta: temperature > 0.
      normalize: z-score the rewards within the context first (docs/paper.md §B.3).
    """
    r = advantages(batch.reward, batch.weight, batch.count, "zscore") if normalize else batch.reward
    logw = jnp.where(batch.weight > 0, jnp.log(jnp.where(batch.weight > 0, batch.weight, 1.0)), -jnp.inf) + r / beta
    w = jax.nn.softmax(logw)
    return -_wsum(w, logp[batch.y]), {}


def forward_kl(logp: jax.Array, target: Target) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Exact forward KL(target || pi) = sum_i t_i (log t_i - log pi_i), with 0 log 0 = 0.

    Family: mode-covering. Its gradient in the softmax logits is pi - target
    (docs/paper.md §E.4). Not rescaled by beta; beta enters only through the default
    target pi_star.

    Args:
      logp: (K,) log pi_theta(.|x).
      target: Target, whose ``probs`` (K,) is the target distribution.
    """
    t = jax.lax.stop_gradient(target.probs)
    return jnp.sum(jax.scipy.special.xlogy(t, t) - t * logp), {}
