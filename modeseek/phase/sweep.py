"""Run a phase-map sweep: one chunk per objective, a tidy table, a mass table, a manifest.

:func:`sweep` runs every family of a :class:`~modeseek.phase.grid.PhaseConfig`
as a chunk job of the generic chunked, resumable machinery
(:func:`modeseek.sweep.run_chunks`) and writes, into ``<out>/data/``:

* ``phase.parquet``: the tidy table, one row per (map, family, variant, rarity,
  coverage, budget, configuration, seed) with the final gold metrics, the
  reward queries spent, the configuration's hyperparameters and the seed's role
  ("selection" or "report"; "exact" for deterministic exact-population runs);
* ``phase_mass.parquet``: the final probability mass at the marked cells and
  the largest budget, per (map, family, variant, configuration), mean over the
  report seeds, beside pi_ref, mu, the gold reward and the proxy;
* ``phase/``: the chunk folder (manifest, per-chunk timings, chunk tables).

Maps: offline objectives train on gold-labelled datasets and appear in every
map with the same rows (map "offline"); on-policy objectives run once with the
gold reward (map "oracle": one run per rarity, since with the gold reward the
coverage does not enter) and, for ``rm_families``, with each learned proxy
(maps "rm_rbf", "rm_tabular": one run per cell and proxy budget). Every call of
one family uses one compiled program: cells, budgets and proxies are data.
"""

from __future__ import annotations

import functools
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np

import modeseek as ms
from modeseek import _checks, _files
from modeseek import sweep as sweep_core
from modeseek.phase.grid import FAMILIES, Family, Grid, PhaseConfig, build_grid, fit_proxies

__all__ = ["sweep", "SweepResult", "table_paths", "METRICS", "load", "HP_COLUMNS"]

#: Gold metrics stored per run.
METRICS = ("expected_reward", "mass_high_reward", "entropy")
#: Hyperparameter columns of the table (NaN where a family does not tune it).
HP_COLUMNS = ("learning_rate", "entropy_coef", "beta", "batch_size")


def table_paths(out_dir: str | Path) -> dict[str, Path]:
    """Where a sweep writes its table, mass table and manifest (in its chunk folder ``data/phase/``)."""
    d = Path(out_dir) / "data"
    return {"table": d / "phase.parquet", "mass": d / "phase_mass.parquet", "manifest": d / "phase" / "manifest.json"}


class SweepResult:
    """What :func:`sweep` returns: the tables, the manifest, the grid and the chunks computed by this call."""

    def __init__(self, table: Any, mass: Any, manifest: dict | None, grid: Grid, ran: list[str]) -> None:
        self.table, self.mass, self.manifest, self.grid, self.ran = table, mass, manifest, grid, ran


def _samples_per_step(batch_size: int, fam: Family) -> int:
    """num_samples for ``batch_size`` reward queries a step: a duel reads two rewards, so duels get half the samples."""
    from modeseek import losses

    return batch_size // (2 if losses.get(fam.loss, "bandit").batch == "duels" else 1)


def _call(fam: Family, problems: list, steps: int, eval_every: int, seeds: int, **kw: Any) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, Any]:
    """One engine call over G paired entries x the family's tuning grid.

    Returns metrics name -> (G, P, seeds, E), final probs (G, P, seeds, K),
    eval steps (E,) and the Trajectory, P = len(fam.configs) in
    :attr:`Family.configs` order.
    """
    sweep_arrays: dict[str, Any] = {n: np.asarray(v, np.float64) for n, v in fam.grid}
    paired = ("problem",) + tuple(n for n in ("data", "train_reward") if n in kw)
    traj = ms.run(problems, loss=fam.loss, steps=steps, seeds=seeds, eval_every=eval_every, snapshot_every=steps, paired=paired, **sweep_arrays, **dict(fam.options), **kw)
    names = [a[0] for a in traj.axes or ()]
    order = [names.index("problem")] + [names.index(n) for n, _ in fam.grid]
    g = len(problems)
    p = len(fam.configs)

    def arrange(x: np.ndarray) -> np.ndarray:
        lead = len(order)
        y = np.transpose(x, order + list(range(lead, x.ndim)))
        return y.reshape((g, p) + y.shape[lead:])

    mets = {m: arrange(np.asarray(traj.metrics[m])) for m in METRICS + ("reward_queries",)}
    return mets, arrange(np.asarray(traj.final_probs)), np.asarray(traj.eval_steps), traj


