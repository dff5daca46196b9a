"""The paper's synthetic length tasks as categorical analogues: Min, Mode and Skew Length.

In the paper's synthetic LLM problems (docs/paper.md §D.4, §D.6) a response is
scored by its length: Min Length prefers shorter responses, Mode Length
prefers lengths close to the mode of the preference data, and Skew Length is
Min Length trained on a preference dataset whose completions were truncated.
The paper's Table 2 places them on two axes: [C1] whether the reward's peak overlaps the
reference's, [C2] how well the preference data covers the reference.

Here a response *is* a length: bin y = 0..K-1. The reference is a discretised
gaussian length distribution (mean 70, s.d. 16 bins over K = 100 lengths; the
mass above K - 1 is cut off, like a maximum generation length), and the
rewards are gaussian bumps of width 12 bins (the paper's bandit shape,
docs/paper.md §A.3; the high-reward set is the 21 lengths within 10 of the peak):

* Min Length: the bump at length 0, so shorter is always better; its peak is
  rare under the reference (rarity ~7.5e-5: "peaks disjoint").
* Mode Length: the bump at the reference's mode (length 70), so closer to the
  data's mode is better (rarity ~0.46: "peaks overlap").
* Skew Length: Min Length's problem with preference data of coverage 0: the
  reference truncated away from the short, high-reward lengths
  (:func:`modeseek.geometry.coverage_data`). The paper's own truncation
  details are not recoverable from the sources (docs/paper.md §G.11); this is
  the categorical reading of Table 2's "low coverage" cell.

Each task carries its coordinates on the rarity x coverage map of
:mod:`modeseek.phase`, where the three presets sit at three of its corners.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from modeseek import _checks, geometry, references, rewards
from modeseek.problems import Problem

__all__ = ["LengthTask", "length_reference", "min_length", "mode_length", "skew_length", "names", "get", "all_tasks"]

#: Defaults of the length analogue: lengths 0..99, reference N(70, 16^2), bumps of width 12.
NUM_LENGTHS = 100
LENGTH_MEAN = 70.0
LENGTH_SD = 16.0
WIDTH = 12.0


@dataclasses.dataclass(frozen=True)
class LengthTask:
    """A length task: its problem (reference and gold reward), its preference-data distribution and map coordinates.

    Attributes:
      name: "min_length", "mode_length" or "skew_length".
      problem: the Problem (reference length distribution, gold reward).
      data: (K,) distribution mu the offline preference data is drawn from.
      rarity: pi_ref mass on the high-reward set (:func:`modeseek.geometry.rarity`).
      coverage: mu(H) / pi_ref(H) (:func:`modeseek.geometry.coverage`).
      description: one line for captions.
    """

    name: str
    problem: Problem
    data: jnp.ndarray
    rarity: float
    coverage: float
    description: str


def length_reference(num_bins: int = NUM_LENGTHS, mean: float = LENGTH_MEAN, sd: float = LENGTH_SD) -> jnp.ndarray:
    """The reference length distribution: a gaussian over lengths 0..K-1, discretised and cut at K - 1.

    Args:
      num_bins: K, the number of lengths.
      mean: mean length (bins).
      sd: standard deviation (bins), > 0.
    """
    return references.gaussian(num_bins, mean, sd)


def _task(name: str, ref: jnp.ndarray, reward: jnp.ndarray, data: jnp.ndarray, description: str) -> LengthTask:
    problem = Problem(ref, reward, name=name)
    return LengthTask(
        name,
        problem,
        data,
        geometry.rarity(ref, reward),
        geometry.coverage(data, ref, reward),
        description,
    )


def min_length(*, num_bins: int = NUM_LENGTHS, mean: float = LENGTH_MEAN, sd: float = LENGTH_SD, width: float = WIDTH) -> LengthTask:
    """Min Length: shorter is better (a bump at length 0); the data is the reference (coverage 1)."""
    ref = length_reference(num_bins, mean, sd)
    reward = rewards.gaussian_bump(num_bins, 0.0, width)
    return _task("min_length", ref, reward, ref, "Min Length: reward peak at length 0 (shorter is better), data = pi_ref")


def mode_length(*, num_bins: int = NUM_LENGTHS, mean: float = LENGTH_MEAN, sd: float = LENGTH_SD, width: float = WIDTH) -> LengthTask:
    """Mode Length: closer to the data's mode is better (a bump at the reference's mode); data = reference."""
    ref = length_reference(num_bins, mean, sd)
    mode = float(np.argmax(np.asarray(ref)))
    reward = rewards.gaussian_bump(num_bins, mode, width)
    return _task("mode_length", ref, reward, ref, f"Mode Length: reward peak at the data's mode (length {mode:g}), data = pi_ref")


def skew_length(*, coverage: float = 0.0, num_bins: int = NUM_LENGTHS, mean: float = LENGTH_MEAN, sd: float = LENGTH_SD, width: float = WIDTH) -> LengthTask:
    """Skew Length: Min Length's problem with preference data of low coverage (default 0).

    Args:
      coverage: coverage of the preference data, in [0, 1] (see
        :func:`modeseek.geometry.coverage_data`).
    """
    base = min_length(num_bins=num_bins, mean=mean, sd=sd, width=width)
    data = geometry.coverage_data(base.problem.ref_probs, base.problem.reward, coverage)
    return _task(
        "skew_length",
        base.problem.ref_probs,
        base.problem.reward,
        data,
        f"Skew Length: Min Length with preference data of coverage {float(coverage):g} (pi_ref truncated away from the short lengths)",
    )


_TASKS = {"min_length": min_length, "mode_length": mode_length, "skew_length": skew_length}


def names() -> tuple[str, ...]:
    """Names accepted by :func:`get`."""
    return tuple(_TASKS)


def get(name: str, **kwargs: Any) -> LengthTask:
    """A length task by name; keyword arguments go to its constructor."""
    _checks.choice("task", name, _TASKS)
    return _TASKS[name](**kwargs)


def all_tasks(**kwargs: Any) -> list[LengthTask]:
    """The three presets with shared keyword arguments (num_bins, mean, sd, width)."""
    return [f(**kwargs) for f in _TASKS.values()]
