"""The objective atlas as a figure piece: every registered bandit objective between mode-covering and mode-seeking.

Runs :func:`modeseek.atlas.measure` (every loss of :func:`modeseek.losses.names`
that runs on bandits; the index and the regimes are defined in
:mod:`modeseek.atlas`), draws ``atlas.png`` (mode-seeking index against the
fraction of max reward attained, one panel per problem, coloured by family)
and ``atlas_mass.png`` (each objective's final pi against pi_ref and pi* on
the bimodal problem), and checks the thesis of docs/paper.md §E.2 and §E.4 on
"far": on-policy objectives (reverse KL) are mode-seeking, offline
maximum-likelihood ones (forward KL) mode-covering, contrastive ones between.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from modeseek import atlas, pieces
from modeseek.pieces import Claim, Piece

if TYPE_CHECKING:
    from collections.abc import Iterable

    import pandas as pd

#: Smoke budget: steps, and the analytic divergences (the fastest programs to compile), when registered.
SMOKE_STEPS = 50
SMOKE_OBJECTIVES = ("forward_kl", "reverse_kl")
#: The problem of the claims and of the mass plot.
CLAIM_PROBLEM = "far"
MASS_PROBLEM = "bimodal"
#: Fixed family order and colours, so a family keeps its colour whatever the registry holds.
FAMILY_ORDER = ("mode_covering", "contrastive", "on_policy")


def smoke_objectives() -> tuple[str, ...]:
    """:data:`SMOKE_OBJECTIVES` that are registered, else the first registered bandit objective."""
    names = atlas.objectives()
    return tuple(n for n in SMOKE_OBJECTIVES if n in names) or names[:1]


def plan(smoke: bool) -> tuple[tuple[str, ...], int]:
    """(objectives, steps) of a run: every registered bandit objective at :data:`modeseek.atlas.STEPS`, or the smoke budget."""
    return (smoke_objectives(), SMOKE_STEPS) if smoke else (atlas.objectives(), atlas.STEPS)


def _palette(table: pd.DataFrame) -> dict[str, object]:
    import seaborn as sns

    fams = list(FAMILY_ORDER) + sorted(set(table["family"]) - set(FAMILY_ORDER))
    return dict(zip(fams, sns.color_palette("colorblind", len(fams))))


def _scatter(table: pd.DataFrame, path: Path, smoke: bool) -> None:
    import matplotlib.pyplot as plt
    import seaborn as sns

    probs = list(dict.fromkeys(table["problem"]))
    palette = _palette(table)
    fig, axes = plt.subplots(1, len(probs), figsize=(6.2 * len(probs), 5.6), sharey=True, squeeze=False)
    for ax, prob in zip(axes[0], probs):
        sub = table[table["problem"] == prob].copy()
        sub["regime"] = np.where(sub["exact"], "exact", "sampled (band: min-max over seeds)")
        sns.scatterplot(
            data=sub, x="index", y="reward_fraction", hue="family", style="regime", palette=palette, hue_order=[f for f in palette if f in set(sub["family"])], s=70, ax=ax, legend=ax is axes[0, 0]
        )
        for _, r in sub[~sub["exact"]].iterrows():
            ax.plot([r["index_lo"], r["index_hi"]], [r["reward_fraction"]] * 2, color=palette[r["family"]], lw=1)
            ax.plot([r["index"]] * 2, [r["reward_fraction_lo"], r["reward_fraction_hi"]], color=palette[r["family"]], lw=1)
        # Objectives with the same dynamics land on one point (e.g. exact offline RWR is the forward KL to pi*): one label.
        spot = sub.assign(x=sub["index"].round(2), y=sub["reward_fraction"].round(2)).groupby(["x", "y"], sort=False)
        placed: list[tuple[float, float]] = []
        for (x, y), d in spot:
            # Stack the labels of nearby points downwards instead of over each other.
            crowd = sum(abs(x - px) < 0.25 and abs(y - py) < 0.04 for px, py in placed)
            placed.append((x, y))
            ax.annotate(" / ".join(d["objective"]), (x, y), fontsize=7, xytext=(4, 3 - 9 * crowd), textcoords="offset points")
        ax.axvline(0, color="0.6", lw=0.8, ls=":")
        ax.set_xlim(-1.02, 1.02)
        ax.set_ylim(-0.02, 1.05)
        ax.set_xlabel("mode-seeking index (F - R) / (F + R + eps)\n<- covering          seeking ->")
        ax.set_ylabel("final expected reward / max r")
        ax.set_title(f'"{prob}"', fontsize=10)
        ax.grid(alpha=0.3)
    if axes[0, 0].get_legend() is not None:
        sns.move_legend(axes[0, 0], "lower left", fontsize=7, title_fontsize=7)
    pieces.save_figure(fig, path, title="Objective atlas: mode-seeking index against reward, exact population dynamics", smoke=smoke, fontsize=12)


def _mass(mass: pd.DataFrame, table: pd.DataFrame, path: Path, smoke: bool) -> None:
    import seaborn as sns

    sub = mass[mass["problem"] == MASS_PROBLEM]
    idx = table[table["problem"] == MASS_PROBLEM].set_index("objective")["index"]
    n = sub["objective"].nunique()
    wrap = min(n, 5)
    # pi last, so that it stays visible where it equals pi_ref (sft offline) or pi* (the forward and reverse KL).
    g = sns.relplot(
        data=sub,
        x="bin",
        y="prob",
        hue="distribution",
        hue_order=["pi_ref", "pi_star", "pi"],
        palette={"pi": "C3", "pi_ref": "0.55", "pi_star": "C0"},
        col="objective",
        col_wrap=wrap,
        kind="line",
        height=2.3,
        aspect=1.35,
        facet_kws={"sharey": False},
        linewidth=1.2,
        estimator=None,
        errorbar=None,
    )
    for name, ax in g.axes_dict.items():
        ax.set_title(f"{name} (index {idx[name]:+.2f})", fontsize=8)
        ax.grid(alpha=0.3)
    g.set_axis_labels("bin", "probability")
    sns.move_legend(g, "upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, title=None, frameon=False)
    # The grid has laid itself out already; another tight_layout would only cost time (seconds at 35 panels).
    g.figure.suptitle(f'Final pi of every objective on "{MASS_PROBLEM}" against pi_ref and pi* (beta {atlas.BETA:g})' + (" [SMOKE]" if smoke else ""), fontsize=11, y=1.02)
    pieces.save_figure(g.figure, path)


def _fam_indices(table: pd.DataFrame, problem: str) -> dict[str, dict[str, float]]:
    sub = table[table["problem"] == problem]
    return {f: dict(zip(d["objective"], d["index"])) for f, d in sub.groupby("family")}


def _list(d: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:+.3f}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])) or "none"


def _at_target(table: pd.DataFrame, problem: str, names: Iterable[str]) -> str:
    """A note naming those of ``names`` whose final policy is within EPS nats (F + R) of pi*, where the index is ~0 by design."""
    if "kl_forward" not in table:
        return ""
    sub = table[table["problem"] == problem].set_index("objective")
    at = [n for n in names if n in sub.index and sub.loc[n, "kl_forward"] + sub.loc[n, "kl_reverse"] < atlas.EPS]
    if not at:
        return ""
    return (
        "; "
        + ", ".join(f"{n} (F + R = {sub.loc[n, 'kl_forward'] + sub.loc[n, 'kl_reverse']:.1e} nats)" for n in at)
        + f" reached pi* within the budget, so their index is ~0 by design (eps = {atlas.EPS:g}); see atlas_reverse_kl_seeks_earlier for the two divergences before they converge"
    )


def claims(table: pd.DataFrame, problem: str = CLAIM_PROBLEM) -> list[Claim]:
    """The atlas's claims on ``problem``, computed from the table."""
    fam = _fam_indices(table, problem)
    cov, con, onp = fam.get("mode_covering", {}), fam.get("contrastive", {}), fam.get("on_policy", {})
    out = []
    ok = bool(cov and onp and min(onp.values()) > max(cov.values()))
    weakest = min(onp, key=lambda n: onp[n]) if onp else ""
    strongest = max(cov, key=lambda n: cov[n]) if cov else ""
    out.append(
        Claim(
            "atlas_on_policy_more_seeking",
            f'On "{problem}", every on-policy (reverse-KL) objective has a higher mode-seeking index than every mode-covering objective',
            ok,
            f"on_policy: {_list(onp)}; mode_covering: {_list(cov)}",
            ""
            if ok
            else (
                "a family is missing from this run"
                if not (cov and onp)
                else f"{weakest} ({onp[weakest]:+.3f}) is not above {strongest} ({cov[strongest]:+.3f})" + _at_target(table, problem, [weakest, strongest])
            ),
        )
    )
    means = {k: float(np.mean(list(v.values()))) if v else np.nan for k, v in (("mode_covering", cov), ("contrastive", con), ("on_policy", onp))}
    ok = bool(means["mode_covering"] < means["contrastive"] < means["on_policy"])
    out.append(
        Claim(
            "atlas_contrastive_between",
            f"On \"{problem}\", the contrastive family's mean index lies between the mode-covering and the on-policy families' means",
            ok,
            "; ".join(f"{k} mean {v:+.3f}" for k, v in means.items()) + f"; contrastive: {_list(con)}",
            "" if ok else "the family means are not in the order mode_covering < contrastive < on_policy",
        )
    )
    sub = table[table["problem"] == problem].set_index("objective")["index"]
    if "forward_kl" in sub.index:
        lower = sub[sub < sub["forward_kl"]]
        ok = lower.empty
        out.append(
            Claim(
                "atlas_forward_kl_lowest",
                f'On "{problem}", no objective has a lower mode-seeking index than forward_kl',
                bool(ok),
                f"forward_kl {sub['forward_kl']:+.3f}; lowest three: " + ", ".join(f"{k} {v:+.3f}" for k, v in sub.nsmallest(3).items()),
                "" if ok else f"lower: {', '.join(f'{k} {v:+.3f}' for k, v in lower.sort_values().items())}" + _at_target(table, problem, ["forward_kl"]),
            )
        )
    else:
        out.append(
            Claim(
                "atlas_forward_kl_lowest",
                f'On "{problem}", no objective has a lower mode-seeking index than forward_kl',
                False,
                "forward_kl was not run",
                "forward_kl is not among the objectives of this run",
            )
        )
    sub = table[table["problem"] == problem].set_index("objective")
    if {"forward_kl", "reverse_kl"} <= set(sub.index) and "index_early" in sub:
        f, r = sub.loc["forward_kl", "index_early"], sub.loc["reverse_kl", "index_early"]
        ok = bool(r > f)
        out.append(
            Claim(
                "atlas_reverse_kl_seeks_earlier",
                f'On "{problem}", early in training (5% of the budget) reverse_kl has a higher mode-seeking index than forward_kl (docs/paper.md §E.4)',
                ok,
                f"index at the early checkpoint: reverse_kl {r:+.3f}, forward_kl {f:+.3f}; at the end: reverse_kl {sub.loc['reverse_kl', 'index']:+.3f}, forward_kl {sub.loc['forward_kl', 'index']:+.3f}",
                "" if ok else "the reverse KL's early policy is not more mode-seeking than the forward KL's",
            )
        )
    sub = table[table["problem"] == problem]
    rf = sub.groupby("family")["reward_fraction"].mean()
    ok = bool("on_policy" in rf and "mode_covering" in rf and rf["on_policy"] > rf["mode_covering"])
    out.append(
        Claim(
            "atlas_on_policy_more_reward",
            f'On "{problem}", the on-policy family attains a higher mean fraction of max reward than the mode-covering family',
            ok,
            "; ".join(f"{k} {v:.3f}" for k, v in rf.items()),
            "" if ok else "the on-policy family's mean is not above the mode-covering family's",
        )
    )
    return out


