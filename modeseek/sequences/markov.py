"""Exact quantities of a first-order Markov chain over the response tokens.

The factorised and bigram policies are Markov chains y_1 -> y_2 -> ... -> y_L
(:attr:`modeseek.sequences.policies.SequencePolicy.markov`): ``init_logp`` (V,)
is log p(y_1 | x) and ``trans_logp`` (L - 1, V, V) holds log p(y_{t+1} | y_t).
Everything below is a forward recursion over the L positions, O(L V^2) instead
of the V^L terms of brute-force enumeration (the tests check both agree).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from modeseek import metrics

__all__ = ["marginals", "kl", "entropy"]


def marginals(init_p: jax.Array, trans_p: jax.Array) -> jax.Array:
    """(L, V) per-position marginals from init (V,) and transition (L - 1, V, V) probabilities."""

    def f(m: jax.Array, tr: jax.Array) -> tuple[jax.Array, jax.Array]:
        nxt = m @ tr
        return nxt, nxt

    _, rest = jax.lax.scan(f, init_p, trans_p)
    return jnp.concatenate([init_p[None], rest], axis=0)


def kl(init_logp: jax.Array, trans_logp: jax.Array, ref_init_logp: jax.Array, ref_trans_logp: jax.Array) -> jax.Array:
    """Exact KL(pi || rho) of two Markov chains over whole responses.

    By the chain rule, KL = KL(p_1 || r_1) + sum_t E_{y_t ~ m_t}[KL(p_{t+1}(.|y_t) || r_{t+1}(.|y_t))],
    with m_t the policy's marginal at position t.
    """
    m = marginals(jnp.exp(init_logp), jnp.exp(trans_logp))
    first = metrics.kl(init_logp, ref_init_logp)
    rows = metrics.kl(trans_logp, ref_trans_logp)  # (L - 1, V)
    return first + jnp.sum(m[:-1] * rows)


def entropy(init_logp: jax.Array, trans_logp: jax.Array) -> jax.Array:
    """Exact entropy H(pi) of a Markov chain over whole responses (chain rule, as in :func:`kl`)."""
    m = marginals(jnp.exp(init_logp), jnp.exp(trans_logp))
    return metrics.entropy(init_logp) + jnp.sum(m[:-1] * metrics.entropy(trans_logp))
