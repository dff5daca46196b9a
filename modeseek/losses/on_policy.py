"""Mode-seeking on-policy objectives: REINFORCE, PPO and the exact reverse KL.

Maximising E_pi[r] - beta KL(pi || pi_ref) is minimising the reverse KL
KL(pi || pi_star) (Lemma 6.1, docs/paper.md §E.2), which concentrates mass on a
subset of the high-reward bins. REINFORCE and PPO are its sampled
score-function estimators.

Unbatched: ``logp`` and ``ref_logp`` are (K,) for one context.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from modeseek.batches import Points, Target
from modeseek.metrics import entropy, kl
from modeseek.problems import safe_log

__all__ = [
    "ADVANTAGES",
    "KL_ESTIMATORS",
    "KL_PLACEMENTS",
    "advantages",
    "kl_estimate",
    "reinforce",
    "ppo",
    "reverse_kl",
]

ADVANTAGES = ("none", "mean", "zscore", "leave_one_out")
KL_ESTIMATORS = ("k1", "k2", "k3", "exact")
KL_PLACEMENTS = ("reward", "loss")

# Bound on |log pi - log q| in PPO ratios: exp(20) ~ 5e8 is far past any clip
# range, and keeps a bin that q nearly excluded from overflowing float32.
_MAX_LOG_RATIO = 20.0


def kl_estimate(logp_y, ref_logp_y, estimator: str):
    """Per-sample estimators of KL(pi || pi_ref) at y ~ pi (Schulman's k1, k2, k3).

    k1 = log pi/pi_ref, k2 = (log pi/pi_ref)^2 / 2, k3 = rho - 1 - log rho with
    rho = pi_ref/pi. As losses on fresh samples their expected gradients are 0
    (k1), grad KL(pi||pi_ref) (k2) and grad KL(pi_ref||pi) (k3).
    """
    d = logp_y - ref_logp_y
    if estimator == "k1":
        return d
    if estimator == "k2":
        return 0.5 * d**2
    if estimator == "k3":
        # Below d = -_MAX_LOG_RATIO, continue k3 linearly (same value and slope
        # there): under sample reuse the policy can put a sampled bin e^-88 below
        # pi_ref, where exp(-d) overflows float32 and the step turns into NaN.
        lo = -_MAX_LOG_RATIO
        dc = jnp.where(d >= lo, d, lo)
        linear = jnp.expm1(-lo) + lo - jnp.expm1(-lo) * (d - lo)
        return jnp.where(d >= lo, jnp.expm1(-dc) + dc, linear)
    raise ValueError(f"kl_estimator={estimator!r} is not valid here; expected one of k1, k2, k3")


def advantages(reward, weight, count, kind: str):
    """Per-context advantages from (M,) rewards and weights (summing to 1).

    * "none": r
    * "mean": r - mean (batch-mean baseline)
    * "zscore": (r - mean) / (std + 1e-8), population std (docs/paper.md §B.4)
    * "leave_one_out": r_j - mean of the other N-1 rewards = N/(N-1) (r_j - mean);
      exact batches (count = inf) give r - mean.
    """
    mean = jnp.sum(weight * reward)
    if kind == "none":
        return reward
    if kind == "mean":
        return reward - mean
    if kind == "zscore":
        std = jnp.sqrt(jnp.sum(weight * (reward - mean) ** 2))
        return (reward - mean) / (std + 1e-8)
    if kind == "leave_one_out":
        factor = jnp.where(jnp.isfinite(count), count / jnp.maximum(count - 1.0, 1.0), 1.0)
        return factor * (reward - mean)
    raise ValueError(f"advantage={kind!r} is not valid; expected one of {', '.join(ADVANTAGES)}")


def _shaped_advantages(reward, items: Points, sampled_kl, *, advantage, beta, kl_estimator, kl_placement):
    """The advantages of ``reward`` over ``items`` (constants), after a KL penalty placed in the reward.

    With ``kl_placement="reward"`` the reward is first lowered by beta * ``sampled_kl(estimator)``,
    each item's estimate at sampling time; its exact expectation is the log-ratio, so "exact" uses k1.
    """
    if kl_estimator is not None and kl_placement == "reward":
        reward = reward - beta * sampled_kl("k1" if kl_estimator == "exact" else kl_estimator)
    return jax.lax.stop_gradient(advantages(reward, items.weight, items.count, advantage))


def _clipped_surrogate(log_ratio, adv, clip_eps):
    """PPO's max(-A rho, -A clip(rho, 1 - eps, 1 + eps)), rho = exp(log_ratio) with |log_ratio| bounded."""
    rho = jnp.exp(jnp.clip(log_ratio, -_MAX_LOG_RATIO, _MAX_LOG_RATIO))
    return jnp.maximum(-adv * rho, -adv * jnp.clip(rho, 1.0 - clip_eps, 1.0 + clip_eps))


def _penalties(logp, batch: Points, ref_logp, *, beta, kl_estimator, kl_placement, entropy_coef):
    extra = -entropy_coef * entropy(logp)
    if kl_estimator is not None and kl_placement == "loss":
        if kl_estimator == "exact":
            extra = extra + beta * kl(logp, ref_logp)
        else:
            w = jax.lax.stop_gradient(batch.weight)
            extra = extra + beta * jnp.sum(w * kl_estimate(logp[batch.y], ref_logp[batch.y], kl_estimator))
    return extra


def reinforce(
    logp,
    batch: Points,
    *,
    ref_logp,
    advantage: str = "mean",
    beta=0.0,
    kl_estimator: str | None = None,
    kl_placement: str = "reward",
    entropy_coef=0.0,
):
    """REINFORCE: -sum_j w_j A_j log pi(y_j), plus optional KL and entropy terms.

    Family: mode-seeking on-policy (reverse KL, Lemma 6.1). Exact on q = pi the
    gradient is the exact policy gradient of E_pi[r] (with the chosen baseline).

    Args:
      logp: (K,) log pi_theta(.|x).
      batch: Points sampled from the current (or, with reuse, a recent) policy.
      ref_logp: (K,) log pi_ref.
      advantage: one of ADVANTAGES.
      beta: KL coefficient (used only when ``kl_estimator`` is set).
      kl_estimator: None, "k1", "k2", "k3" or "exact" (analytic KL(pi||pi_ref)).
      kl_placement: "reward" (r - beta k, before the advantage) or "loss" (+ beta k).
      entropy_coef: weight of an exact entropy bonus (the paper code's bonus is a
        sample-based term with zero expected gradient on fresh samples, docs/paper.md §B.4).
    """
    sampled_kl = lambda est: kl_estimate(batch.logq, ref_logp[batch.y], est)  # noqa: E731
    a = _shaped_advantages(batch.reward, batch, sampled_kl, advantage=advantage, beta=beta, kl_estimator=kl_estimator, kl_placement=kl_placement)
    w = jax.lax.stop_gradient(batch.weight)
    loss = -jnp.sum(w * a * logp[batch.y])
    loss = loss + _penalties(logp, batch, ref_logp, beta=beta, kl_estimator=kl_estimator, kl_placement=kl_placement, entropy_coef=entropy_coef)
    return loss, {}


def ppo(
    logp,
    batch: Points,
    *,
    ref_logp,
    advantage: str = "mean",
    clip_eps=0.2,
    beta=0.0,
    kl_estimator: str | None = None,
    kl_placement: str = "reward",
    entropy_coef=0.0,
):
    """PPO's clipped surrogate against the sampling policy q (for sample reuse).

    sum_j w_j max(-A_j rho_j, -A_j clip(rho_j, 1 - eps, 1 + eps)), rho = pi(y)/q(y),
    with no value network (the advantage is the normalised sequence reward, as in
    the paper code, docs/paper.md §B.5). Family: mode-seeking on-policy.

    Args:
      logp: (K,) log pi_theta(.|x).
      batch: Points with logq = log q(y) at sampling time.
      ref_logp: (K,) log pi_ref.
      advantage, beta, kl_estimator, kl_placement, entropy_coef: as in reinforce.
      clip_eps: clip range eps > 0 (0.2 in the paper code).
    """
    sampled_kl = lambda est: kl_estimate(batch.logq, ref_logp[batch.y], est)  # noqa: E731
    a = _shaped_advantages(batch.reward, batch, sampled_kl, advantage=advantage, beta=beta, kl_estimator=kl_estimator, kl_placement=kl_placement)
    surrogate = _clipped_surrogate(logp[batch.y] - jax.lax.stop_gradient(batch.logq), a, clip_eps)
    loss = jnp.sum(jax.lax.stop_gradient(batch.weight) * surrogate)
    loss = loss + _penalties(logp, batch, ref_logp, beta=beta, kl_estimator=kl_estimator, kl_placement=kl_placement, entropy_coef=entropy_coef)
    return loss, {}


def reverse_kl(logp, target: Target):
    """Exact reverse KL(pi || target) = sum_i pi_i (log pi_i - log t_i).

    Family: mode-seeking. Its logit gradient is pi * (log(pi/t) - KL) (docs/paper.md
    §E.4), which removes mass from bins the target excludes in proportion to
    pi_i log(pi_i/t_i). Not rescaled by beta; beta enters only via the default
    target pi_star. Target zeros are treated as log t = -1e4 (finite).
    """
    return kl(logp, jax.lax.stop_gradient(safe_log(target.probs))), {}
