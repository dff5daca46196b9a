"""Figure pieces: what a piece is, the registry of pieces, and the helpers every piece uses.

Every figure of the reproduction (:mod:`modeseek.paper`, :mod:`modeseek.phase`,
:mod:`modeseek.paper.fig_sequences`, :mod:`modeseek.atlas`) imports this module for :class:`Claim`,
:class:`Piece`, :func:`fmt`, :func:`mean_band`, :func:`plot_band` and the caption and atomic
saving helpers. :data:`PIECES` names the module of each piece, in report
order; :func:`load` imports one on demand, so that this module, and with it
the core of the library, never imports the figure layer.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from modeseek._files import atomic_write

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.typing import ColorType
    from numpy.typing import ArrayLike

__all__ = [
    "Claim",
    "Piece",
    "PIECES",
    "load",
    "load_all",
    "check_names",
    "atomic_write_text",
    "save_table",
    "save_figure",
    "write_caption",
    "mean_band",
    "plot_band",
    "fmt",
]


@dataclasses.dataclass(frozen=True)
class Claim:
    """One checkable statement with its outcome, computed from results (never typed in).

    Attributes:
      id: short stable identifier, e.g. "far_on_policy_beats_offline".
      statement: the claim in words.
      passed: the outcome.
      evidence: the measured numbers behind the outcome.
      note: for a FAIL, one sentence on why (or what was found instead).
    """

    id: str
    statement: str
    passed: bool
    evidence: str
    note: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class Piece(NamedTuple):
    """A figure of the reproduction: ``make(out_dir, smoke) -> list[Claim]``.

    Attributes:
      name: stable identifier; outputs are ``<name>.caption.md``, ``data/<name>.parquet``
        and ``data/<name>.claims.json``.
      title: heading in CLAIMS.md and the gallery.
      make: runs the experiments and writes the outputs.
      summary: two lines for the gallery (figures/README.md): what the figure shows
        and what to look for. Empty: the gallery falls back to the caption's first line.
      reset: for a piece that resumes partial results of its own (the phase
        sweep), removes them so that a forced rerun starts afresh; None otherwise.
    """

    name: str
    title: str
    make: Callable[[Path, bool], list[Claim]]
    summary: str = ""
    reset: Callable[[Path], None] | None = None


# name -> module defining the piece as ``PIECE``, in report order (CLAIMS.md, the gallery, ``reproduce``).
PIECES: dict[str, str] = {
    "atlas": "modeseek.atlas.piece",
    "displacement": "modeseek.phenomena.displacement",
    "squeezing": "modeseek.phenomena.squeezing",
    "entropy_collapse": "modeseek.phenomena.entropy_collapse",
    "ranking_accuracy": "modeseek.phenomena.ranking_accuracy",
    "kl_estimators": "modeseek.phenomena.kl_estimators",
    "uniform_groups": "modeseek.phenomena.uniform_groups",
    "preference_collapse": "modeseek.phenomena.preference_collapse",
    "fig_problem": "modeseek.paper.fig_problem",
    "fig_on_policy": "modeseek.paper.fig_on_policy",
    "fig_negative_gradient": "modeseek.paper.fig_negative_gradient",
    "fig_complementarity": "modeseek.paper.fig_complementarity",
    "fig_reuse": "modeseek.paper.fig_reuse",
    "fig_on_policyness": "modeseek.paper.fig_on_policyness",
    "fig_theory": "modeseek.paper.fig_theory",
    "filmstrips": "modeseek.paper.filmstrips",
    "phase": "modeseek.phase.piece",
    "sequences": "modeseek.paper.fig_sequences",
}


def load(name: str) -> Piece:
    """The registered piece ``name``, its module imported on first use; KeyError names the valid ones."""
    if name not in PIECES:
        raise KeyError(f"unknown piece {name!r}; valid names are {', '.join(PIECES)}")
    piece = importlib.import_module(PIECES[name]).PIECE
    if piece.name != name:
        raise RuntimeError(f"{PIECES[name]}.PIECE is named {piece.name!r}, registered as {name!r}")
    return piece


def load_all() -> list[Piece]:
    """Every registered piece, in report order."""
    return [load(name) for name in PIECES]


def check_names(names: Iterable[str], valid: Iterable[str] | None = None) -> None:
    """ValueError naming the ``names`` not in ``valid`` (default: the registry) and listing the valid ones."""
    valid = set(PIECES if valid is None else valid)
    bad = sorted(set(names) - valid)
    if bad:
        raise ValueError(f"unknown piece(s) {bad}; valid names are {', '.join(sorted(valid))}")


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to a temporary file beside ``path``, then rename it into place (:func:`modeseek._files.atomic_write`)."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def save_table(df: pd.DataFrame, path: Path) -> None:
    """Write a DataFrame to Parquet atomically (temporary name, then rename)."""
    atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))


def save_figure(
    fig: Figure,
    path: Path,
    *,
    title: str | None = None,
    smoke: bool = False,
    fontsize: float = 11,
    rect: tuple[float, float, float, float] | None = None,
    dpi: int = 120,
) -> None:
    """Save a matplotlib figure atomically and close it.

    With ``title``, first give the figure that title (marked [SMOKE] when ``smoke``) at ``fontsize``
    and lay its panels out (``tight_layout`` within ``rect``).
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    if title is not None:
        fig.suptitle(title + (" [SMOKE]" if smoke else ""), fontsize=fontsize)
        fig.tight_layout(rect=rect)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png"))
    finally:
        plt.close(fig)


def write_caption(path: Path, title: str, lines: list[str]) -> None:
    """Write a Markdown caption: what was run (seeds, steps, hyperparameters) and what it shows."""
    atomic_write_text(Path(path), f"# {title}\n\n" + "\n".join(f"- {line}" for line in lines) + "\n")


def mean_band(x: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and a 95% normal band (mean +- 1.96 standard errors) over ``axis`` (the seeds)."""
    x = np.asarray(x, dtype=np.float64)
    m = x.mean(axis=axis)
    n = x.shape[axis]
    se = x.std(axis=axis, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(m)
    return m, m - 1.96 * se, m + 1.96 * se


def plot_band(ax: Axes, x: ArrayLike, curves: ArrayLike, *, label: str, color: ColorType, ls: str = "-", lw: float = 1.6, alpha: float = 0.18) -> None:
    """Plot on ``ax`` the mean over seeds of ``curves`` (seeds, points) with its 95% band (:func:`mean_band`)."""
    m, lo, hi = mean_band(np.asarray(curves), axis=0)
    ax.plot(x, m, color=color, ls=ls, lw=lw, label=label)
    ax.fill_between(x, lo, hi, color=color, alpha=alpha, lw=0)


def fmt(x: float, digits: int = 3) -> str:
    """A number for claims and captions."""
    return f"{float(x):.{digits}f}"
