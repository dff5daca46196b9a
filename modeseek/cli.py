"""The ``modeseek`` command: run a sweep to Parquet, list what exists, reproduce the figures.

Five subcommands, each a frozen dataclass parsed by tyro (flags, defaults and
help come from the fields and their docstrings, which say what each does)::

    modeseek run --problem far --loss dpo --sampling on_policy --steps 500 --seeds 8 --out runs.parquet
    modeseek run --loss dpo --beta 0.03 0.1 0.3    # several values: swept in one compiled call
    modeseek sweep --loss reinforce --seeds 4096 --chunk-seeds 512 --learning-rate 0.01 0.03 --out DIR
    modeseek merge DIR                             # chunk files copied from several hosts
    modeseek list
    modeseek reproduce --out figures [--smoke] [--force] [--only NAME ...]

Importing this module stays light (no jax, numpy, pandas or matplotlib: the
package's own names are imported lazily, see modeseek/__init__.py), so
``modeseek --help`` answers at once; the commands import what they need.
Bad input (an unknown loss, problem or option value, an --out that cannot be
written) exits with status 2 and a one-line message naming the value, never a
traceback, and before any compute.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import tyro

if TYPE_CHECKING:
    import numpy as np

    from modeseek.engine import Trajectory
    from modeseek.sweep import SweepResult, SweepSpec

__all__ = ["RunCommand", "SweepCommand", "MergeCommand", "ListCommand", "ReproduceCommand", "main"]

# Options left unset (None) take modeseek.run's defaults; the help shows them in words.
Floats = Annotated[
    tuple[float, ...] | None,
    tyro.conf.arg(metavar="FLOAT [FLOAT ...]", help_behavior_hint="(several values sweep)"),
]
OptInt = Annotated[int | None, tyro.conf.arg(metavar="INT", help_behavior_hint="")]
OptStr = Annotated[str | None, tyro.conf.arg(metavar="STR", help_behavior_hint="")]


class CommandError(Exception):
    """Bad command-line input; reported as one line on stderr with exit status 2."""


@dataclasses.dataclass(frozen=True)
class RunCommand:
    """Run independent fine-tuning runs on a bandit and write the tidy per-step table.

    Static options left unset take the engine's defaults (see modeseek.run).
    Give a traced hyperparameter several values to sweep them in one compiled call.
    """

    loss: str
    """Loss name (modeseek list shows them all), e.g. dpo, reinforce, best_of_n."""
    problem: str = "far"
    """Problem preset: far, near, far_w20, far_w30."""
    sampling: str = "on_policy"
    """Data regime: offline, on_policy, exact or exact_offline."""
    steps: int = 500
    """Gradient steps per run."""
    seeds: int = 8
    """Independent runs per grid point."""
    out: Annotated[Path | None, tyro.conf.arg(metavar="FILE.parquet", help_behavior_hint="")] = None
    """Parquet file for the tidy table (one row per grid point x seed x step); omit to only print the summary."""
    key: Annotated[int, tyro.conf.arg(aliases=("--seed",))] = 0
    """Integer PRNG seed; run i uses fold_in(key, i)."""
    force: Annotated[bool, tyro.conf.FlagCreatePairsOff, tyro.conf.arg(aliases=("--overwrite",))] = False
    """Replace an existing --out file (without it, an existing file is an error)."""
    cache: bool = True
    """Use JAX's persistent compilation cache ($MODESEEK_CACHE_DIR or ~/.cache/modeseek/jax), so reruns skip compiling."""

    # Traced hyperparameters (HyperParams): several values sweep them.
    learning_rate: Floats = None
    """Optimiser step size (default 0.05 for tabular Adam, 1e-3 for the MLP)."""
    beta: Floats = None
    """KL temperature / DPO inverse temperature (default 0.1)."""
    negative_coef: Floats = None
    """Weight of best_of_n's negative term (default 0.05)."""
    entropy_coef: Floats = None
    """Exact entropy bonus for reinforce / ppo (default 0)."""
    clip_eps: Floats = None
    """PPO clip range (default 0.2)."""
    target_margin: Floats = None
    """IPO target margin (default 1 / (2 beta))."""
    min_reward_gap: Floats = None
    """Skip pairs whose rewards differ by less (default 0)."""
    bt_scale: Floats = None
    """Bradley-Terry inverse temperature for --labels bradley_terry (default 1)."""
    init_scale: Floats = None
    """Logit noise for --init random (default 1)."""
    sft_learning_rate: Floats = None
    """Adam step size of the MLP's SFT to pi_ref (default 1e-2)."""
    mixture_alpha: Floats = None
    """Nash-MD's opponent pi^(1-alpha) pi_ref^alpha, alpha in [0, 1] (default 0.5)."""
    xpo_alpha: Floats = None
    """Weight of XPO's exploration term alpha * log pi(y_ref) (default 0.01)."""
    eta: Floats = None
    """Step size of the exact mirror-descent update, mirror_descent / spo_exact (default 1)."""
    clip_eps_high: Floats = None
    """Upper clip range of grpo / gspo (DAPO's clip-higher) and cispo's weight cap 1 + clip_eps_high (default clip_eps)."""
    nll_coef: Floats = None
    """Weight of the chosen response's NLL in slic and cpo (default 1)."""
    simpo_gamma: Floats = None
    """SimPO's target reward margin gamma (default 0.5)."""
    desirable_weight: Floats = None
    """KTO's weight lambda_D of desirable responses (default 1)."""
    undesirable_weight: Floats = None
    """KTO's weight lambda_U of undesirable responses (default 1)."""
    dpop_lambda: Floats = None
    """DPO-Positive's penalty weight lambda (default 50)."""
    label_smoothing: Floats = None
    """robust_dpo's label-flip probability eps in [0, 0.5) (default 0.1)."""

    # Static options (RunConfig): a new value compiles a new program.
    num_samples: OptInt = None
    """Responses drawn per context per batch (default 10)."""
    num_contexts: OptInt = None
    """Training contexts (default 1 for tabular, 10 for the MLP)."""
    reuse: OptInt = None
    """Gradient steps per on-policy batch (default 1); steps must be a multiple."""
    policy: OptStr = None
    """Policy: tabular or mlp (default tabular)."""
    init: OptStr = None
    """Initial policy: reference, zeros or random (default reference)."""
    optimizer: OptStr = None
    """Optimiser: adam or sgd (default adam)."""
    negative: OptStr = None
    """best_of_n negative term: worst, mean_worse, sum_worse, log_complement (default none)."""
    advantage: OptStr = None
    """REINFORCE/PPO baseline (default mean)."""
    kl_estimator: OptStr = None
    """KL-to-reference estimator for reinforce / ppo (default none)."""
    kl_placement: OptStr = None
    """Where the KL estimate goes: reward or loss (default reward)."""
    normalize: bool = False
    """Normalise RWR weights per batch (rwr only)."""
    labels: OptStr = None
    """Pair labels: reward or bradley_terry (default reward)."""
    pairing: OptStr = None
    """Pairs from N draws: all (N(N-1)/2 pairs) or disjoint (N/2 pairs) (default all)."""
    sft_steps: OptInt = None
    """SFT steps of the MLP to pi_ref (default 100)."""
    first_batch: OptStr = None
    """First on-policy batch from the policy or, as in the paper's epoch 0, from the data (default policy)."""
    eval_samples: OptInt = None
    """Monte-Carlo draws per evaluation context for the sampled_reward metric (default 0: off)."""
    scale_rewards: OptStr = None
    """Advantage scale of grpo / gspo / cispo: group, batch or none (Dr. GRPO) (default group)."""
    drop_uniform_groups: bool = False
    """grpo / gspo: groups whose rewards are all equal give no signal and are dropped (DAPO's dynamic sampling)."""
    baseline: bool = False
    """reinforce_pp: subtract the group mean before whitening over the batch (REINFORCE++-baseline)."""
    batching: OptStr = None
    """vmap (a block's runs vectorised together; default) or map (one unbatched program per run: faster for the MLP, other last bits)."""
    paired: Annotated[tuple[str, ...], tyro.conf.arg(metavar="NAME [NAME ...]")] = ()
    """Swept axes to zip instead of crossing (equal numbers of values), e.g. --paired beta learning_rate."""

    # Fields that are not options of modeseek.run.
    _NOT_OPTIONS: ClassVar[tuple[str, ...]] = ("loss", "problem", "sampling", "steps", "seeds", "out", "key", "paired", "force", "cache")

    def _options(self) -> dict:
        """The options that were set, by name; a traced one given one value is that value, several stay a tuple."""
        options = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in self._NOT_OPTIONS or value is None:
                continue
            if isinstance(value, tuple):
                if not value:
                    raise CommandError(f"--{field.name.replace('_', '-')} was given no value; expected one or more numbers")
                value = value[0] if len(value) == 1 else value
            elif field.name in ("negative", "kl_estimator") and value.lower() == "none":
                continue
            options[field.name] = value
        return options

    def _paired(self) -> tuple[str, ...]:
        """The --paired names as modeseek.run takes them (underscores)."""
        return tuple(n.replace("-", "_") for n in self.paired)

    def execute(self) -> None:
        import numpy as np

        import modeseek as ms
        from modeseek import problems

        try:
            problem = problems.get(self.problem)
            options: dict[str, Any] = {name: np.asarray(v) if isinstance(v, tuple) else v for name, v in self._options().items()}
            if self.out is not None and self.out.is_dir():
                raise CommandError(f"--out {str(self.out)!r} is a directory; expected a file name such as runs.parquet")
            if self.out is not None and self.out.exists() and not self.force:
                raise CommandError(f"--out {str(self.out)!r} already exists; expected a new file name, or --force to replace it")
            _prepare(self.out.parent if self.out is not None else None, self.out, self.cache)
            traj = ms.run(problem, loss=self.loss, sampling=self.sampling, steps=self.steps, seeds=self.seeds, key=self.key, paired=self._paired(), **options)
        except ValueError as e:
            raise CommandError(str(e)) from None
        if self.out is not None:
            from modeseek.pieces import save_table

            df = traj.to_dataframe()
            save_table(df, self.out)
        print(_summary(traj))
        if self.out is not None:
            print(f"wrote {len(df)} rows x {df.shape[1]} columns to {self.out}")


