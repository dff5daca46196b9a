"""Contrastive objectives with a negative gradient: DPO, IPO and the wider catalogue.

Pair losses (chosen y_w, rejected y_l): dpo, ipo, slic, simpo, cpo, orpo,
apo_zero, apo_down, sppo, dpop, chi_po, robust_dpo; unpaired desirable /
undesirable labels on a Points batch: kto, bco (see :func:`unpaired_labels`).

These push the likelihood of the rejected response down as well as the chosen one
up (Lemma 6.2 with c2 > 0), which lets an offline method move mass away from
the reference's mode (docs/paper.md §B.6, docs/paper.md §E.3). The best-of-N negative terms live
with :func:`modeseek.losses.mode_covering.best_of_n`.

Unbatched: ``logp`` and ``ref_logp`` are (K,) for one context.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from modeseek.batches import Pairs, PairTable, Points, pair_expectation

__all__ = [
    "implicit_margin",
    "dpo",
    "ipo",
    "pair_statistics",
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
    "unpaired_labels",
    "kto_with_reference_point",
    "bco_from_log_ratios",
    "log1mexp",
    "log_odds",
    "CHI_PO_MAX_LOG_RATIO",
]


def implicit_margin(logp: jax.Array, ref_logp: jax.Array, chosen: jax.Array, rejected: jax.Array) -> jax.Array:
    """h = [log pi(y_w) - log pi_ref(y_w)] - [log pi(y_l) - log pi_ref(y_l)] for each pair: (M,) from (K,) logp, ref_logp and (M,) bins."""
    return (logp[chosen] - ref_logp[chosen]) - (logp[rejected] - ref_logp[rejected])


def pair_statistics(logp: jax.Array, ref_logp: jax.Array, batch: Pairs | PairTable) -> dict[str, jax.Array]:
    """Weighted means of the chosen and rejected log-probabilities and the margin h."""
    if isinstance(batch, PairTable):
        u = logp - ref_logp
        k = logp.shape[0]
        stats = pair_expectation(
            batch,
            lambda rows: {
                "chosen_logp": jnp.broadcast_to(logp[rows][:, None], (rows.shape[0], k)),
                "rejected_logp": jnp.broadcast_to(logp[None, :], (rows.shape[0], k)),
                "margin": u[rows][:, None] - u[None, :],
            },
        )
        return jax.lax.stop_gradient(stats)
    w = jax.lax.stop_gradient(batch.weight)
    total = jnp.maximum(jnp.sum(w), 1e-30)
    h = implicit_margin(logp, ref_logp, batch.chosen, batch.rejected)
    # Weighted sums as one matrix-vector product: its rounding does not depend on
    # how many runs are vmapped together, unlike separate small reductions, which
    # keeps sharded and chunked sweeps bit-identical.
    chosen, rejected, margin = jnp.stack([logp[batch.chosen], logp[batch.rejected], h]) @ w
    return {"chosen_logp": chosen / total, "rejected_logp": rejected / total, "margin": margin / total}


def _pair_terms(logp: jax.Array, ref_logp: jax.Array, batch: Pairs | PairTable, per_pair: Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]) -> tuple[jax.Array, dict[str, jax.Array]]:
    """sum_pairs w * per_pair(lw, ll, hw, hl), with the pair statistics; a PairTable is summed block by block.

    lw, ll: log pi of the chosen and rejected responses; hw, hl: their log-ratios
    log pi - log pi_ref. With a PairTable the arguments are (B, 1) (chosen rows)
    and (1, K) (every rejected bin).
    """
    u = logp - ref_logp
    if isinstance(batch, PairTable):
        loss = pair_expectation(batch, lambda rows: jnp.broadcast_to(per_pair(logp[rows][:, None], logp[None, :], u[rows][:, None], u[None, :]), (rows.shape[0], logp.shape[0])))
    else:
        c, r = batch.chosen, batch.rejected
        loss = jnp.sum(jax.lax.stop_gradient(batch.weight) * per_pair(logp[c], logp[r], u[c], u[r]))
    return loss, pair_statistics(logp, ref_logp, batch)


def dpo(logp: jax.Array, batch: Pairs | PairTable, *, ref_logp: jax.Array, beta: float | jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Direct preference optimisation: sum_pairs w * -log sigmoid(beta * h).

    Family: contrastive (negative gradient). Per pair the gradient is
    beta * sigmoid(-beta h) (grad log pi(y_w) - grad log pi(y_l)), i.e.
    c1 = c2 in Lemma 6.2 (docs/paper.md §B.6, docs/paper.md §E.3). The reference is the problem's
    pi_ref, as in the paper's 1-token bandit. Source: Rafailov et al. 2023, arXiv 2305.18290.

    Args:
      logp: (K,) log pi_theta(.|x).
      batch: Pairs ((M,) sampled pairs) or PairTable (all K x K pairs, exact).
      ref_logp: (K,) log pi_ref.
      beta: inverse temperature > 0.

    Returns:
      (loss (), aux): aux holds the weighted pair statistics chosen_logp,
      rejected_logp and margin, each () (:func:`pair_statistics`).
    """
    return _pair_terms(logp, ref_logp, batch, lambda lw, ll, hw, hl: -jax.nn.log_sigmoid(beta * (hw - hl)))


