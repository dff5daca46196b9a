"""Run a phase-diagram sweep: one compiled program per algorithm family, a tidy table, a manifest.

:func:`sweep` runs every (family, reward model) chunk of a
:class:`~modeseek.phase.grid.PhaseConfig` and writes, into ``<out>/data/``:

* ``phase.parquet``: the tidy table, one row per (family, reward model,
  rarity, coverage, seed, recorded step) with the gold metrics and, for
  on-policy families, the proxy's ``expected_train_reward``;
* ``phase_mass.parquet``: the final probability mass per (family, reward
  model, cell, bin), mean over seeds, beside the cell's reference, data
  distribution, gold reward and proxy (what the mass plots draw);
* ``phase.manifest.json``: the configuration and its digest, library
  versions, per-chunk compile / run / wall / CPU seconds, the achieved
  rarities and coverages, and which chunks are done.

Within a chunk each rarity row is one :func:`modeseek.run` call with the
coverage axis as a traced grid axis (``data`` of shape (C, K) offline,
``train_reward`` of shape (C, K) on-policy), so every row reuses the family's
compiled program. Tables and manifest are rewritten atomically after each
chunk; a rerun with the same configuration skips the chunks the manifest lists
as done (resume), a different configuration starts afresh.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np

import modeseek as ms
from modeseek import _xla
from modeseek import pieces
from modeseek.phase.grid import FAMILIES, Grid, PhaseConfig, build_grid, fit_proxies

__all__ = ["sweep", "SweepResult", "table_paths", "METRICS", "load"]

#: Gold metrics stored per step (plus expected_train_reward for on-policy families).
METRICS = ("expected_reward", "mass_high_reward", "p_best", "kl_pi_ref", "entropy")


def table_paths(out_dir: Path) -> dict[str, Path]:
    """Where a sweep writes its table, mass table and manifest."""
    d = Path(out_dir) / "data"
    return {"table": d / "phase.parquet", "mass": d / "phase_mass.parquet", "manifest": d / "phase.manifest.json"}


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


def _versions() -> dict:
    import jax
    import optax
    import pandas as pd

    return {
        "modeseek": ms.__version__,
        "jax": jax.__version__,
        "jaxlib": getattr(__import__("jaxlib"), "__version__", "?"),
        "optax": optax.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "python": platform.python_version(),
        "backend": jax.default_backend(),
        "cpu_count": __import__("os").cpu_count(),
    }


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
    """Run one chunk; returns (table rows DataFrame, mass DataFrame, timing dict)."""
    import pandas as pd

    cfg = grid.config
    fam = FAMILIES[family_name]
    kw = _family_kwargs(cfg, fam)
    rec = np.arange(0, cfg.steps + 1, cfg.record_every)
    r_n, c_n, k = grid.data.shape
    tables, masses = [], []
    timing = {"compile_seconds": 0.0, "run_seconds": 0.0, "calls": 0, "programs_compiled": 0}
    t_wall = time.perf_counter()
    for i, problem in enumerate(grid.problems):
        if fam.on_policy:
            traj = ms.run(problem, train_reward=grid.proxies[model][i], **kw)
        else:
            traj = ms.run(problem, data=grid.data[i], **kw)
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
    timing["wall_seconds"] = time.perf_counter() - t_wall
    timing["runs"] = r_n * c_n * cfg.seeds
    return pd.concat(tables, ignore_index=True), pd.concat(masses, ignore_index=True), timing


def load(out_dir: Path):
    """(table, mass, manifest) of a finished or partial sweep in ``out_dir`` (None where missing)."""
    import pandas as pd

    p = table_paths(out_dir)
    man = json.loads(p["manifest"].read_text()) if p["manifest"].exists() else None
    table = pd.read_parquet(p["table"]) if p["table"].exists() else None
    mass = pd.read_parquet(p["mass"]) if p["mass"].exists() else None
    return table, mass, man


def _split_done(df, done) -> dict:
    """Rows of ``df`` per done chunk (rows of chunks not listed as done are dropped)."""
    if df is None:
        return {}
    return {k: g.reset_index(drop=True) for k, g in df.groupby(["family", "reward_model"], sort=False) if k in done}


def _ordered(parts: dict, order: list):
    import pandas as pd

    frames = [parts[c] for c in order if c in parts]
    return pd.concat(frames, ignore_index=True) if frames else None


def sweep(cfg: PhaseConfig, out_dir: str | Path, *, resume: bool = True, workers: int = 2, progress: bool = False) -> SweepResult:
    """Run (or resume) a phase-diagram sweep and write its table, mass table and manifest.

    Families run concurrently on ``workers`` threads (XLA compiles and runs
    outside the Python lock, so two families use both cores of a 2-core
    machine); the reward-model fits run first, beside the offline families
    that do not need them. Each family's chunks run in order on one thread,
    so its program is compiled once.

    Args:
      cfg: the configuration (a budget from :data:`modeseek.phase.BUDGETS`, or custom).
      out_dir: output folder; files go to ``out_dir/data/``.
      resume: skip chunks a manifest with the same configuration digest lists
        as done (False recomputes everything).
      workers: threads (>= 1).
      progress: print one line per chunk.

    Returns:
      A :class:`SweepResult`.
    """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    if not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers={workers!r} is invalid; expected an integer >= 1")
    paths = table_paths(Path(out_dir))
    t_start, c_start = time.perf_counter(), time.process_time()
    table, mass, man = load(out_dir) if resume else (None, None, None)
    if man is None or man.get("digest") != cfg.digest():
        table, mass, man = None, None, None
    order = cfg.chunks()
    done = {tuple(c) for c in man["done"]} & set(order) if man else set()
    tables, masses = _split_done(table, done), _split_done(mass, done)
    todo = [c for c in order if c not in done]
    grid = build_grid(cfg, fit=False)
    manifest = {
        "name": "phase",
        "budget": cfg.name,
        "digest": cfg.digest(),
        "config": cfg.to_dict(),
        "versions": _versions(),
        # What else fixes the bits: compiler options, the ISA cap, the CPU's vector extensions.
        "provenance": _xla.provenance(),
        "rarity_target": list(cfg.rarities),
        "rarity_achieved": [float(b.rarity) for b in grid.bumps],
        "peak_center": [float(b.center) for b in grid.bumps],
        "coverage_target": list(cfg.coverages),
        "coverage_achieved": grid.coverage.tolist(),
        "proxy_fit_seconds": float(man.get("proxy_fit_seconds", 0.0)) if man else 0.0,
        "calls": list(man.get("calls", [])) if man else [],
        "workers": int(workers),
        "chunks": {k: v for k, v in (man["chunks"].items() if man else []) if tuple(k.split("/")) in done},
        "done": [list(c) for c in order if c in done],
        "complete": not todo,
    }
    lock = threading.Lock()
    ran = []

    def record(chunk, rows, mass_rows, timing):
        with lock:
            tables[chunk], masses[chunk] = rows, mass_rows
            pieces.save_table(_ordered(tables, order), paths["table"])
            pieces.save_table(_ordered(masses, order), paths["mass"])
            manifest["chunks"]["/".join(chunk)] = timing
            manifest["done"] = [list(c) for c in order if c in tables]
            manifest["complete"] = len(manifest["done"]) == len(order)
            _write_manifest(manifest, paths["manifest"], t_start, c_start)
            ran.append(chunk)
        if progress:
            print(f"phase {chunk[0]}/{chunk[1]}: compile {timing['compile_seconds']:.1f}s run {timing['run_seconds']:.1f}s wall {timing['wall_seconds']:.1f}s", flush=True)

    families = list(dict.fromkeys(f for f, _ in todo))
    needs_fit = any(FAMILIES[f].on_policy for f, _ in todo)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # Submitted first, so it starts first: no family can wait on a fit that never runs.
        fit = pool.submit(fit_proxies, grid) if needs_fit else None

        def family_task(f):
            if FAMILIES[f].on_policy:
                fit.result()
            for chunk in [c for c in todo if c[0] == f]:
                record(chunk, *_run_chunk(grid, *chunk))

        futures = [pool.submit(family_task, f) for f in families]
        for fut in ([fit] if fit else []) + futures:
            fut.result()  # re-raise the first error
    if fit is not None:
        manifest["proxy_fit_seconds"] = grid.fit_seconds
    manifest["calls"].append(
        {"chunks_run": len(ran), "wall_seconds": time.perf_counter() - t_start, "cpu_seconds": time.process_time() - c_start}
    )
    _write_manifest(manifest, paths["manifest"], t_start, c_start)
    return SweepResult(_ordered(tables, order), _ordered(masses, order), manifest, grid, ran)


def _write_manifest(manifest: dict, path: Path, t_start: float, c_start: float) -> None:
    chunks = manifest["chunks"].values()
    manifest["totals"] = {
        "compile_seconds": float(sum(c["compile_seconds"] for c in chunks)),
        "run_seconds": float(sum(c["run_seconds"] for c in chunks)),
        "wall_seconds_chunks": float(sum(c["wall_seconds"] for c in chunks)),
        "programs_compiled": int(sum(c["programs_compiled"] for c in chunks)),
        "proxy_fit_seconds": manifest["proxy_fit_seconds"],
        "wall_seconds_this_call": time.perf_counter() - t_start,
        "cpu_seconds_this_call": time.process_time() - c_start,
        # Over every call that produced these results (earlier ones when resumed).
        "wall_seconds_all_calls": float(sum(c["wall_seconds"] for c in manifest["calls"])),
    }
    pieces.atomic_write_text(path, json.dumps(manifest, indent=1))
