"""Sequence problems: a per-token reference, a sequence reward and a response length.

:func:`paper_sequence_bandit` is the authors' combinatorial bandit (docs/paper.md
§C.1-§C.3): a uniform prompt token, 9 response tokens over the same 100 bins as
the 1-token bandit, the squashed-Cauchy histogram as the per-token target of the
supervised fine-tuning that produces the reference, and the far/near reward.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from modeseek import _checks, references
from modeseek.sequences import rewards as seq_rewards
from modeseek.sequences.rewards import SequenceReward

__all__ = ["SequenceProblem", "paper_sequence_bandit", "length_problem", "sparse_problem"]

_CENTERS = {"far": 70.0, "near": 20.0}


@dataclasses.dataclass(frozen=True)
class SequenceProblem:
    """A sequence bandit.

    Attributes:
      ref_probs: (V,) per-token reference distribution pi_data. The Markov
        policies start exactly at i.i.d. pi_data tokens; the transformer is fit
        to it by per-token reverse KL (docs/paper.md §C.4).
      reward: a :class:`SequenceReward` over (L + 1,) sequences.
      length: L, the number of response tokens (static; 9 in the paper).
      name: label for tables and captions (static).
    """

    ref_probs: Any
    reward: SequenceReward
    length: int = 9
    name: str = "custom"

    def __post_init__(self) -> None:
        object.__setattr__(self, "length", _checks.integer("length", self.length))
        if not isinstance(self.reward, SequenceReward):
            raise ValueError(f"reward={self.reward!r} is not a SequenceReward")
        if _checks.is_traced(self.ref_probs):
            return
        p = _checks.probability_vector("ref_probs", self.ref_probs)
        if p.shape[0] != self.reward.vocab:
            raise ValueError(f"ref_probs has {p.shape[0]} tokens but the reward has {self.reward.vocab}; expected the same vocabulary")
        object.__setattr__(self, "ref_probs", jnp.asarray(p, jnp.float32))

    @property
    def vocab(self) -> int:
        """V, the vocabulary size."""
        return int(np.shape(self.ref_probs)[-1])


_checks.register_pytree(SequenceProblem, ("ref_probs", "reward"), ("length", "name"))


def paper_sequence_bandit(kind: str = "far", *, include_prompt: bool = False, length: int = 9, vocab: int = 100, width: float = 10.0) -> SequenceProblem:
    """The paper's sequence bandit (docs/paper.md §C.1-§C.3; reward ids 6 "far" and 7 "near").

    Args:
      kind: "far" (bump at token 70, where pi_data has ~0.002 mass per token)
        or "near" (bump at token 20, near pi_data's interior mode).
      include_prompt: average the reward over the prompt token too, as the
        authors' code does (maximum ~0.918 instead of 1); off by default.
      length: L response tokens (9).
      vocab: V (100); the bump centre scales with it.
      width: bump width (10).
    """
    _checks.choice("kind", kind, _CENTERS)
    center = _CENTERS[kind] * vocab / 100.0
    name = kind + ("_with_prompt" if include_prompt else "")
    return SequenceProblem(
        references.squashed_cauchy(vocab),
        seq_rewards.gaussian_bump(vocab, center, width, include_prompt=include_prompt),
        length=length,
        name=name,
    )


def length_problem(*, target: float = 0.0, eos: int = 0, length: int = 9, vocab: int = 100) -> SequenceProblem:
    """A length task on the paper's reference: the response ends at its first ``eos`` token.

    Token 0 carries 0.078 reference mass (docs/paper.md §A.2), so reference
    responses have all lengths; target 0 rewards short responses ("Min Length").
    """
    return SequenceProblem(
        references.squashed_cauchy(vocab),
        seq_rewards.length(vocab, eos=eos, target=target),
        length=length,
        name=f"length_target{target:g}",
    )


def sparse_problem(low: int = 0, high: int = 30, *, length: int = 9, vocab: int = 100) -> SequenceProblem:
    """A sparse all-or-nothing task on the paper's reference: 1 iff every response token is in low..high.

    With the defaults, pi_data puts 0.705 of its mass on tokens 0..30, so a
    reference response earns the reward with probability 0.705^9 ~ 0.043
    (about 4 successes in a batch of 100); a window in the tail such as 60..80
    (mass 0.046 per token) makes it ~1e-12, unreachable by sampling.
    """
    return SequenceProblem(
        references.squashed_cauchy(vocab),
        seq_rewards.all_in_set(vocab, low, high),
        length=length,
        name=f"sparse_{low}_{high}",
    )
