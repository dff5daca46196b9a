"""Autoregressive sampling and sequence log-probabilities.

Sampling is by inverse CDF with one uniform per token, not
``jax.random.categorical`` (whose Gumbel-max draw needs V uniforms per token):
it is cheaper on CPU and follows the rule of the core sampler
(:func:`modeseek.regimes.sample_bins`), so a token drawn from the same uniform
is the same bin in both. It is jit- and vmap-friendly: ``sample`` scans over
the L positions and is vmapped over the N sequences; the engine vmaps it again
over prompts and seeds.

Log-probabilities (docs/paper.md §C.5). A policy's ``logits(params, tokens)`` row t
is the distribution of token t + 1 given tokens[:t + 1]. The correct per-token
log-probability of the response is therefore row t gathered at tokens[t + 1],
t = 0..L-1 (L terms). The authors' ``GPT.log_prob`` gathers row t at tokens[t],
t = 0..L (L + 1 terms): every term scores the token *already in the input* with
the distribution of the *next* one, and the first term scores the prompt. That
is ``shift="authors"``, offered to reproduce their curves and off by default.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

from modeseek import _checks, regimes

if TYPE_CHECKING:
    from modeseek.sequences.policies import SequencePolicy

__all__ = ["SHIFTS", "inverse_cdf", "token_logprobs", "sequence_logprobs", "sample", "sample_with_uniforms"]

SHIFTS = ("correct", "authors")


def inverse_cdf(logits: jax.Array, u: jax.Array) -> jax.Array:
    """The token whose CDF interval contains u in [0, 1); logits (V,), u scalar.

    The same rule as :func:`modeseek.regimes.sample_bins` (unnormalised CDF,
    ``u * total``), so a 1-token sequence sampled with the same key draws the
    same bin as the core sampler.
    """
    probs = jnp.exp(logits - jnp.max(logits))
    cdf = regimes.prefix_sums(probs)
    idx = jnp.searchsorted(cdf, u * cdf[-1], side="right", method="compare_all")
    return jnp.minimum(idx, logits.shape[-1] - 1).astype(jnp.int32)


def token_logprobs(next_logits: jax.Array, tokens: jax.Array, shift: str = "correct") -> jax.Array:
    """Per-token log-probabilities of one sequence from its next-token logits.

    Args:
      next_logits: (L + 1, V) logits, row t predicting token t + 1.
      tokens: (L + 1,) [prompt, y_1..y_L].
      shift: "correct" -> (L,) log pi(y_t | x, y_<t), t = 1..L;
        "authors" -> (L + 1,) log_softmax(row t)[tokens[t]], t = 0..L, the
        authors' off-by-one gather (docs/paper.md §C.5).

    Returns:
      (L,) or (L + 1,) log-probabilities; their sum is the sequence log-probability.
    """
    _checks.choice("shift", shift, SHIFTS)
    logp = jax.nn.log_softmax(next_logits, axis=-1)
    if shift == "correct":
        return jnp.take_along_axis(logp[:-1], tokens[1:, None], axis=-1)[:, 0]
    return jnp.take_along_axis(logp, tokens[:, None], axis=-1)[:, 0]


@functools.partial(jax.jit, static_argnames=("policy", "shift"))
def sequence_logprobs(policy: SequencePolicy, params: Any, tokens: jax.Array, *, shift: str = "correct", dropout_key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Per-token log-probabilities and next-token log-distributions of a batch of sequences.

    Args:
      policy: a SequencePolicy.
      params: its parameters.
      tokens: (N, L + 1) sequences.
      shift: see :func:`token_logprobs`.
      dropout_key: PRNG key for dropout (transformer in training mode), or None.

    Returns:
      (tok_logp (N, T), next_logp (N, L, V)): T = L ("correct") or L + 1
      ("authors"); next_logp[j, t] is log pi(. | tokens[j, :t + 1]), the
      conditionals of the L response tokens, used by exact per-token KL and
      entropy terms.
    """
    keys = None if dropout_key is None else jax.random.split(dropout_key, tokens.shape[0])

    def one(tok: jax.Array, k: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        lg = policy.logits(params, tok, dropout_key=k)
        return token_logprobs(lg, tok, shift), jax.nn.log_softmax(lg[:-1], axis=-1)

    # Without dropout ``keys`` is None, an empty pytree that vmap passes through.
    return jax.vmap(one)(tokens, keys)


def sample_with_uniforms(policy: SequencePolicy, params: Any, prompt: int | jax.Array, u: jax.Array, *, full: bool = False) -> tuple[jax.Array, ...]:
    """Sample one sequence given its (L,) uniforms.

    The prompt is fed at position 0; at position t the policy's next-token
    logits are inverted at u[t]. The log-probabilities are those of the
    sampling distribution (no dropout), i.e. the correct-shift token
    log-probabilities of the returned sequence.

    Returns:
      tokens (L + 1,) int32 and logq (L,); with ``full`` also the (L, V)
      next-token log-distributions along the sequence (what a teacher-forced
      forward pass would give, without running one).
    """
    length = u.shape[0]

    def f(carry: tuple[Any, jax.Array], t: jax.Array) -> tuple[tuple[Any, jax.Array], tuple[jax.Array, jax.Array, Any]]:
        state, token = carry
        logits, state = policy.step(params, state, token, t)
        nxt = inverse_cdf(logits, u[t])
        logp = jax.nn.log_softmax(logits)
        return (state, nxt), (nxt, logp[nxt], logp if full else None)

    prompt = jnp.asarray(prompt, jnp.int32)
    _, (ys, logq, rows) = jax.lax.scan(f, (policy.start(params), prompt), jnp.arange(length))
    tokens = jnp.concatenate([prompt[None], ys])
    return (tokens, logq, rows) if full else (tokens, logq)


@functools.partial(jax.jit, static_argnames=("policy", "n", "length"))
def _sample(policy: SequencePolicy, params: Any, key: jax.Array, prompt: int | jax.Array, n: int, length: int) -> tuple[jax.Array, ...]:
    u = jax.random.uniform(key, (n, length))
    return jax.vmap(lambda row: sample_with_uniforms(policy, params, prompt, row))(u)


def sample(policy: SequencePolicy, params: Any, key: jax.Array, prompt: int | jax.Array, n: int, length: int) -> tuple[jax.Array, ...]:
    """Draw n sequences for one prompt: one uniform per token, ``uniform(key, (n, length))``.

    Args:
      policy, params: as in :func:`sequence_logprobs`.
      key: PRNG key.
      prompt: () int prompt token.
      n: number of sequences.
      length: L response tokens.

    Returns:
      tokens (n, L + 1) int32 and logq (n, L) per-token log-probabilities.
    """
    n = _checks.integer("n", n)
    length = _checks.integer("length", length)
    return _sample(policy, params, key, prompt, n, length)
