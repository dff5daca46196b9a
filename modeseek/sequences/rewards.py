"""Rewards on token sequences, and their exact expectation under a Markov chain.

A :class:`SequenceReward` is a pytree: its arrays (a per-token table, an
end-of-sequence token, a target length) are traced data, so rewards of the same
kind can be stacked and swept; its kind and the prompt option are static.

Kinds:

* "token_mean": the mean of a per-token reward table over the response tokens
  (and over the prompt token too with ``include_prompt``). The paper's sequence
  rewards 6 and 7 are gaussian bumps at 70 ("far") and 20 ("near") of width 10,
  averaged over all 10 tokens *including the prompt* (docs/paper.md §C.3), which
  caps the achievable reward at ~0.918; ``include_prompt=False`` (the default
  here) averages over the 9 response tokens only, so the maximum is 1.
* "length": a length-like reward. The response ends at its first
  end-of-sequence token ``eos`` (its length is the number of tokens before it,
  L when there is none) and r = 1 - |length - target| / L: target 0 prefers
  short responses (the paper's "Min Length", docs/paper.md §D.6).
* "all_in_set": a sparse all-or-nothing reward, 1 when every response token
  lies in a set (``table`` is its 0/1 indicator), else 0.

Every kind has an exact expectation under a first-order Markov chain
(:meth:`SequenceReward.expected_markov`), which covers the factorised and the
bigram policies.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from modeseek import _checks
from modeseek import rewards as core_rewards
from modeseek.sequences.markov import marginals as markov_marginals

__all__ = ["SequenceReward", "KINDS", "token_mean", "gaussian_bump", "length", "all_in_set"]

KINDS = ("token_mean", "length", "all_in_set")


@dataclasses.dataclass(frozen=True)
class SequenceReward:
    """A reward on (L + 1,) token sequences [prompt, y_1..y_L].

    Attributes:
      table: (V,) per-token rewards ("token_mean"), or the 0/1 set indicator
        ("all_in_set"); unused by "length".
      eos: () end-of-sequence token ("length").
      target: () target length ("length").
      kind: one of KINDS (static).
      include_prompt: count the prompt token (static; "token_mean" and
        "all_in_set").
    """

    table: Any
    eos: Any = 0
    target: Any = 0.0
    kind: str = "token_mean"
    include_prompt: bool = False

    def __post_init__(self) -> None:
        _checks.choice("kind", self.kind, KINDS)
        if _checks.is_traced(self.table):
            return
        t = _checks.vector("table", self.table, unit="token")
        if self.kind == "all_in_set" and not np.all((t == 0) | (t == 1)):
            raise ValueError("an all_in_set reward needs a 0/1 table (the set indicator)")
        object.__setattr__(self, "table", jnp.asarray(t, jnp.float32))
        object.__setattr__(self, "eos", jnp.asarray(self.eos, jnp.int32))
        object.__setattr__(self, "target", jnp.asarray(self.target, jnp.float32))

    @property
    def vocab(self) -> int:
        return int(np.shape(self.table)[-1])

    @property
    def additive(self) -> bool:
        """True when r is a weighted sum of per-token terms (marginals determine E[r])."""
        return self.kind == "token_mean"

    def __call__(self, tokens: jax.Array) -> jax.Array:
        """r(tokens) for one (L + 1,) int sequence."""
        y = tokens[1:]
        length = y.shape[0]
        if self.kind != "length":
            vals = self.table[tokens] if self.include_prompt else self.table[y]
            return jnp.mean(vals) if self.kind == "token_mean" else jnp.min(vals)
        is_eos = y == self.eos
        n = jnp.where(jnp.any(is_eos), jnp.argmax(is_eos), length)
        return 1.0 - jnp.abs(n - self.target) / length

    def expected_from_marginals(self, prompt: int | jax.Array, marginals: jax.Array) -> jax.Array:
        """E[r] for an additive reward from (L, V) per-position marginals and the prompt."""
        if not self.additive:
            raise ValueError(f"kind={self.kind!r} is not additive; its expectation needs the joint law")
        total = jnp.sum(marginals @ self.table)
        if self.include_prompt:
            return (total + self.table[prompt]) / (marginals.shape[0] + 1)
        return total / marginals.shape[0]

    def expected_markov(self, prompt: int | jax.Array, init_p: jax.Array, trans_p: jax.Array) -> jax.Array:
        """Exact E[r] when y_1 ~ init_p (V,) and y_{t+1} | y_t ~ trans_p[t] (L - 1, V, V).

        Dynamic programming over the chain (the rewards of docs/paper.md §C.3 are additive,
        so only the marginals matter for them; the other kinds carry a
        restricted forward probability).
        """
        if self.kind == "token_mean":
            return self.expected_from_marginals(prompt, markov_marginals(init_p, trans_p))
        if self.kind == "all_in_set":
            s = self.table

            def f(a: jax.Array, tr: jax.Array) -> tuple[jax.Array, None]:
                return (a @ tr) * s, None

            a, _ = jax.lax.scan(f, init_p * s, trans_p)
            p = jnp.sum(a)
            return p * s[prompt] if self.include_prompt else p
        # Length: a_t(v) = P(no eos among y_1..y_t, y_t = v); the response has
        # length k when y_{k+1} is the first eos.
        length = trans_p.shape[0] + 1
        keep = 1.0 - jax.nn.one_hot(self.eos, init_p.shape[0], dtype=init_p.dtype)

        def g(a: jax.Array, tr: jax.Array) -> tuple[jax.Array, jax.Array]:
            nxt = a @ tr
            return nxt * keep, nxt[self.eos]

        a_last, p_stop = jax.lax.scan(g, init_p * keep, trans_p)
        p_len = jnp.concatenate([init_p[self.eos][None], p_stop, jnp.sum(a_last)[None]])  # lengths 0..L
        r = 1.0 - jnp.abs(jnp.arange(length + 1) - self.target) / length
        return jnp.sum(p_len * r)


_checks.register_pytree(SequenceReward, ("table", "eos", "target"), ("kind", "include_prompt"))


def token_mean(table: ArrayLike, *, include_prompt: bool = False) -> SequenceReward:
    """The mean of a per-token reward table over the response (and the prompt with ``include_prompt``)."""
    return SequenceReward(table, kind="token_mean", include_prompt=include_prompt)


def gaussian_bump(vocab: int, center: float | jax.Array, width: float | jax.Array = 10.0, *, include_prompt: bool = False) -> SequenceReward:
    """The paper's sequence reward: mean over tokens of exp(-((y_t - center)/width)^2) (docs/paper.md §C.3).

    Args:
      vocab: V.
      center: 70 for "far" (reward id 6), 20 for "near" (id 7).
      width: 10 in the paper.
      include_prompt: average over the prompt token too, as the authors' code does.
    """
    return token_mean(core_rewards.gaussian_bump(vocab, center, width), include_prompt=include_prompt)


def length(vocab: int, *, eos: int = 0, target: float = 0.0) -> SequenceReward:
    """A length-like reward r = 1 - |length - target| / L, the response ending at its first ``eos``.

    With the paper's reference (mass 0.078 on token 0, docs/paper.md §A.2), the
    default eos = 0 gives reference responses of all lengths; target 0 is a
    "Min Length" task.
    """
    if not (0 <= int(eos) < vocab):
        raise ValueError(f"eos={eos!r} is not a token; expected 0 <= eos < {vocab}")
    _checks.positive("target", target, allow_zero=True)
    return SequenceReward(jnp.zeros((vocab,)), eos=int(eos), target=float(target), kind="length")


def all_in_set(vocab: int, low: int, high: int, *, include_prompt: bool = False) -> SequenceReward:
    """Sparse all-or-nothing reward: 1 when every response token lies in low..high (inclusive), else 0."""
    return SequenceReward(core_rewards.threshold(vocab, low, high), kind="all_in_set", include_prompt=include_prompt)