def _prepare(folder: Path | None, out: Path | None, cache: bool) -> None:
    """Before any compute: stop when --out cannot be written in ``folder`` (the results would be lost), then turn on the compilation cache."""
    from modeseek._files import require_writable_folder

    if folder is not None:
        try:
            require_writable_folder(folder, label=f"--out {str(out)!r}")
        except ValueError as e:
            raise CommandError(str(e)) from None
    if cache:  # before the first compile: later compiles would miss it
        from modeseek import engine

        engine.enable_compilation_cache()


def _summary(traj: Trajectory) -> str:
    """Final expected reward (mean and standard error over seeds) per grid point, and timings."""
    import numpy as np

    final = np.asarray(traj.metrics["expected_reward"])[..., -1]
    initial = float(np.mean(np.asarray(traj.metrics["expected_reward"])[..., 0]))
    cfg = traj.config
    lines = [
        f"{cfg.loss} / {cfg.sampling} on {', '.join(traj.problem_names)}: {traj.seeds} seeds x {cfg.steps} steps",
        f"initial expected reward {initial:.4f}",
    ]
    flat = final.reshape(-1, traj.seeds)
    idx = np.indices(traj.grid_shape).reshape(len(traj.grid_shape), -1) if traj.grid else np.zeros((0, 1), int)
    axis_of = {n: a for a, names in enumerate(traj.axes or ()) for n in names}
    for g in range(flat.shape[0]):
        lines.append(_final_line(", ".join(f"{n}={_fmt(v[idx[axis_of[n], g]])}" for n, v in traj.grid.items()), flat[g]))
    lines.append(f"compile {traj.compile_seconds:.2f} s, run {traj.run_seconds:.2f} s")
    return "\n".join(lines)


