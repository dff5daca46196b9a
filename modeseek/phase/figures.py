"""Figures of a phase-diagram sweep: per-family heatmaps, the winner map, probability mass at marked cells.

Every function reads the summary (:func:`modeseek.phase.analysis.summarise`)
or the mass table written by the sweep, never reruns anything, and writes one
PNG atomically. Axes: rarity (columns, achieved pi_ref(H), rare on the left)
and coverage (rows, mu(H)/pi_ref(H), 0 at the bottom). The three length
presets of :mod:`modeseek.tasks` are drawn at their own coordinates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from modeseek import pieces, tasks
from modeseek.phase import analysis
from modeseek.phase.grid import FAMILIES

__all__ = ["preset_positions", "heatmaps", "winner", "mass_plots", "reward_model_comparison", "cell_letter"]

_FAMILY_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink"]
_PRESET_STYLE = {"min_length": ("<", "Min Length"), "mode_length": ("s", "Mode Length"), "skew_length": ("v", "Skew Length")}


def _short(v: float) -> str:
    """A reward in [0, 1] in at most three characters: ".37", "1", "-" for NaN."""
    if not np.isfinite(v):
        return "-"
    s = f"{v:.2f}"
    return "1" if s == "1.00" else s.replace("0.", ".", 1) if v >= 0 else s


def cell_letter(k: int) -> str:
    """Label of the k-th marked cell: A, B, ..."""
    return chr(ord("A") + k)


def preset_positions(cfg, rarity_cols: np.ndarray) -> dict:
    """Map coordinates (x = rarity column, y = coverage row) of the three length presets.

    Rarity is interpolated in log scale between the columns' achieved rarities
    (and held half a column outside the map when a preset lies beyond it);
    coverage is interpolated between the rows' coverages.
    """
    out = {}
    kw = dict(num_bins=cfg.num_bins, mean=cfg.length_mean, sd=cfg.length_sd, width=cfg.width)
    x_cols = np.arange(len(rarity_cols))
    for task in tasks.all_tasks(**kw):
        lr = np.log(max(task.rarity, 1e-300))
        x = float(np.interp(lr, np.log(rarity_cols), x_cols, left=-0.45, right=len(rarity_cols) - 0.55))
        y = float(np.interp(task.coverage, np.asarray(cfg.coverages), np.arange(len(cfg.coverages))))
        out[task.name] = (x, y, task)
    return out


def _decorate(ax, cfg, rarity_cols, presets, *, left: bool, bottom: bool, marks: bool = True):
    """Ticks and axis labels of a map, its marked cells (``marks``) and the length presets."""
    from matplotlib.patches import Rectangle

    ax.set_xticks(range(len(rarity_cols)))
    ax.set_xticklabels([f"{r:.0e}".replace("e-0", "e-") for r in rarity_cols], rotation=60, fontsize=7)
    ax.set_yticks(range(len(cfg.coverages)))
    ax.set_yticklabels([f"{c:g}" for c in cfg.coverages], fontsize=7)
    if bottom:
        ax.set_xlabel("rarity pi_ref(H)  (rare <- -> common)", fontsize=8)
    if left:
        ax.set_ylabel("coverage mu(H)/pi_ref(H)", fontsize=8)
    if marks:
        for k, (i, j) in enumerate(cfg.marked):
            ax.add_patch(Rectangle((i - 0.5, j - 0.5), 1, 1, fill=False, ec="w", lw=1.2))
            ax.text(i - 0.42, j + 0.42, cell_letter(k), color="w", fontsize=6, va="top", ha="left", fontweight="bold")
    for name, (x, y, _) in presets.items():
        m, lab = _PRESET_STYLE[name]
        ax.plot([x], [y], marker=m, ms=8, mfc="w", mec="k", mew=1.4, alpha=0.9, ls="none", label=lab)


def heatmaps(summary, cfg, path: Path) -> Path:
    """Per-family heatmaps of final gold reward (top) and steps to 90% of the best achievable (bottom)."""
    import matplotlib.pyplot as plt

    prim = analysis.primary(summary, cfg.primary_reward_model)
    shape = (len(cfg.rarities), len(cfg.coverages))
    rho = prim.groupby("rarity_index")["rarity"].first().reindex(range(shape[0])).to_numpy()
    presets = preset_positions(cfg, rho)
    fams = list(cfg.families)
    pm = cfg.primary_reward_model
    labels = {f: FAMILIES[f].label + (f"\n[{pm} reward model]" if FAMILIES[f].on_policy else "\n[dataset labels]") for f in fams}
    fig, axes = plt.subplots(2, len(fams), figsize=(3.3 * len(fams), 6.6), squeeze=False, constrained_layout=True)
    cmap_steps = plt.get_cmap("magma_r").with_extremes(bad="0.85")
    for j, f in enumerate(fams):
        fr = analysis.grid_of(prim, f, "final_reward", shape)
        st = analysis.grid_of(prim, f, "steps_to_90", shape)
        ax = axes[0, j]
        im0 = ax.imshow(fr, origin="lower", vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for (y, x), v in np.ndenumerate(fr):
            ax.text(x, y, _short(v), ha="center", va="center", fontsize=5.5, color="w" if v < 0.6 else "k")
        ax.set_title(labels[f], fontsize=8)
        _decorate(ax, cfg, rho, presets, left=j == 0, bottom=False)
        ax = axes[1, j]
        im1 = ax.imshow(np.ma.masked_invalid(st), origin="lower", vmin=0, vmax=cfg.steps, cmap=cmap_steps, aspect="auto")
        for (y, x), v in np.ndenumerate(st):
            ax.text(x, y, "-" if np.isnan(v) else f"{v:.0f}", ha="center", va="center", fontsize=5.5, color="k" if np.isnan(v) or v < cfg.steps / 2 else "w")
        _decorate(ax, cfg, rho, presets, left=j == 0, bottom=True)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=3, fontsize=7, title="length presets (markers); white squares: cells of the mass plots", title_fontsize=7)
    fig.colorbar(im0, ax=axes[0, :].tolist(), shrink=0.8, label="final gold reward E_pi[r*]")
    fig.colorbar(im1, ax=axes[1, :].tolist(), shrink=0.8, label=f"steps to {analysis.PROGRESS_LEVEL:.0%} of best achievable (grey/-: never)")
    fig.suptitle(f"Phase diagrams over rarity x coverage ({cfg.seeds} seeds, {cfg.steps} steps; budget '{cfg.name}')", fontsize=10)
    pieces.save_figure(fig, path)
    return path


def winner(summary, cfg, path: Path) -> Path:
    """The winner map: the family with the highest final gold reward per cell (hatched: ties within TIE_MARGIN)."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch, Rectangle

    prim = analysis.primary(summary, cfg.primary_reward_model)
    shape = (len(cfg.rarities), len(cfg.coverages))
    fams = list(cfg.families)
    best, ties, finals = analysis.winner_map(prim, fams, shape)
    rho = prim.groupby("rarity_index")["rarity"].first().reindex(range(shape[0])).to_numpy()
    presets = preset_positions(cfg, rho)
    colors = [_FAMILY_COLORS[k % len(_FAMILY_COLORS)] for k in range(len(fams))]
    progress = np.stack([analysis.grid_of(prim, f, "final_progress", shape) for f in fams])
    # A cell where no family gets 10% of the way to the best achievable has no meaningful winner.
    none = np.nanmax(progress, axis=0) < 0.1
    shown = np.where(none, len(fams), best)
    fig, ax = plt.subplots(figsize=(6.4, 5.2), constrained_layout=True)
    ax.imshow(shown, origin="lower", cmap=ListedColormap(colors + ["0.8"]), vmin=-0.5, vmax=len(fams) + 0.5, aspect="auto")
    top = np.nanmax(finals, axis=0)
    for (y, x), _ in np.ndenumerate(best):
        if none[y, x]:
            ax.text(x, y, f"{top[y, x]:.2f}\nnone", ha="center", va="center", fontsize=6, color="k")
            continue
        if ties[y, x] > 1:
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, hatch="////", ec="w", lw=0))
        ax.text(x, y, f"{top[y, x]:.2f}" + (f"\n={ties[y, x]}" if ties[y, x] > 1 else ""), ha="center", va="center", fontsize=6, color="w")
    _decorate(ax, cfg, rho, presets, left=True, bottom=True, marks=False)
    handles = [Patch(color=c, label=FAMILIES[f].label) for f, c in zip(fams, colors)]
    handles.append(Patch(facecolor="0.6", hatch="////", edgecolor="w", label=f"tie: '=n' families within {analysis.TIE_MARGIN}"))
    handles.append(Patch(facecolor="0.8", label="none: no family reaches 10% progress"))
    h2, l2 = ax.get_legend_handles_labels()
    ax.legend(handles=handles + h2, fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"Winner map: best final gold reward per cell (on-policy: {cfg.primary_reward_model} reward model)", fontsize=9)
    pieces.save_figure(fig, path)
    return path


