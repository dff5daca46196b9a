"""Figure 5: sample reuse. T gradient steps per collected batch at a fixed sample and step budget.

Design (docs/paper.md §B.7, the authors' sample-reuse ablation): with base batch
N0 = 10 responses per train context, reuse T draws N = N0 T per context per
iteration and takes T full-batch Adam steps on it, for S / T iterations. Every
T therefore spends the same S gradient steps and the same S N0 C reward
queries; T only trades fresh batches for larger, reused ones. T in {1, 2, 5,
10, 20, 50}, S = 100 steps (the ablation's budget: 10 contexts x 10 samples x
100 steps = 10,000 queries, the authors' on-policy data budget), for
on-policy best-of-N and PPO under the authors' protocol (MLP policy after SFT
to pi_ref, epoch 0 from pi_data, 10 train and 100 evaluation contexts; docs/paper.md §A.4-§A.6).

Each algorithm's learning rate is chosen once, at T = 1, on held-out seeds
(the area under its "far" reward curve), and kept for every T. The schedules
are traced values of :func:`modeseek.run` (``reuse``, ``num_samples`` and
``minibatch``; see :class:`modeseek.engine.Schedule`), so one compiled program
per loss serves every T.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

import modeseek as ms
from modeseek import pieces
from modeseek.engine import HyperParams
from modeseek.paper import protocol
from modeseek.pieces import Claim, Piece

if TYPE_CHECKING:
    import pandas as pd
    from jax.typing import ArrayLike
    from matplotlib.figure import Figure

    from modeseek.problems import Problem

#: Reuse values of the issue's figure 5.
REUSES = (1, 2, 5, 10, 20, 50)
#: "Moderate" and "large" reuse for the claim.
MODERATE = (2, 5, 10)
LARGE = 50
#: Learning rates tried at T = 1: a slice of the authors' grid (docs/paper.md §A.8) around their on-policy
#: best-of-N value 1e-3, up to figure 2's largest (larger ones saturate both algorithms
#: within ~20 of the 100 steps, which leaves nothing for reuse to change).
LEARNING_RATES = (3e-4, 1e-3, 3e-3, 1e-2)
#: The two algorithms: on-policy best-of-N (published) and PPO (not published, docs/paper.md §B.5).
ALGORITHMS = {
    "on-policy best-of-N": protocol.ON_POLICY_BEST_OF_N,
    "PPO": protocol.on_policy_rl("ppo"),
}
KINDS = ("far", "near")
METRICS = ("expected_reward", "sampled_reward", "kl_pi_ref", "entropy", "mass_high_reward", "reward_queries")


@dataclasses.dataclass(frozen=True)
class Budget:
    """Budget of figures 5 and 6.

    Attributes:
      seeds: reported seeds (indices 0..seeds-1, shared by every schedule).
      tune_seeds: held-out seeds (after the reported ones) for the learning-rate choice.
      steps: gradient steps of every run (fixed across schedules).
      base: N0, responses per context per step at T = 1.
      contexts: train contexts.
      eval_contexts: evaluation contexts (MLP).
      eval_every: exact metrics every this many steps (the authors evaluate every step; the
        exact curves are smooth at 2, and the evaluation of 100 contexts is a third of a step's cost).
      policy: "mlp" (the authors' network) or "tabular" (smoke: fast compile).
      smoke: numbers not meaningful.
    """

    seeds: int = 10
    tune_seeds: int = 5
    steps: int = 100
    base: int = 10
    contexts: int = 10
    eval_contexts: int = protocol.EVAL_CONTEXTS
    eval_every: int = 2
    policy: str = "mlp"
    smoke: bool = False

    @property
    def max_batch(self) -> int:
        """Responses drawn per context and collection: the largest batch of figures 5 and 6."""
        return self.base * max(REUSES)

    def describe(self) -> str:
        return (
            f"{self.policy} policy, {self.contexts} train contexts, exact metrics on {self.eval_contexts} evaluation contexts every {self.eval_every} steps, "
            f"{self.steps} gradient steps and {self.steps * self.base * self.contexts:,} reward queries per run, "
            f"mean and 95% band (mean +- 1.96 s.e.) over {self.seeds} seeds; learning rates chosen on "
            f"{self.tune_seeds} further held-out seeds" + (" (SMOKE budget: numbers not meaningful)" if self.smoke else "")
        )


def budget(smoke: bool) -> Budget:
    """Default budget (authors' protocol, 100 steps) or the smoke one (tabular policy, 2 seeds)."""
    if smoke:
        return Budget(seeds=2, tune_seeds=1, steps=100, contexts=2, eval_contexts=2, policy="tabular", smoke=True)
    return Budget()


#: Static loss options a protocol configuration passes on (its other keywords are the schedule's).
STATIC_OPTIONS = ("advantage", "kl_estimator", "kl_placement", "negative", "normalize")


def options(cfg: protocol.Config) -> dict:
    """The loss's options for a protocol configuration (its knobs; no learning rate, no schedule)."""
    kw = cfg.run_kwargs()
    keep = {f.name for f in dataclasses.fields(HyperParams)} | set(STATIC_OPTIONS)
    return {k: v for k, v in kw.items() if k in keep and k != "learning_rate"}


class Schedule(NamedTuple):
    """One sampling schedule of figures 5, 6 and 8: every ``reuse`` steps collect ``batch``
    responses per context and train each step on a sliding window of ``minibatch``."""

    reuse: int
    batch: int
    minibatch: int
    label: str = ""


def reuse_schedule(reuse: int, base: int = 10) -> Schedule:
    """Sample reuse at a fixed sample and step budget: N = base * T per batch, T steps on all of it."""
    return Schedule(reuse, base * reuse, base * reuse, label=f"T = {reuse} (N = {base * reuse})")


def minibatch_schedule(passes_per_batch: int, minibatch: int = 10) -> Schedule:
    """On-policyness (Algorithm 1): a batch of k*M per context, one pass in k minibatches of M."""
    k = passes_per_batch
    return Schedule(k, k * minibatch, minibatch, label=f"B = {k * minibatch} per context")


@dataclasses.dataclass
class ScheduleRuns:
    """Runs of one algorithm under several schedules.

    Attributes:
      metrics: name -> (schedules, problems[, learning rates], seeds, evaluations).
      probs: the same leading axes + (evaluations, K): the policy at each evaluation.
      steps: (E,) evaluation steps.
      schedules, problem_names, grid: the axes' values (grid: the swept learning rate, if any).
      compile_seconds, run_seconds: of the calls made for this result.
    """

    metrics: dict[str, np.ndarray]
    probs: np.ndarray
    steps: np.ndarray
    schedules: tuple[Schedule, ...]
    problem_names: tuple[str, ...]
    grid: dict[str, np.ndarray]
    compile_seconds: float
    run_seconds: float

    def to_dataframe(self, names: Sequence[str] | None = None) -> pd.DataFrame:
        """Tidy table: one row per (schedule, problem[, learning rate], seed, evaluation step)."""
        import pandas as pd

        shape = self.metrics["expected_reward"].shape
        idx = np.indices(shape).reshape(len(shape), -1)
        cols: dict[str, Any] = {
            "schedule": np.asarray([sc.label for sc in self.schedules])[idx[0]],
            "reuse": np.asarray([sc.reuse for sc in self.schedules])[idx[0]],
            "batch": np.asarray([sc.batch for sc in self.schedules])[idx[0]],
            "minibatch": np.asarray([sc.minibatch for sc in self.schedules])[idx[0]],
            "problem": np.asarray(self.problem_names)[idx[1]],
        }
        for name, values in self.grid.items():
            cols[name] = np.asarray(values)[idx[2]]
        cols["seed"] = idx[-2]
        cols["step"] = np.asarray(self.steps)[idx[-1]]
        for name in names or sorted(self.metrics):
            cols[name] = self.metrics[name].reshape(-1)
        return pd.DataFrame(cols)


_MEMO: dict[tuple, ScheduleRuns] = {}


def _call(b: Budget, cfg: protocol.Config, scheds: Sequence[Schedule], *, problems: Sequence[Problem], seeds: int, seed_offset: int = 0, learning_rate: float | np.ndarray) -> ScheduleRuns:
    """Runs under each schedule, memoised per schedule so figures 5, 6 and 8 share them in one process.

    Every call draws ``b.max_batch`` responses per context and collection and
    masks them down, so all schedules share one compiled program per loss.
    The result's compile and run seconds count only the calls made now.
    """
    parts, compile_s, run_s = [], 0.0, 0.0
    swept = np.ndim(learning_rate) > 0
    for sc in scheds:
        memo = (b, cfg.name, sc.reuse, sc.batch, sc.minibatch, tuple(p.name for p in problems), seeds, seed_offset, protocol._freeze(learning_rate))
        if memo not in _MEMO:
            tr = ms.run(
                problems,
                loss=cfg.loss,
                sampling="on_policy",
                first_batch="data",
                reuse=[sc.reuse],
                num_samples=[sc.batch],
                minibatch=[sc.minibatch],
                max_samples=b.max_batch,
                paired=("reuse", "num_samples", "minibatch"),
                learning_rate=learning_rate,
                steps=b.steps,
                seeds=seeds,
                seed_offset=seed_offset,
                policy=b.policy,
                num_contexts=b.contexts,
                num_eval_contexts=b.eval_contexts,
                eval_samples=cfg.eval_samples,
                eval_every=b.eval_every,
                snapshot_every=b.eval_every,
                **options(cfg),
            )
            compile_s, run_s = compile_s + tr.compile_seconds, run_s + tr.run_seconds
            # The run's grid is ([problem,] schedule[, learning_rate]); the figures index schedule, then problem.
            one_problem = len(problems) == 1
            first = lambda x: np.moveaxis(np.asarray(x)[None] if one_problem else np.asarray(x), 1, 0)  # noqa: E731
            _MEMO[memo] = ScheduleRuns(
                metrics={n: first(v) for n, v in tr.metrics.items()},
                probs=first(tr.snapshots),
                steps=tr.eval_steps,
                schedules=(sc,),
                problem_names=tr.problem_names,
                grid={"learning_rate": tr.grid["learning_rate"]} if swept else {},
                compile_seconds=0.0,
                run_seconds=0.0,
            )
        parts.append(_MEMO[memo])
    return dataclasses.replace(
        parts[0],
        metrics={n: np.concatenate([p.metrics[n] for p in parts]) for n in parts[0].metrics},
        probs=np.concatenate([p.probs for p in parts]),
        schedules=tuple(scheds),
        compile_seconds=compile_s,
        run_seconds=run_s,
    )


def tuning(name: str, b: Budget) -> tuple[ScheduleRuns, float]:
    """The learning-rate sweep of algorithm ``name`` at T = 1 on "far", on the held-out seeds.

    Returns:
      (ScheduleRuns with grid learning_rate, chosen learning rate).
    """
    cfg = ALGORITHMS[name]
    # LEARNING_RATES x tune_seeds = 4 x 5 = 20 runs, the same program size as the
    # reported calls (2 problems x 10 seeds), so the tuning call compiles nothing.
    r = _call(b, cfg, [reuse_schedule(1, b.base)], problems=[ms.paper_bandit("far")], seeds=b.tune_seeds, seed_offset=b.seeds, learning_rate=np.asarray(LEARNING_RATES))
    j = protocol.select_best(r.metrics["expected_reward"][0, 0])
    return r, LEARNING_RATES[j]


def sweep(name: str, scheds: Sequence[Schedule], b: Budget) -> ScheduleRuns:
    """Reported runs of algorithm ``name`` under ``scheds`` on both geometries at its tuned learning rate."""
    _, lr = tuning(name, b)
    return _call(b, ALGORITHMS[name], list(scheds), problems=[ms.paper_bandit(k) for k in KINDS], seeds=b.seeds, learning_rate=lr)


def paired_band(a: ArrayLike, b: ArrayLike) -> tuple[float, float, float]:
    """Mean of a - b over paired seeds, with a 95% normal band (runs with equal seed share their initial policy)."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    m, lo, hi = pieces.mean_band(d)
    return float(m), float(lo), float(hi)


def area(curves: ArrayLike) -> np.ndarray:
    """Mean over the evaluated steps (the normalised area under the reward curve), per seed."""
    return np.asarray(curves, np.float64).mean(axis=-1)


def plot_sweep(runs: dict, values: Sequence[float], *, value_name: str, xlabel: str, x_of: Callable[[ScheduleRuns, int], np.ndarray], lrs: dict) -> Figure:
    """Rows far/near; columns: one per algorithm (curves per schedule) and a summary against the swept value (untitled: :func:`modeseek.pieces.save_figure` titles it)."""
    import matplotlib.pyplot as plt

    names = list(runs)
    fig, axes = plt.subplots(len(KINDS), len(names) + 1, figsize=(5.0 * (len(names) + 1), 3.9 * len(KINDS)))
    cmap = plt.get_cmap("viridis")
    colors = [cmap(i / max(1, len(values) - 1) * 0.9) for i in range(len(values))]
    for i, kind in enumerate(KINDS):
        for j, name in enumerate(names):
            r = runs[name]
            ax = axes[i, j]
            for s, v in enumerate(values):
                pieces.plot_band(ax, x_of(r, s), r.metrics["expected_reward"][s, i], label=f"{value_name} = {v}", color=colors[s], lw=1.4, alpha=0.15)
            ax.set_ylim(-0.02, 1.04)
            ax.grid(alpha=0.3)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f'"{kind}": exact expected reward' if j == 0 else "exact expected reward")
            ax.set_title(f"{name} (lr {lrs[name]:g})", fontsize=10)
            ax.legend(fontsize=7, loc="upper left" if kind == "far" else "lower right", ncol=2)
        ax = axes[i, -1]
        for j, name in enumerate(names):
            er = runs[name].metrics["expected_reward"][:, i]
            for what, ls, marker, fn in (("area (mean over steps)", "-", "o", area), ("final", "--", "s", lambda c: c[..., -1])):
                m, lo, hi = zip(*(pieces.mean_band(fn(er[s])) for s in range(len(values))))
                ax.errorbar(values, m, yerr=[np.subtract(m, lo), np.subtract(hi, m)], color=f"C{j}", ls=ls, marker=marker, ms=4, capsize=2, label=f"{name}: {what}")
        ax.set_xscale("log")
        ax.set_xticks(values)
        ax.set_xticklabels([str(v) for v in values])
        ax.set_xlabel(value_name)
        ax.set_ylabel("exact expected reward")
        ax.set_ylim(-0.02, 1.04)
        ax.grid(alpha=0.3)
        ax.set_title(f'"{kind}": summary against {value_name}', fontsize=10)
        ax.legend(fontsize=7, loc="best")
    return fig


def tidy(runs: dict, tunes: dict, lrs: dict, b: Budget, extra_columns: dict) -> pd.DataFrame:
    """Every run (reported and tuning) as one row per (algorithm, schedule, problem, seed, step)."""
    import pandas as pd

    frames = []
    for name, r in runs.items():
        df = r.to_dataframe([m for m in METRICS if m in r.metrics])
        df.insert(0, "algorithm", name)
        df["learning_rate"] = lrs[name]
        df["split"] = "report"
        frames.append(df)
    for name, r in tunes.items():
        df = r.to_dataframe([m for m in METRICS if m in r.metrics])
        df.insert(0, "algorithm", name)
        df["seed"] += b.seeds
        df["split"] = "tune"
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    for k, v in extra_columns.items():
        df[k] = v
    return df


def algorithm_line(name: str) -> str:
    """The loss and its knobs for captions (the schedule and learning rate are the figure's own)."""
    cfg = ALGORITHMS[name]
    kw = options(cfg)
    knobs = ", ".join(f"{k} {v}" for k, v in kw.items() if k not in ("target_margin",))
    source = f"published: {cfg.source}" if cfg.published else "no published bandit setting: knobs of protocol.on_policy_rl (docs/paper.md §B.4-docs/paper.md §B.5)"
    return f"{name}: loss {cfg.loss}" + (f" ({knobs})" if knobs else "") + f"; {source}"


def _tuning_lines(tunes: dict, lrs: dict, b: Budget) -> list[str]:
    lines = []
    for name, r in tunes.items():
        scores = r.metrics["expected_reward"][0, 0].mean(axis=(1, 2))
        lines.append(
            f"{name}: learning rate chosen at T = 1 on 'far' from {list(LEARNING_RATES)} by the area under the reward curve on "
            f"{b.tune_seeds} held-out seeds (areas {', '.join(pieces.fmt(s) for s in scores)}): {lrs[name]:g}."
        )
    if any(v == max(LEARNING_RATES) for v in lrs.values()):
        lines.append(
            f"The grid stops at {max(LEARNING_RATES):g}, figure 2's largest rate: faster rates finish both algorithms' climb within a few "
            "batches, which leaves the budget nothing for reuse or batch size to change."
        )
    return lines


def make(out_dir: Path, smoke: bool) -> list[Claim]:
    b = budget(smoke)
    scheds = [reuse_schedule(t, b.base) for t in REUSES]
    tunes = {name: tuning(name, b)[0] for name in ALGORITHMS}
    lrs = {name: tuning(name, b)[1] for name in ALGORITHMS}
    runs = {name: sweep(name, scheds, b) for name in ALGORITHMS}

    fig = plot_sweep(runs, REUSES, value_name="T", xlabel="gradient steps", x_of=lambda r, s: r.steps, lrs=lrs)
    pieces.save_figure(
        fig,
        out_dir / "fig_reuse.png",
        title=f"Sample reuse at a fixed budget: T steps on each batch of N = {b.base}T per context ({b.steps} steps, {b.steps * b.base * b.contexts:,} reward queries for every T)",
        smoke=smoke,
    )
    df = tidy(runs, tunes, lrs, b, {"policy": b.policy})
    pieces.save_table(df, out_dir / "data" / "fig_reuse.parquet")

    claims = _claims(runs, b)
    seconds = sum(r.compile_seconds for r in list(runs.values()) + list(tunes.values()))
    run_seconds = sum(r.run_seconds for r in list(runs.values()) + list(tunes.values()))
    pieces.write_caption(
        out_dir / "fig_reuse.caption.md",
        "Figure 5: sample reuse (fig_reuse.png)",
        [
            "Design (docs/paper.md §B.7, the authors' reuse ablation): reuse T takes T full-batch Adam steps on each batch of "
            f"N = {b.base}T responses per train context, for {b.steps}/T iterations, so every T uses the same {b.steps} gradient "
            f"steps and the same {b.steps * b.base * b.contexts:,} reward queries. T in {list(REUSES)}; epoch 0 from pi_data, later epochs from the policy.",
            "Protocol: " + b.describe() + ".",
            "Algorithms: " + "; ".join(algorithm_line(n) for n in ALGORITHMS) + ".",
            *_tuning_lines(tunes, lrs, b),
            f"Left and middle: exact expected reward over the evaluation contexts (every {b.eval_every} steps). Right: the area under each curve "
            f"(mean over the evaluations from step 0 to {b.steps}, solid) and the final reward (dashed) against T.",
            "Claims use the area on 'far' with paired 95% bands over seeds (every T starts from the same SFT policy per seed).",
            f"Schedules traced in modeseek.run (one compile per algorithm for every T); compile {seconds:.1f} s, run {run_seconds:.1f} s in this process.",
        ],
    )
    return claims


def _claims(runs: dict, b: Budget) -> list[Claim]:
    far = KINDS.index("far")
    i1, il = REUSES.index(1), REUSES.index(LARGE)
    helps, parts = True, []
    hurt = {}
    for name, r in runs.items():
        a = area(r.metrics["expected_reward"][:, far])  # (T values, seeds)
        best_mod = max(MODERATE, key=lambda t: a[REUSES.index(t)].mean())
        d, lo, hi = paired_band(a[REUSES.index(best_mod)], a[i1])
        helps &= lo > 0
        parts.append(
            f"{name}: area T=1 {pieces.fmt(a[i1].mean())}, best moderate T={best_mod} {pieces.fmt(a[REUSES.index(best_mod)].mean())} "
            f"(difference {pieces.fmt(d)}, 95% band [{pieces.fmt(lo)}, {pieces.fmt(hi)}])"
        )
        best = int(np.argmax(a.mean(axis=1)))
        hurt[name] = paired_band(a[best], a[il]) + (REUSES[best],)
    claims = [
        Claim(
            "reuse_moderate_helps",
            f'On "far", a moderate reuse T in {list(MODERATE)} raises the area under the reward curve over T = 1 at a fixed sample and step budget, for on-policy best-of-N and PPO',
            bool(helps),
            "; ".join(parts),
            "" if helps else "for at least one algorithm the best moderate T is not above T = 1 beyond its 95% band",
        )
    ]
    bon, ppo = hurt["on-policy best-of-N"], hurt["PPO"]
    ok = bon[0] > ppo[0]
    claims.append(
        Claim(
            "reuse_large_hurts_best_of_n_more",
            f'On "far", a large reuse (T = {LARGE}) costs on-policy best-of-N more reward-curve area (relative to its best T) than PPO',
            bool(ok),
            f"area lost from the best T to T = {LARGE}: best-of-N {pieces.fmt(bon[0])} (best T = {bon[3]}, band [{pieces.fmt(bon[1])}, {pieces.fmt(bon[2])}]), "
            f"PPO {pieces.fmt(ppo[0])} (best T = {ppo[3]}, band [{pieces.fmt(ppo[1])}, {pieces.fmt(ppo[2])}])",
            "" if ok else _why_not(runs, b),
        )
    )
    return claims


def _why_not(runs: dict, b: Budget) -> str:
    """Measured reasons for the reuse claim's outcome: what one large batch gives each algorithm."""
    far = ms.paper_bandit("far")
    logq = np.log(np.asarray(far.ref_probs))
    best = {}
    for n in (b.base, b.base * LARGE):
        bn = ms.regimes.exact_best_of_n(logq, far.reward, n)
        best[n] = float(np.sum(np.asarray(bn.best_weight) * np.asarray(far.reward)[np.asarray(bn.best)]))
    il, k = REUSES.index(LARGE), KINDS.index("far")
    at = int(np.searchsorted(runs["PPO"].steps, LARGE))  # the end of the first batch at T = LARGE
    m = runs["PPO"].metrics
    return (
        f"in this design a large T also brings a large batch (N = {b.base}T): the best of N = {b.base * LARGE} draws from pi_ref has "
        f"expected reward {best[b.base * LARGE]:.2f} (N = {b.base}: {best[b.base]:.2f}), so best-of-N's first batch already points at the peak; "
        f"PPO instead over-fits each batch: after the first {LARGE} steps at T = {LARGE} its reward is {m['expected_reward'][il, k, :, at].mean():.2f}, "
        f"KL(pi||pi_ref) {m['kl_pi_ref'][il, k, :, at].mean():.2f} and entropy {m['entropy'][il, k, :, at].mean():.2f} (pi_ref: "
        f"{m['entropy'][il, k, :, 0].mean():.2f}), leaving later batches little to work with"
    )


PIECE = Piece(
    "fig_reuse",
    "Figure 5: sample reuse",
    make,
    "On-policy best-of-N and PPO (MLP, the authors' protocol) taking T = 1..50 gradient steps on each batch of 10T responses per context, "
    "at the same 100 steps and 10,000 reward queries for every T: reward curves per T on both geometries.\n"
    "Right column: area under the curve and final reward against T, i.e. where reuse starts to help and where it starts to hurt each algorithm.",
)
