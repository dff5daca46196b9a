"""The data a loss sees for one context: weighted items over the K bins.

Every loss is written against one of these containers and is the same function
in every data regime. A sampled batch holds the drawn responses with weights
1/N; an exact batch holds all K bins (or K x K pairs, or the order-statistic
distribution of N draws) weighted by their probability under the sampling
distribution. The loss on an exact batch is therefore the population
(infinite-batch) loss, and its gradient the expected update (convention 6).

All weights are treated as constants (no gradient flows into them).
"""

from __future__ import annotations

from typing import NamedTuple

import jax

__all__ = ["Points", "BestOfN", "Pairs", "Target"]


class Points(NamedTuple):
    """Responses with rewards, for single-sample losses (SFT, RWR, REINFORCE, PPO).

    Attributes:
      y: (M,) int32 bins.
      reward: (M,) rewards r(y).
      weight: (M,) weights summing to 1 (1/N sampled; the sampling probability exact).
      logq: (M,) log-probability of y under the distribution that generated it.
      count: () number of samples N behind the batch (inf for an exact batch);
        used by leave-one-out baselines.
    """

    y: jax.Array
    reward: jax.Array
    weight: jax.Array
    logq: jax.Array
    count: jax.Array


class BestOfN(NamedTuple):
    """The best, worst and remaining responses of N draws (best-of-N and its negative terms).

    Attributes:
      best, best_weight: (M,) bins and weights of the best draw (weights sum to 1).
      worst, worst_weight: (M,) bins and weights of the worst draw (sum to 1).
      others, others_weight: (M,) bins and weights of the N - 1 draws other than
        the best (weights sum to N - 1; duplicates of the best bin included, as
        in the paper code, PAPER_NOTES B.2).
      num_samples: () N.
    """

    best: jax.Array
    best_weight: jax.Array
    worst: jax.Array
    worst_weight: jax.Array
    others: jax.Array
    others_weight: jax.Array
    num_samples: jax.Array


class Pairs(NamedTuple):
    """Preference pairs (chosen y_w, rejected y_l) with weights summing to 1 (or 0 if none count).

    Attributes:
      chosen: (M,) int32 preferred bins.
      rejected: (M,) int32 dispreferred bins.
      weight: (M,) pair weights.
    """

    chosen: jax.Array
    rejected: jax.Array
    weight: jax.Array


class Target(NamedTuple):
    """A target distribution for the analytic divergences (forward and reverse KL).

    Attributes:
      probs: (K,) target probabilities.
    """

    probs: jax.Array
