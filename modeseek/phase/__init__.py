"""Phase maps: which objective wins over reward rarity x data coverage, at equal query budgets.

The paper's claim is conditional on two geometric quantities (docs/paper.md §D.4):
on-policy sampling and negative gradients matter when the reward's peak is
rare under the reference and when the preference data covers the good
responses poorly. This package draws the whole map for the paper's four
families and objectives of the catalogue, every objective given the same
number of gold reward queries and tuned per cell, with the gold reward (map A,
"oracle") or a learned Bradley-Terry proxy (map B):

* :mod:`modeseek.phase.grid`: :class:`PhaseConfig`, the budgets, the objectives
  and their tuning grids, the per-cell arrays (gold rewards, data, datasets, proxies);
* :mod:`modeseek.phase.sweep`: :func:`sweep` (one chunk per objective, tidy
  Parquet table and manifest, resumable);
* :mod:`modeseek.phase.analysis`: tuning on selection seeds, the map views,
  winners, the covering / seeking boundary, claims;
* :mod:`modeseek.phase.figures`: the maps, winner map, boundary and mass plots (seaborn);
* :mod:`modeseek.phase.piece`: the reproduction-pipeline piece (:data:`PIECE`).
"""

from modeseek.phase.grid import BUDGETS, FAMILIES, GROUPS, MAPS, Family, Grid, PhaseConfig, budget, build_grid
from modeseek.phase.sweep import SweepResult, load, sweep

__all__ = ["PhaseConfig", "Family", "FAMILIES", "GROUPS", "MAPS", "BUDGETS", "budget", "Grid", "build_grid", "sweep", "SweepResult", "load", "PIECE"]


def __getattr__(name: str) -> object:
    # The piece pulls in the figure code; import it only when asked for.
    if name == "PIECE":
        from modeseek.phase.piece import PIECE

        return PIECE
    raise AttributeError(f"module 'modeseek.phase' has no attribute {name!r}")