def _final_line(label: str, x: np.ndarray) -> str:
    """One grid point's final expected reward over its seeds ``x``: mean and standard error."""
    import numpy as np

    se = x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else 0.0
    prefix = f"[{label}] " if label else ""
    return f"{prefix}final expected reward {x.mean():.4f} +- {se:.4f} (s.e. over seeds)"


def _fmt(v: object) -> str:
    import numpy as np

    return f"{v:g}" if isinstance(v, (float, np.floating)) else str(v)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SweepCommand(RunCommand):
    """Run a large sweep in chunks of seeds, one Parquet file per chunk, resumable, on one or several hosts.

    Every option of modeseek run applies; a traced hyperparameter given several
    values forms the grid. Chunk i holds seeds [i*c, (i+1)*c) of every grid point,
    c = --chunk-seeds, and goes to OUT/chunks/; chunks already there are not redone,
    so rerunning the same command resumes an interrupted sweep. With several
    processes (--num-processes, or detected under Slurm / Open MPI), process p runs
    the chunks i with i % N == p on its local devices and process 0 writes the
    merged table OUT/sweep.parquet when all are done.
    """

    _NOT_OPTIONS: ClassVar[tuple[str, ...]] = RunCommand._NOT_OPTIONS + (
        "chunk_seeds",
        "coordinator",
        "num_processes",
        "process_id",
        "distributed",
        "merge",
        "progress",
        "cache",
        "init_timeout",
        "barrier_timeout",
    )

    # A sweep resumes into its folder instead of replacing it: run's --force does not apply.
    force: tyro.conf.Suppress[bool] = False
    # field() without a default: a bare annotation would inherit run's default None.
    out: Annotated[Path, tyro.conf.arg(metavar="DIR")] = dataclasses.field()
    """Sweep folder: manifest.json, chunks/ and the merged sweep.parquet."""
    problem: Annotated[tuple[str, ...], tyro.conf.arg(metavar="STR [STR ...]")] = ("far",)  # type: ignore[assignment]  # a sweep takes several problems, run one
    """Problem preset(s): far, near, far_w20, far_w30; several sweep the problem."""
    seeds: int = 1024
    """Independent runs per grid point, in total over all chunks."""
    chunk_seeds: int = 512
    """Seeds per chunk: one compiled call runs this many seeds of every grid point."""
    coordinator: OptStr = None
    """HOST:PORT of process 0's coordinator (JAX distributed runtime); several processes only."""
    num_processes: OptInt = None
    """Number of processes in the sweep (default: detected under Slurm / Open MPI, else 1)."""
    process_id: OptInt = None
    """This process's index, 0 .. num-processes - 1 (default: detected)."""
    distributed: bool = False
    """Join the distributed runtime with every value detected by jax.distributed.initialize() (e.g. Cloud TPU)."""
    merge: bool = True
    """Write OUT/sweep.parquet when every chunk is done (process 0)."""
    progress: bool = True
    """Show a progress bar (runs/s, ETA) on stderr."""
    init_timeout: float = 300.0
    """Seconds to wait for every process to join the runtime."""
    barrier_timeout: float = 7 * 24 * 3600.0
    """Seconds a finished process waits for the others before process 0 merges."""

    def execute(self) -> None:
        from modeseek import sweep

        given = self._options()
        grid = {name: v for name, v in given.items() if isinstance(v, tuple)}
        options = {name: v for name, v in given.items() if not isinstance(v, tuple)}
        try:
            spec = sweep.SweepSpec(
                loss=self.loss,
                sampling=self.sampling,
                problems=self.problem,
                steps=self.steps,
                seeds=self.seeds,
                chunk_seeds=self.chunk_seeds,
                key=self.key,
                options=options,
                grid=grid,
                paired=self._paired(),
            )
            _prepare(self.out, self.out, self.cache)
            result = sweep.run_sweep(
                spec,
                self.out,
                coordinator=self.coordinator,
                num_processes=self.num_processes,
                process_id=self.process_id,
                distributed=True if self.distributed else None,
                merge_at_end=self.merge,
                progress=self.progress,
                init_timeout_s=self.init_timeout,
                barrier_timeout_s=self.barrier_timeout,
            )
        except (ValueError, sweep.SweepError) as e:
            raise CommandError(str(e)) from None
        print(_sweep_summary(spec, result))


