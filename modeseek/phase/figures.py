"""Figures of a phase-map sweep, drawn from the tidy tables with seaborn.

Every function reads the tuned view (:func:`modeseek.phase.analysis.map_view`),
the boundary table or the mass table, never reruns anything, and writes one
PNG atomically. Map axes: rarity (columns, achieved pi_ref(H), rare on the
left) and coverage (rows, mu(H)/pi_ref(H), 0 at the bottom).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from modeseek import pieces
from modeseek.phase import analysis
from modeseek.phase.grid import FAMILIES, GROUPS, MAPS, PhaseConfig

__all__ = ["maps", "winner", "boundary", "mass_plots", "family_order"]

_GROUP_COLORS = {"offline_ml": "tab:blue", "offline_contrastive": "tab:orange", "on_policy_rl": "tab:green", "on_policy_contrastive": "tab:purple"}


def _short(v: float) -> str:
    """A reward in [0, 1] in at most three characters: ".37", "1", "-" for NaN."""
    if not np.isfinite(v):
        return "-"
    s = f"{v:.2f}"
    return "1" if s == "1.00" else s.replace("0.", ".", 1) if v >= 0 else s


def family_order(families: list[str]) -> list[str]:
    """Families grouped as GROUPS lists them, in FAMILIES order within a group."""
    return [f for g in GROUPS for f in FAMILIES if f in families and FAMILIES[f].group == g]


def _rarity_labels(view: Any) -> list[str]:
    rho = view.groupby("rarity_index").rarity.first().sort_index()
    return [f"{r:.0e}".replace("e-0", "e-") for r in rho]


def _heat(ax: Any, values: np.ndarray, cmap: Any, vmin: float, vmax: float) -> None:
    """A heatmap with cell (y, x) at [x, x + 1] x [y, y + 1], row 0 on top.

    Drawn with pcolormesh: seaborn's heatmap draws the whole figure on every
    call (to check tick overlap), quadratic in the number of panels.
    """
    ax.pcolormesh(np.ma.masked_invalid(values), cmap=cmap, vmin=vmin, vmax=vmax, edgecolors="w", linewidth=0.3)
    ax.set_xlim(0, values.shape[1])
    ax.set_ylim(values.shape[0], 0)


def _annotate(ax: Any, text: np.ndarray, values: np.ndarray, size: float) -> None:
    """Cell texts of a seaborn heatmap, white on dark cells (seaborn's own annot redraws the figure per call)."""
    for (y, x), t in np.ndenumerate(text):
        v = values[y, x]
        ax.text(x + 0.5, y + 0.5, t, ha="center", va="center", fontsize=size, color="w" if np.isfinite(v) and v < 0.6 else "k")


def _ticks(ax: Any, xlabels: list[str], cfg: PhaseConfig) -> None:
    """Rarity ticks (columns) and coverage ticks (rows, coverage 0 at the bottom) of a seaborn map."""
    ax.set_xticks(np.arange(len(xlabels)) + 0.5, xlabels, rotation=60, fontsize=6)
    ax.set_yticks(np.arange(len(cfg.coverages)) + 0.5, [f"{c:g}" for c in cfg.coverages[::-1]], rotation=0, fontsize=6)


def maps(view: Any, cfg: PhaseConfig, map_: str, path: Path) -> Path:
    """One map: per family (rows, grouped) and budget (columns), the tuned final gold reward over rarity x coverage.

    Colour and the first number: the sampled version (reported on fresh seeds);
    the number in brackets: the exact-population version, where it was run.
    """
    import matplotlib.pyplot as plt

    v = view[view["map"] == map_]
    fams = family_order(list(v.family.unique()))
    b_n = len(cfg.budgets)
    xl = _rarity_labels(v)
    fig, axes = plt.subplots(len(fams), b_n, figsize=(2.1 * b_n + 1.6, 1.15 * len(fams) + 1.2), squeeze=False)
    # Fixed margins: a layout engine over dozens of annotated axes costs more than the sweep's smaller chunks.
    fig.subplots_adjust(left=0.12, right=0.86, top=0.9, bottom=0.08, hspace=0.45, wspace=0.15)
    for a, f in enumerate(fams):
        for b in range(b_n):
            ax = axes[a, b]
            d = v[(v.family == f) & (v.budget_index == b)]
            s = d[d.variant == "sampled"].pivot(index="coverage_index", columns="rarity_index", values="final_reward").sort_index(ascending=False)
            e = d[d.variant == "exact"].pivot(index="coverage_index", columns="rarity_index", values="final_reward").reindex_like(s)
            text = np.vectorize(_short)(s.to_numpy())
            if not d[d.variant == "exact"].empty:
                text = np.char.add(np.char.add(text, "\n("), np.char.add(np.vectorize(_short)(e.to_numpy()), ")"))
            _heat(ax, s.to_numpy(dtype=float), "viridis", 0, 1)
            _annotate(ax, text, s.to_numpy(), 5)
            _ticks(ax, xl, cfg)
            ax.set_xlabel("rarity" if a == len(fams) - 1 else "", fontsize=7)
            ax.set_ylabel(f"{FAMILIES[f].label}\ncoverage" if b == 0 else "", fontsize=6.5, color=_GROUP_COLORS[FAMILIES[f].group])
            if a == 0:
                ax.set_title(f"budget {cfg.budgets[b]} queries", fontsize=8)
    fig.colorbar(plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(0, 1)), cax=fig.add_axes((0.89, 0.3, 0.015, 0.4)), label="final E_pi[r*] (sampled, report seeds)")
    fig.suptitle(f"{MAPS[map_]}\nfinal gold reward, tuned per cell; (exact population); budget '{cfg.name}'", fontsize=9)
    pieces.save_figure(fig, path)
    return path