def _rows(
    fam: Family, cfg: PhaseConfig, grid: Grid, *, map_: str, variant: str, meta: dict[str, np.ndarray], values: dict[str, np.ndarray], seed0: int = 0, configs: list[dict[str, float]] | None = None
) -> Any:
    """A DataFrame of runs: ``meta`` (G,) entry columns, ``values`` (G, P, S) metrics; one row per (entry, config, seed).

    ``configs`` (P dicts of hyperparameters; default ``fam.configs``) fill the hyperparameter columns.
    """
    import pandas as pd

    g, p, s = values["expected_reward"].shape
    gi, pi, si = np.indices((g, p, s)).reshape(3, -1)
    configs = fam.configs if configs is None else configs
    ri = meta["rarity_index"][gi]
    ci = meta["coverage_index"][gi]
    seed = seed0 + si
    if variant == "exact":
        role = np.full(seed.shape, "exact")
    else:
        role = np.where(seed < cfg.selection_seeds, "selection", "report")
    span = grid.gold.max(-1) - grid.gold @ grid.ref
    er = values["expected_reward"].reshape(-1)
    df = pd.DataFrame(
        {
            "map": map_,
            "family": fam.name,
            "group": fam.group,
            "loss": fam.loss,
            "variant": variant,
            "rarity_index": ri,
            "coverage_index": ci,
            "budget_index": meta["budget_index"][gi],
            "budget": np.asarray(cfg.budgets)[meta["budget_index"][gi]],
            "rarity": np.asarray([b.rarity for b in grid.bumps])[ri],
            "coverage": np.where(ci >= 0, grid.coverage[ri, np.maximum(ci, 0)], np.nan),
            "config": pi,
            **{h: np.asarray([configs[k].get(h, np.nan) for k in range(p)])[pi] for h in HP_COLUMNS},
            "seed": seed,
            "role": role,
            "reward_queries": values["reward_queries"].reshape(-1),
            **{m: values[m].reshape(-1) for m in METRICS},
            "progress": (er - (grid.gold @ grid.ref)[ri]) / span[ri],
        }
    )
    return df


def _mass_rows(fam: Family, cfg: PhaseConfig, grid: Grid, *, map_: str, variant: str, meta: dict[str, np.ndarray], final: np.ndarray, train_reward: np.ndarray | None) -> Any:
    """Mass rows at the marked cells and the largest budget: ``final`` (G, P, S, K), mean over report seeds."""
    import pandas as pd

    out = []
    b_last = len(cfg.budgets) - 1
    s0 = 0 if variant == "exact" else cfg.selection_seeds
    for i, j in cfg.marked:
        hit = np.flatnonzero((meta["rarity_index"] == i) & ((meta["coverage_index"] == j) | (meta["coverage_index"] < 0)) & (meta["budget_index"] == b_last))
        if variant == "sampled" and not fam.on_policy:
            hit = hit[meta["seed"][hit] >= cfg.selection_seeds]  # offline: the seed is the entry's dataset draw
            probs = final[hit, :, 0].mean(0)  # (P, K)
        else:
            probs = final[hit[0], :, s0:].mean(1)  # (P, K)
        p_n, k = probs.shape
        pi, bi = np.indices((p_n, k)).reshape(2, -1)
        proxy = train_reward[hit[0]] if train_reward is not None else np.full(k, np.nan)
        out.append(
            pd.DataFrame(
                {
                    "map": map_,
                    "family": fam.name,
                    "variant": variant,
                    "rarity_index": i,
                    "coverage_index": j,
                    "config": pi,
                    "bin": bi,
                    "final_prob": probs.reshape(-1),
                    "ref_prob": grid.ref[bi],
                    "data_prob": grid.data[i, j][bi],
                    "gold_reward": grid.gold[i][bi],
                    "train_reward": np.asarray(proxy, np.float64)[bi],
                }
            )
        )
    return pd.concat(out, ignore_index=True)


