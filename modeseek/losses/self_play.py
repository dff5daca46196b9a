"""Self-play and general-preference objectives: online DPO, Nash-MD, XPO and exact mirror descent.

Family ``self_play``: the policy plays against an opponent built from itself
(fresh pairs of its own samples, a geometric mixture with pi_ref) or against
pi_ref, and the comparison comes from a preference P(y > y') rather than from
a fixed dataset. Each loss here is on-policy by construction, so runs accept
the sampling regimes in :data:`SAMPLINGS` only.

* ``online_dpo``: DPO on fresh pairs of policy samples (the core's dpo with
  sampling="on_policy"; Guo et al. 2024, arXiv 2402.04792).
* ``nash_md``: Nash mirror descent's policy gradient against the mixture
  pi^(1-alpha) pi_ref^alpha (Munos et al. 2023, arXiv 2312.00886).
* ``xpo``: DPO on (policy sample, pi_ref sample) duels plus the exploration
  term alpha * log pi(y_ref) (Xie et al. 2024, arXiv 2405.21046).
* ``mirror_descent`` (also registered as ``spo_exact``): the exact
  KL-regularised policy-iteration step toward pi_t^(1/(1+eta beta))
  pi_ref^(eta beta/(1+eta beta)) exp(eta r/(1+eta beta)) (e.g. Tomar et al.
  2020, arXiv 2005.09814), whose fixed point is pi_star.

Unbatched: ``logp`` and ``ref_logp`` are (K,) for one context; batches are
:class:`modeseek.batches.Duels` (built by :func:`modeseek.regimes.sample_duels`
/ :func:`modeseek.regimes.exact_duels`), :class:`~modeseek.batches.Pairs` or
the exact :class:`~modeseek.batches.Points` of the current policy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from modeseek.batches import Duels, Pairs, Points
from modeseek.losses import contrastive

__all__ = ["online_dpo", "nash_md", "xpo", "mirror_descent", "spo_exact", "mirror_target", "SAMPLINGS", "OPPONENTS", "check_sampling", "check_kind"]

#: Sampling regimes each self-play loss runs under (all are on-policy by construction).
SAMPLINGS = {
    "online_dpo": ("on_policy", "exact"),
    "nash_md": ("on_policy", "exact"),
    "xpo": ("on_policy", "exact"),
    "mirror_descent": ("exact",),
    "spo_exact": ("exact",),
}
#: The opponent that draws the second response of each duel.
OPPONENTS = {"nash_md": "mixture", "xpo": "reference"}
#: Why a bandit-only self-play loss has no sequence implementation (one line each).
_NO_SEQUENCE = {
    "nash_md": (
        "loss='nash_md' runs on bandit policies only: the sequence-level mixture pi^(1-alpha) pi_ref^alpha "
        "cannot be sampled token by token (practical implementations use the per-token geometric mixture instead)"
    ),
    "xpo": "loss='xpo' runs on bandit policies only: sequence runs have no batch of pi_ref samples paired with policy samples",
    "mirror_descent": "loss='mirror_descent' is an exact update over all K responses; expected a bandit Problem",
    "spo_exact": "loss='spo_exact' is an exact update over all K responses; expected a bandit Problem",
}


def check_sampling(loss: str, sampling: str) -> None:
    """Refuse a sampling regime that a self-play loss does not run under (offline data, mixed arms); other losses pass."""
    valid = SAMPLINGS.get(loss)
    if valid is not None and sampling not in valid:
        shown = "arms mixing offline and on-policy sampling" if sampling == "mixed" else f"sampling={sampling!r}"
        raise ValueError(f"loss={loss!r} trains on its own samples; expected sampling in {', '.join(repr(v) for v in valid)}, got {shown}")


def check_kind(loss: str, kind: str) -> None:
    """Refuse a self-play loss on a kind of policy it has no implementation for, saying why."""
    if kind == "sequence" and loss in _NO_SEQUENCE:
        raise ValueError(_NO_SEQUENCE[loss])


def online_dpo(logp: jax.Array, batch: Pairs, *, ref_logp: jax.Array, beta: float | jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Online DPO: sum_pairs w * -log sigmoid(beta * h) on fresh pairs of policy samples labelled by the reward.

    Family: self_play. Guo et al. 2024, "Direct Language Model Alignment from
    Online AI Feedback", arXiv 2402.04792 (OAIF): each step samples two
    responses from the current policy, an annotator (here the reward: reward or
    Bradley-Terry labels) picks the preferred one and the DPO loss is applied.
    The function is :func:`modeseek.losses.contrastive.dpo`; what makes it
    online is the batch, drawn from the current policy (run with
    sampling="on_policy", or "exact" for the population update). Differences:
    the paper labels one pair per prompt with an LLM annotator; here all
    N(N-1)/2 pairs of N draws (pairing="all") or N/2 disjoint ones are labelled
    by the reward, and pi_ref is the problem's reference rather than the SFT model.

    Args:
      logp: (K,) log pi_theta(.|x).
      batch: Pairs from the current policy.
      ref_logp: (K,) log pi_ref.
      beta: inverse temperature > 0.
    """
    return contrastive.dpo(logp, batch, ref_logp=ref_logp, beta=beta)


