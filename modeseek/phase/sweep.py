"""Run a phase-diagram sweep: one compiled program per algorithm family, a tidy table, a manifest.

:func:`sweep` runs every (family, reward model) chunk of a
:class:`~modeseek.phase.grid.PhaseConfig` as a chunk job of the generic
chunked, resumable machinery (:func:`modeseek.sweep.run_chunks`) and writes,
into ``<out>/data/``:

* ``phase.parquet``: the tidy table, one row per (family, reward model,
  rarity, coverage, seed, recorded step) with the gold metrics and, for
  on-policy families, the proxy's ``expected_train_reward``;
* ``phase_mass.parquet``: the final probability mass per (family, reward
  model, cell, bin), mean over seeds, beside the cell's reference, data
  distribution, gold reward and proxy (what the mass plots draw);
* ``phase/``: the chunk folder: ``manifest.json`` (the configuration and its
  digest, the provenance, per-chunk compile / run / wall seconds and reward-model
  fit seconds, the achieved rarities and coverages, which chunks are done) and
  ``chunks/`` (each chunk's two tables).

Within a chunk each rarity row is one :func:`modeseek.run` call with the
coverage axis as a traced grid axis (``data`` of shape (C, K) offline,
``train_reward`` of shape (C, K) on-policy), so every row reuses the family's
compiled program. A rerun with the same configuration skips the chunks on disk
(resume); a different configuration starts afresh.
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
from modeseek.phase.grid import FAMILIES, Grid, PhaseConfig, build_grid, fit_proxies

__all__ = ["sweep", "SweepResult", "table_paths", "METRICS", "load"]

#: Gold metrics stored per step (plus expected_train_reward for on-policy families).
METRICS = ("expected_reward", "mass_high_reward", "p_best", "kl_pi_ref", "entropy")


def table_paths(out_dir: str | Path) -> dict[str, Path]:
    """Where a sweep writes its table, mass table and manifest (in its chunk folder ``data/phase/``)."""
    d = Path(out_dir) / "data"
    return {"table": d / "phase.parquet", "mass": d / "phase_mass.parquet", "manifest": d / "phase" / "manifest.json"}


class SweepResult:
    """What :func:`sweep` returns: the tables, the manifest and the grid.

    Attributes:
      table: the tidy pandas DataFrame (all done chunks).
      mass: the probability-mass DataFrame.
      manifest: the manifest dict.
      grid: the :class:`~modeseek.phase.grid.Grid` (its ``proxies`` are fitted
        only when an on-policy chunk ran in this call).
      ran: chunks computed by this call (empty when everything was resumed).
    """

    def __init__(self, table, mass, manifest, grid, ran):
        self.table, self.mass, self.manifest, self.grid, self.ran = table, mass, manifest, grid, ran


def _family_kwargs(cfg: PhaseConfig, family) -> dict:
    kw = dict(
        loss=family.loss,
        sampling=family.sampling,
        steps=cfg.steps,
        seeds=cfg.seeds,
        key=cfg.key,
        num_samples=cfg.batch_size if family.on_policy else cfg.dataset_size,
        learning_rate=cfg.learning_rate,
        snapshot_every=cfg.steps,
        **dict(family.options),
    )
    if family.loss in ("dpo", "ipo", "pref_ft"):
        kw.update(beta=cfg.beta, labels=cfg.labels, bt_scale=cfg.bt_scale)
    return kw


def _run_chunk(grid: Grid, family_name: str, model: str):
    """Run one chunk; returns ({"phase": table, "phase_mass": mass table}, timing dict)."""
    import pandas as pd
    import pyarrow as pa

    cfg = grid.config
    fam = FAMILIES[family_name]
    kw = _family_kwargs(cfg, fam)
    rec = np.arange(0, cfg.steps + 1, cfg.record_every)
    _, c_n, k = grid.data.shape
    tables, masses = [], []
    timing: dict[str, Any] = {"family": family_name, "reward_model": model, "compile_seconds": 0.0, "run_seconds": 0.0, "calls": 0, "programs_compiled": 0}
    for i, problem in enumerate(grid.problems):
        cell_arrays = {"train_reward": grid.proxies[model][i]} if fam.on_policy else {"data": grid.data[i]}
        traj = ms.run(problem, **cell_arrays, **kw)
        timing["compile_seconds"] += traj.compile_seconds
        timing["run_seconds"] += traj.run_seconds
        timing["calls"] += 1
        # The engine reports 0 compile seconds when its cached program was reused.
        timing["programs_compiled"] += int(traj.compile_seconds > 0)
        # metrics: (C, seeds, steps + 1) -> recorded steps.
        cols = {m: traj.metrics[m][..., rec] for m in METRICS}
        train = traj.metrics.get("expected_train_reward")
        cols["expected_train_reward"] = train[..., rec] if train is not None else np.full_like(cols["expected_reward"], np.nan)
        shape = cols["expected_reward"].shape  # (C, S, T)
        ci, si, ti = np.indices(shape).reshape(3, -1)
        df = pd.DataFrame(
            {
                "family": family_name,
                "loss": fam.loss,
                "sampling": fam.sampling,
                "reward_model": model,
                "rarity_index": i,
                "coverage_index": ci,
                "rarity_target": cfg.rarities[i],
                "rarity": grid.bumps[i].rarity,
                "coverage": grid.coverage[i][ci],
                "peak_center": grid.bumps[i].center,
                "max_reward": float(np.max(np.asarray(problem.reward))),
                "ref_reward": float(grid.ref @ np.asarray(problem.reward, np.float64)),
                "seed": si,
                "step": rec[ti],
                **{m: v.reshape(-1).astype(np.float32) for m, v in cols.items()},
            }
        )
        tables.append(df)
        final = traj.final_probs.mean(axis=1)  # (C, K), mean over seeds
        proxy = grid.proxies[model][i] if fam.on_policy else np.full((c_n, k), np.nan)
        cj, bj = np.indices((c_n, k)).reshape(2, -1)
        masses.append(
            pd.DataFrame(
                {
                    "family": family_name,
                    "reward_model": model,
                    "rarity_index": i,
                    "coverage_index": cj,
                    "bin": bj,
                    "final_prob": final.reshape(-1).astype(np.float32),
                    "ref_prob": grid.ref[bj].astype(np.float32),
                    "data_prob": grid.data[i].reshape(-1).astype(np.float32),
                    "gold_reward": np.asarray(problem.reward)[bj],
                    "train_reward": proxy.reshape(-1).astype(np.float32),
                }
            )
        )
    frames = {"phase": pd.concat(tables, ignore_index=True), "phase_mass": pd.concat(masses, ignore_index=True)}
    return {name: pa.Table.from_pandas(df, preserve_index=False) for name, df in frames.items()}, timing


def load(out_dir: str | Path):
    """(table, mass, manifest) of a finished or partial sweep in ``out_dir`` (None where missing)."""
    import pandas as pd

    p = table_paths(out_dir)
    table = pd.read_parquet(p["table"]) if p["table"].exists() else None
    mass = pd.read_parquet(p["mass"]) if p["mass"].exists() else None
    return table, mass, _files.read_manifest(p["manifest"])


def _chunks(grid: Grid) -> sweep_core.Chunks:
    """The sweep as chunk jobs: one per (family, reward model), a family's chunks in one lane (one compiled program)."""
    cfg, lock = grid.config, threading.Lock()

    def fit() -> float:
        # The first on-policy chunk fits every proxy; its facts record the seconds.
        with lock:
            if grid.proxies:
                return 0.0
            fit_proxies(grid)
            return grid.fit_seconds

    def job(family: str, model: str):
        fit_seconds = fit() if FAMILIES[family].on_policy else 0.0
        tables, timing = _run_chunk(grid, family, model)
        return tables, {**timing, "proxy_fit_seconds": fit_seconds}

    order = cfg.chunks()
    return sweep_core.Chunks(
        spec=cfg.to_dict(),
        digest=cfg.digest(),
        jobs=[functools.partial(job, *c) for c in order],
        merged={"phase": "../phase.parquet", "phase_mass": "../phase_mass.parquet"},
        labels=["/".join(c) for c in order],
        runs=[len(cfg.rarities) * len(cfg.coverages) * cfg.seeds] * len(order),
        lanes=[f for f, _ in order],
        info={
            "rarity_target": list(cfg.rarities),
            "rarity_achieved": [float(b.rarity) for b in grid.bumps],
            "peak_center": [float(b.center) for b in grid.bumps],
            "coverage_target": list(cfg.coverages),
            "coverage_achieved": grid.coverage.tolist(),
        },
    )


def sweep(cfg: PhaseConfig, out_dir: str | Path, *, resume: bool = True, workers: int = 2, progress: bool = False) -> SweepResult:
    """Run (or resume) a phase-diagram sweep and write its table, mass table and manifest.

    Families run concurrently on ``workers`` threads (XLA compiles and runs
    outside the Python lock, so two families use both cores of a 2-core
    machine); the reward models are fitted once, by the first on-policy chunk
    that needs them. Each family's chunks run in order on one thread, so its
    program is compiled once.

    Args:
      cfg: the configuration (a budget from :data:`modeseek.phase.BUDGETS`, or custom).
      out_dir: output folder; files go to ``out_dir/data/``.
      resume: skip the chunks on disk whose configuration digest is this one's
        (False recomputes everything).
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
    return SweepResult(table, mass, manifest, grid, [tuple(work.labels[i].split("/")) for i in result.computed])