def mass_plots(mass, summary, cfg, path: Path) -> Path:
    """Final probability mass at the marked cells (rows) for each family (columns), with pi_ref, mu, gold and proxy."""
    import matplotlib.pyplot as plt

    fams = list(cfg.families)
    pm = cfg.primary_reward_model
    rows = list(cfg.marked)
    prim = analysis.primary(summary, pm)
    fig, axes = plt.subplots(len(rows), len(fams), figsize=(3.0 * len(fams), 1.9 * len(rows)), squeeze=False, sharex=True, constrained_layout=True)
    bins = np.arange(cfg.num_bins)
    for a, (i, j) in enumerate(rows):
        for b, f in enumerate(fams):
            ax = axes[a, b]
            model = pm if FAMILIES[f].on_policy else "data"
            d = mass[(mass.family == f) & (mass.reward_model == model) & (mass.rarity_index == i) & (mass.coverage_index == j)].sort_values("bin")
            if d.empty:
                ax.set_axis_off()
                continue
            ax.bar(bins, d.final_prob, width=1.0, color=_FAMILY_COLORS[b % len(_FAMILY_COLORS)], alpha=0.85, label="final policy (seed mean)")
            ax.plot(bins, d.ref_prob, color="0.4", ls="--", lw=0.8, label="pi_ref")
            ax.plot(bins, d.data_prob, color="C9", ls=":", lw=1.0, label="data mu")
            ax.set_ylim(0, 1.05 * max(float(d.final_prob.max()), float(d.ref_prob.max()), 1e-3))
            ax2 = ax.twinx()
            ax2.plot(bins, d.gold_reward, color="C3", lw=0.8, label="gold reward")
            tr = d.train_reward.to_numpy()
            if FAMILIES[f].on_policy and np.all(np.isfinite(tr)) and model != "gold":
                span = max(float(tr.max() - tr.min()), 1e-9)
                ax2.plot(bins, (tr - tr.min()) / span, color="C1", lw=0.8, ls="-.", label=f"{model} proxy (rescaled)")
            ax2.set_ylim(0, 1.05)
            ax2.set_yticks([])
            row = prim[(prim.family == f) & (prim.rarity_index == i) & (prim.coverage_index == j)]
            val = float(row.final_reward.iloc[0]) if len(row) else np.nan
            ax.text(0.98, 0.95, f"E[r*]={val:.2f}", transform=ax.transAxes, ha="right", va="top", fontsize=6)
            if a == 0:
                ax.set_title(FAMILIES[f].label, fontsize=7)
            if b == 0:
                rho = float(prim[prim.rarity_index == i].rarity.iloc[0])
                cov = float(prim[(prim.rarity_index == i) & (prim.coverage_index == j)].coverage.iloc[0])
                ax.set_ylabel(f"{cell_letter(a)}: rarity {rho:.1g}\ncoverage {cov:g}", fontsize=7)
            ax.tick_params(labelsize=6)
            if a == 0 and b == len(fams) - 1:
                h1, l1 = ax.get_legend_handles_labels()
                h2, l2 = ax2.get_legend_handles_labels()
                ax.legend(h1 + h2, l1 + l2, fontsize=5, loc="upper left")
    for ax in axes[-1]:
        ax.set_xlabel("response bin (length)", fontsize=7)
    fig.suptitle("Final probability mass at the marked cells (bars), pi_ref (dashed), data mu (dotted), gold reward (red), proxy (dash-dot)", fontsize=8)
    pieces.save_figure(fig, path)
    return path


