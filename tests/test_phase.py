"""Phase-diagram sweeps (modeseek.phase): table, manifest, resume, one program per family, analysis and figures."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

import modeseek.phase as ph
from modeseek.phase import analysis, figures
from modeseek.phase.sweep import table_paths

# Two families (one offline, one on-policy), two reward models: three chunks, two programs.
TINY = ph.PhaseConfig(
    rarities=(0.01, 0.3),
    coverages=(0.0, 1.0),
    families=("offline_ml", "on_policy_rl"),
    reward_models=("rbf", "gold"),
    seeds=2,
    steps=10,
    dataset_size=6,
    batch_size=4,
    rm_steps=20,
    record_every=5,
    marked=((1, 1),),
    name="tiny",
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("phase")
    return out, ph.sweep(TINY, out, workers=1)


def test_sweep_writes_a_tidy_table_and_a_manifest(tiny):
    out, res = tiny
    paths = table_paths(out)
    assert all(p.exists() for p in paths.values())
    table = pd.read_parquet(paths["table"])
    chunks = TINY.chunks()
    assert chunks == [("offline_ml", "data"), ("on_policy_rl", "rbf"), ("on_policy_rl", "gold")]
    # One row per chunk x rarity x coverage x seed x recorded step (0, 5, 10).
    assert len(table) == len(chunks) * 2 * 2 * 2 * 3
    assert set(table.step) == {0, 5, 10}
    for col in ("family", "reward_model", "rarity", "coverage", "seed", "expected_reward", "expected_train_reward", "mass_high_reward"):
        assert col in table.columns
    # Gold metrics everywhere; the proxy's expected reward only where a reward is queried.
    assert table.expected_reward.notna().all()
    assert table[table.family == "offline_ml"].expected_train_reward.isna().all()
    assert table[table.family == "on_policy_rl"].expected_train_reward.notna().all()
    # With the gold reward as the "proxy", the two metrics coincide.
    g = table[table.reward_model == "gold"]
    np.testing.assert_allclose(g.expected_train_reward, g.expected_reward, atol=1e-5)
    # Coverage 1 data is the reference: the table reports the achieved coverage.
    np.testing.assert_allclose(sorted(set(np.round(table.coverage, 6))), [0.0, 1.0], atol=1e-5)
    man = json.loads(paths["manifest"].read_text())
    assert man["spec_hash"] == TINY.digest() and man["missing"] == []
    assert man["spec"]["rarities"] == list(TINY.rarities)
    assert {"jax", "optax", "numpy", "modeseek"} <= set(man["provenance"]["versions"])
    assert {"compiler_options", "cpu_isa_ceiling", "cpu_flags"} <= set(man["provenance"])
    for c in man["chunks"]:
        assert {"compile_seconds", "run_seconds", "wall_seconds", "programs_compiled", "proxy_fit_seconds"} <= set(c)
    assert [(c["family"], c["reward_model"]) for c in man["chunks"]] == chunks
    # The reward models are fitted once, by the first on-policy chunk.
    assert [c["proxy_fit_seconds"] > 0 for c in man["chunks"]] == [False, True, False]
    np.testing.assert_allclose(man["rarity_achieved"], TINY.rarities, rtol=0.15)


def test_one_compiled_program_per_family(tiny):
    _, res = tiny
    chunks = {f"{c['family']}/{c['reward_model']}": c for c in res.manifest["chunks"]}
    # Rarity rows and reward models are data: only a family's first call compiles
    # (at most: another test in this process may have compiled the same program).
    assert chunks["on_policy_rl/gold"]["programs_compiled"] == 0
    assert sum(c["programs_compiled"] for c in chunks.values()) <= len(TINY.families)
    assert all(c["calls"] == len(TINY.rarities) for c in chunks.values())


def test_sweep_resumes_without_redoing_work(tiny, tmp_path):
    import shutil

    from modeseek import sweep as sweep_core

    done, res = tiny
    before = pd.read_parquet(table_paths(done)["table"])
    out = tmp_path / "phase"
    shutil.copytree(done, out)
    again = ph.sweep(TINY, out, workers=1)
    assert again.ran == []
    pd.testing.assert_frame_equal(again.table, before)
    # A sweep killed while writing chunk 2 (its table written, its mass table not) redoes only that chunk.
    folder = table_paths(out)["manifest"].parent
    sweep_core.chunk_path(folder, 2, "phase_mass").unlink()
    kept = {p: p.stat().st_mtime_ns for p in sweep_core.chunk_files(folder) if "000002" not in p.name}
    resumed = ph.sweep(TINY, out, workers=2)
    assert resumed.ran == [("on_policy_rl", "gold")]
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    pd.testing.assert_frame_equal(resumed.table, before, check_exact=True)
    pd.testing.assert_frame_equal(resumed.mass, res.mass, check_exact=True)
    assert resumed.manifest["missing"] == [] and len(resumed.manifest["chunks"]) == 3
    # Another configuration starts afresh in the same folder.
    other = ph.sweep(dataclasses.replace(TINY, key=1), out, workers=1)
    assert len(other.ran) == 3 and len(other.table) == len(before) and not other.table.equals(before)


def test_a_changed_configuration_changes_the_digest():
    assert dataclasses.replace(TINY, seeds=3).digest() != TINY.digest()
    assert dataclasses.replace(TINY, name="other").digest() == TINY.digest()
    with pytest.raises(ValueError, match="family"):
        ph.PhaseConfig(families=("online_magic",))
    with pytest.raises(ValueError, match="coverage"):
        ph.PhaseConfig(coverages=(0.0, 1.5))
    with pytest.raises(ValueError, match="marked cell"):
        ph.PhaseConfig(rarities=(0.1,), marked=((3, 0),))


def test_summary_and_claims_are_computed_from_the_table(tiny):
    _, res = tiny
    s = analysis.summarise(res.table)
    assert len(s) == len(TINY.chunks()) * 4
    last = res.table[res.table.step == TINY.steps].groupby(["family", "reward_model", "rarity_index", "coverage_index"]).expected_reward.mean()
    merged = s.set_index(["family", "reward_model", "rarity_index", "coverage_index"]).final_reward
    np.testing.assert_allclose(merged.loc[last.index].to_numpy(), last.to_numpy(), rtol=1e-6)
    # Steps to 90% is a recorded step or NaN, and progress at step 0 is 0 (the policy starts at pi_ref).
    assert s.steps_to_90.dropna().isin([0, 5, 10]).all()
    first = res.table[res.table.step == 0]
    np.testing.assert_allclose(first.expected_reward, first.ref_reward, atol=1e-5)
    claims = analysis.claims(s, TINY)
    assert claims and all(c.evidence for c in claims)
    assert all(c.note for c in claims if not c.passed)


def test_figures_render_from_the_stored_tables(tiny, tmp_path):
    _, res = tiny
    s = analysis.summarise(res.table)
    for fn, args in (
        (figures.heatmaps, (s, TINY)),
        (figures.winner, (s, TINY)),
        (figures.mass_plots, (res.mass, s, TINY)),
        (figures.reward_model_comparison, (s, TINY)),
    ):
        path = fn(*args, tmp_path / f"{fn.__name__}.png")
        assert path.exists() and path.stat().st_size > 1000
    pos = figures.preset_positions(TINY, np.asarray(sorted(s.rarity.unique())))
    # Min Length (rarity ~7.5e-5) lies left of the tiny grid, Mode Length (~0.46) right of it.
    assert pos["min_length"][0] < 0 and pos["mode_length"][0] > 1
    assert pos["skew_length"][1] == 0.0 and pos["min_length"][1] == 1.0


@pytest.mark.slow
def test_smoke_piece_runs_through_the_pipeline(tmp_path):
    from modeseek.paper.reproduce import reproduce

    results = reproduce(tmp_path, smoke=True, only=["phase"], progress=False)
    ((piece, claims, secs),) = results
    assert piece.name == "phase" and claims
    for name in ("phase_map.png", "phase_winner.png", "phase_mass.png", "phase_reward_models.png", "phase.caption.md"):
        assert (tmp_path / name).exists()
    assert "phase" in (tmp_path / "CLAIMS.md").read_text()
