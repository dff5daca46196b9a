"""Output files: a writability check before computing, atomic writes, stale temporaries, manifests.

Standard library only at import, so that the command line can call it before
importing jax: a run that cannot write its results should fail in a second,
not after the compute. (:func:`write_manifest` imports jax when called, for
the provenance stamp.)

Every output file is written by :func:`atomic_write`: to a temporary file
``.NAME.HOST-PID.XXXXXXXX.tmp`` beside ``NAME``, then renamed over it, so a
reader never sees half a file. A process killed while writing leaves its
temporary behind; the next write of ``NAME`` removes it
(:func:`remove_stale_temporaries`) when it is certainly abandoned:

* its owner ran on this host and that process id no longer exists; or
* it has not been modified for :data:`STALE_AFTER_S` seconds (for a temporary
  whose owner cannot be checked: another host of a shared folder, or one named
  before owners were recorded).

A temporary that a live process is writing right now is therefore never
removed: every writer here fills its temporary within seconds to minutes of
creating it, far within the idle limit.

Every manifest (a JSON record of what a folder of results holds and what made
it, e.g. a sweep folder of :mod:`modeseek.sweep`) is written by
:func:`write_manifest` and read back by :func:`read_manifest`.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["require_writable_folder", "atomic_write", "remove_stale_temporaries", "STALE_AFTER_S", "write_manifest", "read_manifest", "now"]

#: Version of the manifest layout (:func:`write_manifest`).
MANIFEST_FORMAT = 2
#: Seconds without modification after which a temporary whose owner cannot be checked counts as abandoned.
STALE_AFTER_S = 3600.0


def require_writable_folder(folder: str | os.PathLike, *, label: str) -> None:
    """Raise ValueError, naming ``label``, unless files can be created in ``folder``.

    Nothing is left behind: a missing folder is not created (the writers create
    it later); its nearest existing ancestor must be a folder in which a probe
    file can be created, which is what creating the rest of the path needs.

    Args:
      folder: the folder the results go to (it need not exist yet).
      label: how the caller names the path in the message, e.g. "--out 'x.parquet'".
    """
    folder = Path(folder).absolute()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{label} cannot be written: {str(existing)!r} is a file, not a folder; expected a path in a writable folder")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".modeseek-probe.", suffix=".tmp")
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ValueError(f"{label} cannot be written: no file can be created in {str(existing)!r} ({reason}); expected a path in a writable folder") from None
    os.close(fd)
    os.unlink(probe)


def _host() -> str:
    # Dots separate the parts of a temporary's name, and '-' the host from the pid.
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:40] or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def remove_stale_temporaries(path: str | os.PathLike, *, stale_after_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the abandoned temporaries of ``path`` (see the module docstring); return those removed."""
    path = Path(path)
    prefix, host, now = f".{path.name}.", _host(), time.time()
    removed = []
    for tmp in path.parent.glob(glob.escape(prefix) + "*.tmp"):
        middle = tmp.name[len(prefix) : -len(".tmp")].split(".")
        if len(middle) == 2:
            owner_host, _, pid = middle[0].rpartition("-")
            dead = owner_host == host and pid.isdigit() and not _alive(int(pid))
        elif len(middle) == 1:
            dead = False  # named before owners were recorded: the age decides
        else:
            continue  # a temporary of another file whose name starts with this one's
        try:
            if dead or now - tmp.stat().st_mtime > stale_after_s:
                tmp.unlink()
                removed.append(tmp)
        except FileNotFoundError:
            pass  # its owner renamed or removed it meanwhile
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[str], object]) -> None:
    """Call ``write(tmp)`` for a temporary file beside ``path``, then rename it into place.

    The parent folder is created if needed, abandoned temporaries of ``path``
    are removed first, and the file gets the usual permissions (0666 less the
    umask) rather than the private ones of a temporary file, since other users
    of a shared folder may need to read it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_host()}-{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)  # reading the umask means setting it: put it back at once
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def now() -> str:
    """The current UTC time, ISO 8601 to the second (the time stamp of manifests and chunk files)."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def write_manifest(path: str | os.PathLike, fields: dict) -> dict:
    """Write a manifest atomically: ``fields`` stamped with the format, :func:`modeseek._xla.provenance` and the time; return it."""
    from modeseek._xla import provenance

    manifest = {"format": MANIFEST_FORMAT, **fields, "provenance": provenance(), "updated": now()}
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(manifest, indent=1) + "\n"))
    return manifest


def read_manifest(path: str | os.PathLike) -> dict | None:
    """The manifest at ``path``, or None if it is missing or not a JSON object."""
    try:
        manifest = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None