def reward_model_comparison(summary, cfg, path: Path) -> Path:
    """Final gold reward of the on-policy families with each reward model (columns), and the proxy's gain."""
    import matplotlib.pyplot as plt

    on = [f for f in cfg.families if FAMILIES[f].on_policy]
    models = list(cfg.reward_models)
    shape = (len(cfg.rarities), len(cfg.coverages))
    rho = summary.groupby("rarity_index")["rarity"].first().reindex(range(shape[0])).to_numpy()
    presets = preset_positions(cfg, rho)
    fig, axes = plt.subplots(max(len(on), 1), len(models), figsize=(3.2 * len(models), 3.2 * max(len(on), 1)), squeeze=False, constrained_layout=True)
    im = None
    for a, f in enumerate(on):
        for b, m in enumerate(models):
            ax = axes[a, b]
            fr = analysis.grid_of(summary, f, "final_reward", shape, m)
            im = ax.imshow(fr, origin="lower", vmin=0, vmax=1, cmap="viridis", aspect="auto")
            for (y, x), v in np.ndenumerate(fr):
                ax.text(x, y, _short(v), ha="center", va="center", fontsize=5.5, color="w" if v < 0.6 else "k")
            ax.set_title(f"{FAMILIES[f].label}\nqueries: {m}", fontsize=8)
            _decorate(ax, cfg, rho, presets, left=b == 0, bottom=a == len(on) - 1, marks=False)
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.7, label="final gold reward")
        handles, names = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside lower center", ncol=3, fontsize=7)
    fig.suptitle("Which reward the on-policy learner queries: learned proxies (smooth RBF, tabular) vs the gold reward", fontsize=9)
    pieces.save_figure(fig, path)
    return path
