"""Mode-seeking on-policy objectives: REINFORCE, PPO, the exact reverse KL and the group methods.

The group methods (GRPO and its variants Dr. GRPO and DAPO, GSPO, CISPO,
REINFORCE++, ReMax, GPG; RLOO is reinforce with advantage="leave_one_out")
treat the N responses of one context (the Points batch) as a group. Where a
method needs a statistic over every context of the batch (batch-scaled or
batch-whitened advantages, the share of groups with a reward signal), the loss
stays unbatched: its ``*_stat`` function gives a per-context statistic, the
engine averages it over the contexts once per batch and passes both back in
``Points.stat`` (:func:`modeseek.losses.LossSpec.batch_hook`).

Maximising E_pi[r] - beta KL(pi || pi_ref) is minimising the reverse KL
KL(pi || pi_star) (Lemma 6.1, docs/paper.md §E.2), which concentrates mass on a
subset of the high-reward bins. REINFORCE and PPO are its sampled
score-function estimators.

Unbatched: ``logp`` and ``ref_logp`` are (K,) for one context.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from modeseek import _checks
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
    "SCALE_REWARDS",
    "group_stat",
    "grpo",
    "gspo",
    "cispo",
    "reinforce_pp",
    "remax",
    "gpg",
    "nonuniform_probability",
    "kl_fixed_point",
]

ADVANTAGES = ("none", "mean", "zscore", "leave_one_out")
KL_ESTIMATORS = ("k1", "k2", "k3", "exact")
KL_PLACEMENTS = ("reward", "loss")
#: GRPO's advantage scale: the group's reward std, the whole batch's, or none (Dr. GRPO).
SCALE_REWARDS = ("group", "batch", "none")

# Bound on |log pi - log q| in PPO ratios: exp(20) ~ 5e8 is far past any clip
# range, and keeps a bin that q nearly excluded from overflowing float32.
_MAX_LOG_RATIO = 20.0


def kl_estimate(logp_y: jax.Array, ref_logp_y: jax.Array, estimator: str) -> jax.Array:
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


def advantages(reward: jax.Array, weight: jax.Array, count: jax.Array, kind: str) -> jax.Array:
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


def _shaped_advantages(reward: jax.Array, items: Points, sampled_kl: Callable[[str], jax.Array], *, advantage: str, beta: float | jax.Array, kl_estimator: str | None, kl_placement: str) -> jax.Array:
    """The advantages of ``reward`` over ``items`` (constants), after a KL penalty placed in the reward.

    With ``kl_placement="reward"`` the reward is first lowered by beta * ``sampled_kl(estimator)``,
    each item's estimate at sampling time; its exact expectation is the log-ratio, so "exact" uses k1.
    """
    if kl_estimator is not None and kl_placement == "reward":
        reward = reward - beta * sampled_kl("k1" if kl_estimator == "exact" else kl_estimator)
    return jax.lax.stop_gradient(advantages(reward, items.weight, items.count, advantage))


def _clipped_surrogate(log_ratio: jax.Array, adv: jax.Array, clip_eps: float | jax.Array, clip_eps_high: float | jax.Array | None = None) -> jax.Array:
    """PPO's max(-A rho, -A clip(rho, 1 - eps, 1 + eps_high)), rho = exp(log_ratio) with |log_ratio| bounded.

    ``clip_eps_high`` None is the symmetric clip (eps_high = eps); DAPO's clip-higher sets it above eps.
    """
    rho = jnp.exp(jnp.clip(log_ratio, -_MAX_LOG_RATIO, _MAX_LOG_RATIO))
    high = clip_eps if clip_eps_high is None else clip_eps_high
    return jnp.maximum(-adv * rho, -adv * jnp.clip(rho, 1.0 - clip_eps, 1.0 + high))


def _penalties(logp: jax.Array, batch: Points, ref_logp: jax.Array, *, beta: float | jax.Array, kl_estimator: str | None, kl_placement: str, entropy_coef: float | jax.Array) -> jax.Array:
    extra = -entropy_coef * entropy(logp)
    if kl_estimator is not None and kl_placement == "loss":
        if kl_estimator == "exact":
            extra = extra + beta * kl(logp, ref_logp)
        else:
            w = jax.lax.stop_gradient(batch.weight)
            extra = extra + beta * jnp.sum(w * kl_estimate(logp[batch.y], ref_logp[batch.y], kl_estimator))
    return extra


def reinforce(
    logp: jax.Array,
    batch: Points,
    *,
    ref_logp: jax.Array,
    advantage: str = "mean",
    beta: float | jax.Array = 0.0,
    kl_estimator: str | None = None,
    kl_placement: str = "reward",
    entropy_coef: float | jax.Array = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
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
    logp: jax.Array,
    batch: Points,
    *,
    ref_logp: jax.Array,
    advantage: str = "mean",
    clip_eps: float | jax.Array = 0.2,
    beta: float | jax.Array = 0.0,
    kl_estimator: str | None = None,
    kl_placement: str = "reward",
    entropy_coef: float | jax.Array = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """PPO's clipped surrogate against the sampling policy q (for sample reuse).

    sum_j w_j max(-A_j rho_j, -A_j clip(rho_j, 1 - eps, 1 + eps)), rho = pi(y)/q(y),
    with no value network (the advantage is the normalised sequence reward, as in
    the paper code, docs/paper.md §B.5). Family: mode-seeking on-policy.
    Source: Schulman et al. 2017, arXiv 1707.06347.

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


