"""Per-cell summaries of a phase-diagram table, the winner map and the checked claims.

Definitions used by the figures and the claims (all on the *gold* reward):

* final reward: the seed-mean expected gold reward after the last step;
* progress: (E_pi[r] - E_ref[r]) / (max r - E_ref[r]), the fraction of the way
  from the reference to the best achievable reward (the reward's maximum);
* steps to 90%: the first recorded step at which the seed-mean progress
  reaches 0.9 (NaN when it never does);
* "does well" at a cell: final reward >= 90% of the best family's final reward
  at that cell; "falls behind": below that.
"""

from __future__ import annotations

import numpy as np

from modeseek.phase.grid import FAMILIES
from modeseek.pieces import Claim, fmt

__all__ = ["summarise", "primary", "winner_map", "claims", "GOOD_FRACTION", "PROGRESS_LEVEL", "TIE_MARGIN"]

#: A family "does well" at a cell when it reaches this fraction of the best family's final reward.
GOOD_FRACTION = 0.9
#: Progress level of the "steps to reach 90% of the best achievable" heatmap.
PROGRESS_LEVEL = 0.9
#: Winner-map ties: families within this much final reward of the best.
TIE_MARGIN = 0.02

_KEYS = ["family", "reward_model", "rarity_index", "coverage_index"]


def summarise(table):
    """One row per (family, reward model, cell): final gold and proxy rewards, progress, steps to 90%.

    Args:
      table: the tidy sweep table (:func:`modeseek.phase.sweep`).

    Returns:
      DataFrame with columns family, reward_model, rarity_index, coverage_index,
      rarity, coverage, final_reward, final_reward_se, final_proxy, proxy_gain,
      gold_gain, final_progress, final_mass_high, steps_to_90.
    """
    import pandas as pd

    cols = ["expected_reward", "expected_train_reward", "mass_high_reward"]
    mean = table.groupby(_KEYS + ["step"], sort=True)[cols].mean().reset_index()
    last = table[table["step"] == table["step"].max()].groupby(_KEYS, sort=True)["expected_reward"]
    se = (last.std(ddof=1) / np.sqrt(last.count())).fillna(0.0)
    consts = table.groupby(_KEYS, sort=True)[["rarity", "coverage", "max_reward", "ref_reward"]].first()
    rows = []
    for key, g in mean.groupby(_KEYS, sort=True):
        c = consts.loc[key]
        er = g["expected_reward"].to_numpy()
        span = max(float(c.max_reward - c.ref_reward), 1e-12)
        prog = (er - float(c.ref_reward)) / span
        hit = np.flatnonzero(prog >= PROGRESS_LEVEL)
        proxy = g["expected_train_reward"].to_numpy()
        rows.append(
            {
                **dict(zip(_KEYS, key)),
                "rarity": float(c.rarity),
                "coverage": float(c.coverage),
                "final_reward": float(er[-1]),
                "final_reward_se": float(se.loc[key]),
                "final_proxy": float(proxy[-1]),
                "proxy_gain": float(proxy[-1] - proxy[0]),
                "gold_gain": float(er[-1] - er[0]),
                "final_progress": float(prog[-1]),
                "final_mass_high": float(g["mass_high_reward"].to_numpy()[-1]),
                "steps_to_90": float(g["step"].to_numpy()[hit[0]]) if len(hit) else np.nan,
            }
        )
    return pd.DataFrame(rows)


def primary(summary, primary_model: str):
    """The rows the main figures draw: offline families ("data") and on-policy families with ``primary_model``."""
    on = summary["family"].map(lambda f: FAMILIES[f].on_policy)
    keep = (~on & (summary["reward_model"] == "data")) | (on & (summary["reward_model"] == primary_model))
    return summary[keep].reset_index(drop=True)


def grid_of(summary, family: str, value: str, shape: tuple[int, int], reward_model: str | None = None) -> np.ndarray:
    """(C, R) array of ``value`` for one family (rows: coverage, columns: rarity), NaN where missing."""
    out = np.full(shape[::-1], np.nan)
    s = summary[summary.family == family]
    if reward_model is not None:
        s = s[s.reward_model == reward_model]
    for r in s.itertuples():
        out[r.coverage_index, r.rarity_index] = getattr(r, value)
    return out


def winner_map(prim, families, shape):
    """(C, R) index of the best family per cell, (C, R) number of families within TIE_MARGIN of it, and (F, C, R) finals."""
    finals = np.stack([grid_of(prim, f, "final_reward", shape) for f in families])
    best = np.nanargmax(finals, axis=0)
    top = np.nanmax(finals, axis=0)
    ties = np.sum(finals >= top[None] - TIE_MARGIN, axis=0)
    return best, ties, finals


