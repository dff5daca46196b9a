"""Figure 8: probability-mass film strips, the picture that makes mode-seeking visible.

For each geometry ("far", "near") and one algorithm per family, the policy's
mass over the 100 bins at a few training steps. The runs are the exact
(population) versions, so each strip is deterministic: offline best-of-N on the
data distribution (mode-covering: it converges to the best-of-N distribution of
pi_ref), offline DPO on pi_ref x pi_ref pairs (contrastive), and on-policy
REINFORCE (mode-seeking). A sampled run of each (mean over seeds) is stored too.

A second strip (filmstrip_mlp.png) shows sampled runs under the authors'
protocol (MLP policy after SFT to pi_ref, 10 train contexts, epoch 0 from
pi_data): offline best-of-N, on-policy best-of-N and PPO, from the schedule
runs of figure 5 (shared within a process, so they cost almost nothing there).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import modeseek as ms
from modeseek import pieces
from modeseek.paper import fig_reuse
from modeseek.pieces import Claim, Piece

if TYPE_CHECKING:
    import pandas as pd

    from modeseek.engine import Trajectory
    from modeseek.problems import Problem

ALGORITHMS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("offline best-of-N (mode-covering)", dict(loss="best_of_n", sampling="exact_offline")),
    ("offline DPO (contrastive)", dict(loss="dpo", sampling="exact_offline")),
    ("on-policy REINFORCE (mode-seeking)", dict(loss="reinforce", sampling="exact")),
)
SAMPLED = {"exact_offline": "offline", "exact": "on_policy"}


def _runs(kind: str, steps: int, seeds: int) -> tuple[Problem, list[tuple[str, dict[str, Any], Trajectory, Trajectory]]]:
    problem = ms.paper_bandit(kind)
    out = []
    for label, kw in ALGORITHMS:
        exact = ms.run(problem, steps=steps, seeds=1, snapshot_every=steps // 5, **kw)
        sampled = ms.run(problem, steps=steps, seeds=seeds, snapshot_every=steps // 5, **{**kw, "sampling": SAMPLED[kw["sampling"]]})
        out.append((label, kw, exact, sampled))
    return problem, out


def _frame(kind: str, algorithm: str, loss: str, regime: str, steps: np.ndarray, bins: np.ndarray, exact: np.ndarray | None, sampled: np.ndarray, ref: np.ndarray, reward: np.ndarray) -> pd.DataFrame:
    """Table rows of one strip: one per step and bin; ``exact`` and ``sampled`` are (steps, K) masses (``exact`` None: NaN)."""
    import pandas as pd

    n = len(steps)
    return pd.DataFrame(
        {
            "problem": kind,
            "algorithm": algorithm,
            "loss": loss,
            "regime": regime,
            "step": np.repeat(np.asarray(steps, np.int64), len(bins)),
            "bin": np.tile(bins, n),
            "exact_prob": np.nan if exact is None else np.ravel(exact),
            "sampled_prob_mean": np.ravel(sampled),
            "ref_prob": np.tile(ref, n),
            "reward": np.tile(reward, n),
        }
    )


def make(out_dir: Path, smoke: bool) -> list[Claim]:
    import matplotlib.pyplot as plt
    import pandas as pd

    steps, seeds = (50, 2) if smoke else (500, 10)
    rows = []
    for kind in ("far", "near"):
        problem, runs = _runs(kind, steps, seeds)
        snap_steps = runs[0][2].snapshot_steps
        fig, axes = plt.subplots(len(runs), len(snap_steps), figsize=(2.3 * len(snap_steps), 2.0 * len(runs)), sharex=True, sharey="row")
        bins = np.arange(problem.num_bins)
        ref = np.asarray(problem.ref_probs)
        reward = np.asarray(problem.reward)
        for i, (label, kw, exact, sampled) in enumerate(runs):
            mean_sampled = sampled.snapshots.mean(0)
            top = max(float(exact.snapshots[0].max()), float(mean_sampled.max()), float(ref.max()))
            for j, s in enumerate(snap_steps):
                ax = axes[i, j]
                p = exact.snapshots[0, j]
                ax.bar(bins, p, width=1.0, color=f"C{i}", alpha=0.8, label="exact")
                ax.plot(bins, mean_sampled[j], color="k", lw=0.8, label=f"sampled (mean of {seeds})")
                ax.plot(bins, ref, color="0.5", ls="--", lw=0.8, label="pi_ref")
                # The reward on the mass axis, scaled to the row's tallest bar (a twin axis per panel doubles the drawing time).
                ax.plot(bins, reward * top, color="C3", lw=0.6, alpha=0.5)
                if i == 0:
                    ax.set_title(f"step {s}", fontsize=9)
                if j == 0:
                    ax.set_ylabel(label.replace(" (", "\n("), fontsize=8)
                er = float((p * reward).sum())
                ax.text(0.98, 0.95, f"E[r]={er:.2f}", transform=ax.transAxes, ha="right", va="top", fontsize=7)
            rows.append(_frame(kind, label, kw["loss"], kw["sampling"], snap_steps, bins, exact.snapshots[0], mean_sampled, ref, reward))
        handles, labels = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
        title = f'Probability mass over bins, "{kind}" reward (red: reward, scaled to the row; dashed: pi_ref)'
        pieces.save_figure(fig, out_dir / f"filmstrip_{kind}.png", title=title, fontsize=10, rect=(0, 0.05, 1, 0.97))
        # Claim: the mode-seeking run ends with more mass on the high-reward set than the mode-covering one.
        final = {kw["loss"]: float(ex.metrics["mass_high_reward"][0, -1]) for _, kw, ex, _ in runs}
        if kind == "far":
            claim = Claim(
                "filmstrip_far_mode_seeking",
                'On "far", exact on-policy REINFORCE ends with more mass on the high-reward bins than exact offline best-of-N (mode-covering) and exact offline DPO',
                final["reinforce"] > max(final["best_of_n"], final["dpo"]),
                f"mass on high-reward bins after {steps} steps: REINFORCE {pieces.fmt(final['reinforce'])}, best-of-N {pieces.fmt(final['best_of_n'])}, DPO {pieces.fmt(final['dpo'])}",
            )
    mlp_rows, mlp_lines = _mlp_strips(out_dir, smoke)
    rows += mlp_rows
    pieces.save_table(pd.concat(rows, ignore_index=True), out_dir / "data" / "filmstrips.parquet")
    pieces.write_caption(
        out_dir / "filmstrips.caption.md",
        "Figure 8: probability-mass film strips (filmstrip_far.png, filmstrip_near.png, filmstrip_mlp.png)",
        [
            "Problem: the paper's 1-token bandit, exact squashed-Cauchy(-0.7, 0.4) reference over 100 bins, reward exp(-((i-c)/10)^2) with c = 70 (far) or 20 (near).",
            f"Policy: tabular logits initialised at log pi_ref; Adam, learning rate {ms.engine.default_learning_rate('tabular', 'adam')}, {steps} steps; beta = 0.1 (DPO).",
            "Bars: exact (population) updates: offline best-of-N with N = 10 on pi_ref (sampling='exact_offline'), offline DPO on all pi_ref x pi_ref pairs ordered by reward, on-policy REINFORCE with batch-mean baseline (sampling='exact').",
            f"Black line: mean over {seeds} seeds of the sampled versions (10 samples per batch, one context; offline = one fixed batch from pi_ref).",
            "Mode-covering best-of-N converges to the best-of-10 distribution of pi_ref and keeps its shape; REINFORCE moves the mass onto the reward peak.",
            *mlp_lines,
        ],
    )
    return [claim]


#: MLP strips: (label, figure 5 algorithm, schedule kind).
MLP_ROWS = (
    ("offline best-of-N", "on-policy best-of-N", "offline"),
    ("on-policy best-of-N", "on-policy best-of-N", "on_policy"),
    ("on-policy PPO", "PPO", "on_policy"),
)


def _mlp_strips(out_dir: Path, smoke: bool) -> tuple[list[pd.DataFrame], list[str]]:
    """Sampled runs of each family under the authors' protocol (figure 5's runs); returns (table rows, caption lines)."""
    import matplotlib.pyplot as plt

    b = fig_reuse.budget(smoke)
    sched = {
        "offline": fig_reuse.Schedule(b.steps, b.base, b.base, label="offline"),
        "on_policy": fig_reuse.reuse_schedule(1, b.base),
    }
    runs = {label: fig_reuse.sweep(alg, [sched[kind]], b) for label, alg, kind in MLP_ROWS}
    lrs = {label: fig_reuse.tuning(alg, b)[1] for label, alg, _ in MLP_ROWS}
    steps = np.asarray(runs[MLP_ROWS[0][0]].steps)
    wanted = [0, b.steps // 10, b.steps // 5, 3 * b.steps // 10, b.steps // 2, b.steps]
    cols = [int(np.searchsorted(steps, s)) for s in wanted]
    kinds = fig_reuse.KINDS
    problems = {k: ms.paper_bandit(k) for k in kinds}
    bins = np.arange(problems[kinds[0]].num_bins)
    fig, axes = plt.subplots(len(kinds) * len(MLP_ROWS), len(cols), figsize=(2.3 * len(cols), 1.75 * len(kinds) * len(MLP_ROWS)), sharex=True, sharey="row")
    rows = []
    for i, kind in enumerate(kinds):
        ref = np.asarray(problems[kind].ref_probs)
        reward = np.asarray(problems[kind].reward)
        for j, (label, alg, kind_s) in enumerate(MLP_ROWS):
            r = runs[label]
            probs = r.probs[0, i].mean(axis=0)  # (evaluations, K): mean over seeds and evaluation contexts
            er = r.metrics["expected_reward"][0, i].mean(axis=0)
            row = i * len(MLP_ROWS) + j
            top = max(float(probs[cols].max()), float(ref.max()))
            for c, e in enumerate(cols):
                ax = axes[row, c]
                ax.bar(bins, probs[e], width=1.0, color=f"C{j}", alpha=0.85)
                ax.plot(bins, ref, color="0.5", ls="--", lw=0.8)
                ax.plot(bins, reward * top, color="C3", lw=0.6, alpha=0.5)
                ax.text(0.98, 0.95, f"E[r]={er[e]:.2f}", transform=ax.transAxes, ha="right", va="top", fontsize=7)
                if row == 0:
                    ax.set_title(f"step {int(steps[e])}", fontsize=9)
                if c == 0:
                    ax.set_ylabel(f'"{kind}"\n{label}\n(lr {lrs[label]:g})', fontsize=7.5)
            regime = "offline" if kind_s == "offline" else "on_policy"
            rows.append(_frame(kind, f"{b.policy} {label}", fig_reuse.ALGORITHMS[alg].loss, regime, steps[cols], bins, None, probs[cols], ref, reward))
    title = f"Sampled runs under the authors' protocol ({b.policy} policy), mean mass over {b.seeds} seeds and the evaluation contexts (red: reward, scaled to the row; dashed: pi_ref)"
    pieces.save_figure(fig, out_dir / "filmstrip_mlp.png", title=title, smoke=smoke, fontsize=10)
    return rows, [
        f"filmstrip_mlp.png: {b.describe()}; learning rates as chosen for figure 5 ({', '.join(f'{k} {v:g}' for k, v in lrs.items())}). "
        f"Offline best-of-N takes all {b.steps} steps on one batch of N = {b.base} per context from pi_ref; the on-policy runs collect N = {b.base} "
        f"per context from the policy before every step (epoch 0 from pi_data); PPO as in figure 5. Bars: the mean policy over seeds and evaluation contexts.",
    ]


PIECE = Piece(
    "filmstrips",
    "Figure 8: probability-mass film strips",
    make,
    "The policy's mass over the 100 bins at a few steps, for one algorithm per family on both geometries: exact tabular runs with the "
    "mean of sampled runs overlaid (filmstrip_far/near), and sampled runs under the authors' MLP protocol (filmstrip_mlp).\n"
    "Look for the shape of the mass: mode-covering best-of-N keeps pi_ref's modes and reweights them, mode-seeking on-policy methods carry the mass onto one peak.",
)