def nash_md(logp: jax.Array, batch: Duels, *, ref_logp: jax.Array, beta: float | jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Nash-MD policy gradient: sum w [-(P(y > y') - 1/2) log pi(y) + beta/2 (log pi(y) - log pi_ref(y))^2].

    Family: self_play. Munos et al. 2023, "Nash Learning from Human
    Feedback", arXiv 2312.00886. Nash-MD updates pi_{t+1} =
    argmax_pi [P(pi > pi_t^mix) - beta KL(pi || pi_ref)] against the geometric
    mixture pi_t^mix proportional to pi_t^(1-alpha) pi_ref^alpha, whose last
    iterate converges to the Nash equilibrium of the regularised preference
    game. This is their deep-learning variant, Nash-MD-PG: one
    policy-gradient step per batch, y ~ pi, y' ~ pi_mix (a detached
    opponent), with gradient
    E[(P(y > y') - 1/2 - beta log(pi(y)/pi_ref(y))) grad log pi(y)].
    The KL part is written as the squared log-ratio (Schulman's k2 placed in
    the loss), whose gradient at y ~ pi is exactly beta log(pi/pi_ref)(y)
    grad log pi(y), so the loss is a differentiable function of logp with no
    stop-gradient inside and the same per-sample gradient. The 1/2 is a
    baseline (a response ties with itself, P(y > y) = 1/2); it leaves the
    expected gradient unchanged.
    On the exact batch (all K x K duels weighted pi_i pi_mix_j) the gradient is
    that of -[P(pi > sg(pi_mix)) - beta KL(pi || pi_ref)].

    P(y > y') comes from the reward: 1 / 1/2 / 0 (reward labels, ties 1/2) or
    sigmoid(bt_scale (r_y - r_y')) (Bradley-Terry, the probability itself, not
    a drawn label). The mixture weight alpha (``mixture_alpha``) enters
    through the batch: :func:`modeseek.regimes.geometric_mixture`, exact in log
    space on bandits. Differences from common implementations: LLM trainers
    mix per token (the sequence-level mixture cannot be sampled token by
    token) and often put the KL in the reward as k1; this module has no
    sequence implementation.

    Args:
      logp: (K,) log pi_theta(.|x).
      batch: Duels of policy draws against mixture draws.
      ref_logp: (K,) log pi_ref.
      beta: KL coefficient > 0.

    Returns:
      (loss, {"win_rate": the batch's estimate of P(pi > pi_mix)}).
    """
    w = jax.lax.stop_gradient(batch.weight)
    win = jax.lax.stop_gradient(batch.win)
    lp = logp[batch.y]
    ratio = lp - ref_logp[batch.y]
    loss = jnp.sum(w * (-(win - 0.5) * lp + 0.5 * beta * ratio**2))
    return loss, {"win_rate": jnp.sum(w * win)}


def xpo(logp: jax.Array, batch: Duels, *, ref_logp: jax.Array, beta: float | jax.Array, xpo_alpha: float | jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """XPO: DPO on (policy sample, pi_ref sample) duels + xpo_alpha * sum w log pi(y_ref).

    Family: self_play. Xie et al. 2024, "Exploratory Preference Optimization:
    Harnessing Implicit Q*-Approximation for Sample-Efficient RLHF", arXiv
    2405.21046, Algorithm 1: each round draws y ~ pi_t and y~ ~ pi_ref, labels
    the pair and minimises alpha sum log pi(y~) - sum log sigma(beta h) over
    the pairs collected. The sign: the term is optimism (an upper bound on the
    implicit reward's value, beta log pi/pi_ref, relative to pi_ref's
    responses), and as a term to minimise, alpha log pi(y~) falls by taking
    mass away from responses pi_ref produces: it lowers the loss to explore
    outside pi_ref's typical support, not to move toward it. With alpha = 0
    this is DPO on policy-vs-reference pairs.

    The DPO part over counted duels (pair_weight; reward ties and gaps below
    min_reward_gap skipped, as :func:`modeseek.losses.contrastive.dpo`'s pairs):
    win * -log sigma(beta h) + (1 - win) * -log sigma(-beta h), h =
    [log pi - log pi_ref](y) - [log pi - log pi_ref](y~). With reward labels
    win is 0 or 1 (plain DPO); with Bradley-Terry labels it is the label's
    probability (the expectation over the drawn label). The bonus averages over
    all N reference draws (weight). Differences: the paper (and common
    implementations) train on the pairs of the current round only, as here,
    but update with many optimiser steps; the reward labels stand in for the
    preference oracle.

    Args:
      logp: (K,) log pi_theta(.|x).
      batch: Duels of policy draws against pi_ref draws.
      ref_logp: (K,) log pi_ref.
      beta: DPO inverse temperature > 0.
      xpo_alpha: exploration coefficient >= 0.

    Returns:
      (loss, {"margin": mean oriented margin (2 win - 1) h over counted duels,
      "reference_logp": mean log pi(y~)}).
    """
    pw = jax.lax.stop_gradient(batch.pair_weight)
    w = jax.lax.stop_gradient(batch.weight)
    win = jax.lax.stop_gradient(batch.win)
    u = logp - ref_logp
    h = u[batch.y] - u[batch.other]
    pair = win * -jax.nn.log_sigmoid(beta * h) + (1.0 - win) * -jax.nn.log_sigmoid(-beta * h)
    ref_lp = jnp.sum(w * logp[batch.other])
    loss = jnp.sum(pw * pair) + xpo_alpha * ref_lp
    aux = {"margin": jnp.sum(pw * (2.0 * win - 1.0) * h), "reference_logp": ref_lp}
    return loss, jax.tree.map(jax.lax.stop_gradient, aux)


def mirror_target(logq: jax.Array, ref_logp: jax.Array, reward: jax.Array, *, beta: float | jax.Array, eta: float | jax.Array) -> jax.Array:
    """log pi_{t+1} of the exact KL-regularised mirror-descent step from pi_t = softmax(logq).

    pi_{t+1} proportional to (pi_t pi_ref^(eta beta) exp(eta r))^(1/(1 + eta beta)):
    the maximiser of eta [E_pi r - beta KL(pi || pi_ref)] - KL(pi || pi_t).
    Normalised in log space (finite for any eta, beta > 0). Its fixed point is
    pi_star = pi_ref exp(r/beta)/Z, reached geometrically: the log-error to
    pi_star shrinks by 1/(1 + eta beta) per step.
    """
    s = eta * beta
    return jax.nn.log_softmax((jax.nn.log_softmax(logq) + s * ref_logp + eta * reward) / (1.0 + s))


def mirror_descent(logp: jax.Array, batch: Points, *, ref_logp: jax.Array, beta: float | jax.Array, eta: float | jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Exact mirror descent: 1/2 sum_i (d_i - mean(d))^2, d = log pi - sg(log pi_{t+1}), pi_{t+1} the KL-regularised step.

    Family: self_play. The exact update of KL-regularised policy iteration /
    mirror descent, pi_{t+1} proportional to (pi_t pi_ref^(eta beta)
    exp(eta r))^(1/(1 + eta beta)) (:func:`mirror_target`; e.g. Tomar et al.
    2020, "Mirror Descent Policy Optimization", arXiv 2005.09814, and the
    exact Nash-MD step of Munos et al. 2023, arXiv 2312.00886, with a reward in
    place of the preference), computed from the batch's sampling distribution,
    which on the exact on-policy batch (sampling="exact") is the current
    policy, detached. Its fixed point is pi_star = pi_ref exp(r/beta)/Z.

    Why the centred squared log-probability error: its gradient in the logits
    z is d - mean(d) (the softmax Jacobian's 1 pi^T part cancels on a centred
    vector), so with the tabular policy, SGD and learning_rate = 1 one step
    sets z to log pi_{t+1} + const: the update is realised exactly, one mirror
    step per gradient step. Other step sizes move the logits a fraction
    learning_rate of the way (a damped update); with Adam or the MLP the
    target is only tracked. A forward KL(pi_{t+1} || pi) would need many steps.

    Args:
      logp: (K,) log pi_theta(.|x).
      batch: the exact Points of the current policy (all K bins in order; its
        logq is log pi_t, its reward r).
      ref_logp: (K,) log pi_ref.
      beta: KL coefficient > 0 (pi_star's temperature).
      eta: mirror-descent step size > 0.

    Raises:
      ValueError: for a batch that does not hold all K bins (a sampled batch).
    """
    k = logp.shape[0]
    if batch.y.shape[0] != k:
        raise ValueError(f"mirror_descent got a batch of {batch.y.shape[0]} responses; expected the exact batch of all {k} bins (sampling='exact')")
    target = jax.lax.stop_gradient(mirror_target(batch.logq, ref_logp, batch.reward, beta=beta, eta=eta))
    d = logp - target
    d = d - jnp.mean(d)
    return 0.5 * jnp.sum(d**2), {}


#: The registry's second name for :func:`mirror_descent` (the exact update that
#: sampled self-play methods approximate); the same function.
spo_exact = mirror_descent
