"""Chunked, resumable results: sweeps at scale, and any work cut into chunk jobs.

The core runs a list of chunk jobs (:class:`Chunks`). Job ``i`` returns one or
more tables; each is written atomically to ``chunks/TABLE-NNNNNN.parquet``,
whose footer carries the work's digest, the chunk index and the chunk's facts
(timings, host, versions). :func:`run_chunks` runs the chunks not on disk yet,
:func:`merge` concatenates each table's chunk files into its merged file, and
``manifest.json`` (:func:`modeseek._files.write_manifest`) records the work,
the provenance and every chunk. Two kinds of work use it: a :class:`SweepSpec`
(``modeseek sweep`` / ``modeseek merge``) and the phase-diagram sweep
(:mod:`modeseek.phase.sweep`, a chunk per family and reward model).

A :class:`SweepSpec` names everything that fixes the runs and how they are
cut into chunks of seeds; each chunk is one :func:`modeseek.run` call with
``seed_offset``, so the merged ``out_dir/sweep.parquet`` is, bit for bit, the table
``modeseek.run(..., seeds=spec.seeds).to_dataframe()`` would have given.

Layout of a sweep's ``out_dir``::

    manifest.json          spec, provenance, per-chunk wall / compile / run seconds
    chunks/chunk-000003.parquet   seeds [3c, 4c) of every grid point, c = chunk_seeds
    sweep.parquet          the merged table (after merge)

Choices, and why:

* Every chunk of a sweep runs the same compiled program: the last chunk, when
  smaller, is padded with the seeds that follow (computed, then dropped); a
  tail chunk of another size would compile a second program.
* A chunk counts as done only if the footer of each of its tables reads back
  with the work's digest, its index and its row groups; the temporary file of
  an interrupted write, or a damaged file, is ignored and the chunk redone.
* Each chunk table holds ``Chunks.groups`` row groups (a sweep: one per grid
  point), so the merge streams: for each group, the chunks' row groups in
  chunk order, one at a time, whatever the size of the whole table.
* Several processes (hosts) join JAX's distributed runtime
  (:func:`jax.distributed.initialize`); process ``p`` of ``n`` runs the chunks
  ``i`` with ``i % n == p`` on its local devices; the processes check that
  they run the same work and wait for each other (:class:`_Peers`), then
  process 0 merges. Without a shared folder, copy every host's ``chunks/``
  into one and run :func:`merge` (``modeseek merge DIR``).
* Within a process, ``workers`` threads may run chunks concurrently (XLA
  compiles and runs outside the Python lock); the chunks of one lane run in
  order on one thread, so that the lane's compiled program is reused.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeseek import _files

if TYPE_CHECKING:
    import pyarrow as pa

    from modeseek.problems import Problem
    from modeseek.sequences.problems import SequenceProblem

__all__ = ["SweepSpec", "Chunks", "SweepResult", "SweepError", "run_sweep", "run_chunks", "merge", "chunk_files", "MERGED", "MANIFEST"]

MANIFEST = "manifest.json"
MERGED = "sweep.parquet"
CHUNKS = "chunks"
_META_KEY = b"modeseek.sweep"


#: Token-sequence presets (the paper's combinatorial bandit, L = 9 tokens over 100): a spec
#: of these runs sequence policies (options policy="factorised", "bigram" or "transformer").
SEQUENCE_PRESETS = ("sequence_far", "sequence_near")


def presets() -> tuple[str, ...]:
    """Problem names a spec may use: the bandit presets, then the sequence ones."""
    from modeseek import problems

    return problems.presets() + SEQUENCE_PRESETS


def get_problem(name: str) -> Problem | SequenceProblem:
    """The Problem or SequenceProblem behind a preset name."""
    from modeseek import _checks, problems
    from modeseek.sequences.problems import paper_sequence_bandit

    _checks.choice("problem", name, presets())
    return paper_sequence_bandit(name.split("_", 1)[1]) if name in SEQUENCE_PRESETS else problems.get(name)


class SweepError(RuntimeError):
    """A sweep folder or run that cannot proceed (missing or foreign chunks, runtime failures)."""


@dataclasses.dataclass(frozen=True)
class SweepSpec:
    """What a sweep computes and how it is cut into chunks of seeds.

    Attributes:
      loss: a name from ``modeseek.losses.names()``.
      sampling: "offline", "on_policy", "exact" or "exact_offline".
      problems: preset names (:func:`presets`: bandit presets and the token-sequence
        ones, which need a sequence ``policy`` option); several sweep
        the problem as the grid's first axis, as a list of Problems does in
        :func:`modeseek.run`.
      steps: gradient steps per run.
      seeds: total independent runs per grid point; seed ``i`` uses
        ``fold_in(key, i)``.
      chunk_seeds: seeds per chunk (one ``modeseek.run`` call covers these seeds
        of every grid point: ``chunk_seeds x grid points`` runs). Capped at ``seeds``.
      key: integer PRNG seed.
      options: fixed options passed to :func:`modeseek.run`: static ones (RunConfig
        fields such as num_samples, reuse, policy, negative) and traced
        hyperparameters held at one value (e.g. ``beta=0.1``).
      grid: traced hyperparameter name -> values (HyperParams fields); several
        names form an outer-product grid in the order given, exactly as 1-D
        arrays passed to :func:`modeseek.run`. Changing the values never recompiles.
      paired: names of swept axes ("problem" or grid names) to zip instead of
        crossing, as ``modeseek.run(paired=...)``: equal numbers of values,
        one grid axis.

    Mappings are stored as tuples of pairs so that the spec stays hashable and
    the grid keeps its order.
    """

    loss: str
    sampling: str = "on_policy"
    problems: tuple[str, ...] = ("far",)
    steps: int = 500
    seeds: int = 1024
    chunk_seeds: int = 512
    key: int = 0
    options: Any = ()
    grid: Any = ()
    paired: Any = ()

    def __post_init__(self) -> None:
        from modeseek import _checks, engine, losses

        object.__setattr__(self, "problems", (self.problems,) if isinstance(self.problems, str) else tuple(self.problems))
        object.__setattr__(self, "options", tuple((str(k), _plain(v)) for k, v in dict(self.options).items()))
        object.__setattr__(self, "grid", tuple((str(k), _numbers(k, v)) for k, v in dict(self.grid).items()))
        if isinstance(self.paired, str):
            raise ValueError(f"paired={self.paired!r} is a single name; expected a sequence of names, e.g. ('beta', 'learning_rate')")
        object.__setattr__(self, "paired", tuple(str(n) for n in self.paired))

        losses.get(self.loss)
        _checks.choice("sampling", self.sampling, engine.SAMPLINGS)
        if not self.problems:
            raise ValueError("problems is empty; expected at least one preset name")
        for name in self.problems:
            _checks.choice("problem", name, presets())
        if len({n in SEQUENCE_PRESETS for n in self.problems}) > 1:
            raise ValueError(f"problems={list(self.problems)} mixes bandit and sequence presets; expected presets of one kind")
        if len(set(self.problems)) != len(self.problems):
            raise ValueError(f"problems={list(self.problems)} repeats a name; expected distinct presets")
        for name in ("steps", "seeds", "chunk_seeds"):
            _checks.integer(name, getattr(self, name))
        _checks.integer("key", self.key, 0)
        # modeseek.run's static options, and eval_every, which it takes as a keyword.
        static = engine._STATIC_FIELDS | {"eval_every"}
        traced = [f.name for f in dataclasses.fields(engine.HyperParams)]
        for name, value in self.options:
            if name not in static and name not in traced:
                raise ValueError(f"option {name!r} is not valid; expected one of {', '.join(sorted(static | set(traced)))}")
            if isinstance(value, (list, tuple)):
                raise ValueError(f"option {name}={value!r} has several values; put swept values in grid")
            if value is not None and not isinstance(value, (str, int, float, bool)):
                raise ValueError(f"option {name}={value!r} is invalid; expected a number, a string, true/false or None")
        for name, values in self.grid:
            if name not in traced:
                raise ValueError(f"grid name {name!r} is not a traced hyperparameter; expected one of {', '.join(traced)}")
            if name in dict(self.options):
                raise ValueError(f"{name!r} is both an option and a grid axis; expected one of the two")
            if not values:
                raise ValueError(f"grid {name!r} has no values; expected one or more numbers")
            if not all(math.isfinite(x) for x in values):
                raise ValueError(f"grid {name}={list(values)} has a non-finite value; expected finite numbers")
        losses.check_options(self.loss, dict(self.options), dict(self.grid))
        self._axes()  # validates paired

    def _swept(self) -> dict:
        """The swept axes in modeseek.run's order: the problem first, then the grid's names."""
        swept = {"problem": self.problems} if len(self.problems) > 1 else {}
        swept.update({name: values for name, values in self.grid if len(values) > 1})
        return swept

    def _axes(self) -> tuple[tuple[str, ...], ...]:
        from modeseek.engine import _grid_axes

        return _grid_axes(self._swept(), self.paired)

    # ------------------------------------------------------------------ derived

    @property
    def grid_points(self) -> int:
        """Number of grid points (problems x swept values, paired axes counted once)."""
        swept = self._swept()
        return math.prod(len(swept[names[0]]) for names in self._axes())

    @property
    def chunk_size(self) -> int:
        """Seeds per chunk as run (``chunk_seeds`` capped at ``seeds``)."""
        return min(self.chunk_seeds, self.seeds)

    @property
    def num_chunks(self) -> int:
        """Number of chunks covering the seeds."""
        return -(-self.seeds // self.chunk_size)

    def chunk_seed_range(self, index: int) -> tuple[int, int]:
        """Seeds [start, stop) of chunk ``index``."""
        start = index * self.chunk_size
        return start, min(start + self.chunk_size, self.seeds)

    def to_dict(self) -> dict:
        """A JSON-ready dict; the grid is a list of [name, values] pairs to keep its order."""
        d = dataclasses.asdict(self)
        d.update(problems=list(self.problems), options=dict(self.options), grid=[[n, list(v)] for n, v in self.grid], paired=list(self.paired))
        if not self.paired:
            del d["paired"]  # so that specs written before the option keep their digest
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SweepSpec:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["problems"] = tuple(d["problems"])
        d["grid"] = {name: tuple(values) for name, values in d.get("grid", [])}
        d["paired"] = tuple(d.get("paired", ()))
        return cls(**d)

    @property
    def digest(self) -> str:
        """A digest of :meth:`to_dict`: chunk files carry it, so files of another sweep are never mixed in."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def run_kwargs(self) -> dict:
        """Keyword arguments of :func:`modeseek.run` for this spec (without seeds and seed_offset)."""
        import numpy as np

        probs = [get_problem(n) for n in self.problems]
        kwargs: dict[str, Any] = dict(loss=self.loss, sampling=self.sampling, steps=self.steps, key=self.key)
        kwargs.update(dict(self.options))
        for name, values in self.grid:
            kwargs[name] = values[0] if len(values) == 1 else np.asarray(values)
        if self.paired:
            kwargs["paired"] = self.paired
        return {"problem": probs if len(probs) > 1 else probs[0], **kwargs}

    def chunks(self) -> Chunks:
        """The sweep as chunk jobs for :func:`run_chunks`: chunk ``i`` runs the seeds :meth:`chunk_seed_range` (i) of every grid point."""
        n, runs = self.num_chunks, self.chunk_size * self.grid_points
        return Chunks(
            spec=self.to_dict(),
            digest=self.digest,
            jobs=[functools.partial(_seed_chunk, self, i) for i in range(n)],
            merged={"chunk": MERGED},
            labels=[f"seeds {a}-{b - 1}" for a, b in map(self.chunk_seed_range, range(n))],
            runs=[runs] * n,
            groups=self.grid_points,
            info={"chunk_size": self.chunk_size, "grid_points": self.grid_points, "runs_per_chunk": runs, "rows_per_full_chunk": runs * (self.steps + 1)},
        )


