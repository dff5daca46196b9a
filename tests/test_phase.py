"""Phase maps (modeseek.phase): equal budgets, tuning on selection seeds, the boundary, claims from data, resume, figures."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

import modeseek.phase as ph
from modeseek.phase import analysis, figures
from modeseek.phase.sweep import HP_COLUMNS, table_paths

# The smoke budget's objectives, proxy and seeds (three compiled programs: sft exact_offline,
# reinforce on_policy, reinforce exact), on a smaller grid with shorter offline and proxy fits.
TINY = dataclasses.replace(ph.budget("smoke", rarities=(0.01, 0.3), budgets=(32, 64, 160), offline_steps=5, rm_steps=20, marked=((1, 1),)), name="tiny")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("phase")
    return out, ph.sweep(TINY, out, workers=1)


def test_every_objective_spends_the_same_reward_queries(tiny):
    out, res = tiny
    t = res.table
    assert TINY.checkpoints == (2, 4, 10) and TINY.eval_every == 2 and TINY.steps == 10
    s = t[t.variant == "sampled"]
    # On-policy (oracle): the engine's own count of reward queries at each checkpoint is the budget.
    on = s[s["map"] == "oracle"]
    assert len(on) and (on.reward_queries == on.budget).all()
    # Offline: the dataset's labelled responses; map B: the proxy's dataset.
    off = s[s["map"] == "offline"]
    assert len(off) and (off.reward_queries == off.budget).all()
    rm = s[s["map"] == "rm_rbf"]
    assert len(rm) and (rm.reward_queries == rm.budget).all()
    # Datasets are nested over budgets and drawn from mu: no high-reward response at coverage 0.
    g = res.grid
    assert (g.counts.sum(-1) == np.asarray(TINY.budgets)[None, None, :, None]).all()
    assert (np.diff(g.counts, axis=2) >= 0).all()
    high = g.gold >= 0.5 * g.gold.max(-1, keepdims=True)
    assert g.counts[:, 0][np.broadcast_to(high[:, None, None, :], g.counts[:, 0].shape)].sum() == 0
    # Every (map, family, variant, cell, budget, config) has all its seeds, each with a role.
    assert set(s.role) == {"selection", "report"} and set(t[t.variant == "exact"].role) == {"exact"}
    n = s.groupby(["map", "family", "rarity_index", "coverage_index", "budget_index", "config"]).seed.nunique()
    assert (n == TINY.seeds).all()
    # The oracle map runs once per rarity (coverage does not enter with the gold reward).
    assert (on.coverage_index == -1).all()
    man = json.loads(table_paths(out)["manifest"].read_text())
    assert man["spec_hash"] == TINY.digest() and man["missing"] == [] and man["checkpoints"] == [2, 4, 10]


def test_offline_sampled_equals_the_dataset_and_exact_best_of_n_is_a_distribution(tiny):
    g = tiny[1].grid
    # The dataset's best response is the highest-reward bin it drew.
    r, c, b, s = 1, 1, 2, 0
    drawn = np.flatnonzero(g.counts[r, c, b, s])
    assert g.best_bin[r, c, b, s] == drawn[np.argmax(g.gold[r, drawn])]
    np.testing.assert_allclose(g.best_of_n.sum(-1), 1.0, atol=1e-6)
    # More draws push the exact best-of-N towards the peak.
    er = (g.best_of_n[r, c] * g.gold[r]).sum(-1)
    assert np.all(np.diff(er) > 0)


def test_pair_counts_from_bins_match_enumerated_pairs():
    from modeseek.phase.grid import pair_counts_from_bins

    bins = np.array([0, 2, 2, 1, 3, 0])
    reward = np.array([0.1, 0.5, 0.3, 0.3])
    w = np.zeros((4, 4))
    for i in range(len(bins)):
        for j in range(i + 1, len(bins)):
            a, b = bins[i], bins[j]
            if reward[a] > reward[b]:
                w[a, b] += 1
            elif reward[b] > reward[a]:
                w[b, a] += 1
    np.testing.assert_array_equal(pair_counts_from_bins(np.bincount(bins, minlength=4), reward), w)


def _fake_table(sel: dict[int, float], rep: dict[int, float]) -> pd.DataFrame:
    """One cell, two configs: per config a selection-seed value and two report-seed values."""
    rows = []
    for cfg_i in (0, 1):
        rows.append(dict(seed=0, role="selection", config=cfg_i, expected_reward=sel[cfg_i]))
        for s in (1, 2):
            rows.append(dict(seed=s, role="report", config=cfg_i, expected_reward=rep[cfg_i] + 0.01 * s))
    df = pd.DataFrame(rows)
    const = dict(map="oracle", family="reinforce", group="on_policy_rl", variant="sampled", rarity_index=0, coverage_index=-1, budget_index=0, budget=16, rarity=1e-3, coverage=np.nan)
    for k, v in const.items():
        df[k] = v
    for h in HP_COLUMNS:
        df[h] = df.config.map({0: 0.05, 1: 0.2}) if h == "learning_rate" else np.nan
    df["progress"] = df.expected_reward
    df["reward_queries"] = 16.0
    return df


def test_tuning_picks_on_selection_seeds_and_reports_fresh_ones():
    # Selection seeds favour config 0, report seeds config 1: the rule must pick 0 and report 0's report seeds.
    s = analysis.select(_fake_table({0: 0.9, 1: 0.1}, {0: 0.3, 1: 0.8}))
    assert len(s) == 1
    row = s.iloc[0]
    assert row.config == 0 and row.learning_rate == 0.05
    assert row.selection_reward == pytest.approx(0.9)
    assert row.final_reward == pytest.approx(0.315)  # mean of 0.31 and 0.32, never the selection seed's 0.9
    assert row.report_rewards == pytest.approx((0.31, 0.32))
    # And the other way round.
    assert analysis.select(_fake_table({0: 0.1, 1: 0.9}, {0: 0.8, 1: 0.3})).iloc[0].config == 1


def test_crossing_on_constructed_leads():
    rho = np.array([1e-4, 1e-3, 1e-2, 1e-1])
    # Ahead by 0.3 at 1e-3 and by 0 at 1e-2: the lead crosses the 0.02 margin at w = 0.28 / 0.3 of the
    # log-distance from 1e-3 to 1e-2, i.e. at 1e-3 * 10**(0.28 / 0.3) = 8.58e-3.
    r, kind = analysis.crossing(rho, np.array([0.5, 0.3, 0.0, 0.0]))
    assert kind == "cross" and r == pytest.approx(1e-3 * 10 ** (0.28 / 0.3), rel=1e-9)
    assert analysis.crossing(rho, np.array([0.5, 0.3, 0.1, 0.05])) == (1e-1, "always")
    r, kind = analysis.crossing(rho, np.array([0.0, -0.1, 0.01, 0.0]))
    assert kind == "never" and np.isnan(r)
    with pytest.raises(ValueError, match="ascending"):
        analysis.crossing(rho[::-1], np.zeros(4))


def test_boundary_on_a_constructed_view():
    # Two rarity columns; seeking leads by 0.4 at the rare one and trails by 0.1 at the common one.
    rows = []
    for i, rho in enumerate((1e-3, 1e-1)):
        # (family, group, side, mean reward, per-report-seed rewards)
        cov = ("best_of_n", "offline_ml", "covering", (0.1, 0.9)[i], ((0.1, 0.1), (0.9, 0.9))[i])
        seek = ("reinforce", "on_policy_rl", "seeking", (0.5, 0.8)[i], ((0.2, 0.6), (0.8, 0.8))[i])
        for fam, group, side, val, rep in (cov, seek):
            rows.append(
                dict(
                    map="oracle",
                    variant="sampled",
                    family=fam,
                    group=group,
                    side=side,
                    rarity_index=i,
                    rarity=rho,
                    coverage_index=0,
                    coverage=0.0,
                    budget_index=0,
                    budget=16,
                    final_reward=val,
                    report_rewards=rep,
                )
            )
    b = analysis.boundary(pd.DataFrame(rows))
    assert len(b) == 1
    row = b.iloc[0]
    # Mean lead 0.4 at 1e-3, -0.1 at 1e-1: crosses 0.02 at 1e-3 * 100**(0.38 / 0.5).
    assert row.kind == "cross" and row.crossing == pytest.approx(1e-3 * 100 ** (0.38 / 0.5))
    # Seed 0 leads by 0.1, seed 1 by 0.5 at the rare column (both -0.1 at the common one): the band.
    assert row.band_low == pytest.approx(1e-3 * 100 ** (0.08 / 0.2))
    assert row.band_high == pytest.approx(1e-3 * 100 ** (0.48 / 0.6))
    assert row.pairs == "reinforce/best_of_n;reinforce/best_of_n"


def test_claims_are_computed_from_the_view(tiny):
    res = tiny[1]
    view = analysis.map_view(analysis.select(res.table), TINY, res.grid.coverage)
    assert set(view["map"]) == {"oracle", "rm_rbf"} and (view.coverage_index >= 0).all()
    claims = {c.id: c for c in analysis.claims(view, TINY)}
    assert len(claims) >= 4 and all(c.evidence for c in claims.values())
    assert all(c.note for c in claims.values() if not c.passed)
    # Make the covering side unbeatable: the "seeking wins rare uncovered" claim must fail; make it hopeless: it must pass.
    rare = (view["map"] == "oracle") & (view.rarity_index == 0) & (view.coverage_index == 0) & (view.variant == "sampled")
    for value, expected in ((10.0, False), (-10.0, True)):
        v = view.copy()
        v.loc[v.rarity_index == 0, "rarity"] = 0.001  # column 0 counts as rare (<= 1.5e-3) once its rarity says so
        v.loc[rare & (v.side == "covering"), "final_reward"] = value
        out = {c.id: c for c in analysis.claims(v, TINY)}
        assert out["phase_oracle_seeking_wins_rare_uncovered"].passed is expected


def test_resume_and_digest(tiny, tmp_path):
    import shutil

    done, res = tiny
    out = tmp_path / "phase"
    shutil.copytree(done, out)
    again = ph.sweep(TINY, out, workers=1)
    assert again.ran == []
    pd.testing.assert_frame_equal(again.table, res.table)
    assert dataclasses.replace(TINY, report_seeds=3).digest() != TINY.digest()
    assert dataclasses.replace(TINY, name="other").digest() == TINY.digest()
    with pytest.raises(ValueError, match="family"):
        ph.PhaseConfig(families=("online_magic",))
    with pytest.raises(ValueError, match="coverage"):
        ph.PhaseConfig(coverages=(0.0, 1.5))
    with pytest.raises(ValueError, match="multiple of batch_size"):
        ph.PhaseConfig(budgets=(100, 1000))
    with pytest.raises(ValueError, match="increasing"):
        ph.PhaseConfig(budgets=(1600, 160))
    # The default budgets span 10x and the rarest column is 1e-4, as the maps promise.
    d = ph.BUDGETS["default"]
    assert d.budgets[-1] / d.budgets[0] >= 10 and len(d.budgets) >= 3 and min(d.rarities) == pytest.approx(1e-4)


def test_figures_render_from_the_tables(tiny, tmp_path):
    res = tiny[1]
    view = analysis.map_view(analysis.select(res.table), TINY, res.grid.coverage)
    bound = analysis.boundary(view)
    paths = [figures.maps(view, TINY, m, tmp_path / f"phase_map_{m}.png") for m in TINY.maps]
    paths += [figures.winner(view, TINY, tmp_path / "w.png"), figures.boundary(bound, TINY, tmp_path / "b.png"), figures.mass_plots(res.mass, view, TINY, tmp_path / "m.png")]
    assert all(p.exists() and p.stat().st_size > 1000 for p in paths)
    assert figures.family_order(["reinforce", "best_of_n"]) == ["best_of_n", "reinforce"]


@pytest.mark.slow
def test_smoke_piece_runs_through_the_pipeline(tmp_path):
    from modeseek.paper.reproduce import reproduce

    results = reproduce(tmp_path, smoke=True, only=["phase"], progress=False)
    ((piece, claims, secs),) = results
    assert piece.name == "phase" and len(claims) >= 4
    for name in ("phase_map_oracle.png", "phase_winner.png", "phase_boundary.png", "phase_mass.png", "phase.caption.md"):
        assert (tmp_path / name).exists()
    assert "phase" in (tmp_path / "CLAIMS.md").read_text()


def test_batch_size_is_tuned_at_equal_queries(tiny, tmp_path):
    # Two batch sizes: each spends exactly the budget's queries (B = 8 runs twice the steps), the B = 16 runs are the
    # single-batch sweep's runs bit for bit (same program, same keys), and exact versions carry no batch size.
    cfg = dataclasses.replace(TINY, families=("reinforce",), batch_sizes=(8, 16))
    t = ph.sweep(cfg, tmp_path, workers=1).table
    s = t[t.variant == "sampled"]
    assert set(s.batch_size) == {8.0, 16.0} and t[t.variant == "exact"].batch_size.isna().all()
    on = s[s["map"] == "oracle"]
    assert (on.reward_queries == on.budget).all()
    assert s.groupby(["map", "batch_size"]).config.nunique().eq(len(ph.FAMILIES["reinforce"].configs)).all()
    keys = ["map", "variant", "rarity_index", "coverage_index", "budget_index", "learning_rate", "entropy_coef", "seed"]
    old = tiny[1].table
    old = old[(old.family == "reinforce") & (old.variant == "sampled")].set_index(keys).sort_index()
    new = s[s.batch_size == 16].set_index(keys).sort_index()
    np.testing.assert_array_equal(new.expected_reward.to_numpy(), old.expected_reward.to_numpy())
    # B = 8 is a different run, not a relabelled copy.
    b8 = s[s.batch_size == 8].set_index(keys).sort_index()
    assert not np.array_equal(b8.expected_reward.to_numpy(), new.expected_reward.to_numpy())
    with pytest.raises(ValueError, match="odd"):
        ph.PhaseConfig(batch_sizes=(16, 7))
    with pytest.raises(ValueError, match="multiple of batch_size=48"):
        ph.PhaseConfig(batch_sizes=(16, 48))
