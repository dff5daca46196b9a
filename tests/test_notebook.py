"""The exploration notebook: its .ipynb matches the jupytext script and it runs end to end in smoke mode."""

from __future__ import annotations

from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "notebooks" / "explore.py"
NOTEBOOK = ROOT / "notebooks" / "explore.ipynb"


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def test_ipynb_is_in_sync_with_script():
    """Regenerate with `jupytext --sync notebooks/explore.py` after editing the script."""
    script = jupytext.read(SCRIPT)
    notebook = jupytext.read(NOTEBOOK)
    assert _cells(notebook) == _cells(script), "notebooks/explore.ipynb is out of date; run `jupytext --sync notebooks/explore.py`"
    # The notebook must say how it is paired, so `jupytext --sync` keeps both files.
    assert "py:percent" in notebook.metadata.get("jupytext", {}).get("formats", "")


def test_notebook_runs_in_smoke_mode(tmp_path, monkeypatch):
    """Execute the committed .ipynb in a fresh kernel with MODESEEK_SMOKE=1; every cell must run."""
    monkeypatch.setenv("MODESEEK_SMOKE", "1")
    # The kernel's inline backend captures the figures; `make test` exports MPLBACKEND=Agg, which would bypass it.
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = jupytext.read(NOTEBOOK)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "stream")
    # The smoke flag reached the kernel, and the comparison printed both algorithms' final rewards.
    assert "smoke=True" in outputs
    assert "offline best-of-N" in outputs and "on-policy REINFORCE" in outputs
    # The atlas cell built its (rarity, coverage) cell and printed what it achieved.
    assert "rarity" in outputs and "coverage" in outputs
    figures = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    assert figures >= 4, f"expected the reference, film-strip, comparison and atlas-cell figures; got {figures} images"


def test_committed_notebook_has_its_outputs():
    """`make figures` executes the notebook at its normal budget and commits it with outputs; the plots as PNG, the file small."""
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "some code cells were not executed; run `make figures`"
    printed = "".join(o.get("text", "") for c in code for o in c.get("outputs", []) if o.get("output_type") == "stream")
    assert "smoke=False" in printed, "the committed outputs come from the smoke budget"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors[0].get("evalue")
    images = [o for c in code for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 4
    assert NOTEBOOK.stat().st_size < 2_000_000
