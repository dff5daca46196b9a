"""The phase-diagram piece of the reproduction pipeline (``make figures``).

Runs (or resumes) the sweep of :mod:`modeseek.phase.sweep` at the "default"
budget (8 rarities x 8 coverages x 4 families x 5 seeds x 500 steps; the
on-policy families with three reward models) or the "smoke" budget, draws the
figures of :mod:`modeseek.phase.figures`, writes the caption and returns the
claims of :func:`modeseek.phase.analysis.claims` (docs/paper.md §D.4, docs/paper.md §D.6, E).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from modeseek import pieces
from modeseek.phase import analysis, figures
from modeseek.phase.grid import FAMILIES, budget
from modeseek.phase.sweep import sweep, table_paths
from modeseek.pieces import Claim, Piece

__all__ = ["make", "PIECE", "FIGURES"]

#: Files the piece writes into the output folder (besides data/).
FIGURES = ("phase_map.png", "phase_winner.png", "phase_mass.png", "phase_reward_models.png")


def _caption(cfg, res, presets) -> list[str]:
    man = res.manifest
    tot = {k: sum(c[k] for c in man["chunks"]) for k in ("programs_compiled", "compile_seconds", "run_seconds", "proxy_fit_seconds")}
    rho = ", ".join(f"{r:.2g}" for r in man["rarity_achieved"])
    fam_lines = "; ".join(f"{FAMILIES[f].label}: loss {FAMILIES[f].loss}, sampling {FAMILIES[f].sampling}" for f in cfg.families)
    marks = "; ".join(f"{figures.cell_letter(k)} = (rarity {man['rarity_achieved'][i]:.2g}, coverage {cfg.coverages[j]:g})" for k, (i, j) in enumerate(cfg.marked))
    pres = "; ".join(f"{t.description} -> rarity {t.rarity:.2g}, coverage {t.coverage:g}" for _, (_, _, t) in presets.items())
    return [
        f"Budget '{cfg.name}': {len(cfg.rarities)} rarities x {len(cfg.coverages)} coverages x {len(cfg.families)} families x {cfg.seeds} seeds, "
        f"{cfg.steps} Adam steps (learning rate {cfg.learning_rate}), tabular policy initialised at pi_ref; DPO beta {cfg.beta}.",
        f"Reference: lengths 0..{cfg.num_bins - 1}, discretised N({cfg.length_mean:g}, {cfg.length_sd:g}^2). Gold reward: exp(-((y - c)/{cfg.width:g})^2), "
        "its centre c shifted into the reference's short-length tail until the rarity is reached.",
        "Rarity = pi_ref(H), the reference mass on the high-reward set H = {y : r*(y) >= 0.5 max r*}; achieved rarities: " + rho + ".",
        "Coverage c = mu(H)/pi_ref(H) of the offline data distribution mu_c = c pi_ref + (1 - c) mu_0, where mu_0 is pi_ref truncated to "
        "the complement of H (coverage 0: the preference data never shows a high-reward response; coverage 1: mu = pi_ref).",
        f"Preference data: one batch of {cfg.dataset_size} responses from mu, all pairs, labelled by the gold reward "
        f"({'the higher reward preferred, ties skipped' if cfg.labels == 'reward' else f'Bradley-Terry, scale {cfg.bt_scale:g}'}). "
        "Offline families train on it directly (best-of-N keeps its best response).",
        f"On-policy families draw {cfg.batch_size} responses per step from the policy and query a reward: the gold reward, or a proxy fitted by "
        f"Bradley-Terry maximum a posteriori to an independent draw of the same dataset: 'tabular' (one value per bin, prior N(0, {cfg.rm_prior_scale:g}^2); "
        f"unseen bins stay at 0) or 'rbf' ({cfg.rbf_centers} gaussian radial-basis features{' plus a linear trend' if cfg.rbf_linear else ''}, "
        f"weight prior N(0, {cfg.rm_prior_scale:g}^2)). One proxy per cell, shared by the seeds. Main figures use the '{cfg.primary_reward_model}' proxy; "
        "phase_reward_models.png compares all.",
        "Families: " + fam_lines + ".",
        f"phase_map.png: top, final gold reward (seed mean); bottom, steps until the seed-mean gold reward is {analysis.PROGRESS_LEVEL:.0%} of the way from "
        "E_ref[r*] to max r* (grey: never within the budget).",
        f"phase_winner.png: the family with the highest final gold reward per cell; hatched cells have several families within {analysis.TIE_MARGIN} of the best.",
        "phase_mass.png: final policy mass (mean over seeds) at the marked cells " + marks + ".",
        "Length presets on the maps (modeseek.tasks): " + pres + ". In this analogue Skew Length differs from Min Length only in the coverage of a "
        f"set that a {cfg.dataset_size}-response dataset almost never reaches at Min Length's rarity, so the two land in the same phase.",
        f"Compute: {tot['programs_compiled']} compiled programs (one per family); compile {tot['compile_seconds']:.1f} s, run {tot['run_seconds']:.1f} s, "
        f"reward-model fits {tot['proxy_fit_seconds']:.1f} s (wall, compile included); see data/phase/manifest.json.",
    ]


def make(out_dir: Path, smoke: bool) -> list[Claim]:
    """Run (or resume) the sweep, draw the figures, write the caption; return the claims."""
    out_dir = Path(out_dir)
    cfg = budget("smoke" if smoke else "default")
    res = sweep(cfg, out_dir, resume=True)
    summary = analysis.summarise(res.table)
    figures.heatmaps(summary, cfg, out_dir / FIGURES[0])
    figures.winner(summary, cfg, out_dir / FIGURES[1])
    figures.mass_plots(res.mass, summary, cfg, out_dir / FIGURES[2])
    figures.reward_model_comparison(summary, cfg, out_dir / FIGURES[3])
    rho = summary.groupby("rarity_index")["rarity"].first().to_numpy()
    presets = figures.preset_positions(cfg, rho)
    pieces.write_caption(out_dir / "phase.caption.md", "Phase diagrams over rarity x coverage (" + ", ".join(FIGURES) + ")", _caption(cfg, res, presets))
    return analysis.claims(summary, cfg)


def reset(out_dir: Path) -> None:
    """Remove the sweep's tables and chunk folder, so that the next make() recomputes every chunk."""
    paths = table_paths(out_dir)
    shutil.rmtree(paths.pop("manifest").parent, ignore_errors=True)
    for path in paths.values():
        path.unlink(missing_ok=True)


PIECE = Piece("phase", "Phase diagrams: rarity x coverage with learned reward models", make, reset=reset)
