"""Figure 6: on-policyness. The batch collected per iteration, at a fixed total number of samples.

Design (Algorithm 1 as docs/paper.md §D.3 describes the paper's on-policyness
knob): each iteration collects B responses per train context from the current
policy and makes one pass over them in minibatches of M = 10 per context (one
Adam step per minibatch), so every response is used exactly once. With the
total of samples and the minibatch fixed, the number of gradient steps is fixed
too (100 steps, 10,000 reward queries on 10 contexts); a larger B only means
that later minibatches come from an older policy (up to B/M - 1 steps stale).
B in {10, 20, 50, 100, 200, 500}; B = 10 is fully on-policy and identical to
figure 5's T = 1. Same algorithms, learning rates (chosen at B = 10) and
protocol as figure 5 (:mod:`modeseek.paper.fig_reuse`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from modeseek import pieces
from modeseek.paper import fig_reuse
from modeseek.paper.fig_reuse import ALGORITHMS, KINDS
from modeseek.pieces import Claim, Piece

#: Minibatches per iteration (B / M); B = M * k.
PASSES = (1, 2, 5, 10, 20, 50)


def make(out_dir: Path, smoke: bool) -> list[Claim]:
    b = fig_reuse.budget(smoke)
    scheds = [fig_reuse.minibatch_schedule(k, b.base) for k in PASSES]
    sizes = [s.batch for s in scheds]
    tunes = {name: fig_reuse.tuning(name, b)[0] for name in ALGORITHMS}
    lrs = {name: fig_reuse.tuning(name, b)[1] for name in ALGORITHMS}
    runs = {name: fig_reuse.sweep(name, scheds, b) for name in ALGORITHMS}

    fig = fig_reuse.plot_sweep(
        runs,
        sizes,
        value_name="B",
        xlabel=f"reward queries (= gradient steps x {b.base * b.contexts})",
        x_of=lambda r, s: r.steps * b.base * b.contexts,
        lrs=lrs,
    )
    pieces.save_figure(
        fig,
        out_dir / "fig_on_policyness.png",
        title=f"On-policyness at a fixed budget: batches of B per context, one pass in minibatches of {b.base} ({b.steps} steps, {b.steps * b.base * b.contexts:,} reward queries for every B)",
        smoke=smoke,
    )
    pieces.save_table(fig_reuse.tidy(runs, {}, lrs, b, {"policy": b.policy}), out_dir / "data" / "fig_on_policyness.parquet")

    claims = _claims(runs, sizes)
    seconds = sum(r.compile_seconds for r in list(runs.values()) + list(tunes.values()))
    run_seconds = sum(r.run_seconds for r in runs.values())
    pieces.write_caption(
        out_dir / "fig_on_policyness.caption.md",
        "Figure 6: on-policyness (fig_on_policyness.png)",
        [
            f"Design (Algorithm 1, docs/paper.md §D.3): each iteration draws B responses per train context from the current policy "
            f"(epoch 0 from pi_data) and makes one pass over them in minibatches of {b.base} per context, one Adam step each; "
            f"B in {sizes}. Total samples ({b.steps * b.base * b.contexts:,}), minibatch and gradient steps ({b.steps}) are equal for every B; "
            f"a larger B means staler samples (the last minibatch of an iteration comes from a policy B/{b.base} - 1 steps old).",
            "Protocol: " + b.describe() + ".",
            "Algorithms: " + "; ".join(fig_reuse.algorithm_line(n) for n in ALGORITHMS) + ".",
            *fig_reuse._tuning_lines(tunes, lrs, b),
            "PPO's ratio is taken against the policy that drew each minibatch (the clipped surrogate corrects for staleness); best-of-N has no correction.",
            f"Left and middle: exact expected reward against reward queries (every {b.eval_every} steps). Right: area under each curve (solid) and final reward (dashed) against B.",
            "A companion to figure 5: there a larger batch is reused for T full-batch steps; here each sample is used once.",
            "The paper's own on-policyness figure is on AlpacaFarm (docs/paper.md §D.7: smaller B better for RWR and REINFORCE); this is the bandit analogue.",
            f"Compile {seconds:.1f} s (0 when figure 5 ran first in the same process), run {run_seconds:.1f} s.",
        ],
    )
    return claims


def _claims(runs: dict, sizes: Sequence[int]) -> list[Claim]:
    far = KINDS.index("far")
    ok, parts = True, []
    for name, r in runs.items():
        er = r.metrics["expected_reward"][:, far]  # (B values, seeds, evaluations)
        a, final = fig_reuse.area(er), er[..., -1]
        closest = min((fig_reuse.paired_band(a[0], a[s]) + (sizes[s],) for s in range(1, len(sizes))), key=lambda c: c[0])
        good = closest[2] >= 0  # no larger batch significantly better
        ok &= good
        parts.append(
            f"{name}: area (final) B={sizes[0]} {pieces.fmt(a[0].mean())} ({pieces.fmt(final[0].mean())}), "
            + ", ".join(f"B={sizes[s]} {pieces.fmt(a[s].mean())} ({pieces.fmt(final[s].mean())})" for s in range(1, len(sizes)))
            + f"; smallest B minus its closest competitor B={closest[3]}: {pieces.fmt(closest[0])}, 95% band [{pieces.fmt(closest[1])}, {pieces.fmt(closest[2])}]"
        )
    return [
        Claim(
            "on_policyness_small_batches",
            f'On "far", at a fixed sample budget, the smallest on-policy batch (B = {sizes[0]} per context) is at least as sample-efficient as every larger batch '
            "(area under the reward-vs-samples curve; no larger B significantly higher, paired 95% band), for on-policy best-of-N and PPO",
            bool(ok),
            "; ".join(parts),
            "" if ok else "a larger, staler batch was significantly more sample-efficient for at least one algorithm",
        )
    ]


PIECE = Piece(
    "fig_on_policyness",
    "Figure 6: on-policyness",
    make,
    "On-policy best-of-N and PPO collecting B = 10..500 responses per context per iteration and making one pass over them in minibatches of 10, "
    "at a fixed 10,000 reward queries and 100 steps: reward against samples for each B.\n"
    "Larger B only makes the samples staler; the right column shows how much that costs each algorithm.",
)