@dataclasses.dataclass(frozen=True)
class MergeCommand:
    """Merge the chunk files of a sweep folder into DIR/sweep.parquet (checks none is missing or doubled)."""

    out: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="DIR")]
    """Sweep folder written by modeseek sweep (chunks from every host copied into DIR/chunks/)."""

    def execute(self) -> None:
        from modeseek import sweep

        try:
            spec = sweep.load_spec(self.out)
            path = sweep.merge(self.out, spec=spec)
        except (ValueError, sweep.SweepError) as e:
            raise CommandError(str(e)) from None
        print(_merged_summary(spec, path))


def _sweep_summary(spec: SweepSpec, result: SweepResult) -> str:
    """What this process ran, and the merged table's final expected reward per grid point."""
    runs_s = result.runs / result.wall_seconds if result.wall_seconds > 0 else 0.0
    who = f"process {result.process_id}/{result.process_count}: " if result.process_count > 1 else ""
    lines = [
        f"{spec.loss} / {spec.sampling} on {', '.join(spec.problems)}: {spec.seeds} seeds x {spec.steps} steps, "
        f"{spec.grid_points} grid point(s), {spec.num_chunks} chunk(s) of {spec.chunk_size} seeds",
        f"{who}ran {len(result.computed)} chunk(s) ({result.runs} runs in {result.wall_seconds:.1f} s, {runs_s:.1f} runs/s); {len(result.skipped)} already done",
    ]
    if result.merged is not None:
        lines.append(_merged_summary(spec, result.merged))
    elif result.process_id != 0:
        lines.append("process 0 writes the merged table")
    return "\n".join(lines)