def _offline_entries(fam: Family, grid: Grid, variant: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(meta (G,) columns, data (G, K)) of an offline family's sampled or exact entries."""
    cfg = grid.config
    r_n, c_n, b_n, s_n, k = grid.counts.shape
    best_of_n = fam.name == "best_of_n"
    if variant == "sampled":
        ri, ci, bi, si = np.indices((r_n, c_n, b_n, s_n)).reshape(4, -1)
        if best_of_n:
            data = np.eye(k)[grid.best_bin[ri, ci, bi, si]]
        else:
            data = grid.counts[ri, ci, bi, si] / np.asarray(cfg.budgets, np.float64)[bi, None]
    elif best_of_n:
        ri, ci, bi = np.indices((r_n, c_n, b_n)).reshape(3, -1)
        si = np.zeros_like(ri)
        data = grid.best_of_n[ri, ci, bi]
    else:
        # The exact population loss over mu does not depend on the dataset size: run once, copy per budget.
        ri, ci = np.indices((r_n, c_n)).reshape(2, -1)
        bi, si = np.full_like(ri, -1), np.zeros_like(ri)
        data = grid.data[ri, ci]
    return {"rarity_index": ri, "coverage_index": ci, "budget_index": bi, "seed": si}, data


def _run_offline(grid: Grid, fam: Family, timing: dict) -> tuple[list, list]:
    cfg = grid.config
    tables, masses = [], []
    for variant in ("sampled", "exact") if fam.exact else ("sampled",):
        meta, data = _offline_entries(fam, grid, variant)
        mets, final, _, traj = _call(fam, grid.problems(meta["rarity_index"]), cfg.offline_steps, cfg.offline_steps, 1, sampling="exact_offline", data=data)
        _account(timing, traj)
        vals = {m: v[..., -1] for m, v in mets.items()}  # (G, P, 1)
        if variant == "sampled":
            # The seed is the dataset draw; the queries are the dataset's labelled responses.
            vals["reward_queries"] = np.broadcast_to(grid.counts.sum(-1).reshape(-1)[:, None, None], vals["expected_reward"].shape).astype(np.float64)
            df = _rows(fam, cfg, grid, map_="offline", variant=variant, meta=meta, values=vals)
            df["seed"] = np.repeat(meta["seed"], len(fam.configs))
            df["role"] = np.where(df["seed"] < cfg.selection_seeds, "selection", "report")
        else:
            vals["reward_queries"] = np.full(vals["expected_reward"].shape, np.inf)
            if (meta["budget_index"] < 0).all():
                b_n = len(cfg.budgets)
                meta = {k: np.repeat(v, b_n) for k, v in meta.items()}
                meta["budget_index"] = np.tile(np.arange(b_n), len(data))
                vals = {m: np.repeat(v, b_n, axis=0) for m, v in vals.items()}
                final = np.repeat(final, b_n, axis=0)
            df = _rows(fam, cfg, grid, map_="offline", variant=variant, meta=meta, values=vals)
        tables.append(df)
        masses.append(_mass_rows(fam, cfg, grid, map_="offline", variant=variant, meta=meta, final=final, train_reward=None))
    return tables, masses


def _on_policy_calls(grid: Grid, fam: Family, variant: str, problems: list, timing: dict, **kw: Any) -> tuple[dict[str, np.ndarray], np.ndarray, list[dict[str, float]]]:
    """One engine call per batch size of an on-policy family's ``variant``, read at every budget's checkpoint.

    The sampled version runs each B of ``batch_sizes`` for Q_max / B steps
    (reward queries are the budget); the exact version has no batch and runs
    the reference ``batch_size``'s steps. Batch sizes become part of the
    tuning grid: configuration index = batch index x len(fam.configs) + the
    traced grid's index.

    Returns:
      metrics name -> (G, P', S, B) at the budgets' checkpoints, final probs
      (G, P', S, K) at the largest budget, and the P' configurations.
    """
    cfg = grid.config
    fv = fam.for_variant(variant)
    sampled = variant == "sampled"
    mets_all, finals, configs = [], [], []
    for size in cfg.batch_sizes if sampled else (cfg.batch_size,):
        ckpt = np.asarray(cfg.checkpoints_for(size))
        n = _samples_per_step(size, fam)
        mets, final, steps, traj = _call(fv, problems, int(ckpt[-1]), cfg.eval_every_for(size), cfg.seeds if sampled else 1, sampling="on_policy" if sampled else "exact", num_samples=n, **kw)
        _account(timing, traj)
        at = np.searchsorted(steps, ckpt)
        mets_all.append({m: v[..., at] for m, v in mets.items()})
        finals.append(final)
        configs += [{**c, "batch_size": float(size)} for c in fv.configs] if sampled else fv.configs
    mets = {m: np.concatenate([x[m] for x in mets_all], axis=1) for m in mets_all[0]}
    if not sampled:
        mets["reward_queries"] = np.full(mets["expected_reward"].shape, np.inf)
    return mets, np.concatenate(finals, axis=1), configs


def _run_on_policy(grid: Grid, fam: Family, timing: dict) -> tuple[list, list]:
    cfg = grid.config
    r_n, c_n, b_n, _, k = grid.counts.shape
    tables, masses = [], []
    variants = ("sampled", "exact") if fam.exact else ("sampled",)
    # Map A: the gold reward; one run per rarity (coverage does not enter), read at every budget's checkpoint.
    ri = np.arange(r_n)
    for variant in variants:
        fv = fam.for_variant(variant)
        mets, final, configs = _on_policy_calls(grid, fam, variant, grid.problems(ri), timing, train_reward=grid.gold)
        for b in range(b_n):
            meta = {"rarity_index": ri, "coverage_index": np.full(r_n, -1), "budget_index": np.full(r_n, b)}
            tables.append(_rows(fv, cfg, grid, map_="oracle", variant=variant, meta=meta, values={m: v[..., b] for m, v in mets.items()}, configs=configs))
        meta = {"rarity_index": ri, "coverage_index": np.full(r_n, -1), "budget_index": np.full(r_n, b_n - 1)}
        masses.append(_mass_rows(fv, cfg, grid, map_="oracle", variant=variant, meta=meta, final=final, train_reward=grid.gold))
    if fam.name not in cfg.rm_families:
        return tables, masses
    # Map B: each learned proxy, fitted to each budget's dataset; the proxy's queries are free, so read the largest budget's step.
    from modeseek import losses

    # Exact pair tables cost ~300x a points batch per step: exact pair objectives run on map A only.
    rm_variants = variants if losses.get(fam.loss, "bandit").batch == "points" else ("sampled",)
    for model in cfg.reward_models:
        ri, ci, bi = np.indices((r_n, c_n, b_n)).reshape(3, -1)
        proxy = grid.proxies[model][ri, ci, bi]
        meta = {"rarity_index": ri, "coverage_index": ci, "budget_index": bi}
        for variant in rm_variants:
            fv = fam.for_variant(variant)
            mets, final, configs = _on_policy_calls(grid, fam, variant, grid.problems(ri), timing, train_reward=proxy)
            vals = {m: v[..., -1] for m, v in mets.items()}
            # The gold labels this learner cost: the proxy's dataset.
            vals["reward_queries"] = np.broadcast_to(np.asarray(cfg.budgets, np.float64)[bi][:, None, None], vals["expected_reward"].shape)
            tables.append(_rows(fv, cfg, grid, map_=f"rm_{model}", variant=variant, meta=meta, values=vals, configs=configs))
            masses.append(_mass_rows(fv, cfg, grid, map_=f"rm_{model}", variant=variant, meta=meta, final=final, train_reward=proxy))
    return tables, masses


def _account(timing: dict, traj: Any) -> None:
    timing["compile_seconds"] += traj.compile_seconds
    timing["run_seconds"] += traj.run_seconds
    timing["calls"] += 1
    # The engine reports 0 compile seconds when its cached program was reused.
    timing["programs_compiled"] += int(traj.compile_seconds > 0)


def _run_chunk(grid: Grid, family_name: str) -> tuple[dict, dict]:
    """Run one family; returns ({"phase": table, "phase_mass": mass table}, timing dict)."""
    import pandas as pd
    import pyarrow as pa

    fam = FAMILIES[family_name]
    timing: dict[str, Any] = {"family": family_name, "compile_seconds": 0.0, "run_seconds": 0.0, "calls": 0, "programs_compiled": 0}
    tables, masses = (_run_on_policy if fam.on_policy else _run_offline)(grid, fam, timing)
    frames = {"phase": pd.concat(tables, ignore_index=True), "phase_mass": pd.concat(masses, ignore_index=True)}
    return {name: pa.Table.from_pandas(df, preserve_index=False) for name, df in frames.items()}, timing


def load(out_dir: str | Path) -> tuple[Any, Any, dict | None]:
    """(table, mass, manifest) of a finished or partial sweep in ``out_dir`` (None where missing)."""
    import pandas as pd

    p = table_paths(out_dir)
    table = pd.read_parquet(p["table"]) if p["table"].exists() else None
    mass = pd.read_parquet(p["mass"]) if p["mass"].exists() else None
    return table, mass, _files.read_manifest(p["manifest"])


def _chunks(grid: Grid) -> sweep_core.Chunks:
    """The sweep as chunk jobs: one per family, each in its own lane (one compiled program per family and regime)."""
    cfg, lock = grid.config, threading.Lock()

    def fit() -> float:
        # The first family that needs the proxies fits them all; its facts record the seconds.
        with lock:
            if grid.proxies:
                return 0.0
            fit_proxies(grid)
            return grid.fit_seconds

    def job(family: str) -> tuple[dict, dict]:
        fit_seconds = fit() if family in cfg.rm_families else 0.0
        tables, timing = _run_chunk(grid, family)
        return tables, {**timing, "proxy_fit_seconds": fit_seconds}

    order = cfg.chunks()
    return sweep_core.Chunks(
        spec=cfg.to_dict(),
        digest=cfg.digest(),
        jobs=[functools.partial(job, f) for f in order],
        merged={"phase": "../phase.parquet", "phase_mass": "../phase_mass.parquet"},
        labels=order,
        runs=[len(cfg.rarities) * len(cfg.coverages) * cfg.seeds] * len(order),
        lanes=order,
        info={
            "rarity_target": list(cfg.rarities),
            "rarity_achieved": [float(b.rarity) for b in grid.bumps],
            "peak_center": [float(b.center) for b in grid.bumps],
            "coverage_target": list(cfg.coverages),
            "coverage_achieved": grid.coverage.tolist(),
            "checkpoints": list(cfg.checkpoints),
        },
    )


def sweep(cfg: PhaseConfig, out_dir: str | Path, *, resume: bool = True, workers: int = 2, progress: bool = False) -> SweepResult:
    """Run (or resume) a phase-map sweep and write its table, mass table and manifest.

    Families run concurrently on ``workers`` threads (XLA compiles and runs
    outside the Python lock). The reward models are fitted once, by the first
    family that needs them.

    Args:
      cfg: the configuration (a budget from :data:`modeseek.phase.BUDGETS`, or custom).
      out_dir: output folder; files go to ``out_dir/data/``.
      resume: skip the chunks on disk whose configuration digest is this one's.
      workers: threads (>= 1).
      progress: show a progress bar.

    Returns:
      A :class:`SweepResult`.
    """
    _checks.integer("workers", workers)
    paths = table_paths(Path(out_dir))
    folder = paths["manifest"].parent
    old = _files.read_manifest(paths["manifest"]) or {}
    if not resume or old.get("spec_hash") != cfg.digest():
        shutil.rmtree(folder, ignore_errors=True)  # another configuration's chunks: start afresh
    grid = build_grid(cfg, fit=False)
    work = _chunks(grid)
    result = sweep_core.run_chunks(work, folder, distributed=False, progress=progress, workers=workers)
    table, mass, manifest = load(out_dir)
    return SweepResult(table, mass, manifest, grid, [work.labels[i] for i in result.computed])