def _numbers(name: str, v: object) -> tuple[float, ...]:
    """Grid values as a tuple of floats (a scalar is one value)."""
    import numpy as np

    try:
        arr = np.asarray(v, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise ValueError(f"grid {name}={v!r} is invalid; expected numbers") from None
    return tuple(float(x) for x in arr)


def _plain(v: Any) -> Any:
    """Option values as plain JSON types (NumPy scalars from callers become Python ones)."""
    if isinstance(v, (list, tuple)):
        return tuple(v)
    return v.item() if hasattr(v, "item") else v


@dataclasses.dataclass(frozen=True)
class Chunks:
    """Work cut into chunk jobs: the unit of resume, of distribution over processes, and of merge.

    Attributes:
      spec: JSON-ready description of the work (the manifest's "spec").
      digest: identifies the work; every chunk file carries it, so files of
        other work are never mixed in.
      jobs: ``jobs[i]()`` computes chunk ``i``: ``(tables, facts)``, table
        name -> ``pyarrow.Table`` (one per name of ``merged``) and a JSON-ready
        dict for the chunk files and the manifest.
      merged: table name -> its merged file, relative to the folder.
      labels: per chunk, what it covers, for messages (e.g. "seeds 4-7").
      runs: per chunk, the runs it computes (progress bar, SweepResult).
      groups: row groups per chunk table; the merge writes group ``g`` of every
        chunk for each ``g`` in turn (1: chunk after chunk).
      lanes: per chunk, a key: with several workers, the chunks of a lane run
        in order on one thread (None: a lane per chunk).
      info: extra fields for the manifest.
    """

    spec: dict
    digest: str
    jobs: Sequence[Callable[[], tuple[dict, dict]]]
    merged: Mapping[str, str]
    labels: Sequence[str]
    runs: Sequence[int]
    groups: int = 1
    lanes: Sequence[Hashable] | None = None
    info: dict = dataclasses.field(default_factory=dict)

    @property
    def num_chunks(self) -> int:
        return len(self.labels)

    def describe_missing(self, missing: Sequence[int]) -> str:
        shown = ", ".join(f"{i} ({self.labels[i]})" for i in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        return f"{len(missing)} of {self.num_chunks} chunks missing: chunk {shown}{more}"


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """What one process did.

    Attributes:
      out_dir: the sweep folder.
      computed: chunk indices this process ran now.
      skipped: chunk indices of this process found complete on disk.
      process_id, process_count: this process's place in the runtime.
      merged: path of the (first) merged table, if this process wrote it.
      wall_seconds: wall time of this process's chunks.
      runs: runs computed now (padding included).
    """

    out_dir: Path
    computed: tuple[int, ...]
    skipped: tuple[int, ...]
    process_id: int
    process_count: int
    merged: Path | None
    wall_seconds: float
    runs: int


# ----------------------------------------------------------------------------- files


def chunk_path(out_dir: Path, index: int, table: str = "chunk") -> Path:
    """File of table ``table`` of chunk ``index``."""
    return Path(out_dir) / CHUNKS / f"{table}-{index:06d}.parquet"


def chunk_files(out_dir: Path) -> list[Path]:
    """Chunk files present in ``out_dir/chunks`` (temporary files of unfinished writes excluded)."""
    d = Path(out_dir) / CHUNKS
    return sorted(p for p in d.glob("*.parquet") if not p.name.startswith(".")) if d.is_dir() else []


def _chunk_meta(path: Path) -> dict | None:
    """The work's metadata from a chunk file's footer (with its "_row_groups"), or None if the file cannot be read."""
    import pyarrow.parquet as pq

    try:
        md = pq.read_metadata(path)
        meta = json.loads((md.metadata or {})[_META_KEY])
    except Exception:  # a damaged or truncated file, or not a chunk file: not done
        return None
    meta["_row_groups"] = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
    return meta


def _chunk_ok(meta: dict, work: Chunks) -> bool:
    """Whether a chunk file's footer says it is a whole table of one of ``work``'s chunks."""
    i, table = meta.get("chunk"), meta.get("table", "chunk")
    return isinstance(i, int) and 0 <= i < work.num_chunks and table in work.merged and len(meta["_row_groups"]) == work.groups


def _write_manifest(out_dir: Path, work: Chunks, chunks: Mapping[int, dict], *, processes: int, merged: bool = False) -> None:
    """Write manifest.json: the work, what is known of every chunk, the provenance (:func:`modeseek._files.write_manifest`)."""
    drop = ("spec_hash", "spec", "table")
    _files.write_manifest(
        Path(out_dir) / MANIFEST,
        {
            "spec": work.spec,
            "spec_hash": work.digest,
            **work.info,
            "num_chunks": work.num_chunks,
            "processes": processes,
            "chunks": [{k: v for k, v in chunks[i].items() if not k.startswith("_") and k not in drop} for i in sorted(chunks)],
            "missing": [i for i in range(work.num_chunks) if i not in chunks],
            "merged": list(work.merged.values()) if merged else None,
        },
    )


def _check_manifest(out_dir: Path, work: Chunks) -> None:
    """Refuse a folder that holds other work (names the differing fields)."""
    old = _files.read_manifest(Path(out_dir) / MANIFEST) or {}
    if "spec" not in old or old.get("spec_hash") == work.digest:
        return  # none, or unreadable: chunk footers still guard against mixing work
    old, new = old["spec"], work.spec
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff)
    raise ValueError(f"{str(out_dir)!r} holds another sweep ({shown}); expected the same spec to resume, or a new folder")


def _scan_chunks(out_dir: Path, work: Chunks) -> dict[int, dict]:
    """Complete chunks of ``work`` (every table on disk), by index; foreign chunk files raise."""
    found: dict[int, dict] = {}
    for path in chunk_files(out_dir):
        meta = _chunk_meta(path)
        if meta is None:
            continue
        if meta.get("spec_hash") != work.digest:
            raise ValueError(f"{str(path)!r} belongs to another sweep (spec hash {meta.get('spec_hash')}, expected {work.digest}); expected one sweep per folder")
        # Any: whatever the footer holds; _chunk_ok checks it before it is used as an index.
        i: Any = meta.get("chunk")
        table = meta.get("table", "chunk")
        if _chunk_ok(meta, work) and path == chunk_path(out_dir, i, table):
            found.setdefault(i, {})[table] = meta
    return {i: next(iter(tables.values())) for i, tables in found.items() if set(tables) == set(work.merged)}


# ----------------------------------------------------------------------------- one chunk


def _run_job(work: Chunks, index: int, out_dir: Path, *, process_id: int, process_count: int) -> dict:
    """Run chunk ``index``, write each of its tables atomically; return its metadata."""
    import pyarrow.parquet as pq

    from modeseek._xla import provenance

    t0 = time.perf_counter()
    tables, facts = work.jobs[index]()
    t1 = time.perf_counter()
    meta = {
        "spec_hash": work.digest,
        "spec": work.spec,
        "chunk": index,
        **facts,
        "runs": work.runs[index],
        "rows": {name: t.num_rows for name, t in tables.items()},
        "process_id": process_id,
        "process_count": process_count,
        "host": socket.gethostname(),
        "versions": provenance()["versions"],
        "finished_at": _files.now(),
        # The run and its tables; the write itself is a small fraction and must follow the final metadata.
        "wall_seconds": round(t1 - t0, 4),
    }
    for name, table in tables.items():
        footer = {**(table.schema.metadata or {}), _META_KEY: json.dumps({**meta, "table": name}).encode()}
        out = table.replace_schema_metadata(footer)
        size = max(1, table.num_rows // work.groups)
        _files.atomic_write(chunk_path(out_dir, index, name), lambda tmp: pq.write_table(out, tmp, row_group_size=size))
    meta["write_seconds"] = round(time.perf_counter() - t1, 4)
    return meta


def _seed_chunk(spec: SweepSpec, index: int) -> tuple[dict, dict]:
    """Chunk ``index`` of a SweepSpec: its seeds of every grid point (padded to the full chunk size, then dropped)."""
    import jax
    import pyarrow as pa

    import modeseek as ms

    start, stop = spec.chunk_seed_range(index)
    n = stop - start
    devices = jax.local_devices()
    traj = ms.run(seeds=spec.chunk_size, seed_offset=start, devices=devices, **spec.run_kwargs())
    if n < spec.chunk_size:
        # Drop the padding seeds: they only keep the compiled program the same.
        traj = dataclasses.replace(
            traj,
            metrics={k: v[..., :n, :] for k, v in traj.metrics.items()},
            final_probs=traj.final_probs[..., :n, :],
            snapshots=traj.snapshots[..., :n, :, :],
            seeds=n,
        )
    table = pa.Table.from_pandas(traj.to_dataframe(), preserve_index=False)
    facts = {
        "seed_start": start,
        "seed_stop": stop,
        "compile_seconds": round(traj.compile_seconds, 4),
        "run_seconds": round(traj.run_seconds, 4),
        "devices": [str(d) for d in devices],
    }
    return {"chunk": table}, facts


# ----------------------------------------------------------------------------- distributed runtime


def _cluster_env_present() -> bool:
    """Whether a launcher that jax.distributed.initialize() detects started several processes."""
    env = os.environ
    return bool(
        env.get("JAX_COORDINATOR_ADDRESS") or (env.get("SLURM_JOB_ID") and int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1")) or 1) > 1) or int(env.get("OMPI_COMM_WORLD_SIZE", "1") or 1) > 1
    )


def _first_line(e: BaseException) -> str:
    """The first line of an error's message, or its type's name when it has none."""
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _join_runtime(coordinator: str | None, num_processes: int | None, process_id: int | None, distributed: bool | None, init_timeout_s: float) -> tuple[int, int, bool]:
    """Join JAX's distributed runtime if asked to or if a cluster launcher is detected.

    Returns (process_id, process_count, whether this call initialised the runtime).
    """
    import jax

    if jax.distributed.is_initialized():
        return jax.process_index(), jax.process_count(), False
    # The values given, as keyword arguments of jax.distributed.initialize.
    given: dict[str, Any] = {k: v for k, v in dict(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id).items() if v is not None}
    from modeseek import _checks

    if num_processes is not None:
        _checks.integer("num_processes", num_processes)
    if process_id is not None:
        _checks.integer("process_id", process_id, 0)
    if num_processes is not None and process_id is not None and process_id >= num_processes:
        raise ValueError(f"process_id={process_id} is invalid for num_processes={num_processes}; expected 0 <= process_id < num_processes")
    if coordinator is not None:
        host, sep, port = coordinator.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"coordinator={coordinator!r} is invalid; expected HOST:PORT, e.g. 10.0.0.1:1234")
    if num_processes == 1 and coordinator is None:
        return 0, 1, False
    if given and coordinator is None and distributed is not True and not _cluster_env_present():
        raise ValueError("coordinator=None with several processes outside Slurm / Open MPI; expected HOST:PORT of process 0")
    if distributed is False or (distributed is None and not given and not _cluster_env_present()):
        return 0, 1, False
    if coordinator is not None and (host in ("localhost", "::1", "[::1]") or host.startswith("127.")):
        # A loopback coordinator serves local processes only: bind it there, not on every interface.
        given["coordinator_bind_address"] = coordinator
    try:
        jax.distributed.initialize(initialization_timeout=int(init_timeout_s), **given)
    except Exception as e:  # JAX raises ValueError or runtime errors of its own kinds
        where = coordinator or "the detected coordinator"
        raise SweepError(f"could not join JAX's distributed runtime at {where}: {_first_line(e)}") from None
    return jax.process_index(), jax.process_count(), True


class _Peers:
    """The other processes of a sweep, seen through the coordination service's key-value store.

    Each process publishes its spec digest when it starts and its status ("ok",
    or the error that stopped it) when it ends; the others poll these keys, up
    to a timeout. A failure thus stops every process at its next chunk boundary
    instead of leaving them waiting at a barrier until it times out. No device
    collective is involved, so this works on CPU hosts as on accelerators.
    """

    PREFIX = "modeseek-sweep/"

    def __init__(self, pid: int, nproc: int) -> None:
        from jax._src import distributed as _dist  # the runtime's client: its key-value store

        self.pid, self.nproc = pid, nproc
        self.client = getattr(_dist.global_state, "client", None)

    def _entries(self) -> dict[str, str]:
        if self.client is None:
            return {}
        return {k.removeprefix(self.PREFIX): v for k, v in self.client.key_value_dir_get(self.PREFIX)}

    def publish(self, what: str, value: str) -> None:
        if self.client is not None:
            self.client.key_value_set(f"{self.PREFIX}{what}/{self.pid}", value, allow_overwrite=True)

    def check(self) -> None:
        """Raise SweepError if another process reported a failure."""
        for key, value in sorted(self._entries().items()):
            what, _, p = key.rpartition("/")
            if what == "status" and value != "ok" and int(p) != self.pid:
                raise SweepError(f"stopped because process {p} failed: {value}")

    def wait_all(self, what: str, timeout_s: float) -> dict[int, str]:
        """Wait until every process has published ``what``; return process -> value."""
        if self.client is None:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"modeseek-sweep-{what}")  # no key-value store: plain barrier
            return {}
        deadline = time.monotonic() + timeout_s
        while True:
            self.check()
            got = {int(k.rpartition("/")[2]): v for k, v in self._entries().items() if k.rpartition("/")[0] == what}
            if len(got) == self.nproc:
                return got
            if time.monotonic() > deadline:
                absent = sorted(set(range(self.nproc)) - set(got))
                raise SweepError(f"timed out after {timeout_s:g} s waiting for process(es) {absent} ({what})")
            time.sleep(0.2)


# ----------------------------------------------------------------------------- running


def run_sweep(spec: SweepSpec, out_dir: str | os.PathLike, **kwargs: Any) -> SweepResult:
    """Run the chunks of ``spec`` that are not on disk yet, then merge: :func:`run_chunks` of ``spec.chunks()``."""
    if not isinstance(spec, SweepSpec):
        raise ValueError(f"spec={spec!r} is not a SweepSpec")
    return run_chunks(spec.chunks(), out_dir, **kwargs)


def run_chunks(
    work: Chunks,
    out_dir: str | os.PathLike,
    *,
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    distributed: bool | None = None,
    merge_at_end: bool = True,
    progress: bool = True,
    workers: int = 1,
    init_timeout_s: float = 300,
    barrier_timeout_s: float = 7 * 24 * 3600,
    on_chunk: Callable[[int, dict], None] | None = None,
) -> SweepResult:
    """Run the chunks of ``work`` that are not on disk yet, then merge.

    Args:
      work: the chunk jobs.
      out_dir: folder (created; must hold this work's chunks or nothing).
      coordinator: "HOST:PORT" of process 0's coordinator service.
      num_processes: processes in the sweep.
      process_id: this process's index in [0, num_processes).
      distributed: None (default) joins JAX's distributed runtime when any of
        the three above is given, or when a launcher that
        ``jax.distributed.initialize()`` detects (Slurm with several tasks,
        Open MPI, $JAX_COORDINATOR_ADDRESS) started this process, in which case
        the missing values are detected by JAX; True always calls it (for other
        detected environments, e.g. Cloud TPU); False runs alone.
      merge_at_end: write the merged tables when every chunk is done (process 0).
      progress: show a progress bar (runs/s and ETA) on stderr.
      workers: threads running chunks concurrently in this process (lanes of
        ``work`` stay on one thread each).
      init_timeout_s: how long to wait for every process to join the runtime.
      barrier_timeout_s: how long a process that finished waits for the others
        (the slowest process's remaining work must fit in it).
      on_chunk: called as ``on_chunk(index, metadata)`` after each chunk is written.

    Returns:
      A SweepResult for this process.

    Raises:
      ValueError: bad arguments, or a folder holding other work.
      SweepError: the runtime could not be joined, another process failed, or
        chunks are missing after every process finished.
    """
    from modeseek import _checks

    _checks.integer("workers", workers)
    out_dir = Path(out_dir)
    # A file in the way is refused here too ("... is a file, not a folder").
    _files.require_writable_folder(out_dir, label=f"out_dir={str(out_dir)!r}")
    # Must precede anything that initialises a JAX backend.
    pid, nproc, joined = _join_runtime(coordinator, num_processes, process_id, distributed, init_timeout_s)
    peers = _Peers(pid, nproc) if nproc > 1 else None
    try:
        try:
            if peers is not None:
                peers.publish("spec", work.digest)
                specs = peers.wait_all("spec", init_timeout_s)
                other = {p: d for p, d in specs.items() if d != work.digest}
                if other:
                    p = min(other)
                    raise SweepError(f"process {p} runs another sweep (spec {other[p]}, this process {work.digest}); expected the same options on every process")
            result = _run_chunks(work, out_dir, pid, nproc, progress, workers, on_chunk, peers)
            if peers is not None:
                peers.publish("status", "ok")
                peers.wait_all("status", barrier_timeout_s)
        except BaseException as e:
            if peers is not None:
                try:
                    peers.publish("status", f"{type(e).__name__}: {_first_line(e)}")
                except Exception:
                    pass  # the runtime itself failed; the original error says more
            raise
    finally:
        if joined:
            import jax

            jax.distributed.shutdown()
    # Merge after leaving the runtime: the others need not wait for it.
    if pid == 0:
        done = _scan_chunks(out_dir, work)
        if merge_at_end and len(done) == work.num_chunks:
            result = dataclasses.replace(result, merged=merge(out_dir, spec=work))
        else:
            _write_manifest(out_dir, work, done, processes=nproc)
            if merge_at_end:
                missing = [i for i in range(work.num_chunks) if i not in done]
                hint = "; if the hosts do not share the folder, copy every host's chunks/ into it and run `modeseek merge`" if nproc > 1 else ""
                raise SweepError(f"{str(out_dir)!r}: {work.describe_missing(missing)} after every process finished{hint}")
    return result


def _run_chunks(work: Chunks, out_dir: Path, pid: int, nproc: int, progress: bool, workers: int, on_chunk: Callable[[int, dict], None] | None, peers: _Peers | None) -> SweepResult:
    """Run this process's chunks that are not on disk yet, a lane per thread."""
    _check_manifest(out_dir, work)
    (out_dir / CHUNKS).mkdir(parents=True, exist_ok=True)
    done = _scan_chunks(out_dir, work)
    mine = [i for i in range(work.num_chunks) if i % nproc == pid]
    skipped = tuple(i for i in mine if i in done)
    lanes: dict[Hashable, list[int]] = {}
    for i in mine:
        if i not in done:
            lanes.setdefault(work.lanes[i] if work.lanes is not None else i, []).append(i)
    if pid == 0:
        _write_manifest(out_dir, work, done, processes=nproc)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        desc = "sweep" if nproc == 1 else f"sweep {pid}/{nproc}"
        bar = tqdm(total=sum(work.runs[i] for i in mine), initial=sum(work.runs[i] for i in skipped), unit="run", desc=desc, file=sys.stderr, dynamic_ncols=True)
    t0 = time.perf_counter()
    computed: list[int] = []
    lock = threading.Lock()

    def run_lane(indices: list[int]) -> None:
        for i in indices:
            if peers is not None:
                peers.check()
            meta = _run_job(work, i, out_dir, process_id=pid, process_count=nproc)
            with lock:
                done[i] = meta
                computed.append(i)
                if pid == 0:
                    _write_manifest(out_dir, work, done, processes=nproc)
                if bar is not None:
                    bar.set_postfix_str(f"chunk {i}, compile {meta.get('compile_seconds', 0):.1f} s", refresh=False)
                    bar.update(work.runs[i])
                if on_chunk is not None:
                    on_chunk(i, meta)

    try:
        if workers == 1:
            for indices in lanes.values():
                run_lane(indices)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=workers) as pool:
                for future in [pool.submit(run_lane, indices) for indices in lanes.values()]:
                    future.result()  # re-raise the first error
    finally:
        if bar is not None:
            bar.close()
    return SweepResult(
        out_dir=out_dir,
        computed=tuple(computed),
        skipped=skipped,
        process_id=pid,
        process_count=nproc,
        merged=None,
        wall_seconds=time.perf_counter() - t0,
        runs=sum(work.runs[i] for i in computed),
    )