def winner(view: Any, cfg: PhaseConfig, path: Path) -> Path:
    """The winning group per cell for each map (rows) and budget (columns); grey: nobody solves it ("never" at the largest budget)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    w = analysis.winners(view[view.variant == "sampled"])
    groups = list(GROUPS)
    cmap = ListedColormap([_GROUP_COLORS[g] for g in groups] + ["0.85"])
    b_n = len(cfg.budgets)
    never = w[w.budget_index == b_n - 1].set_index(["map", "rarity_index", "coverage_index"]).solved
    fig, axes = plt.subplots(len(cfg.maps), b_n, figsize=(2.6 * b_n + 1.5, 2.3 * len(cfg.maps) + 0.8), squeeze=False)
    xl = _rarity_labels(view)
    for a, m in enumerate(cfg.maps):
        for b in range(b_n):
            ax = axes[a, b]
            d = w[(w["map"] == m) & (w.budget_index == b)].copy()
            d["code"] = np.where(d.solved, d.winner_group.map(groups.index), len(groups))
            code = d.pivot(index="coverage_index", columns="rarity_index", values="code").sort_index(ascending=False)
            lab = (
                d.assign(
                    t=[
                        ("never" if not never[(m, r.rarity_index, r.coverage_index)] else "unsolved") + f"\n{_short(r.best_reward)}"
                        if not r.solved
                        else f"{FAMILIES[r.winner].label.split(' (')[0][:13]}\n{_short(r.best_reward)}" + (f" ={r.ties}" if r.ties > 1 else "")
                        for r in d.itertuples()
                    ]
                )
                .pivot(index="coverage_index", columns="rarity_index", values="t")
                .reindex_like(code)
            )
            _heat(ax, code.to_numpy(dtype=float), cmap, -0.5, len(groups) + 0.5)
            _annotate(ax, lab.to_numpy(), np.ones(code.shape), 4.5)
            _ticks(ax, xl, cfg)
            ax.set_xlabel("rarity" if a == len(cfg.maps) - 1 else "", fontsize=7)
            ax.set_ylabel(f"{m}\ncoverage" if b == 0 else "", fontsize=7)
            ax.set_title(f"{MAPS[m].split(':')[0].split(' (')[0]}, {cfg.budgets[b]} queries", fontsize=7)
    handles = [Patch(color=_GROUP_COLORS[g], label=GROUPS[g][0]) for g in groups] + [Patch(color="0.85", label=f"no family reaches progress {analysis.SOLVED}")]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=6.5)
    fig.subplots_adjust(left=0.1, right=0.98, top=0.88, bottom=0.16, hspace=0.6, wspace=0.15)
    fig.suptitle(f"Winner per cell (sampled versions, tuned; '=n': n families within {analysis.TIE_MARGIN}); 'never': unsolved at the largest budget; budget '{cfg.name}'", fontsize=8)
    pieces.save_figure(fig, path)
    return path


def boundary(bound: Any, cfg: PhaseConfig, path: Path) -> Path:
    """The rarity at which the best mode-seeking objective overtakes the best mode-covering one, per coverage and budget, with its seed band."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, len(cfg.maps), figsize=(3.6 * len(cfg.maps), 3.4), squeeze=False, sharey=True)
    palette = dict(zip(cfg.budgets, sns.color_palette("crest", len(cfg.budgets))))
    rmin = min(cfg.rarities) / 3
    rmax = max(cfg.rarities) * 2
    for a, m in enumerate(cfg.maps):
        ax = axes[0, a]
        d = bound[bound["map"] == m]
        for k, (q, g) in enumerate(d.groupby("budget", sort=True)):
            x = g.coverage.to_numpy() + (k - 1) * 0.012
            y = np.where(g.kind == "never", rmin, g.crossing)
            lo = np.where(np.isfinite(g.band_low), g.band_low, rmin)
            hi = np.where(np.isfinite(g.band_high), g.band_high, rmin)
            ax.errorbar(x, y, yerr=[np.maximum(y - lo, 0), np.maximum(hi - y, 0)], color=palette[q], marker="o", ms=4, lw=1, capsize=2, label=f"{q} queries")
            for xi, yi, kind in zip(x, y, g.kind):
                # One label per point of the largest budget: the smaller ones sit on top of it.
                if kind != "cross" and q == cfg.budgets[-1]:
                    ax.annotate(kind, (xi, yi), fontsize=5, xytext=(2, 2), textcoords="offset points")
        ax.set_yscale("log")
        ax.set_ylim(rmin / 1.5, rmax)
        ax.set_xlabel("coverage mu(H)/pi_ref(H)", fontsize=8)
        ax.set_title(MAPS[m].split(":")[0], fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0, 0].set_ylabel("rarity where mode-seeking overtakes\n(seeking wins below the line)", fontsize=7)
    axes[0, -1].legend(fontsize=6)
    pieces.save_figure(
        fig,
        path,
        title=f"Boundary: best mode-seeking vs best mode-covering (offline ML); band: min-max over report seeds; 'never' drawn at the bottom; budget '{cfg.name}'",
        fontsize=8,
    )
    return path