def ipo(logp: jax.Array, batch: Pairs | PairTable, *, ref_logp: jax.Array, target_margin: float | jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Identity preference optimisation: sum_pairs w * (h - target_margin)^2.

    Family: contrastive (negative gradient). ``target_margin`` is the margin in
    nats that IPO regresses h onto: 1/(2 tau) in the IPO paper (Azar et al.
    2023, arXiv 2310.12036), and what the authors' bandit code passes as ``beta`` (10 in their
    scripts, docs/paper.md §B.6). The engine's default is 1/(2 beta), i.e. tau = beta.

    Args:
      logp (K,), batch, ref_logp (K,): as in :func:`dpo`.
      target_margin: target h, > 0.
    """
    return _pair_terms(logp, ref_logp, batch, lambda lw, ll, hw, hl: (hw - hl - target_margin) ** 2)


# ----------------------------------------------------------------------------- the wider catalogue
#
# The losses below read the chosen and rejected responses separately (their
# log-probabilities lw, ll and log-ratios hw, hl to pi_ref), not only the
# margin hw - hl. Every pair loss takes ``ref_logp``: the reference-free ones
# (simpo, cpo, orpo) use it only for the reported pair statistics, so that
# "margin" means the same thing for every loss.

#: chi_po clips each log-ratio log(pi/pi_ref) to at most this before exp(): the
#: link phi(z) = z + log z grows like z, and exp(10) = 2.2e4 keeps beta * phi
#: finite in float32 for beta up to 1e30; past it the response gets no gradient.
CHI_PO_MAX_LOG_RATIO = 10.0

# ORPO's odds p / (1 - p) diverge as p -> 1; capping log p at -1e-6 bounds
# the log-odds by 13.8, and best-of-N's log-complement term by the same.
_MAX_LOGP_ODDS = -1e-6


def log1mexp(x: jax.Array) -> jax.Array:
    """log(1 - exp(x)) for x <= 0, capped at x = -1e-6, with finite gradients on both branches.

    Two branches (Maechler 2012): log(-expm1(x)) near 0, log1p(-exp(x)) below
    -log 2; each branch sees a safe input where it is not selected, so that
    the unselected branch's gradient is never inf * 0.
    """
    x = jnp.minimum(x, _MAX_LOGP_ODDS)
    near = x > -0.6931471805599453
    a = jnp.where(near, x, -1.0)
    b = jnp.where(near, -1.0, x)
    return jnp.where(near, jnp.log(-jnp.expm1(a)), jnp.log1p(-jnp.exp(b)))


def slic(logp: jax.Array, batch: Pairs | PairTable, *, ref_logp: jax.Array, beta: float | jax.Array, nll_coef: float | jax.Array = 1.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """SLiC-HF calibration: sum_pairs w * [relu(1 - beta * h) - nll_coef * log pi(y_w)].

    Family: contrastive (negative gradient while the margin h is below 1/beta,
    none after). Source: Zhao, Joshi, Liu, Khalman, Saleh and Liu 2023,
    "SLiC-HF: Sequence Likelihood Calibration with Human Feedback",
    arXiv 2305.10425: max(0, delta - log P(y+) + log P(y-)) - lambda log P(y_ref).
    Differences: the paper's margin is between the policy's own
    log-likelihoods (no reference) with a margin delta, and its regulariser is
    the NLL of the SFT target; here, as in the DPO-family trainers' "hinge"
    loss, the margin is the implicit one h of log-ratios to pi_ref (delta =
    1/beta after scaling) and the NLL is on the chosen response.

    Args:
      logp: (K,) log pi_theta(.|x).
      batch: Pairs or PairTable.
      ref_logp: (K,) log pi_ref.
      beta: inverse margin > 0.
      nll_coef: weight lambda >= 0 of the NLL of the chosen response (0: the hinge alone).
    """
    return _pair_terms(logp, ref_logp, batch, lambda lw, ll, hw, hl: jax.nn.relu(1.0 - beta * (hw - hl)) - nll_coef * lw)


def simpo(
    logp: jax.Array, batch: Pairs | PairTable, *, ref_logp: jax.Array, beta: float | jax.Array, simpo_gamma: float | jax.Array = 0.5, length: float | jax.Array = 1.0
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """SimPO: sum_pairs w * -log sigmoid(beta * (log pi(y_w) - log pi(y_l)) / |y| - gamma).

    Family: contrastive, reference-free. Source: Meng, Xia and Chen 2024,
    "SimPO: Simple Preference Optimization with a Reference-Free Reward",
    arXiv 2405.14734. The implicit reward is the length-normalised
    log-likelihood beta/|y| log pi(y); on 1-token bandits |y| = 1, on sequences
    |y| is the number of scored tokens (equal for chosen and rejected here, as
    every response has the problem's length, so the normalisation only
    rescales beta). ``ref_logp`` feeds the reported pair statistics only.

    Args:
      logp (K,), batch, ref_logp (K,): as in :func:`slic`.
      beta: reward scale > 0 (the paper uses 2 to 10 on LLMs).
      simpo_gamma: target reward margin gamma >= 0.
      length: |y|, the number of tokens per response.
    """
    return _pair_terms(logp, ref_logp, batch, lambda lw, ll, hw, hl: -jax.nn.log_sigmoid(beta * (lw - ll) / length - simpo_gamma))


def cpo(logp: jax.Array, batch: Pairs | PairTable, *, ref_logp: jax.Array, beta: float | jax.Array, nll_coef: float | jax.Array = 1.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Contrastive preference optimisation: sum_pairs w * [-log sigmoid(beta (log pi(y_w) - log pi(y_l))) - nll_coef log pi(y_w)].

    Family: contrastive, reference-free. Source: Xu, Sharaf, Chen, Tan, Shen,
    Van Durme, Murray and Kim 2024, "Contrastive Preference Optimization",
    arXiv 2401.08417 (L_prefer + L_NLL): DPO with pi_ref replaced by
    a uniform reference, plus behaviour cloning of the chosen response, whose
    weight the paper fixes at 1. ``ref_logp`` feeds the pair statistics only.

    Args:
      logp (K,), batch, ref_logp (K,): as in :func:`slic`.
      beta: inverse temperature > 0.
      nll_coef: weight >= 0 of the NLL of the chosen response.
    """
    return _pair_terms(logp, ref_logp, batch, lambda lw, ll, hw, hl: -jax.nn.log_sigmoid(beta * (lw - ll)) - nll_coef * lw)