# ----------------------------------------------------------------------------- merge


def load_spec(out_dir: str | os.PathLike) -> SweepSpec:
    """The spec recorded in ``out_dir/manifest.json``, or else in the footer of a chunk file.

    A host that is not process 0 writes no manifest, but its chunk files
    describe the sweep themselves, so chunks gathered from it can be merged.
    """
    path = Path(out_dir) / MANIFEST
    try:
        if path.exists():
            return SweepSpec.from_dict(json.loads(path.read_text())["spec"])
        for chunk in chunk_files(Path(out_dir)):
            meta = _chunk_meta(chunk)
            if meta is not None and "spec" in meta:
                return SweepSpec.from_dict(meta["spec"])
    except (ValueError, KeyError, TypeError) as e:
        raise SweepError(f"{str(path)!r} does not describe a sweep ({e})") from None
    raise SweepError(f"{str(out_dir)!r} has neither {MANIFEST} nor chunk files; expected a folder written by modeseek sweep")


def merge(out_dir: str | os.PathLike, *, spec: SweepSpec | Chunks | None = None) -> Path:
    """Concatenate the chunk files of each table of the work in ``out_dir`` into its merged file.

    For a sweep, ``out_dir/sweep.parquet``: its rows are ordered as
    :meth:`modeseek.Trajectory.to_dataframe` orders them for one run of all
    seeds (grid point, then seed, then step), so the table equals that of the
    unsplit sweep. Each merged file is streamed and written atomically.

    Args:
      out_dir: the folder (chunk files from every host copied into ``chunks/``).
      spec: the SweepSpec or Chunks (default: the SweepSpec read from the manifest).

    Returns:
      The path of the first table's merged file.

    Raises:
      SweepError: a chunk is missing, present twice, incomplete or from other work.
    """
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    spec = spec or load_spec(out_dir)
    work = spec.chunks() if isinstance(spec, SweepSpec) else spec
    files: dict[tuple[str, int], list[Path]] = {}
    metas: dict[int, dict] = {}
    for path in chunk_files(out_dir):
        meta = _chunk_meta(path)
        if meta is None:
            raise SweepError(f"{str(path)!r} is not a readable chunk file of a sweep; remove it (a rerun of the sweep recomputes the chunk)")
        if meta.get("spec_hash") != work.digest:
            raise SweepError(f"{str(path)!r} belongs to another sweep (spec hash {meta.get('spec_hash')}, expected {work.digest})")
        # Any: whatever the footer holds; _chunk_ok checks it before it is used as an index.
        idx: Any = meta.get("chunk")
        table = meta.get("table", "chunk")
        if not _chunk_ok(meta, work):
            raise SweepError(
                f"{str(path)!r} (chunk {idx!r}, table {table!r}, row groups {meta['_row_groups']}) is incomplete; expected chunks 0..{work.num_chunks - 1} of {list(work.merged)} in {work.groups} row group(s)"
            )
        files.setdefault((table, idx), []).append(path)
        metas[idx] = meta
    dup = {k: ps for k, ps in files.items() if len(ps) > 1}
    if dup:
        (_, i), ps = sorted(dup.items())[0]
        raise SweepError(f"chunk {i} is present {len(ps)} times ({', '.join(p.name for p in ps)}); expected each chunk once")
    missing = [i for i in range(work.num_chunks) if any((t, i) not in files for t in work.merged)]
    if missing:
        raise SweepError(f"{str(out_dir)!r}: {work.describe_missing(missing)}; rerun modeseek sweep with the same options and --out to compute them")

    for table, name in work.merged.items():
        paths = [files[table, i][0] for i in range(work.num_chunks)]
        first = pq.ParquetFile(paths[0])
        schema_meta = {k: v for k, v in (first.schema_arrow.metadata or {}).items() if k != _META_KEY}
        schema_meta[_META_KEY] = json.dumps({"spec_hash": work.digest, "merged": True, "num_chunks": work.num_chunks}).encode()
        schema = first.schema_arrow.with_metadata(schema_meta)

        def write(tmp: str, paths: list[Path] = paths, schema: pa.Schema = schema, schema_meta: dict[bytes, bytes] = schema_meta) -> None:
            with pq.ParquetWriter(tmp, schema) as writer:
                for g in range(work.groups):
                    for path in paths:
                        part = pq.ParquetFile(path).read_row_group(g)
                        if not part.schema.equals(schema, check_metadata=False):
                            raise SweepError(f"{str(path)!r} has columns {part.schema.names}; expected {schema.names}")
                        writer.write_table(part.replace_schema_metadata(schema_meta))

        _files.atomic_write(os.path.normpath(out_dir / name), write)
    procs = max((m.get("process_count", 1) for m in metas.values()), default=1)
    _write_manifest(out_dir, work, metas, processes=procs, merged=True)
    return Path(os.path.normpath(out_dir / next(iter(work.merged.values()))))
