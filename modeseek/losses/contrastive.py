"""Contrastive objectives with a negative gradient: DPO and IPO on preference pairs.

These push the likelihood of the rejected response down as well as the chosen one
up (Lemma 6.2 with c2 > 0), which lets an offline method move mass away from
the reference's mode (docs/paper.md §B.6, docs/paper.md §E.3). The best-of-N negative terms live
with :func:`modeseek.losses.mode_covering.best_of_n`.

Unbatched: ``logp`` and ``ref_logp`` are (K,) for one context.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from modeseek.batches import Pairs, PairTable, pair_expectation

__all__ = ["implicit_margin", "dpo", "ipo", "pair_statistics"]


def implicit_margin(logp, ref_logp, chosen, rejected):
    """h = [log pi(y_w) - log pi_ref(y_w)] - [log pi(y_l) - log pi_ref(y_l)] for each pair."""
    return (logp[chosen] - ref_logp[chosen]) - (logp[rejected] - ref_logp[rejected])


def pair_statistics(logp, ref_logp, batch: Pairs | PairTable):
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


def _pair_loss(logp, ref_logp, batch: Pairs | PairTable, per_pair):
    """sum_pairs w * per_pair(h), with the pair statistics; a PairTable is summed block by block."""
    if isinstance(batch, PairTable):
        u = logp - ref_logp
        loss = pair_expectation(batch, lambda rows: per_pair(u[rows][:, None] - u[None, :]))
    else:
        h = implicit_margin(logp, ref_logp, batch.chosen, batch.rejected)
        loss = jnp.sum(jax.lax.stop_gradient(batch.weight) * per_pair(h))
    return loss, pair_statistics(logp, ref_logp, batch)


def dpo(logp, batch: Pairs, *, ref_logp, beta):
    """Direct preference optimisation: sum_pairs w * -log sigmoid(beta * h).

    Family: contrastive (negative gradient). Per pair the gradient is
    beta * sigmoid(-beta h) (grad log pi(y_w) - grad log pi(y_l)), i.e.
    c1 = c2 in Lemma 6.2 (docs/paper.md §B.6, docs/paper.md §E.3). The reference is the problem's
    pi_ref, as in the paper's 1-token bandit.

    Args:
      logp: (K,) log pi_theta(.|x).
      batch: Pairs.
      ref_logp: (K,) log pi_ref.
      beta: inverse temperature > 0.
    """
    return _pair_loss(logp, ref_logp, batch, lambda h: -jax.nn.log_sigmoid(beta * h))


def ipo(logp, batch: Pairs, *, ref_logp, target_margin):
    """Identity preference optimisation: sum_pairs w * (h - target_margin)^2.

    Family: contrastive (negative gradient). ``target_margin`` is the margin in
    nats that IPO regresses h onto: 1/(2 tau) in the IPO paper (Azar et al.
    2023), and what the authors' bandit code passes as ``beta`` (10 in their
    scripts, docs/paper.md §B.6). The engine's default is 1/(2 beta), i.e. tau = beta.

    Args:
      logp, batch, ref_logp: as in :func:`dpo`.
      target_margin: target h, > 0.
    """
    return _pair_loss(logp, ref_logp, batch, lambda h: (h - target_margin) ** 2)
