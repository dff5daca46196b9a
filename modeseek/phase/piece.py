"""The phase-map piece of the reproduction pipeline (``make figures``, ``modeseek reproduce --only phase``).

Runs (or resumes) the sweep of :mod:`modeseek.phase.sweep` at the "default"
budget (or "smoke"), tunes every objective per cell on selection seeds and
reports it on fresh ones (:func:`modeseek.phase.analysis.select`), draws the
maps, the winner map, the covering / seeking boundary and the mass plot, writes
the caption and returns the claims (arXiv 2404.14367 §5-6; docs/paper.md §D.4, §D.5, §D.6).

The environment variable ``MODESEEK_PHASE_BUDGET`` picks another budget of
:data:`modeseek.phase.BUDGETS` for the full (non-smoke) run, e.g.
``MODESEEK_PHASE_BUDGET=large modeseek reproduce --only phase --force``; the
figures and the caption name the budget they show.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from modeseek import pieces
from modeseek.phase import analysis, figures
from modeseek.phase.grid import FAMILIES, GROUPS, MAPS, PhaseConfig, budget, build_grid
from modeseek.phase.sweep import SweepResult, sweep, table_paths
from modeseek.pieces import Claim, Piece

__all__ = ["make", "PIECE", "FIGURES", "BUDGET_ENV"]

#: Environment variable selecting the full run's budget (default "default").
BUDGET_ENV = "MODESEEK_PHASE_BUDGET"

#: Files the piece writes into the output folder (besides data/): the per-map figures are added per map.
FIGURES = ("phase_winner.png", "phase_boundary.png", "phase_mass.png")


def _caption(cfg: PhaseConfig, res: SweepResult, view: Any) -> list[str]:
    man = res.manifest or {}
    tot = {k: sum(c[k] for c in man["chunks"]) for k in ("programs_compiled", "compile_seconds", "run_seconds", "proxy_fit_seconds")}
    rho = ", ".join(f"{r:.2g}" for r in man["rarity_achieved"])
    fams = "; ".join(
        f"{GROUPS[g][0]} ({GROUPS[g][1]}): "
        + ", ".join(
            f"{FAMILIES[f].label} [loss {FAMILIES[f].loss}; grid "
            + " x ".join(f"{n} {list(v)}" for n, v in FAMILIES[f].grid)
            + ("; exact version: " + " x ".join(f"{n} {list(v)}" for n, v in FAMILIES[f].exact_grid or ()) if FAMILIES[f].exact_grid else "")
            + ("" if FAMILIES[f].exact else "; no exact version")
            + "]"
            for f in cfg.families
            if FAMILIES[f].group == g
        )
        for g in GROUPS
    )
    return [
        f"Budget '{cfg.name}': {len(cfg.rarities)} rarities x {len(cfg.coverages)} coverages x {len(cfg.budgets)} budgets x {len(cfg.families)} objectives; "
        f"{cfg.selection_seeds} selection + {cfg.report_seeds} report seeds. Full run at another budget: {BUDGET_ENV}=large modeseek reproduce --only phase --force.",
        f"Budget = gold reward queries (labels), equal for every objective: on-policy objectives draw B responses per step and query each "
        f"(a duel reads two rewards, so duel objectives draw B/2 pairs), so Q queries are Q/B steps: per B one run per cell of Q_max/B steps, "
        f"read at steps Q/B for budgets Q in {', '.join(map(str, cfg.budgets))}; B in {list(cfg.batch_sizes)} is part of every sampled on-policy objective's tuning grid. "
        f"Exact-population versions have no batch and run the steps of B = {cfg.batch_size} ({', '.join(map(str, cfg.checkpoints))}). Offline objectives get a dataset of Q responses "
        "drawn from mu, all pairs labelled by the gold reward (higher reward preferred, ties skipped), and train on it for "
        f"{cfg.offline_steps} Adam steps (free). The table's reward_queries column holds what each run spent.",
        "Map A (oracle): on-policy objectives query the gold reward; with it the coverage does not enter, so each rarity is run once. "
        "Map B (learned reward model): on-policy objectives (" + ", ".join(cfg.rm_families) + ") query a Bradley-Terry proxy fitted (posterior mode) to the "
        f"first dataset of Q labelled responses from mu (all-pairs counts scaled by 1/(Q - 1)): 'tabular' (one value per bin, prior N(0, {cfg.rm_prior_scale:g}^2)) or 'rbf' ({cfg.rbf_centers} radial-basis "
        f"features{' plus a linear trend' if cfg.rbf_linear else ''}); its queries are free, so each run's last step (Q_max/B) is read. "
        "Offline objectives use the same labelled datasets in both maps.",
        "Tuning rule: per (map, objective, version, rarity, coverage, budget), the configuration of the objective's grid with the highest mean final expected gold "
        f"reward over the {cfg.selection_seeds} selection seeds (offline: dataset draws) is chosen and reported by its mean over {cfg.report_seeds} fresh seeds. "
        "Exact-population versions are deterministic: one run, chosen and reported on itself. Grids (Adam learning rate, entropy bonus, beta; "
        f"sampled on-policy objectives also batch size B in {list(cfg.batch_sizes)}): " + fams + ".",
        "Exact versions: on-policy 'exact' (the expected update under the current policy); offline 'exact_offline' on mu (DPO, KTO, IPO, RWR) or on the "
        "exact distribution of the best of Q draws from mu (best-of-N); the sampled offline versions are the same program on the dataset's empirical distribution "
        "(best-of-N: SFT on the dataset's best response), which is exactly the all-pairs dataset loss for a tabular policy.",
        "Rarity = pi_ref(H), H = {y : r*(y) >= 0.5 max r*}; achieved: " + rho + ". Coverage c = mu(H)/pi_ref(H), mu_c = c pi_ref + (1 - c) mu_0, "
        f"mu_0 = pi_ref truncated to the complement of H. Reference: lengths 0..{cfg.num_bins - 1}, N({cfg.length_mean:g}, {cfg.length_sd:g}^2); gold reward "
        f"exp(-((y - c)/{cfg.width:g})^2) shifted into the short tail. Tabular policy initialised at pi_ref.",
        "phase_map_<map>.png: per objective (rows, grouped and coloured by family) and budget (columns), the tuned final gold reward (sampled; in brackets the exact version). "
        f"phase_winner.png: the winning objective per cell (colour: its family; grey: no objective reaches progress {analysis.SOLVED}, 'never' when still so at the largest budget). "
        f"phase_boundary.png: per coverage and budget, the rarity below which the best mode-seeking objective leads the best offline maximum-likelihood one by > {analysis.TIE_MARGIN} "
        "(log-linear interpolation between columns; band: min-max of the same with each report seed). phase_mass.png: final policies at marked cells, Map A, largest budget.",
        "Maps: " + "; ".join(f"{k}: {v}" for k, v in MAPS.items() if k in cfg.maps) + ".",
        f"Compute: {tot['programs_compiled']} compiled programs; compile {tot['compile_seconds']:.1f} s, run {tot['run_seconds']:.1f} s (summed over the threads), "
        f"reward-model fits {tot['proxy_fit_seconds']:.1f} s; see data/phase/manifest.json.",
    ]


def make(out_dir: Path, smoke: bool) -> list[Claim]:
    """Run (or resume) the sweep, tune, draw the figures, write the caption and tables; return the claims."""
    out_dir = Path(out_dir)
    cfg = budget("smoke" if smoke else os.environ.get(BUDGET_ENV, "default"))
    res = sweep(cfg, out_dir, resume=True)
    grid = res.grid if res.grid is not None else build_grid(cfg, fit=False)
    summary = analysis.select(res.table)
    view = analysis.map_view(summary, cfg, grid.coverage)
    bound = analysis.boundary(view)
    data = out_dir / "data"
    pieces.save_table(view.assign(report_rewards=view.report_rewards.map(list)), data / "phase_tuned.parquet")
    pieces.save_table(bound, data / "phase_boundary.parquet")
    names = []
    for m in cfg.maps:
        names.append(f"phase_map_{m}.png")
        figures.maps(view, cfg, m, out_dir / names[-1])
    figures.winner(view, cfg, out_dir / FIGURES[0])
    figures.boundary(bound, cfg, out_dir / FIGURES[1])
    figures.mass_plots(res.mass, view, cfg, out_dir / FIGURES[2])
    pieces.write_caption(out_dir / "phase.caption.md", "Rarity x coverage maps at equal query budgets (" + ", ".join(names + list(FIGURES)) + ")", _caption(cfg, res, view))
    return analysis.claims(view, cfg)


def reset(out_dir: Path) -> None:
    """Remove the sweep's tables and chunk folder, so that the next make() recomputes every chunk."""
    paths = table_paths(out_dir)
    shutil.rmtree(paths.pop("manifest").parent, ignore_errors=True)
    for path in paths.values():
        path.unlink(missing_ok=True)
    for name in ("phase_tuned.parquet", "phase_boundary.parquet"):
        (Path(out_dir) / "data" / name).unlink(missing_ok=True)


PIECE = Piece(
    "phase",
    "Rarity x coverage maps at equal query budgets: which objective, and why",
    make,
    summary="Which objective wins where reward is rare and data coverage is poor, with every objective given the same number of reward queries and "
    "tuned per cell; Map A queries the gold reward, Map B a learned reward model. Look for the boundary where mode-seeking overtakes.",
    reset=reset,
)
