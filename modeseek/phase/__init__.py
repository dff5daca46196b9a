"""Phase diagrams: where mode-seeking wins, over reward rarity x data coverage.

The paper's claim is conditional on two geometric quantities (docs/paper.md §D.4):
on-policy sampling and negative gradients matter when the reward's peak is
rare under the reference and when the preference data covers the good
responses poorly. This package draws the whole map for the four algorithm
families, with gold or learned (Bradley-Terry) reward models:

* :mod:`modeseek.phase.grid`: :class:`PhaseConfig`, the budgets, the families
  and the per-cell arrays (gold rewards, data distributions, fitted proxies);
* :mod:`modeseek.phase.sweep`: :func:`sweep` (one compiled program per family,
  tidy Parquet table and manifest, resumable);
* :mod:`modeseek.phase.analysis`: per-cell summaries, the winner map, claims;
* :mod:`modeseek.phase.figures`: heatmaps, winner map, probability-mass plots;
* :mod:`modeseek.phase.piece`: the reproduction-pipeline piece (:data:`PIECE`).
"""

from modeseek.phase.grid import BUDGETS, FAMILIES, Family, Grid, PhaseConfig, budget, build_grid
from modeseek.phase.sweep import SweepResult, load, sweep

__all__ = ["PhaseConfig", "Family", "FAMILIES", "BUDGETS", "budget", "Grid", "build_grid", "sweep", "SweepResult", "load", "PIECE"]


def __getattr__(name):
    # The piece pulls in the figure code; import it only when asked for.
    if name == "PIECE":
        from modeseek.phase.piece import PIECE

        return PIECE
    raise AttributeError(f"module 'modeseek.phase' has no attribute {name!r}")
