"""Bits across machines: runs equal tables computed on another x86-64 machine, and the ISA ceiling.

``tests/data/reference_runs.npz`` holds a few runs of each policy kind computed
with the AVX2 ceiling (modeseek._xla). Any x86-64 machine with AVX2 and the
same jax/jaxlib must reproduce them bit for bit; with other versions the
comparison is skipped (XLA's code generation changes between releases).
Regenerate after a deliberate change of the numerics with
``python tests/test_machine_reference.py``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TABLES = Path(__file__).with_name("data") / "reference_runs.npz"

BANDIT = {
    "reinforce_on_policy": dict(loss="reinforce", sampling="on_policy", num_samples=16),
    "dpo_on_policy": dict(loss="dpo", sampling="on_policy"),
    "reverse_kl_exact": dict(loss="reverse_kl", sampling="exact"),
    "best_of_n_offline": dict(loss="best_of_n", sampling="offline", negative="worst"),
    "mlp_reinforce": dict(loss="reinforce", sampling="on_policy", policy="mlp", num_contexts=2, num_eval_contexts=3, sft_steps=5),
}
SEQUENCE = {
    "factorised_reinforce": dict(loss="reinforce", policy="factorised"),
    "transformer_reinforce": dict(loss="reinforce", policy="transformer", layers=1, heads=1, embed=8, sft_steps=3, num_eval_contexts=2, eval_samples=2),
}


def compute() -> dict[str, np.ndarray]:
    import modeseek as ms

    far = ms.paper_bandit("far")
    out = {}
    for name, kw in BANDIT.items():
        t = ms.run(far, steps=40, seeds=3, key=2026, **kw)
        out[f"{name}/expected_reward"] = t.metrics["expected_reward"]
        out[f"{name}/final_probs"] = t.final_probs
    seq = ms.sequences.paper_sequence_bandit("far", vocab=6, length=3)
    for name, kw in SEQUENCE.items():
        t = ms.run(seq, steps=6, seeds=2, key=2026, num_contexts=2, num_samples=4, **kw)
        out[f"{name}/expected_reward"] = t.metrics["expected_reward"]
        out[f"{name}/final_marginals"] = t.final_probs
    return out


def _recorded():
    with np.load(TABLES) as f:
        tables = {k: f[k] for k in f.files if k != "provenance"}
        prov = json.loads(str(f["provenance"]))
    return tables, prov


def test_runs_equal_the_committed_tables_bit_for_bit():
    from modeseek import _xla

    tables, prov = _recorded()
    here = _xla.provenance()
    if platform.machine().lower() not in ("x86_64", "amd64") or "avx2" not in here["cpu_flags"]:
        pytest.skip(f"the tables are for x86-64 with AVX2; this is {platform.machine()} with {here['cpu_flags']}")
    for pkg in ("jax", "jaxlib"):
        if here["versions"][pkg] != prov["versions"][pkg]:
            pytest.skip(f"{pkg} {here['versions'][pkg]} here, {prov['versions'][pkg]} in the tables")
    assert here["cpu_isa_ceiling"] == prov["cpu_isa_ceiling"] == "AVX2"
    got = compute()
    assert got.keys() == tables.keys()
    for name in tables:
        np.testing.assert_array_equal(got[name], tables[name], err_msg=f"{name} differs from the tables made on {prov['cpu_flags']}")


def _isa_in_subprocess(env_extra: dict, code: str = "") -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "MODESEEK_CPU_ISA")}
    env.update(env_extra)
    prog = code + "import os, json, modeseek._xla as x; print(json.dumps([x.cpu_isa(), os.environ.get('XLA_FLAGS', '')]))"
    out = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, env=env, timeout=120, check=True)
    isa, flags = json.loads(out.stdout.strip().splitlines()[-1])
    return {"isa": isa, "flags": flags}


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the default ceiling applies to x86-64")
def test_importing_modeseek_sets_the_avx2_ceiling_before_xla_starts():
    assert _isa_in_subprocess({}) == {"isa": "AVX2", "flags": "--xla_cpu_max_isa=AVX2"}
    # Other XLA flags are kept; a ceiling the user gave is respected.
    assert _isa_in_subprocess({"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})["flags"] == ("--xla_force_host_platform_device_count=2 --xla_cpu_max_isa=AVX2")
    assert _isa_in_subprocess({"XLA_FLAGS": "--xla_cpu_max_isa=SSE4_2"})["isa"] == "SSE4_2"
    assert _isa_in_subprocess({"MODESEEK_CPU_ISA": "native"}) == {"isa": "native", "flags": ""}
    # Too late once XLA's backend has started: recorded as such, not claimed.
    late = _isa_in_subprocess({}, "import jax; jax.devices(); ")
    assert late["isa"].startswith("native (") and late["flags"] == ""


def test_a_bad_isa_setting_is_refused_in_one_line():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["MODESEEK_CPU_ISA"] = "avx9"
    out = subprocess.run([sys.executable, "-c", "import modeseek"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode != 0 and "MODESEEK_CPU_ISA='avx9' is invalid; expected one of" in out.stderr


def test_provenance_records_what_fixes_the_bits():
    from modeseek import _xla

    prov = _xla.provenance()
    assert {"versions", "compiler_options", "cpu_isa_ceiling", "cpu_flags", "machine"} <= prov.keys()
    assert prov["versions"]["jax"] and prov["compiler_options"]["xla_backend_optimization_level"] == 1


if __name__ == "__main__":
    from modeseek import _xla

    TABLES.parent.mkdir(exist_ok=True)
    tmp = TABLES.with_suffix(".tmp.npz")
    np.savez(tmp, provenance=json.dumps(_xla.provenance()), **compute())
    os.replace(tmp, TABLES)
    print(f"wrote {TABLES}")
