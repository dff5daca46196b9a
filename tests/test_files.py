"""Output files: temporaries left by killed writers are removed by the next write, live ones are not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modeseek import _files, pieces

ROOT = Path(__file__).resolve().parents[1]

# A writer that stops for good once its temporary is written, before the rename: the state a kill leaves.
WRITER = """
import os, sys, time
import modeseek.pieces as c

def hang(*args):
    print("ready", flush=True)
    time.sleep(300)

os.replace = hang
kind, path = sys.argv[1], sys.argv[2]
if kind == "text":
    c.atomic_write_text(path, "partial")
elif kind == "table":
    import pandas as pd
    c.save_table(pd.DataFrame({"a": [1]}), path)
else:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    c.save_figure(plt.figure(), path)
"""


def _write(kind: str, path: Path) -> None:
    if kind == "text":
        pieces.atomic_write_text(path, "final")
    elif kind == "table":
        import pandas as pd

        pieces.save_table(pd.DataFrame({"a": [2]}), path)
    else:
        import matplotlib.pyplot as plt

        pieces.save_figure(plt.figure(), path)


def _start_writer(kind: str, path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, kind, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _temporaries(path: Path) -> set[str]:
    return {p.name for p in path.parent.glob(f".{path.name}.*.tmp")}


@pytest.mark.parametrize("kind, name", [("text", "CLAIMS.md"), ("table", "sweep.parquet"), ("figure", "filmstrip_far.png")])
def test_temporary_of_a_killed_writer_is_removed_by_the_next_write(kind, name, tmp_path):
    path = tmp_path / name
    killed = _start_writer(kind, path)
    left = _temporaries(path)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert len(left) == 1, left
    live = _start_writer(kind, path)
    try:
        writing = _temporaries(path) - left
        _write(kind, path)
        # The killed writer's temporary is gone; the one a live process is writing stays.
        assert _temporaries(path) == writing
    finally:
        live.kill()
        live.wait()
    assert path.exists()


def test_old_temporaries_of_unknown_owners_are_removed_and_others_kept(tmp_path):
    path = tmp_path / "x.parquet"
    old = time.time() - _files.STALE_AFTER_S - 60
    names = {
        "legacy_old": ".x.parquet.k1ll3d.tmp",
        "legacy_fresh": ".x.parquet.fr3sh.tmp",
        "other_host_old": ".x.parquet.elsewhere-12.abc.tmp",
        "other_host_fresh": ".x.parquet.elsewhere-13.abc.tmp",
        "other_file": ".x.parquet.y.parquet.elsewhere-14.abc.tmp",
    }
    for key, n in names.items():
        (tmp_path / n).write_text("x")
        if key.endswith("old") or key == "other_file":
            os.utime(tmp_path / n, (old, old))
    removed = _files.remove_stale_temporaries(path)
    assert sorted(p.name for p in removed) == sorted([names["legacy_old"], names["other_host_old"]])
    assert _temporaries(path) == {names["legacy_fresh"], names["other_host_fresh"], names["other_file"]}
