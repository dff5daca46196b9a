"""Output files: a writability check to run before computing.

Standard library only, so that the command line can call it before importing
jax: a run that cannot write its results should fail in a second, not after
the compute.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["require_writable_folder"]


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
        raise ValueError(f"{label} cannot be written: {reason} in {str(existing)!r}; expected a path in a writable folder") from None
    os.close(fd)
    os.unlink(probe)