def log_odds(logp: jax.Array) -> jax.Array:
    """log(p / (1 - p)) from log p, with log p capped at -1e-6 (so at most 13.8)."""
    return jnp.minimum(logp, _MAX_LOGP_ODDS) - log1mexp(logp)


def orpo(logp: jax.Array, batch: Pairs | PairTable, *, ref_logp: jax.Array, beta: float | jax.Array, length: float | jax.Array = 1.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """ORPO: sum_pairs w * [-log pi(y_w) - beta * log sigmoid(log odds(y_w) - log odds(y_l))], odds = p / (1 - p).

    Family: contrastive, reference-free (odds ratio instead of a reference).
    Source: Hong, Lee and Thorne 2024, "ORPO: Monolithic Preference
    Optimization without Reference Model", arXiv 2403.07691, with
    beta the paper's lambda (0.1 there; the trainers pass it as beta too).
    The odds use log(1 - p) from :func:`log1mexp`; p is capped at
    1 - 1e-6, past which the odds term has no gradient. On sequences the
    paper's probabilities are per-token geometric means, P(y) =
    exp(log pi(y) / |y|), for both the NLL and the odds (``length`` = |y|; 1
    on bandits). ``ref_logp`` feeds the pair statistics only.

    Args:
      logp (K,), batch, ref_logp (K,): as in :func:`slic`.
      beta: weight lambda >= 0 of the odds-ratio term.
      length: |y|, the number of tokens per response.
    """

    def per_pair(lw: jax.Array, ll: jax.Array, hw: jax.Array, hl: jax.Array) -> jax.Array:
        lw, ll = lw / length, ll / length
        return -lw - beta * jax.nn.log_sigmoid(log_odds(lw) - log_odds(ll))

    return _pair_terms(logp, ref_logp, batch, per_pair)


def apo_zero(logp: jax.Array, batch: Pairs | PairTable, *, ref_logp: jax.Array, beta: float | jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """APO-zero: sum_pairs w * [(1 - sigmoid(beta h_w)) + sigmoid(beta h_l)], h = log pi - log pi_ref.

    Family: contrastive, anchored: pushes the chosen response's likelihood up
    and the rejected one's down, each against the reference, not only their
    difference (for chosen responses better than the policy's own).
    Source: D'Oosterlinck, Xu, Develder, Demeester, Singh, Potts, Kiela and
    Mehri 2024, "Anchored Preference Optimization and Contrastive Revisions",
    arXiv 2408.06266.

    Args:
      logp (K,), batch, ref_logp (K,): as in :func:`slic`.
      beta: inverse temperature > 0.
    """
    return _pair_terms(logp, ref_logp, batch, lambda lw, ll, hw, hl: jax.nn.sigmoid(-beta * hw) + jax.nn.sigmoid(beta * hl))


def apo_down(logp: jax.Array, batch: Pairs | PairTable, *, ref_logp: jax.Array, beta: float | jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """APO-down: sum_pairs w * [sigmoid(beta h_w) + (1 - sigmoid(beta (h_w - h_l)))].

    Family: contrastive, anchored: pushes both likelihoods down, the rejected
    one more (for chosen responses worse than the policy's own). Source:
    D'Oosterlinck et al. 2024, arXiv 2408.06266.

    Args:
      logp (K,), batch, ref_logp (K,): as in :func:`slic`.
      beta: inverse temperature > 0.
    """
    return _pair_terms(logp, ref_logp, batch, lambda lw, ll, hw, hl: jax.nn.sigmoid(beta * hw) + jax.nn.sigmoid(-beta * (hw - hl)))


def sppo(logp: jax.Array, batch: Pairs | PairTable, *, ref_logp: jax.Array, beta: float | jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """SPPO (hard labels): sum_pairs w * [(h_w - 1/(2 beta))^2 + (h_l + 1/(2 beta))^2].

    Family: contrastive (regression of each log-ratio onto a fixed target, so
    its population minimiser is finite, unlike DPO's). Source: Wu, Sun,
    Yuan, Ji, Yang and Gu 2024, "Self-Play Preference Optimization for
    Language Model Alignment", arXiv 2405.00675, its loss with the win
    probabilities P(y_w > pi_t) = 1 and P(y_l > pi_t) = 0 and eta = 1/beta.
    Differences: the paper's reference is the previous iterate pi_t and its
    targets use estimated win rates; here the reference is the fixed pi_ref
    and the labels are hard (the "sppo_hard" of the DPO-family trainers).

    Args:
      logp (K,), batch, ref_logp (K,): as in :func:`slic`.
      beta: > 0; the targets are +-1/(2 beta).
    """
    half = 0.5 / beta
    return _pair_terms(logp, ref_logp, batch, lambda lw, ll, hw, hl: (hw - half) ** 2 + (hl + half) ** 2)


def dpop(logp: jax.Array, batch: Pairs | PairTable, *, ref_logp: jax.Array, beta: float | jax.Array, dpop_lambda: float | jax.Array = 50.0) -> tuple[jax.Array, dict[str, jax.Array]]:
    """DPO-Positive: sum_pairs w * -log sigmoid(beta * (h - lambda * max(0, -h_w))).

    Family: contrastive. The penalty is active when the chosen response's
    likelihood falls below the reference's (h_w < 0), the failure mode
    ("likelihood displacement") DPO allows. Source: Pal, Karkhanis, Dooley,
    Roberts, Naidu and White 2024, "Smaug: Fixing Failure Modes of Preference
    Optimisation with DPO-Positive", arXiv 2402.13228.

    Args:
      logp (K,), batch, ref_logp (K,): as in :func:`slic`.
      beta: inverse temperature > 0.
      dpop_lambda: penalty weight lambda >= 0 (0: DPO).
    """
    return _pair_terms(logp, ref_logp, batch, lambda lw, ll, hw, hl: -jax.nn.log_sigmoid(beta * ((hw - hl) - dpop_lambda * jax.nn.relu(-hw))))


def chi_link(h: jax.Array) -> jax.Array:
    """phi(z) = z + log z at z = pi / pi_ref, from the log-ratio h = log z: exp(h) + h, with h clipped above at CHI_PO_MAX_LOG_RATIO."""
    h = jnp.minimum(h, CHI_PO_MAX_LOG_RATIO)
    return jnp.exp(h) + h


def chi_po(logp: jax.Array, batch: Pairs | PairTable, *, ref_logp: jax.Array, beta: float | jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """chi^2-preference optimisation: sum_pairs w * -log sigmoid(beta * (phi(z_w) - phi(z_l))), phi(z) = z + log z.

    Family: contrastive. DPO's link log z becomes z + log z, the implicit
    reward of a chi^2 + KL regulariser, which penalises mass far above the
    reference more strongly (against over-optimisation). Source: Huang, Zhan,
    Xie, Lee, Sun, Krishnamurthy and Foster 2024, "Correcting the Mythos of
    KL-Regularization: Direct Alignment without Overoptimization via
    chi^2-Preference Optimization", arXiv 2407.13399, Algorithm 1.
    Differences: the paper clips the scaled difference to [-2 R_max, 2 R_max]
    for rewards in [0, R_max]; the loss does not see a reward range, so here
    each log-ratio is clipped at CHI_PO_MAX_LOG_RATIO = 10 before the exp (a
    ratio pi/pi_ref above e^10 gets no further push), which keeps the link
    finite. phi is computed from the log-ratio, never from z itself.

    Args:
      logp (K,), batch, ref_logp (K,): as in :func:`slic`.
      beta: inverse temperature > 0.
    """
    return _pair_terms(logp, ref_logp, batch, lambda lw, ll, hw, hl: -jax.nn.log_sigmoid(beta * (chi_link(hw) - chi_link(hl))))


def robust_dpo(logp: jax.Array, batch: Pairs | PairTable, *, ref_logp: jax.Array, beta: float | jax.Array, label_smoothing: float | jax.Array = 0.1) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Label-smoothed (conservative) DPO: sum_pairs w * [(1 - eps) DPO(h) + eps DPO(-h)].

    Family: contrastive. Each label is taken to be flipped with probability
    eps, so the loss is DPO's expected value under the noisy label and its
    population optimum keeps a finite margin log((1 - eps)/eps)/beta.
    Sources: Mitchell 2023, "A note on DPO with noisy preferences and
    relationship to IPO" (conservative DPO, this loss); Chowdhury, Kini and
    Natarajan 2024, "Provably Robust DPO: Aligning Language Models with Noisy
    Feedback", arXiv 2403.00409. Difference: Chowdhury et al.'s rDPO is the
    debiased [(1 - eps) DPO(h) - eps DPO(-h)] / (1 - 2 eps), unbounded below
    for a separable batch; the trainers' "robust" loss type is that one, their
    label smoothing this one.

    Args:
      logp (K,), batch, ref_logp (K,): as in :func:`slic`.
      beta: inverse temperature > 0.
      label_smoothing: eps in [0, 0.5) (0: DPO).
    """
    eps = label_smoothing

    def per_pair(lw: jax.Array, ll: jax.Array, hw: jax.Array, hl: jax.Array) -> jax.Array:
        x = beta * (hw - hl)
        return -(1.0 - eps) * jax.nn.log_sigmoid(x) - eps * jax.nn.log_sigmoid(-x)

    return _pair_terms(logp, ref_logp, batch, per_pair)


# ----------------------------------------------------------------------------- unpaired labels: KTO and BCO


def unpaired_labels(reward: jax.Array, weight: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(desirable, undesirable) boolean masks of a Points batch: reward above / below its weighted mean.

    The threshold is the batch's mean reward (one context): the population
    mean under the sampling distribution for an exact batch, the sample mean
    for a sampled one (a ratio estimator, so the sampled loss converges to the
    exact one as N grows, with an O(1/N) bias). Items exactly at the mean and
    items of weight 0 (masked draws) get no label. A per-context mean rather
    than a fixed threshold: the label then says "better than this context's
    typical response", the only scale-free choice when rewards differ between
    problems, and every batch with distinct rewards has both labels.
    """
    w = jax.lax.stop_gradient(weight)
    mean = jnp.sum(w * reward) / jnp.maximum(jnp.sum(w), 1e-30)
    live = w > 0
    return live & (reward > mean), live & (reward < mean)


def kto_with_reference_point(
    h: jax.Array, batch: Points, z0: jax.Array, *, beta: float | jax.Array, desirable_weight: float | jax.Array = 1.0, undesirable_weight: float | jax.Array = 1.0
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """KTO on the batch's log-ratios h (M,) with a given (detached) reference point z0; see :func:`kto`."""
    good, bad = unpaired_labels(batch.reward, batch.weight)
    z0 = jax.lax.stop_gradient(z0)
    per = jnp.where(
        good,
        desirable_weight * jax.nn.sigmoid(-beta * (h - z0)),
        jnp.where(bad, undesirable_weight * jax.nn.sigmoid(-beta * (z0 - h)), 0.0),
    )
    w = jax.lax.stop_gradient(batch.weight)
    return jnp.sum(w * per), {"reference_point": z0, "desirable_fraction": jnp.sum(jnp.where(good, w, 0.0))}


def kto(
    logp: jax.Array, batch: Points, *, ref_logp: jax.Array, beta: float | jax.Array, desirable_weight: float | jax.Array = 1.0, undesirable_weight: float | jax.Array = 1.0
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Kahneman-Tversky optimisation on unpaired labels: sum_j w_j lambda_j (1 - v_j).

    v_j = sigmoid(beta (h_j - z0)) for a desirable response, sigmoid(beta (z0 - h_j))
    for an undesirable one, h = log pi - log pi_ref, lambda_j = desirable_weight
    or undesirable_weight, z0 = KL(pi || pi_ref) detached (the reference point).
    Family: contrastive (undesirable responses are pushed down). Source:
    Ethayarajh, Xu, Muennighoff, Jurafsky and Kiela 2024, "KTO: Model
    Alignment as Prospect Theoretic Optimization", arXiv 2402.01306.

    The batch is a Points batch (the points regimes of every sampling mode)
    labelled by :func:`unpaired_labels`: desirable above the context's mean
    reward, undesirable below. On bandits z0 is the exact KL of the (K,)
    distributions; the paper estimates it from mismatched (x, y') pairs of a
    microbatch, clamped at 0 (the sequence implementation estimates it from
    the batch). The paper advises lambda_D n_D / (lambda_U n_U) in [1, 4/3].

    Args:
      logp: (K,) log pi_theta(.|x).
      batch: Points.
      ref_logp: (K,) log pi_ref.
      beta: inverse temperature > 0.
      desirable_weight, undesirable_weight: lambda_D, lambda_U >= 0.
    """
    z0 = jnp.sum(jnp.exp(logp) * (logp - ref_logp))
    h = logp[batch.y] - ref_logp[batch.y]
    return kto_with_reference_point(h, batch, z0, beta=beta, desirable_weight=desirable_weight, undesirable_weight=undesirable_weight)


def bco(logp: jax.Array, batch: Points, *, ref_logp: jax.Array, beta: float | jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Binary classifier optimisation: sum_j w_j [-log sigmoid(+-(beta h_j - delta))], + for desirable, - for undesirable.

    A logistic classifier whose logit is the implicit reward beta h = beta
    (log pi - log pi_ref) shifted by delta, the mean implicit reward of the
    labelled responses (detached). Family: contrastive. Source: Jung, Han,
    Nam and On 2024, "Binary Classifier Optimization for Large Language
    Model Alignment", arXiv 2404.04656. Labels as in :func:`kto`
    (:func:`unpaired_labels`).

    Difference: the paper's delta is a running mean of the rewards over
    training steps; the engine carries no loss state between steps, so delta
    here is the weighted mean of beta h over the current batch's labelled
    responses (the population mean on an exact batch).

    Args:
      logp: (K,) log pi_theta(.|x).
      batch: Points.
      ref_logp: (K,) log pi_ref.
      beta: inverse temperature > 0.
    """
    return bco_from_log_ratios(logp[batch.y] - ref_logp[batch.y], batch, beta=beta)


def bco_from_log_ratios(h: jax.Array, batch: Points, *, beta: float | jax.Array, reward_shift: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """BCO on the batch's log-ratios h (M,); see :func:`bco`.

    ``reward_shift``: delta, e.g. a running mean kept by the caller; None: the
    batch's mean implicit reward over its labelled responses. Detached either way.
    """
    good, bad = unpaired_labels(batch.reward, batch.weight)
    w = jax.lax.stop_gradient(batch.weight)
    lab = jnp.where(good | bad, w, 0.0)
    x = beta * h
    if reward_shift is None:
        reward_shift = jnp.sum(lab * x) / jnp.maximum(jnp.sum(lab), 1e-30)
    delta = jax.lax.stop_gradient(reward_shift)
    per = jnp.where(good, -jax.nn.log_sigmoid(x - delta), jnp.where(bad, -jax.nn.log_sigmoid(delta - x), 0.0))
    return jnp.sum(w * per), {"reward_shift": delta}