def claims(summary, cfg) -> list[Claim]:
    """The issue's claims, each computed from the summary (never typed in)."""
    fams = list(cfg.families)
    prim = primary(summary, cfg.primary_reward_model)
    shape = (len(cfg.rarities), len(cfg.coverages))
    r_n, c_n = shape
    _, _, finals = winner_map(prim, fams, shape)  # (F, C, R)
    label = {f: FAMILIES[f].label for f in fams}
    rho = prim.groupby("rarity_index")["rarity"].first().reindex(range(r_n)).to_numpy()
    out = []
    pm = cfg.primary_reward_model

    # 1. Common peak, full coverage: everyone does well.
    cell = finals[:, c_n - 1, r_n - 1]
    ok = bool(np.all(cell >= GOOD_FRACTION * np.max(cell)))
    out.append(
        Claim(
            "phase_common_peak_all_families_good",
            f"At the most common peak (rarity {rho[-1]:.2g}) with full coverage every family does well (final gold reward >= {GOOD_FRACTION:.0%} of the best family's)",
            ok,
            "; ".join(f"{label[f]}: {fmt(v)}" for f, v in zip(fams, cell)) + f" (on-policy families query the {pm} proxy)",
            "" if ok else "at least one family ends below 90% of the best at the easiest cell: " + ", ".join(label[f] for f, v in zip(fams, cell) if v < GOOD_FRACTION * np.max(cell)),
        )
    )

    # 2. Coverage 1, peak becoming rare: which family falls behind first?
    if "offline_ml" in fams:
        behind = [[f for f, v in zip(fams, col) if v < GOOD_FRACTION * np.max(col)] for col in finals[:, c_n - 1].T]  # per rarity
        first_col = next((r for r in range(r_n - 1, -1, -1) if behind[r]), None)
        fallers = behind[first_col] if first_col is not None else []
        ok = first_col is not None and "offline_ml" in fallers
        if first_col is None:
            ev = "no family falls below 90% of the best at any rarity with full coverage"
        else:
            col = finals[:, c_n - 1, first_col]
            ev = f"first rarity (from common to rare) where a family falls behind: {rho[first_col]:.2g}; there " + "; ".join(f"{label[f]} {fmt(v)}" for f, v in zip(fams, col))
        ml = finals[fams.index("offline_ml"), c_n - 1]
        ml_first = next((r for r in range(r_n - 1, -1, -1) if ml[r] < GOOD_FRACTION * np.nanmax(finals[:, c_n - 1, r])), None)
        ev += f"; offline ML first falls behind at rarity {rho[ml_first]:.2g}" if ml_first is not None else "; offline ML is never behind the best family with full coverage"
        out.append(
            Claim(
                "phase_offline_ml_falls_behind_first",
                f"With full coverage, as the peak becomes rare, offline maximum likelihood is the first family to fall behind (below {GOOD_FRACTION:.0%} of the best family's final gold reward)",
                bool(ok),
                ev,
                ""
                if ok
                else (
                    "no family falls behind at any rarity with full coverage"
                    if first_col is None
                    else f"{', '.join(label[f] for f in fallers)} fall behind first; offline best-of-N keeps the best of "
                    f"{cfg.dataset_size} gold-scored responses, which stays near the peak while {cfg.dataset_size} x rarity >~ 1"
                ),
            )
        )

    # 3. Low coverage: offline contrastive stalls, on-policy with the smooth proxy keeps improving.
    on_fams = [f for f in fams if FAMILIES[f].on_policy]
    if "offline_contrastive" in fams and on_fams and "rbf" in cfg.reward_models:
        off = grid_of(summary[summary.reward_model == "data"], "offline_contrastive", "final_reward", shape)[0]
        rbf = {f: grid_of(summary, f, "final_reward", shape, "rbf")[0] for f in on_fams}
        ok = all(np.nanmean(v) > np.nanmean(off) for v in rbf.values())
        wins = {f: int(np.sum(v > off + TIE_MARGIN)) for f, v in rbf.items()}
        out.append(
            Claim(
                "phase_low_coverage_on_policy_smooth_rm_beats_offline_contrastive",
                "At coverage 0 offline contrastive training stalls while on-policy methods querying the smooth (RBF) reward model "
                "keep improving: averaged over the rarity columns, their final gold reward is higher than offline DPO's",
                bool(ok),
                f"coverage-0 row, mean final gold reward: offline DPO {fmt(np.nanmean(off))}; "
                + "; ".join(f"{label[f]} + RBF proxy {fmt(np.nanmean(v))} (ahead by > {TIE_MARGIN} in {wins[f]}/{r_n} columns)" for f, v in rbf.items()),
                "" if ok else "at least one on-policy family with the RBF proxy does not beat offline DPO on average at coverage 0",
            )
        )
        if "tabular" in cfg.reward_models:
            tab = {f: grid_of(summary, f, "final_reward", shape, "tabular")[0] for f in on_fams}
            ok = all(np.nanmean(tab[f]) < np.nanmean(rbf[f]) for f in on_fams)
            out.append(
                Claim(
                    "phase_low_coverage_tabular_proxy_does_not_extrapolate",
                    "At coverage 0 a tabular reward model, which cannot extrapolate beyond the data, helps on-policy methods less than "
                    "the smooth (RBF) one: their mean final gold reward over the coverage-0 row is lower with the tabular proxy",
                    bool(ok),
                    "; ".join(f"{label[f]}: tabular {fmt(np.nanmean(tab[f]))} vs RBF {fmt(np.nanmean(rbf[f]))} (offline DPO {fmt(np.nanmean(off))})" for f in on_fams),
                    "" if ok else "the tabular proxy does as well as the smooth one for at least one on-policy family",
                )
            )

    # 4. Over-optimisation of the learned proxy is visible (proxy up, gold flat).
    if "on_policy_rl" in fams and pm != "gold":
        s = summary[(summary.family == "on_policy_rl") & (summary.reward_model == pm)]
        over = s[(s.proxy_gain > 0) & (s.final_progress < 0.1)]
        ok = len(over) > 0
        out.append(
            Claim(
                "phase_proxy_overoptimisation_visible",
                f"Over-optimisation is visible: in some cells on-policy RL raises its {pm} proxy reward while its gold reward stays below 10% of the way from the reference to the best achievable",
                bool(ok),
                f"{len(over)} of {len(s)} cells; median proxy gain there {fmt(over.proxy_gain.median() if ok else np.nan)}, median gold progress {fmt(over.final_progress.median() if ok else np.nan)}",
                "" if ok else "wherever the proxy reward rises, the gold reward rises too",
            )
        )
    return out
