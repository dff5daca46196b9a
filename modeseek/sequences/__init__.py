"""Token-sequence policies: the paper's combinatorial bandit with autoregressive models.

A prompt token, then L response tokens (docs/paper.md §C), in the order a reader
follows it:

* problems and rewards: :mod:`modeseek.sequences.problems`
  (:class:`SequenceProblem`, :func:`paper_sequence_bandit`),
  :mod:`modeseek.sequences.rewards` (token bumps, length-like, sparse);
* policies: :mod:`modeseek.sequences.policies` (factorised, bigram, the
  gpt-nano transformer);
* sampling and log-probabilities: :mod:`modeseek.sequences.sampling`;
* batches: :mod:`modeseek.sequences.batches`; the losses at sequence level are
  the "sequence" implementations of the registry, :mod:`modeseek.losses`
  (functions in :mod:`modeseek.losses.sequences`);
* exact Markov-chain metrics: :mod:`modeseek.sequences.markov`;
* the run loop's sequence parts: :mod:`modeseek.sequences.model`; runs go
  through :func:`modeseek.run` with a SequenceProblem, like every policy kind.

The reproduction piece lives in the figure layer, :mod:`modeseek.paper.fig_sequences`.
"""

from modeseek.sequences import batches, markov, policies, problems, rewards, sampling
from modeseek.sequences.problems import SequenceProblem, paper_sequence_bandit
from modeseek.sequences.rewards import SequenceReward

__all__ = [
    "SequenceProblem",
    "SequenceReward",
    "paper_sequence_bandit",
    "problems",
    "rewards",
    "policies",
    "sampling",
    "batches",
    "markov",
]