def _merged_summary(spec: SweepSpec, path: str | Path) -> str:
    """Final expected reward (mean and standard error over seeds) per grid point of a merged table."""
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq

    keys = (["problem"] if len(spec.problems) > 1 else []) + [n for n, v in spec.grid if len(v) > 1]
    final = pd.read_parquet(path, columns=keys + ["expected_reward"], filters=[("step", "==", spec.steps)])
    lines = []
    groups = final.groupby(keys, sort=False) if keys else [((), final)]
    for values, g in groups:
        values = values if isinstance(values, tuple) else (values,)
        lines.append(_final_line(", ".join(f"{n}={_fmt(v)}" for n, v in zip(keys, values)), g["expected_reward"].to_numpy(np.float64)))
    lines.append(f"wrote {pq.read_metadata(path).num_rows} rows to {path}")
    return "\n".join(lines)


_SAMPLING_NOTES = {
    "offline": "one fixed dataset drawn once from the data distribution (default pi_ref)",
    "on_policy": "a fresh batch from the current policy every `reuse` steps",
    "exact": "population update on the current policy (no sampling noise)",
    "exact_offline": "population update on the data distribution",
}
_POLICY_NOTES = {
    "tabular": "free logits per context, initialised at pi_ref",
    "mlp": "the paper's MLP of a 100-d context, SFT'd to pi_ref (docs/paper.md §A.4-docs/paper.md §A.5)",
}


