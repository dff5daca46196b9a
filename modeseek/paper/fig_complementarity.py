"""Figure 4: complementarity. On-policy DPO/IPO vs offline DPO/IPO vs on-policy best-of-N.

On-policy sampling and a negative gradient together (docs/paper.md §D.5, §5.3):
the authors' onpolicy_ipo.sh and the same setting with the DPO loss
(``protocol.ON_POLICY_IPO``, ``protocol.ON_POLICY_DPO``) against the offline
DPO/IPO runs of figure 3 and the on-policy best-of-N runs of figure 2 (shared
in-process, so each program compiles once). "High reward" is a fixed threshold,
HIGH_REWARD, chosen before looking at results.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from modeseek import pieces
from modeseek.paper import protocol
from modeseek.paper.fig_on_policy import tidy
from modeseek.pieces import Claim, Piece

if TYPE_CHECKING:
    from modeseek.engine import Trajectory

#: What "a high reward" means in the claim: exact expected reward >= 0.8 (the maximum is 1).
HIGH_REWARD = 0.8
#: The contrastive runs (the offline ones are figure 3's).
CONTRASTIVE = {"on-policy DPO": protocol.ON_POLICY_DPO, "on-policy IPO": protocol.ON_POLICY_IPO, "offline DPO": protocol.OFFLINE_DPO, "offline IPO": protocol.OFFLINE_IPO}
STYLE = {
    "on-policy DPO": ("C4", "-"),
    "on-policy IPO": ("C3", "-"),
    "offline DPO": ("C4", ":"),
    "offline IPO": ("C3", ":"),
    "on-policy best-of-N": ("C0", "-"),
    "on-policy best-of-N (lr 0.01)": ("C0", "--"),
}


def results(b: protocol.Budget) -> dict:
    """Method -> metric -> (problems, reported seeds, steps + 1)."""
    on_bon = protocol.on_policy_best_of_n(b)
    runs = {name: protocol.run_config(cfg, b).metrics for name, cfg in CONTRASTIVE.items()}
    runs["on-policy best-of-N"] = {m: v[:, 0] for m, v in on_bon.metrics.items()}
    runs["on-policy best-of-N (lr 0.01)"] = {m: v[:, 1] for m, v in on_bon.metrics.items()}
    return {name: {m: np.asarray(v[m]) for m in protocol.METRICS} for name, v in runs.items()}


def crossing(curves: np.ndarray, threshold: float = HIGH_REWARD) -> tuple[int | None, float]:
    """Steps for the seed-mean curve to reach ``threshold``, and the median over seeds (inf if a seed never does).

    Args:
      curves: (seeds, steps + 1) exact expected reward.
    """
    c = np.asarray(curves, dtype=np.float64)
    per_seed = [protocol.steps_to_reach(s, threshold) for s in c]
    return protocol.steps_to_reach(c.mean(0), threshold), float(np.median([np.inf if s is None else s for s in per_seed]))


def faster(steps: int | None, other: int | None, other_budget: int) -> bool:
    """True when reaching in ``steps`` is strictly faster than ``other`` (None: not reached within ``other_budget`` steps)."""
    return steps is not None and steps < (other_budget if other is None else other)


def make(out_dir: Path, smoke: bool) -> list[Claim]:
    import matplotlib.pyplot as plt
    import pandas as pd

    b = protocol.budget(smoke)
    res = results(b)

    fig, axes = plt.subplots(2, 2, figsize=(13, 7.6))
    for i, kind in enumerate(protocol.KINDS):
        ax_l, ax_k = axes[i]
        for name, r in res.items():
            color, ls = STYLE[name]
            steps = np.arange(r["expected_reward"].shape[-1])
            hit, _ = crossing(r["expected_reward"][i])
            label = f"{name}: " + (f"reaches {HIGH_REWARD} at step {hit}" if hit is not None else f"never reaches {HIGH_REWARD}")
            pieces.plot_band(ax_l, steps + 1, r["expected_reward"][i], label=label, color=color, ls=ls)
            pieces.plot_band(ax_k, steps, r["kl_pi_ref"][i], label=name, color=color, ls=ls)
            if hit is not None:
                ax_l.plot([hit + 1], [r["expected_reward"][i].mean(0)[hit]], "o", color=color, ms=4)
        ax_l.axhline(HIGH_REWARD, color="0.5", ls=":", lw=1)
        ax_l.set_xscale("log")
        ax_l.set_xlabel("gradient steps + 1 (log scale)")
        ax_l.set_ylabel(f'"{kind}"\nexact expected reward')
        ax_l.set_ylim(-0.02, 1.04)
        ax_k.set_xlabel("gradient steps")
        ax_k.set_ylabel(r"KL($\pi$ || $\pi_{ref}$)")
        for ax in axes[i]:
            ax.grid(alpha=0.3)
        ax_l.legend(fontsize=7, loc="upper left" if kind == "far" else "lower right")
        if i == 0:
            ax_l.set_title("exact E[r] (dots: first step the mean reaches the threshold)", fontsize=10)
            ax_k.set_title(r"KL($\pi$ || $\pi_{ref}$)", fontsize=10)
            ax_k.legend(fontsize=7, loc="lower right")
    title = f"Complementarity of on-policy sampling and negative gradient (MLP, mean and 95% band over {b.seeds} seeds)"
    pieces.save_figure(fig, out_dir / "fig_complementarity.png", title=title, smoke=smoke)

    on_bon = protocol.on_policy_best_of_n(b)
    runs = {name: protocol.run_config(cfg, b) for name, cfg in CONTRASTIVE.items()}
    frames = [tidy(t, name, seeds=b.seeds) for name, t in runs.items()]
    frames.append(tidy(on_bon, "on-policy best-of-N", grid_name="learning_rate", chosen=[0, 0], seeds=b.seeds))
    df = pd.concat(frames, ignore_index=True)
    other_lr = (df["method"] == "on-policy best-of-N") & (df["learning_rate"] != protocol.ON_POLICY_BEST_OF_N.learning_rate)
    df.loc[other_lr, ["method", "chosen"]] = ["on-policy best-of-N (lr 0.01)", True]
    pieces.save_table(df, out_dir / "data" / "fig_complementarity.parquet")

    h_on = b.on_policy_steps(protocol.ON_POLICY_IPO)
    claims = [_claim(res, i, kind, b.offline_steps, h_on) for i, kind in enumerate(protocol.KINDS)]
    pieces.write_caption(out_dir / "fig_complementarity.caption.md", "Figure 4: complementarity (fig_complementarity.png)", _caption(b, res, list(runs.values()) + [on_bon]))
    return claims


def _claim(res: dict[str, dict[str, np.ndarray]], i: int, kind: str, h_off: int, h_on: int) -> Claim:
    hits = {name: crossing(r["expected_reward"][i]) for name, r in res.items()}
    budgets = {name: (h_off if name.startswith("offline") else h_on) for name in res}

    def reached(name: str) -> tuple[int, int]:
        er = res[name]["expected_reward"][i]
        return int(sum(protocol.steps_to_reach(s, HIGH_REWARD) is not None for s in er)), er.shape[0]

    def show(name: str) -> str:
        hit, med = hits[name]
        k, n = reached(name)
        return f"{name} {'never within ' + str(budgets[name]) if hit is None else hit} (per-seed median {med:g}, {k} of {n} seeds reach it)"

    ok, why = True, []
    for c in ("DPO", "IPO"):
        on = hits[f"on-policy {c}"][0]
        for other in ("on-policy best-of-N", f"offline {c}"):
            if not faster(on, hits[other][0], budgets[other]):
                ok = False
                k, n = reached(f"on-policy {c}")
                why.append(f"on-policy {c} is not faster than {other}" + (f" (its seed-mean curve stays below {HIGH_REWARD}: {n - k} of {n} seeds settle on a lower-reward bin)" if on is None else ""))
    if not faster(hits["on-policy IPO"][0], hits["on-policy best-of-N (lr 0.01)"][0], budgets["on-policy best-of-N (lr 0.01)"]):
        why.append("at the contrastive methods' learning rate 0.01, on-policy best-of-N is as fast as on-policy IPO, so the gap to the authors' best-of-N (lr 0.001) is mostly the learning rate")
    return Claim(
        f"{kind}_on_policy_contrastive_fastest",
        f'On "{kind}", on-policy DPO and IPO reach a high reward (exact E[r] >= {HIGH_REWARD}) in fewer gradient steps than on-policy best-of-N and than their offline versions',
        ok,
        "steps to reach (seed-mean curve): " + "; ".join(show(n) for n in res),
        "; ".join(why),
    )


def _caption(b: protocol.Budget, res: dict[str, dict[str, np.ndarray]], timing: Sequence[Trajectory]) -> list[str]:
    return [
        'Problem: the 1-token bandit (reward peak at bin 70 "far" / 20 "near"). Policy: the authors\' MLP, SFT to pi_ref first; '
        "on-policy runs draw epoch 0 from pi_ref and later epochs from the policy (docs/paper.md §A.6).",
        "Budget: " + b.describe() + ".",
        protocol.ON_POLICY_IPO.describe() + f"; shortened to {b.on_policy_epochs} epochs.",
        protocol.ON_POLICY_DPO.describe() + "; beta is the authors' CLI default, not tuned.",
        protocol.OFFLINE_IPO.describe() + " (the runs of figure 3).",
        protocol.OFFLINE_DPO.describe() + " (the runs of figure 3).",
        protocol.ON_POLICY_BEST_OF_N.describe() + " (the runs of figure 2); dashed: the same at lr 0.01, the contrastive on-policy runs' rate, "
        "to separate the effect of the loss from the learning rate.",
        f'"High reward" (our choice, fixed before the runs): exact E[r] >= {HIGH_REWARD}. Steps to reach it are read off the seed-mean curve; '
        "the legend and the claims give them, with the per-seed median. Offline runs stop at the authors' T = 200 steps; a method that never "
        "reaches the threshold within its budget counts as slower only if the other method reached it in fewer steps than that budget.",
        "Left: exact expected reward against gradient steps (log axis, so early steps are visible); right: KL(pi||pi_ref). "
        "The authors' Monte-Carlo reward (4 draws per evaluation context for DPO/IPO, 1 for best-of-N) is in the data table (sampled_reward).",
        "Compile / run seconds of the engine calls (as first measured in this process): "
        + ", ".join(f"{t.config.loss}/{t.config.sampling} {t.compile_seconds:.1f}/{t.run_seconds:.1f}" for t in timing)
        + ".",
    ]


PIECE = Piece(
    "fig_complementarity",
    "Figure 4: complementarity",
    make,
    "On-policy DPO and IPO against their offline versions and on-policy best-of-N (at the authors' learning rate and at the contrastive runs' rate), "
    "exact expected reward on a log step axis with the step each mean curve first reaches 0.8, and KL(pi || pi_ref).\n"
    "It tests whether on-policy sampling and a negative gradient together reach a high reward in the fewest gradient steps.",
)
