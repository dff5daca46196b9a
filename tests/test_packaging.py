"""Packaging: the lock pins every dependency, the version warning, LICENSE and CITATION.cff, the API reference, the installed wheel."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from modeseek.paper import reproduce

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)).lower()


def _pins() -> dict[str, str]:
    return {_name(m.group(1)): m.group(2) for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", LOCK.read_text(), flags=re.MULTILINE)}


def test_lock_pins_every_direct_dependency_with_hashes():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    direct = [_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]
    pins = _pins()
    missing = [n for n in direct if n not in pins]
    assert not missing, f"requirements.lock lacks {missing}; run `make lock`"
    # Every pin carries at least one hash, or `pip install --require-hashes` refuses the file.
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", LOCK.read_text().split("\n\n", 1)[-1])
    unhashed = [b.split()[0] for b in blocks if "==" in b.split()[0] and "--hash=sha256:" not in b]
    assert not unhashed, f"pins without hashes: {unhashed}"
    # The CI machine reaches only the public registry: no local index or wheel folder may be recorded.
    options = [line for line in LOCK.read_text().splitlines() if line.startswith("--")]
    assert not options, f"requirements.lock names package sources: {options}"
    assert tuple(int(x) for x in pins["jax"].split(".")[:3]) <= (0, 10, 2) and pins["jax"] == pins["jaxlib"]


def test_version_mismatch_is_one_line_naming_what_differs(tmp_path):
    running = {n: importlib.metadata.version(n) for n in reproduce.PINNED}
    same = tmp_path / "same.lock"
    same.write_text("".join(f"{n}=={v} \\\n    --hash=sha256:00\n" for n, v in running.items()))
    assert reproduce.version_mismatch(same) is None
    other = tmp_path / "other.lock"
    other.write_text(same.read_text().replace(f"numpy=={running['numpy']}", "numpy==1.0.0"))
    note = reproduce.version_mismatch(other)
    assert note is not None and "\n" not in note
    assert f"numpy {running['numpy']} (lock: 1.0.0)" in note and "jax " not in note
    # No lock (an installed wheel): nothing to compare against, no warning.
    assert reproduce.version_mismatch(tmp_path / "absent.lock") is None


def test_license_and_citation():
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License") and "Copyright (c) 2026 the modeseek authors" in license_text
    cff = (ROOT / "CITATION.cff").read_text()
    assert re.search(r"^cff-version: 1\.2\.0$", cff, flags=re.MULTILINE)
    refs = cff.split("\nreferences:", 1)[1]
    assert "Preference Fine-Tuning of LLMs Should Leverage Suboptimal, On-Policy Data" in refs
    assert "2404.14367" in refs and "Tajwar" in refs and "ICML 2024" in refs


def test_api_reference_builds_without_warnings(tmp_path):
    """`make docs`: pdoc over every public module; the builder exits 1 on any pdoc warning (about 10 s, so `make test` runs it)."""
    out = tmp_path / "api"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(ROOT / "docs" / "build_api.py"), str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for page in ("index.html", "modeseek.html", "modeseek/engine.html", "modeseek/losses/contrastive.html", "modeseek/phase.html", "modeseek/paper/reproduce.html"):
        assert (out / page).is_file(), f"{page} missing from the API reference"
    # The run loop's page documents its public functions, not only the module docstring.
    assert "make_train" in (out / "modeseek" / "engine.html").read_text()


def _checker(venv_site: str) -> str:
    # Runs inside the fresh venv, from outside the checkout: import every module of the installed package.
    return f"""
import importlib, json, pkgutil, sys
from pathlib import Path
import modeseek
mods = ['modeseek'] + [m.name for m in pkgutil.walk_packages(modeseek.__path__, prefix='modeseek.')]
for m in mods:
    importlib.import_module(m)
print(json.dumps({{
    'file': modeseek.__file__,
    'inside_venv': Path(modeseek.__file__).resolve().is_relative_to(Path({venv_site!r}).resolve()),
    'modules': len(mods),
    'experiments': sorted(n for n in sys.modules if n == 'experiments' or n.startswith('experiments.')),
    'py_typed': (Path(modeseek.__file__).parent / 'py.typed').is_file(),
    'version': modeseek.__version__,
}}))
"""


@pytest.mark.slow
def test_installed_wheel_imports_outside_the_checkout(tmp_path):
    """Build the wheel, install it with no dependencies into a fresh venv that sees this environment's packages, import every module."""
    import json
    import sysconfig
    import venv

    # Build from a copy, so that the checkout gets no build/ or .egg-info folders.
    src = tmp_path / "src"
    shutil.copytree(ROOT / "modeseek", src / "modeseek", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_FIND_LINKS")}
    # No build isolation: the build backend comes from this environment (the lock pins it), so no index is needed.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path / "dist"), str(src)],
        check=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    wheels = list((tmp_path / "dist").glob("modeseek-*.whl"))
    assert len(wheels) == 1, wheels
    target = tmp_path / "venv"
    venv.create(target, with_pip=False)
    python = target / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], check=True, capture_output=True, text=True).stdout.strip()
    # The dependencies come from this environment, added after the fresh venv's own site-packages.
    (Path(site) / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", site, str(wheels[0])], check=True, env=env, timeout=600)
    run = subprocess.run([str(python), "-c", _checker(site)], capture_output=True, text=True, env={**env, "MPLBACKEND": "Agg"}, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["inside_venv"], f"imported {found['file']}, not the installed wheel"
    assert found["experiments"] == [], f"the installed package imports {found['experiments']}"
    assert found["py_typed"], "package data py.typed missing from the wheel"
    assert found["version"] == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert found["modules"] > 40