def reverse_kl(logp: jax.Array, target: Target) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Exact reverse KL(pi || target) = sum_i pi_i (log pi_i - log t_i).

    Family: mode-seeking. Its logit gradient is pi * (log(pi/t) - KL) (docs/paper.md
    §E.4), which removes mass from bins the target excludes in proportion to
    pi_i log(pi_i/t_i). Not rescaled by beta; beta enters only via the default
    target pi_star. Target zeros are treated as log t = -1e4 (finite).

    Args:
      logp: (K,) log pi_theta(.|x).
      target: Target, whose ``probs`` (K,) is the target distribution.
    """
    return kl(logp, jax.lax.stop_gradient(safe_log(target.probs))), {}


# ----------------------------------------------------------------------------- group methods


def nonuniform_probability(items: Points, num_samples: int) -> jax.Array:
    """P(the N rewards of a group are not all equal), for one context.

    Sampled batches (finite ``count``): 1 if the drawn rewards (items of
    non-zero weight) differ, else 0. Exact batches (all bins weighted by q): with
    N = ``num_samples`` i.i.d. draws, P(all equal) = sum over distinct reward
    values v of q(r = v)^N = sum_i q_i m_i^(N-1), m_i the q-mass of bins with
    bin i's reward, so the probability is 1 - sum_i q_i m_i^(N-1).
    """
    w = jax.lax.stop_gradient(items.weight)
    r = items.reward
    live = w > 0
    drawn = jnp.where(jnp.any(live), jnp.max(jnp.where(live, r, -jnp.inf)) > jnp.min(jnp.where(live, r, jnp.inf)), False)
    same = (r[:, None] == r[None, :]).astype(w.dtype)
    mass = same @ w
    uniform = jnp.sum(w * mass ** (num_samples - 1))
    exact = jnp.clip(1.0 - uniform / jnp.maximum(jnp.sum(w), 1e-30) ** num_samples, 0.0, 1.0)
    return jnp.where(jnp.isfinite(items.count), drawn.astype(w.dtype), exact)


def group_stat(
    reward: jax.Array,
    items: Points,
    sampled_kl: Callable[[str], jax.Array],
    *,
    num_samples: int,
    signal: bool,
    beta: float | jax.Array = 0.0,
    kl_estimator: str | None = None,
    kl_placement: str = "reward",
) -> dict[str, jax.Array]:
    """Per-context moments of the (KL-shaped) reward that batch-level advantages need.

    Returns a dict of scalars: "mean" = sum_j w_j r'_j, "sq" = sum_j w_j r'_j^2,
    "centred" = sum_j w_j (r'_j - mean)^2 (r' = r - beta k with a KL penalty in
    the reward, else r), and with ``signal`` "signal" =
    :func:`nonuniform_probability` of the raw rewards. Averaged over the
    contexts (equal weight per context) they give the batch's mean, its
    second moment and its within-group variance.
    """
    shaped = reward
    if kl_estimator is not None and kl_placement == "reward":
        shaped = reward - beta * sampled_kl("k1" if kl_estimator == "exact" else kl_estimator)
    shaped = jax.lax.stop_gradient(shaped)
    w = jax.lax.stop_gradient(items.weight)
    mean = jnp.sum(w * shaped)
    out = {"mean": mean, "sq": jnp.sum(w * shaped**2), "centred": jnp.sum(w * (shaped - mean) ** 2)}
    if signal:
        out["signal"] = nonuniform_probability(items, num_samples)
    return out


def _bandit_kl(batch: Points, ref_logp: jax.Array) -> Callable[[str], jax.Array]:
    return lambda est: kl_estimate(batch.logq, ref_logp[batch.y], est)


def _batch_std(stat: dict[str, dict[str, jax.Array]], centred: bool) -> jax.Array:
    """The batch's reward std: about the batch mean, or (``centred``) about each group's mean."""
    b = stat["batch"]
    var = b["centred"] if centred else jnp.maximum(b["sq"] - b["mean"] ** 2, 0.0)
    return jnp.sqrt(var)


def _signal_factor(stat: dict[str, dict[str, jax.Array]]) -> jax.Array:
    """DAPO's dynamic sampling / GPG's rescaling: this group's P(non-uniform) over the batch's mean of it.

    A group whose rewards are all equal gets 0; the others are scaled so that
    the batch loss averages over the groups that carry a signal (the batch
    DAPO fills with non-uniform groups; GPG's B / (B - M)).
    """
    share = stat["batch"]["signal"]
    return jnp.where(share > 0, stat["group"]["signal"] / jnp.where(share > 0, share, 1.0), 0.0)


def group_advantages(
    reward: jax.Array,
    items: Points,
    sampled_kl: Callable[[str], jax.Array],
    *,
    scale_rewards: str,
    beta: float | jax.Array,
    kl_estimator: str | None,
    kl_placement: str,
    stat: dict[str, dict[str, jax.Array]] | None = None,
) -> jax.Array:
    """GRPO's advantages (constants): the shaped reward minus its group mean, over a scale.

    "group": / (group std + 1e-8) (population std; :func:`advantages`' "zscore");
    "batch": / (std of every shaped reward in the batch about the batch mean + 1e-8);
    "none": no division (Dr. GRPO).
    """
    _checks.choice("scale_rewards", scale_rewards, SCALE_REWARDS)
    kind = "zscore" if scale_rewards == "group" else "mean"
    a = _shaped_advantages(reward, items, sampled_kl, advantage=kind, beta=beta, kl_estimator=kl_estimator, kl_placement=kl_placement)
    if scale_rewards == "batch":
        if stat is None:
            raise ValueError("scale_rewards='batch' needs stat, the batch statistic of grpo_stat; got None")
        a = a / (_batch_std(stat, centred=False) + 1e-8)
    return a


def _grpo_terms(
    logp: jax.Array,
    batch: Points,
    ref_logp: jax.Array,
    log_ratio_of: Callable[[jax.Array], jax.Array],
    *,
    scale_rewards: str,
    drop_uniform_groups: bool,
    clip_eps: float | jax.Array,
    clip_eps_high: float | jax.Array | None,
    beta: float | jax.Array,
    kl_estimator: str | None,
    kl_placement: str,
) -> jax.Array:
    a = group_advantages(batch.reward, batch, _bandit_kl(batch, ref_logp), scale_rewards=scale_rewards, beta=beta, kl_estimator=kl_estimator, kl_placement=kl_placement, stat=batch.stat)
    surrogate = _clipped_surrogate(log_ratio_of(logp), a, clip_eps, clip_eps_high)
    loss = jnp.sum(jax.lax.stop_gradient(batch.weight) * surrogate)
    loss = loss + _penalties(logp, batch, ref_logp, beta=beta, kl_estimator=kl_estimator, kl_placement=kl_placement, entropy_coef=0.0)
    if drop_uniform_groups:
        loss = loss * _signal_factor(batch.stat)
    return loss


def grpo(
    logp: jax.Array,
    batch: Points,
    *,
    ref_logp: jax.Array,
    scale_rewards: str = "group",
    drop_uniform_groups: bool = False,
    clip_eps: float | jax.Array = 0.2,
    clip_eps_high: float | jax.Array | None = None,
    beta: float | jax.Array = 0.0,
    kl_estimator: str | None = None,
    kl_placement: str = "reward",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """GRPO: group-normalised advantages in PPO's clipped surrogate against the sampling policy q.

    sum_j w_j max(-A_j rho_j, -A_j clip(rho_j, 1 - eps, 1 + eps_high)) [+ beta k],
    rho_j = pi(y_j) / q(y_j), A_j = (r_j - mean_group r) / (std_group r + 1e-8).
    Source: Shao et al. 2024, DeepSeekMath, arXiv 2402.03300 (§4.1, eq. 3);
    Dr. GRPO (``scale_rewards="none"``): Liu et al. 2025, arXiv 2503.20783;
    DAPO's clip-higher and dynamic sampling (``clip_eps_high``,
    ``drop_uniform_groups``): Yu et al. 2025, arXiv 2503.14476.
    Family: mode-seeking on-policy.

    Differences from the papers and common implementations: the group std is
    the population std (the DeepSeekMath code and TRL use the unbiased one,
    larger by sqrt(N/(N-1))); the paper's KL term is k3 placed in the loss
    (``kl_estimator="k3", kl_placement="loss"``), while the default here is no
    KL (beta = 0 is the common modern setting); DAPO refills its batch with
    non-uniform groups, which ``drop_uniform_groups`` models by scaling the
    kept groups by (number of groups) / (number kept) (:func:`_signal_factor`),
    the KL term of a dropped group included.

    Exact batches: the group mean and std are taken in the population limit
    (N -> inf, :mod:`modeseek.regimes`). For finite N the group mean contains
    the sample itself, so with ``scale_rewards="none"`` the expected sampled
    gradient is (1 - 1/N) times the exact one: E[(r_j - mean_k r_k) grad log
    pi(y_j)] = (1 - 1/N) E[(r - E r) grad log pi]. With
    ``drop_uniform_groups`` an exact group is weighted by P(its N rewards are
    not all equal) (:func:`nonuniform_probability`, N = num_samples).

    Args:
      logp: (K,) log pi_theta(.|x).
      batch: Points with logq at sampling time; ``batch.stat`` from :func:`grpo_stat`
        when ``scale_rewards="batch"`` or ``drop_uniform_groups``.
      ref_logp: (K,) log pi_ref.
      scale_rewards: one of SCALE_REWARDS.
      drop_uniform_groups: give groups whose rewards are all equal no weight.
      clip_eps: lower clip range eps (ratio >= 1 - eps).
      clip_eps_high: upper clip range (ratio <= 1 + eps_high); None means clip_eps.
      beta, kl_estimator, kl_placement: as in :func:`reinforce`.
    """
    log_ratio_of = lambda lp: lp[batch.y] - jax.lax.stop_gradient(batch.logq)  # noqa: E731
    loss = _grpo_terms(
        logp,
        batch,
        ref_logp,
        log_ratio_of,
        scale_rewards=scale_rewards,
        drop_uniform_groups=drop_uniform_groups,
        clip_eps=clip_eps,
        clip_eps_high=clip_eps_high,
        beta=beta,
        kl_estimator=kl_estimator,
        kl_placement=kl_placement,
    )
    return loss, {}


def grpo_stat(
    reward: jax.Array,
    items: Points,
    sampled_kl: Callable[[str], jax.Array],
    *,
    num_samples: int,
    scale_rewards: str = "group",
    drop_uniform_groups: bool = False,
    beta: float | jax.Array = 0.0,
    kl_estimator: str | None = None,
    kl_placement: str = "reward",
    **_: object,
) -> dict[str, jax.Array] | None:
    """The per-context statistic GRPO (and GSPO, CISPO) needs from the batch, or None when it needs none."""
    if scale_rewards != "batch" and not drop_uniform_groups:
        return None
    return group_stat(reward, items, sampled_kl, num_samples=num_samples, signal=drop_uniform_groups, beta=beta, kl_estimator=kl_estimator, kl_placement=kl_placement)


def gspo(logp: jax.Array, batch: Points, **options: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    """GSPO: GRPO with one clipped ratio per sequence, the geometric mean of the token ratios.

    s_j = exp(mean_t (log pi_t(y_j) - log q_t(y_j))), clipped per sequence:
    sum_j w_j max(-A_j s_j, -A_j clip(s_j, 1 - eps, 1 + eps_high)), A_j GRPO's
    group advantage. Source: Zheng et al. 2025, Group Sequence Policy
    Optimization, arXiv 2507.18071 (eq. 5-7). Family: mode-seeking on-policy.
    On a 1-token bandit the geometric mean is the ratio itself, so this is
    :func:`grpo` (and PPO's ratio; tests/test_catalogue_group.py shows it).
    The paper's clip ranges are about 1e-3 (3e-4 / 4e-4), far below PPO's 0.2;
    the default here stays clip_eps.

    Args: as in :func:`grpo` (``logp`` (K,), ``ref_logp`` (K,)).
    """
    return grpo(logp, batch, **options)


def cispo(
    logp: jax.Array,
    batch: Points,
    *,
    ref_logp: jax.Array,
    scale_rewards: str = "group",
    clip_eps: float | jax.Array = 0.2,
    clip_eps_high: float | jax.Array | None = None,
    beta: float | jax.Array = 0.0,
    kl_estimator: str | None = None,
    kl_placement: str = "reward",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """CISPO: REINFORCE weighted by a clipped, stop-gradient importance ratio.

    -sum_j w_j sg(min(rho_j, 1 + eps_high)) A_j log pi(y_j), rho_j = pi(y_j) / q(y_j),
    A_j GRPO's group advantage. Every sample keeps a gradient (PPO's clip
    zeroes those outside the range; here only the weight is capped).
    Source: MiniMax 2025, MiniMax-M1, arXiv 2506.13585 (§3.1, eq. 4-5).
    Family: mode-seeking on-policy. The paper clips
    the weight to [1 - eps_low, 1 + eps_high] with eps_low effectively off;
    only the upper cap is kept here. Exact batches (q = pi) have rho = 1:
    the weight is 1 whenever eps_high >= 0.

    Args:
      logp (K,), batch, ref_logp (K,), scale_rewards, beta, kl_estimator, kl_placement: as in :func:`grpo`.
      clip_eps: the cap's default: eps_high = clip_eps when ``clip_eps_high`` is None.
      clip_eps_high: cap on the weight, min(rho, 1 + eps_high).
    """
    a = group_advantages(batch.reward, batch, _bandit_kl(batch, ref_logp), scale_rewards=scale_rewards, beta=beta, kl_estimator=kl_estimator, kl_placement=kl_placement, stat=batch.stat)
    weight = _capped_weight(logp[batch.y] - batch.logq, clip_eps if clip_eps_high is None else clip_eps_high)
    w = jax.lax.stop_gradient(batch.weight)
    loss = -jnp.sum(w * weight * a * logp[batch.y])
    loss = loss + _penalties(logp, batch, ref_logp, beta=beta, kl_estimator=kl_estimator, kl_placement=kl_placement, entropy_coef=0.0)
    return loss, {}


def _capped_weight(log_ratio: jax.Array, eps_high: float | jax.Array) -> jax.Array:
    """sg(min(rho, 1 + eps_high)), rho = exp(log_ratio) with |log_ratio| bounded."""
    rho = jnp.exp(jnp.clip(jax.lax.stop_gradient(log_ratio), -_MAX_LOG_RATIO, _MAX_LOG_RATIO))
    return jnp.minimum(rho, 1.0 + eps_high)


def reinforce_pp(
    logp: jax.Array,
    batch: Points,
    *,
    ref_logp: jax.Array,
    baseline: bool = False,
    clip_eps: float | jax.Array = 0.2,
    beta: float | jax.Array = 0.0,
    kl_estimator: str | None = None,
    kl_placement: str = "reward",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """REINFORCE++: batch-whitened advantages in PPO's clipped surrogate.

    A_j = (r'_j - mean_batch r') / (std_batch r' + 1e-8) with r' = r - beta k
    (the KL estimate in the reward); ``baseline=True`` (REINFORCE++-baseline)
    first subtracts the group mean, A_j = (r'_j - mean_group r') / (std over
    the batch of r' - mean_group r' + 1e-8). Then PPO's clipped ratio against q.
    Source: Hu 2025, REINFORCE++, arXiv 2501.03262 (§3). Family: mode-seeking on-policy.
    The paper puts a per-token k1 KL in the reward (``kl_estimator="k1"``,
    ``kl_placement="reward"``); the default here is no KL. Exact batches take
    the batch mean and std in the population limit.

    Args:
      logp (K,), batch, ref_logp (K,), clip_eps, beta, kl_estimator, kl_placement: as in :func:`ppo`;
        ``batch.stat`` from :func:`reinforce_pp_stat`.
      baseline: subtract the group mean before whitening.
    """
    sampled_kl = _bandit_kl(batch, ref_logp)
    a = _reinforce_pp_advantages(batch.reward, batch, sampled_kl, baseline=baseline, beta=beta, kl_estimator=kl_estimator, kl_placement=kl_placement)
    surrogate = _clipped_surrogate(logp[batch.y] - jax.lax.stop_gradient(batch.logq), a, clip_eps)
    loss = jnp.sum(jax.lax.stop_gradient(batch.weight) * surrogate)
    loss = loss + _penalties(logp, batch, ref_logp, beta=beta, kl_estimator=kl_estimator, kl_placement=kl_placement, entropy_coef=0.0)
    return loss, {}


def _reinforce_pp_advantages(
    reward: jax.Array, items: Points, sampled_kl: Callable[[str], jax.Array], *, baseline: bool, beta: float | jax.Array, kl_estimator: str | None, kl_placement: str
) -> jax.Array:
    a = _shaped_advantages(reward, items, sampled_kl, advantage="mean" if baseline else "none", beta=beta, kl_estimator=kl_estimator, kl_placement=kl_placement)
    # The group-centred advantages have batch mean 0 exactly.
    shift = 0.0 if baseline else items.stat["batch"]["mean"]
    return (a - shift) / (_batch_std(items.stat, centred=baseline) + 1e-8)


def reinforce_pp_stat(
    reward: jax.Array,
    items: Points,
    sampled_kl: Callable[[str], jax.Array],
    *,
    num_samples: int,
    beta: float | jax.Array = 0.0,
    kl_estimator: str | None = None,
    kl_placement: str = "reward",
    **_: object,
) -> dict[str, jax.Array]:
    """The per-context statistic REINFORCE++ whitens with."""
    return group_stat(reward, items, sampled_kl, num_samples=num_samples, signal=False, beta=beta, kl_estimator=kl_estimator, kl_placement=kl_placement)


def remax(logp: jax.Array, batch: Points) -> tuple[jax.Array, dict[str, jax.Array]]:
    """ReMax: REINFORCE with the greedy response's reward as the baseline.

    -sum_j w_j (r_j - r(argmax q)) log pi(y_j), q the sampling policy (the
    greedy response is decoded from the same policy as the samples).
    Source: Li et al. 2023, ReMax, arXiv 2310.10505 (Algorithm 1, eq. 5).
    Family: mode-seeking on-policy. The baseline does not depend on the
    samples, so the estimator is unbiased for any N (exact batches: the exact
    policy gradient with baseline r(argmax q)). The paper's reward carries no
    KL term; neither does this loss.

    Args:
      logp: (K,) log pi_theta(.|x).
      batch: Points with ``greedy_reward`` (the engine's collector fills it in).
    """
    if batch.greedy_reward is None:
        raise ValueError("remax needs batch.greedy_reward (the reward of the argmax response); expected a batch built for remax")
    a = jax.lax.stop_gradient(batch.reward - batch.greedy_reward)
    w = jax.lax.stop_gradient(batch.weight)
    return -jnp.sum(w * a * logp[batch.y]), {}


def gpg(logp: jax.Array, batch: Points) -> tuple[jax.Array, dict[str, jax.Array]]:
    """GPG: group policy gradient, no ratio and no KL, rescaled by the share of groups with a signal.

    -(B / B_signal) sum_j w_j (r_j - mean_group r) log pi(y_j), with B groups in
    the batch of which B_signal have rewards that are not all equal (the
    others contribute nothing anyway). Source: Chu et al. 2025, GPG: A Simple
    and Strong Reinforcement Learning Baseline, arXiv 2504.02546 (§3, eq. 8-9).
    Family: mode-seeking on-policy. The paper's optional std normalisation
    (F_norm) and its threshold on the share are left out. Exact batches
    weight each group by P(its N rewards differ) over the batch mean of it
    (:func:`nonuniform_probability`): the many-contexts limit of B_signal / B;
    with one context the sampled factor is 1 whenever the gradient is not 0.

    Args:
      logp: (K,) log pi_theta(.|x).
      batch: Points with ``batch.stat`` from :func:`gpg_stat`.
    """
    a = jax.lax.stop_gradient(advantages(batch.reward, batch.weight, batch.count, "mean"))
    w = jax.lax.stop_gradient(batch.weight)
    share = batch.stat["batch"]["signal"]
    factor = jnp.where(share > 0, 1.0 / jnp.where(share > 0, share, 1.0), 0.0)
    return -factor * jnp.sum(w * a * logp[batch.y]), {}


def gpg_stat(reward: jax.Array, items: Points, sampled_kl: Callable[[str], jax.Array], *, num_samples: int, **_: object) -> dict[str, jax.Array]:
    """The per-context statistic GPG rescales with (only "signal" is read)."""
    return group_stat(reward, items, sampled_kl, num_samples=num_samples, signal=True)


def bandit_stat(stat_fn: Callable[..., dict[str, jax.Array] | None]) -> Callable[..., dict[str, jax.Array] | None]:
    """The bandit form ``(batch, ref_logp, **options) -> stat`` of a per-context statistic of the shaped reward."""

    def stat(batch: Points, ref_logp: jax.Array, **options: Any) -> dict[str, jax.Array] | None:
        return stat_fn(batch.reward, batch, _bandit_kl(batch, ref_logp), **options)

    return stat


# ----------------------------------------------------------------------------- fixed points of KL in the loss


def kl_fixed_point(ref_probs: ArrayLike, reward: ArrayLike, beta: float, estimator: str, placement: str = "loss", support: ArrayLike | None = None) -> np.ndarray:
    """Where exact on-policy gradient ascent on E_pi[r] with a KL estimator in the loss (or the reward) converges (tabular softmax).

    On fresh samples y ~ pi (q = pi, held fixed inside the gradient), beta
    E_q[k(log pi(y) - log pi_ref(y))] has the logit gradient beta * g with

    * k1 = log(pi/pi_ref): g = sum_y pi(y) grad log pi(y) = 0. No
      regularisation: the dynamics are those of beta = 0, which move all mass
      to the best bin; returned: the uniform distribution over argmax r
      (the limit for a unique maximiser; for ties, the mass on them depends on the start).
    * k2 = (log(pi/pi_ref))^2 / 2: g = sum_y pi(y) log(pi/pi_ref)(y) grad log pi(y)
      = grad KL(pi || pi_ref). The objective is E_pi[r] - beta KL(pi||pi_ref),
      maximised by pi_star = pi_ref exp(r/beta) / Z (also the limit of
      ``kl_estimator="exact"``, the analytic KL(pi||pi_ref)).
    * k3 = pi_ref/pi - 1 - log(pi_ref/pi): g = sum_y (pi(y) - pi_ref(y)) grad log pi(y)
      = grad KL(pi_ref || pi). The objective E_pi[r] - beta KL(pi_ref || pi)
      has the logit gradient, per bin i, pi_i (r_i - E_pi r) - beta (pi_i - pi_ref,i)
      (d/dz_i of -sum_j pi_ref,j log pi_j is pi_i - pi_ref,i). Zero at
      pi_i (beta + lambda - r_i) = beta pi_ref,i with lambda = E_pi r, i.e.
      pi_i = beta pi_ref,i / (beta + lambda - r_i). Positivity needs
      lambda > max_i r_i - beta (bins with pi_ref,i = 0 get 0), and on that
      interval f(lambda) = sum_i beta pi_ref,i / (beta + lambda - r_i) falls
      from +inf to 0, so sum_i pi_i = 1 has one root (found by bisection).
      Summing pi_i (beta + lambda - r_i) = beta pi_ref,i over i gives
      E_pi r = lambda, so the root is self-consistent. Unlike pi_star this
      is a rational, not exponential, tilt of pi_ref: its mass on the best bin
      is at most pi_ref(best) beta / (beta + lambda - r_max), so the forward
      KL keeps every bin of pi_ref covered.

    In the reward (``placement="reward"``, :func:`_shaped_advantages`) the
    estimate k(d), d = log(pi/pi_ref) at the sampled y, is computed from the
    sampling policy's log-probability and enters the advantage as a constant:
    the update is the policy gradient of the shaped reward s = r - beta k(d)
    with d held fixed, sum_y pi(y) (s(y) - E_pi s) grad log pi(y). Its
    stationary points have s equal (to c) on the support of pi:

    * k1 (and "exact", which places k1): r_i - beta d_i = c on every bin, the
      exponential tilt pi_star = pi_ref exp(r/beta) / Z. Here the dropped term
      E_pi[grad k1] = E_pi[grad log pi] is 0, so the update is the exact
      gradient of E_pi[r] - beta KL(pi || pi_ref) and pi_star is its unique maximiser.
    * k2, k3: k(d) = k_+(d) is increasing for d > 0 and decreasing for d < 0,
      so a bin below pi_ref that loses mass is penalised more (its s falls
      further): such stationary points are unstable, and the bins below pi_ref
      die out. A stable point keeps a support S on which d_i = k_+^{-1}((r_i - c) / beta) >= 0
      with c fixed by sum_{i in S} pi_ref,i exp(d_i) = 1 (bisection; f(c)
      falls in c), and 0 elsewhere. Which S the dynamics keep is decided by
      the path (on the paper's bandits: a top set of bins by reward), so it
      is an argument: ``support``, e.g. the bins where a run ends above pi_ref.
      The result is mode-seeking however large beta is.

    Args:
      ref_probs: (K,) pi_ref.
      reward: (K,) rewards.
      beta: KL coefficient > 0.
      estimator: "k1", "k2", "k3" or "exact".
      placement: "loss" (default) or "reward".
      support: (K,) bool, the bins that keep mass; required for k2 and k3 in
        the reward, ignored otherwise. Bins of it whose reward ends below c
        cannot be stationary and are dropped (lowest reward first).

    Returns:
      (K,) numpy float64 probabilities.
    """
    ref = np.asarray(ref_probs, np.float64)
    r = np.asarray(reward, np.float64)
    if not beta > 0:
        raise ValueError(f"beta={beta!r} is not positive; expected beta > 0")
    _checks.choice("placement", placement, KL_PLACEMENTS)
    if placement == "reward":
        if estimator in ("k1", "exact"):
            return kl_fixed_point(ref, r, beta, "k2")
        if estimator not in ("k2", "k3"):
            raise ValueError(f"estimator={estimator!r} is not valid; expected one of k1, k2, k3, exact")
        return _reward_fixed_point(ref, r, beta, estimator, support)
    if estimator == "k1":
        best = (r == r.max()).astype(np.float64)
        return best / best.sum()
    if estimator in ("k2", "exact"):
        logits = np.log(np.maximum(ref, 1e-300)) + r / beta
        logits = np.where(ref > 0, logits, -np.inf)
        p = np.exp(logits - logits.max())
        return p / p.sum()
    if estimator != "k3":
        raise ValueError(f"estimator={estimator!r} is not valid; expected one of k1, k2, k3, exact")
    support = ref > 0
    rmax = r[support].max()

    def total(lam: float) -> float:
        return np.sum(beta * ref[support] / (beta + lam - r[support]))

    lo = rmax - beta
    hi = lo + 1.0
    while total(hi) > 1.0:
        hi = lo + 2.0 * (hi - lo)
    lo_gap, hi_gap = 0.0, hi - lo
    # Bisect on the gap lambda - (rmax - beta), which stays positive and resolves small gaps.
    for _ in range(200):
        mid = 0.5 * (lo_gap + hi_gap)
        if total(lo + mid) > 1.0:
            lo_gap = mid
        else:
            hi_gap = mid
    lam = lo + hi_gap
    p = np.zeros_like(ref)
    p[support] = beta * ref[support] / (beta + lam - r[support])
    return p / p.sum()


def _inverse_penalty(y: np.ndarray, estimator: str) -> np.ndarray:
    """d >= 0 with k(d) = y >= 0 (the increasing branch): sqrt(2 y) for k2, bisection for k3 = e^-d - 1 + d."""
    import numpy as np

    y = np.asarray(y, np.float64)
    if estimator == "k2":
        return np.sqrt(2.0 * y)
    # k3 >= d - 1, so the root lies in [0, y + 1].
    lo, hi = np.zeros_like(y), y + 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        below = np.expm1(-mid) + mid < y
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def _reward_fixed_point(ref: np.ndarray, r: np.ndarray, beta: float, estimator: str, support: ArrayLike | None) -> np.ndarray:
    """The stable stationary point of k2 or k3 in the reward on ``support`` (:func:`kl_fixed_point`).

    A kept bin needs r_i >= c (d_i >= 0); while the lowest-reward kept bin
    falls below c it is dropped and c solved again (dropping a bin lowers c),
    so the result is the stable point on the largest such subset of ``support``.
    """
    import numpy as np

    if support is None:
        raise ValueError(f"support=None; expected a (K,) bool mask of the bins that keep mass for estimator={estimator!r} in the reward")
    if np.shape(support) != ref.shape:
        raise ValueError(f"support has shape {np.shape(support)}; expected {ref.shape}")
    keep = np.asarray(support, bool) & (ref > 0)
    if not keep.any():
        raise ValueError("support keeps no bin with pi_ref > 0; expected at least one")

    def solve(keep: np.ndarray) -> tuple[float, np.ndarray]:
        rs, rf = r[keep], ref[keep]

        def tilt(c: float) -> np.ndarray:
            return rf * np.exp(_inverse_penalty(np.maximum(rs - c, 0.0) / beta, estimator))

        # f(c) = sum tilt(c) is at most sum_S pi_ref <= 1 at c = max r and grows without bound as c falls.
        hi = rs.max()
        step = 1.0
        while tilt(hi - step).sum() < 1.0:
            step *= 2.0
        lo = hi - step
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if tilt(mid).sum() > 1.0:
                lo = mid
            else:
                hi = mid
        c = 0.5 * (lo + hi)
        return c, tilt(c)

    while True:
        c, mass = solve(keep)
        # Round-off in c is ~1e-15; a bin 1e-12 below it is at d = 0, on the boundary, and stays.
        below = keep & (r < c - 1e-12)
        if not below.any():
            break
        keep[np.flatnonzero(below)[np.argmin(r[below])]] = False
    p = np.zeros_like(ref)
    p[keep] = mass
    return p / p.sum()
