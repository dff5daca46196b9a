"""Figure 8: probability-mass film strips, the picture that makes mode-seeking visible.

For each geometry ("far", "near") and one algorithm per family, the policy's
mass over the 100 bins at a few training steps. The runs are the exact
(population) versions, so each strip is deterministic: offline best-of-N on the
data distribution (mode-covering: it converges to the best-of-N distribution of
pi_ref), offline DPO on pi_ref x pi_ref pairs (contrastive), and on-policy
REINFORCE (mode-seeking). A sampled run of each (mean over seeds) is stored too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import modeseek as ms
from modeseek.paper import common
from modeseek.paper.common import Claim, Piece

ALGORITHMS = (
    ("offline best-of-N (mode-covering)", dict(loss="best_of_n", sampling="exact_offline")),
    ("offline DPO (contrastive)", dict(loss="dpo", sampling="exact_offline")),
    ("on-policy REINFORCE (mode-seeking)", dict(loss="reinforce", sampling="exact")),
)
SAMPLED = {"exact_offline": "offline", "exact": "on_policy"}


def _runs(kind: str, steps: int, seeds: int):
    problem = ms.paper_bandit(kind)
    out = []
    for label, kw in ALGORITHMS:
        exact = ms.run(problem, steps=steps, seeds=1, snapshot_every=steps // 5, **kw)
        sampled = ms.run(problem, steps=steps, seeds=seeds, snapshot_every=steps // 5, **{**kw, "sampling": SAMPLED[kw["sampling"]]})
        out.append((label, kw, exact, sampled))
    return problem, out


def make(out_dir: Path, smoke: bool) -> list[Claim]:
    import matplotlib.pyplot as plt
    import pandas as pd

    steps, seeds = (50, 2) if smoke else (500, 10)
    rows, claims = [], []
    for kind in ("far", "near"):
        problem, runs = _runs(kind, steps, seeds)
        snap_steps = runs[0][2].snapshot_steps
        fig, axes = plt.subplots(len(runs), len(snap_steps), figsize=(2.3 * len(snap_steps), 2.0 * len(runs)), sharex=True, sharey="row")
        bins = np.arange(problem.num_bins)
        ref = np.asarray(problem.ref_probs)
        reward = np.asarray(problem.reward)
        for i, (label, kw, exact, sampled) in enumerate(runs):
            for j, s in enumerate(snap_steps):
                ax = axes[i, j]
                p = exact.snapshots[0, j]
                ax.bar(bins, p, width=1.0, color="C%d" % i, alpha=0.8, label="exact")
                ax.plot(bins, sampled.snapshots[:, j].mean(0), color="k", lw=0.8, label=f"sampled (mean of {seeds})")
                ax.plot(bins, ref, color="0.5", ls="--", lw=0.8, label="pi_ref")
                ax2 = ax.twinx()
                ax2.plot(bins, reward, color="C3", lw=0.6, alpha=0.5)
                ax2.set_ylim(0, 1.05)
                ax2.set_yticks([])
                if i == 0:
                    ax.set_title(f"step {s}", fontsize=9)
                if j == 0:
                    ax.set_ylabel(label.replace(" (", "\n("), fontsize=8)
                er = float((p * reward).sum())
                ax.text(0.98, 0.95, f"E[r]={er:.2f}", transform=ax.transAxes, ha="right", va="top", fontsize=7)
                rows.append(
                    pd.DataFrame(
                        {
                            "problem": kind,
                            "algorithm": label,
                            "loss": kw["loss"],
                            "regime": kw["sampling"],
                            "step": int(s),
                            "bin": bins,
                            "exact_prob": p,
                            "sampled_prob_mean": sampled.snapshots[:, j].mean(0),
                            "ref_prob": ref,
                            "reward": reward,
                        }
                    )
                )
        axes[0, -1].legend(fontsize=6, loc="upper left")
        fig.suptitle(f'Probability mass over bins, "{kind}" reward (red: reward, dashed: pi_ref)', fontsize=10)
        common.save_figure(fig, out_dir / f"filmstrip_{kind}.png")
        # Claim: the mode-seeking run ends with more mass on the high-reward set than the mode-covering one.
        final = {kw["loss"]: float(ex.metrics["mass_high_reward"][0, -1]) for _, kw, ex, _ in runs}
        if kind == "far":
            claims.append(
                Claim(
                    "filmstrip_far_mode_seeking",
                    'On "far", exact on-policy REINFORCE ends with more mass on the high-reward bins than exact offline best-of-N (mode-covering) and exact offline DPO',
                    final["reinforce"] > max(final["best_of_n"], final["dpo"]),
                    f"mass on high-reward bins after {steps} steps: REINFORCE {common.fmt(final['reinforce'])}, "
                    f"best-of-N {common.fmt(final['best_of_n'])}, DPO {common.fmt(final['dpo'])}",
                )
            )
    common.save_table(pd.concat(rows, ignore_index=True), out_dir / "data" / "filmstrips.parquet")
    common.write_caption(
        out_dir / "filmstrips.caption.md",
        "Probability-mass film strips (filmstrip_far.png, filmstrip_near.png)",
        [
            "Problem: the paper's 1-token bandit, exact squashed-Cauchy(-0.7, 0.4) reference over 100 bins, reward exp(-((i-c)/10)^2) with c = 70 (far) or 20 (near).",
            f"Policy: tabular logits initialised at log pi_ref; Adam, learning rate {ms.engine.default_learning_rate('tabular', 'adam')}, {steps} steps; beta = 0.1 (DPO).",
            "Bars: exact (population) updates: offline best-of-N with N = 10 on pi_ref (sampling='exact_offline'), offline DPO on all pi_ref x pi_ref pairs ordered by reward, on-policy REINFORCE with batch-mean baseline (sampling='exact').",
            f"Black line: mean over {seeds} seeds of the sampled versions (10 samples per batch, one context; offline = one fixed batch from pi_ref).",
            "Mode-covering best-of-N converges to the best-of-10 distribution of pi_ref and keeps its shape; REINFORCE moves the mass onto the reward peak.",
        ],
    )
    return claims


PIECE = Piece("filmstrips", "Probability-mass film strips", make)