def _markdown(table: pd.DataFrame) -> str:
    cols = ["objective", "family", "problem", "sampling", "index", "index_early", "kl_reverse", "kl_forward", "expected_reward", "entropy", "mass_top_mode", "steps_to_90"]
    head = "| " + " | ".join(cols) + " |\n| " + " | ".join("---" if c in ("objective", "family", "problem", "sampling") else "---:" for c in cols) + " |\n"
    lines = []
    for _, r in table.sort_values(["problem", "index"], ascending=[True, False]).iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if c == "sampling":
                cells.append(v + ("" if r["exact"] else f" ({int(r['seeds'])} seeds)"))
            elif c == "steps_to_90":
                cells.append("never" if np.isnan(v) else f"{int(v)}")
            elif isinstance(v, float):
                cells.append(f"{v:+.3f}" if c.startswith("index") else f"{v:.3g}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


def make(out_dir: Path, smoke: bool) -> list[Claim]:
    out_dir = Path(out_dir)
    names, steps = plan(smoke)
    m = atlas.measure(names, steps=steps)
    pieces.save_table(m.table, out_dir / "data" / "atlas.parquet")
    pieces.save_table(m.mass, out_dir / "data" / "atlas_mass.parquet")
    _scatter(m.table, out_dir / "atlas.png", smoke)
    _mass(m.mass, m.table, out_dir / "atlas_mass.png", smoke)
    found = claims(m.table)
    sampled = sorted(set(m.table.loc[~m.table["exact"], "objective"]))
    regimes = "; ".join(f"{f}: {', '.join(sorted(set(d['sampling'])))}" for f, d in m.table.groupby("family"))
    which = "smoke: the analytic divergences only" if smoke else 'every loss in modeseek.losses.names("bandit")'
    bullets = [
        (
            f"{len(names)} objectives ({which}) x 3 problems "
            f'("far", "near", "bimodal": pi_ref of the paper\'s bandit with equal reward bumps (centre, width) {list(atlas.BIMODAL_MODES)}); '
            f"tabular policy from pi_ref, Adam at the engine's default learning rate, {steps} steps, beta {atlas.BETA:g} (pi*'s temperature, and the loss's beta where it reads one)."
        ),
        f"Regimes (population, exact; modeseek/atlas docstring): {regimes}. "
        + (f"Sampled (no exact batch; {atlas.SAMPLED_SEEDS} seeds, min-max band): {', '.join(sampled)}." if sampled else "Every objective ran exactly (deterministic, one run per problem)."),
        f"Mode-seeking index (F - R) / (F + R + {atlas.EPS:g}), F = KL(pi*||pi), R = KL(pi||pi*) of the final policy: > 0 the policy misses mass pi* has (seeking), < 0 it keeps mass pi* lacks (covering), 0 at pi*.",
        f'atlas.png: index against final expected reward / max r, one panel per problem. atlas_mass.png: final pi (red) against pi_ref (grey) and pi* (blue) on "{MASS_PROBLEM}", one panel per objective.',
        f"index_early: the index at step {atlas.early_step(steps)} ({atlas.EARLY_FRACTION:.0%} of the budget). Top mode: the connected run of bins with r >= max r / 2 holding most of pi*'s mass. steps_to_90: first step with expected reward >= {atlas.REWARD_FRACTION:g} max r.",
        (
            f"Compute: {m.programs} compiled programs (one per objective, the 3 problems swept in each); compile {m.compile_seconds:.1f} s, run {m.run_seconds:.1f} s, "
            f"measure {m.wall_seconds:.1f} s (wall, compile included)."
        ),
        "Data: data/atlas.parquet (one row per objective x problem; _lo/_hi: min and max over seeds) and data/atlas_mass.parquet (final pi, pi_ref, pi* per bin).",
    ]
    title = "Objective atlas: mode-seeking against mode-covering, every registered objective (atlas.png, atlas_mass.png)"
    text = f"# {title}\n\n" + "\n".join(f"- {b}" for b in bullets) + "\n\n" + _markdown(m.table)
    pieces.atomic_write_text(out_dir / "atlas.caption.md", text)
    return found


PIECE = Piece(
    "atlas",
    "The objective atlas: every objective between mode-covering and mode-seeking",
    make,
    'Every registered bandit objective, trained exactly for one budget on "far", "near" and a bimodal target, placed by a mode-seeking index (F - R)/(F + R + eps) of its final policy (F = KL(pi*||pi), R = KL(pi||pi*)) against the reward it attains; plus each objective\'s final pi against pi_ref and pi*.\n'
    "Look for the families' order along the index: on-policy reward maximisers right (collapsed on the reward's peak), offline maximum likelihood left (broad), and where the objectives that reach pi* itself land (0).",
)