def mass_plots(mass: Any, view: Any, cfg: PhaseConfig, path: Path) -> Path:
    """Final probability mass (oracle map, largest budget, chosen configuration) at the marked cells (rows) per family (columns)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fams = family_order(list(view.family.unique()))
    b_last = len(cfg.budgets) - 1
    v = view[(view["map"] == "oracle") & (view.variant == "sampled") & (view.budget_index == b_last)]
    fig, axes = plt.subplots(len(cfg.marked), len(fams), figsize=(1.9 * len(fams), 1.45 * len(cfg.marked) + 0.6), squeeze=False, sharex=True)
    for a, (i, j) in enumerate(cfg.marked):
        for b, f in enumerate(fams):
            ax = axes[a, b]
            row = v[(v.family == f) & (v.rarity_index == i) & (v.coverage_index == j)]
            src = "oracle" if FAMILIES[f].on_policy else "offline"
            d = mass[(mass["map"] == src) & (mass.family == f) & (mass.variant == "sampled") & (mass.rarity_index == i) & (mass.coverage_index == j)]
            if row.empty or d.empty:
                ax.set_axis_off()
                continue
            d = d[d.config == int(row.config.iloc[0])].sort_values("bin")
            sns.lineplot(x=d.bin, y=d.final_prob, ax=ax, color=_GROUP_COLORS[FAMILIES[f].group], lw=1.0, drawstyle="steps-mid")
            ax.fill_between(d.bin, d.final_prob, step="mid", color=_GROUP_COLORS[FAMILIES[f].group], alpha=0.4)
            ax.plot(d.bin, d.ref_prob, color="0.4", ls="--", lw=0.7)
            ax.plot(d.bin, d.data_prob, color="C9", ls=":", lw=0.8)
            ax2 = ax.twinx()
            ax2.plot(d.bin, d.gold_reward, color="C3", lw=0.7)
            ax2.set_ylim(0, 1.05)
            ax2.set_yticks([])
            ax.set_ylim(0, 1.05 * max(float(d.final_prob.max()), float(d.ref_prob.max())))
            ax.text(0.97, 0.93, f"E[r*]={float(row.final_reward.iloc[0]):.2f}", transform=ax.transAxes, ha="right", va="top", fontsize=5)
            ax.set_ylabel(f"rarity {float(row.rarity.iloc[0]):.0e}\ncoverage {cfg.coverages[j]:g}" if b == 0 else "", fontsize=6)
            ax.set_xlabel("response bin" if a == len(cfg.marked) - 1 else "", fontsize=6)
            ax.tick_params(labelsize=5)
            if a == 0:
                ax.set_title(FAMILIES[f].label, fontsize=6)
    pieces.save_figure(
        fig,
        path,
        title=f"Map A (oracle), {cfg.budgets[-1]} queries: final policy (filled, report-seed mean, chosen configuration), pi_ref (dashed), data mu (dotted), gold reward (red); budget '{cfg.name}'",
        fontsize=7,
    )
    return path