@dataclasses.dataclass(frozen=True)
class ListCommand:
    """List the losses (family, policies and summary), sampling regimes, problem presets and policies."""

    def execute(self) -> None:
        import numpy as np

        from modeseek import engine, losses, policies, problems

        def section(title: str, rows: Sequence[Sequence[str]]) -> None:
            print(f"{title}:")
            width = max(len(r[0]) for r in rows)
            for r in rows:
                print("  " + "  ".join([f"{r[0]:<{width}}", *r[1:]]).rstrip())

        specs = [losses.get(n) for n in losses.names()]
        runs_on = [",".join(s.policies) for s in specs]
        width = max(map(len, runs_on))
        sources = [s.source for s in specs]
        swidth = max(map(len, sources))
        section(
            "losses (name, family, batch it consumes, policies, source, summary)",
            [(s.name, f"{s.family:<13}", f"{s.batch:<9}", f"{p:<{width}}", f"{src:<{swidth}}", s.summary) for s, p, src in zip(specs, runs_on, sources)],
        )
        section("sampling regimes", [(s, _SAMPLING_NOTES.get(s, "")) for s in engine.SAMPLINGS])
        rows = []
        for name in problems.presets():
            p = problems.get(name)
            ref, r = np.asarray(p.ref_probs), np.asarray(p.reward)
            peak = int(np.argmax(r))
            rows.append((name, f"K={p.num_bins}, reward peak at bin {peak} (pi_ref mass {ref[peak]:.4f}), E_pi_ref[r]={ref @ r:.3f}"))
        section("problem presets", rows)
        section("policies", [(n, _POLICY_NOTES.get(n, "")) for n in policies.names()])


@dataclasses.dataclass(frozen=True)
class ReproduceCommand:
    """Regenerate the paper figures, their data and captions, and CLAIMS.md."""

    out: Annotated[Path | None, tyro.conf.arg(metavar="DIR", help_behavior_hint="")] = None
    """Output folder (figures in it, tables in OUT/data); default figures, or figures-smoke with --smoke, so that smoke numbers never replace the committed figures unless --out names them."""
    smoke: bool = False
    """Tiny budgets, for tests (the numbers are not meaningful)."""
    force: bool = False
    """Rerun pieces whose outputs already exist (pieces finished at the other budget, smoke or full, always rerun)."""
    only: tuple[str, ...] = ()
    """Names of the pieces to run (default all; the registry modeseek.pieces.PIECES lists them in report order)."""
    cache: bool = True
    """Use JAX's persistent compilation cache ($MODESEEK_CACHE_DIR or ~/.cache/modeseek/jax), so reruns skip compiling."""

    def execute(self) -> None:
        from modeseek.pieces import check_names

        # Names are checked against the registry, before any figure module is imported.
        try:
            check_names(self.only)
        except ValueError as e:
            raise CommandError(str(e)) from None
        from modeseek.paper.reproduce import default_out_dir, report_lines, reproduce

        t0 = time.perf_counter()
        logs: dict = {}
        out = self.out if self.out is not None else default_out_dir(self.smoke)
        _prepare(out, out, self.cache)
        try:
            results = reproduce(out, smoke=self.smoke, force=self.force, only=list(self.only) or None, compile_logs=logs)
        except ValueError as e:
            raise CommandError(str(e)) from None
        print("\n".join(report_lines(results, logs, time.perf_counter() - t0, out, rerun_hint="--force reruns it")))


COMMANDS: dict[str, Callable[..., Any]] = {
    "run": RunCommand,
    "sweep": SweepCommand,
    "merge": MergeCommand,
    "list": ListCommand,
    "reproduce": ReproduceCommand,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``modeseek`` console script; returns 0 or exits with status 2 on bad input."""
    command = tyro.extras.subcommand_cli_from_dict(COMMANDS, prog="modeseek", description=__doc__.splitlines()[0], args=argv)
    name = next(n for n, c in COMMANDS.items() if type(command) is c)
    try:
        command.execute()
    except CommandError as e:
        print(f"modeseek {name}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
