"""The objective atlas: its mode-seeking index, its regimes, the sampled fallback and the piece in smoke mode."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import modeseek as ms
from modeseek import atlas, losses, metrics
from modeseek.atlas import piece
from modeseek.pieces import Claim


def _bimodal_target(k=100):
    b = np.arange(k)
    q = np.exp(-(((b - 20) / 4.0) ** 2)) + np.exp(-(((b - 70) / 4.0) ** 2))
    q = q / q.sum()
    return 0.999 * q + 0.001 / k


def test_index_sign_on_constructed_distributions():
    q = _bimodal_target()
    # Seeking: all mass on one of q's two modes (pi misses half of what q holds).
    seek = np.where(np.arange(q.size) < 45, q, 0.0)
    seek = seek / seek.sum()
    # Covering: q spread half over the uniform (pi keeps mass where q has almost none).
    cover = 0.5 * q + 0.5 / q.size
    i_seek = atlas.mode_seeking_index(*atlas.kl_pair(seek, q))
    i_cover = atlas.mode_seeking_index(*atlas.kl_pair(cover, q))
    assert i_seek > 0.5, i_seek
    assert i_cover < -0.5, i_cover
    assert atlas.mode_seeking_index(*atlas.kl_pair(q, q)) == pytest.approx(0.0, abs=1e-9)
    # Bounded by 1 in absolute value however extreme the two KLs are.
    assert -1 < atlas.mode_seeking_index(0.0, 1e6) < atlas.mode_seeking_index(1e6, 0.0) < 1


def test_index_eps_only_matters_near_the_target():
    # Far from the target eps = 0.01 nats changes the index by (F + R) / (F + R + eps): here 9 / 9.01.
    assert atlas.mode_seeking_index(3.0, 6.0) == pytest.approx((3.0 - 6.0) / 9.0, rel=2e-3)
    # At float32 resolution the plain ratio is noise; with eps it is ~0.
    assert abs(atlas.mode_seeking_index(3e-8, 9e-8)) < 1e-5
    assert atlas.mode_seeking_index(3e-8, 9e-8, eps=0.0) == pytest.approx(-0.5)


@pytest.mark.parametrize("bad", [(-0.1, 1.0), (1.0, np.nan), (1.0, np.inf)])
def test_index_refuses_bad_divergences(bad):
    with pytest.raises(ValueError, match="expected finite KL divergences"):
        atlas.mode_seeking_index(*bad)
    with pytest.raises(ValueError, match="eps"):
        atlas.mode_seeking_index(1.0, 1.0, eps=-1.0)


def test_kl_pair_matches_the_core_kl():
    rng = np.random.default_rng(0)
    for _ in range(5):
        p, q = rng.dirichlet(np.ones(30)), rng.dirichlet(np.ones(30))
        f, r = atlas.kl_pair(p, q)
        lp, lq = jnp.log(jnp.asarray(p, jnp.float32)), jnp.log(jnp.asarray(q, jnp.float32))
        # float32 sums of 30 terms of size <~ 10: 1e-4 absolute is ~100x their rounding.
        assert f == pytest.approx(float(metrics.kl(lq, lp)), abs=1e-4)
        assert r == pytest.approx(float(metrics.kl(lp, lq)), abs=1e-4)


def test_kl_pair_floors_underflowed_bins():
    q = np.full(4, 0.25)
    p = np.array([1.0, 0.0, 0.0, 0.0])
    f, r = atlas.kl_pair(p, q)
    assert np.isfinite(f) and f == pytest.approx(0.25 * np.log(0.25) + 0.75 * (np.log(0.25) - np.log(atlas.PROB_FLOOR)), rel=1e-6)
    assert r == pytest.approx(np.log(4.0), rel=1e-6)


def test_bimodal_problem_and_top_mode():
    prob = atlas.bimodal_problem()
    ref, reward = np.asarray(prob.ref_probs), np.asarray(prob.reward)
    (c1, _), (c2, _) = atlas.BIMODAL_MODES
    near1, near2 = np.abs(np.arange(100) - c1) <= 3, np.abs(np.arange(100) - c2) <= 3
    assert reward[int(c1)] == pytest.approx(reward[int(c2)]) == pytest.approx(reward.max())
    # "One far more probable under the reference": at least 10x the reference mass.
    assert ref[near1].sum() > 10 * ref[near2].sum()
    star = np.asarray(ms.pi_star(prob, atlas.BETA))
    top = atlas.top_mode(reward, star)
    assert top[int(c1)] and not top[int(c2)] and np.all(np.diff(np.flatnonzero(top)) == 1)
    # A target that favours the other mode picks the other run.
    assert atlas.top_mode(reward, near2.astype(float))[int(c2)]
    # The single-mode problems: the top mode is the whole high-reward set.
    far = ms.problems.get("far")
    assert np.array_equal(atlas.top_mode(far.reward, ms.pi_star(far, 0.1)), np.asarray(ms.problems.high_reward_mask(far.reward)))


def test_every_registered_bandit_loss_is_an_objective():
    assert atlas.objectives() == losses.names("bandit")
    names, steps = piece.plan(smoke=False)
    assert names == losses.names("bandit") and steps == atlas.STEPS
    for name in names:
        opts = atlas.settings_for(name)
        assert opts["sampling"] in ("exact", "exact_offline"), (name, opts)
        # Every option the table sets is one the engine accepts for this loss.
        losses.check_options(name, {k: v for k, v in opts.items() if k != "sampling"}, kind="bandit")
    smoke_names, smoke_steps = piece.plan(smoke=True)
    assert set(smoke_names) <= set(names) and smoke_steps < steps


def test_settings_table_by_family_then_loss(monkeypatch):
    fam = losses.families()
    name = next(n for n in atlas.objectives() if losses.get(n).batch != "target")
    table = dict(atlas.SETTINGS)
    table["sampling"] = ({fam[name]: "exact", name: "exact_offline"}, "exact")
    monkeypatch.setattr(atlas, "SETTINGS", table)
    assert atlas.settings_for(name)["sampling"] == "exact_offline"
    table["sampling"] = ({fam[name]: "exact"}, "exact_offline")
    assert atlas.settings_for(name)["sampling"] == "exact"


def test_sampled_fallback_has_seeds_and_a_band():
    probs = [ms.problems.get("far"), ms.problems.get("near")]
    m = atlas.measure(["reinforce"], steps=20, probs=probs, overrides={"reinforce": {"sampling": "on_policy"}})
    t = m.table
    assert list(t["problem"]) == ["far", "near"] and not t["exact"].any() and (t["seeds"] == atlas.SAMPLED_SEEDS).all()
    assert m.refused and "reinforce" in m.refused
    assert m.curves["reinforce"].shape == (2, atlas.SAMPLED_SEEDS, 21)
    for c in ("index", "expected_reward", "kl_forward"):
        assert (t[c + "_lo"] <= t[c] + 1e-12).all() and (t[c] <= t[c + "_hi"] + 1e-12).all()
    # Different seeds draw different batches: the band has width.
    assert (t["expected_reward_hi"] > t["expected_reward_lo"]).all()


def test_measure_refuses_a_loss_without_a_bandit_implementation():
    with pytest.raises(ValueError, match="do not run on bandits"):
        atlas.measure(["no_such_loss"], steps=2)


def test_piece_in_smoke_mode_writes_table_figures_and_claims(tmp_path):
    claims = piece.make(tmp_path, smoke=True)
    assert claims and all(isinstance(c, Claim) for c in claims)
    assert {c.id for c in claims} >= {"atlas_on_policy_more_seeking", "atlas_contrastive_between", "atlas_forward_kl_lowest", "atlas_reverse_kl_seeks_earlier"}
    table = pd.read_parquet(tmp_path / "data" / "atlas.parquet")
    names, _ = piece.plan(smoke=True)
    assert sorted(set(table["objective"])) == sorted(names)
    assert set(table["problem"]) == {"far", "near", "bimodal"} and len(table) == 3 * len(names)
    assert np.all(np.abs(table["index"]) < 1) and np.all(np.abs(table["index_early"]) < 1)
    mass = pd.read_parquet(tmp_path / "data" / "atlas_mass.parquet")
    assert set(mass["distribution"]) == {"pi", "pi_ref", "pi_star"}
    for img in ("atlas.png", "atlas_mass.png"):
        assert (tmp_path / img).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    caption = (tmp_path / "atlas.caption.md").read_text()
    assert caption.startswith("# ") and "| objective |" in caption
    json.dumps([c.to_dict() for c in claims])


def test_claims_follow_the_table():
    """The claims on a made-up table: each can fail."""
    rows = [
        ("sft", "mode_covering", -0.2, 0.1),
        ("forward_kl", "mode_covering", -0.5, 0.9),
        ("dpo", "contrastive", 0.1, 1.0),
        ("reinforce", "on_policy", 0.6, 1.0),
        ("reverse_kl", "on_policy", 0.4, 0.9),
    ]
    t = pd.DataFrame([{"objective": o, "family": f, "problem": "far", "index": i, "index_early": i, "reward_fraction": r} for o, f, i, r in rows])
    found = piece.claims(t)
    assert len(found) == 5 and all(c.passed for c in found)
    t.loc[t["objective"] == "dpo", "index"] = 0.9
    t.loc[t["objective"] == "sft", "index"] = -0.6
    t.loc[t["objective"].isin(["reinforce", "reverse_kl"]), "reward_fraction"] = 0.1
    t.loc[t["objective"] == "reverse_kl", "index_early"] = -0.9
    found = {c.id: c.passed for c in piece.claims(t)}
    assert found == {
        "atlas_on_policy_more_seeking": True,
        "atlas_contrastive_between": False,
        "atlas_forward_kl_lowest": False,
        "atlas_reverse_kl_seeks_earlier": False,
        "atlas_on_policy_more_reward": False,
    }
