"""Rarity and coverage constructors (modeseek.geometry) and the length presets (modeseek.tasks)."""

import numpy as np
import pytest

import modeseek as ms
from modeseek import geometry, tasks

REF = np.asarray(tasks.length_reference(), np.float64)
TARGETS = np.geomspace(1e-4, 0.5, 8)


@pytest.mark.parametrize("method", geometry.RARITY_METHODS)
def test_bump_hits_requested_rarity_over_four_decades(method):
    for target in TARGETS:
        bump = geometry.bump_for_rarity(REF, target, method=method)
        # The reported value is the rarity of the reward it returns...
        assert geometry.rarity(REF, bump.reward) == pytest.approx(bump.rarity, rel=1e-6)
        # ...and it is within the default tolerance of the request.
        assert abs(bump.rarity / target - 1) <= 0.15, (method, target, bump.rarity)
        assert bump.target == target and bump.method == method


def test_shift_keeps_width_and_moves_centre_into_the_tail():
    bumps = geometry.bumps_for_rarities(REF, TARGETS, method="shift", width=12.0, side="left")
    centres = [b.center for b in bumps]
    assert all(b.width == 12.0 for b in bumps)
    # Rarer targets sit further from the reference's mode (bin 70) on the left.
    assert np.all(np.diff(centres) > 0), centres
    assert centres[-1] <= float(np.argmax(REF)) + 1e-9


def test_narrow_keeps_centre_and_rarer_means_narrower():
    bumps = geometry.bumps_for_rarities(REF, TARGETS, method="narrow", center=0.0)
    assert all(b.center == 0.0 for b in bumps)
    assert np.all(np.diff([b.width for b in bumps]) > 0)


def test_rarity_matches_the_half_maximum_set_computed_by_hand():
    # Paper "far" reward exp(-((i - 70)/10)^2): r >= 1/2 iff |i - 70| <= 10 sqrt(ln 2) = 8.33, i.e. bins 62..78.
    far = ms.paper_bandit("far")
    ref = np.asarray(far.ref_probs, np.float64)
    assert geometry.rarity(ref, far.reward) == pytest.approx(ref[62:79].sum(), rel=1e-6)
    assert geometry.high_reward_set(far.reward).sum() == 17


def test_unreachable_rarity_names_the_reachable_range():
    # The paper's squashed-Cauchy reference has at least ~0.0019 mass in every bin, so 1e-4 is out of reach.
    ref = ms.references.squashed_cauchy(100)
    with pytest.raises(ValueError, match="reachable rarities span"):
        geometry.bump_for_rarity(ref, 1e-4, method="shift", width=10.0)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match=r"target=.* is invalid; expected a rarity in \(0, 1\)"):
            geometry.bump_for_rarity(REF, bad)
    with pytest.raises(ValueError, match="method"):
        geometry.bump_for_rarity(REF, 0.1, method="stretch")


def test_coverage_one_is_the_reference_and_zero_has_no_high_reward_mass():
    bump = geometry.bump_for_rarity(REF, 0.05)
    high = geometry.high_reward_set(bump.reward)
    mu1 = np.asarray(geometry.coverage_data(REF, bump.reward, 1.0), np.float64)
    np.testing.assert_allclose(mu1, REF, rtol=1e-5, atol=1e-9)
    mu0 = np.asarray(geometry.coverage_data(REF, bump.reward, 0.0), np.float64)
    assert mu0[high].sum() == 0.0
    # Outside H coverage 0 is the reference renormalised (truncated away from the peak).
    np.testing.assert_allclose(mu0[~high], REF[~high] / REF[~high].sum(), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("c", [0.0, 0.01, 0.3, 0.7, 1.0])
def test_achieved_coverage_equals_the_requested_value(c):
    bump = geometry.bump_for_rarity(REF, 0.1)
    mu = geometry.coverage_data(REF, bump.reward, c)
    assert geometry.coverage(mu, REF, bump.reward) == pytest.approx(c, abs=1e-5)
    grid = np.asarray(geometry.coverage_grid(REF, bump.reward, [0.0, c, 1.0]))
    assert grid.shape == (3, REF.size)
    np.testing.assert_allclose(grid.sum(axis=1), 1.0, atol=1e-5)


def test_coverage_rejects_bad_values():
    bump = geometry.bump_for_rarity(REF, 0.1)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="coverage"):
            geometry.coverage_data(REF, bump.reward, bad)
    # A reward whose high set holds all of pi_ref's mass leaves no room for mu_0.
    with pytest.raises(ValueError, match="high-reward set holds all"):
        geometry.coverage_data(np.full(4, 0.25), np.ones(4), 0.5)


def test_length_presets_sit_at_three_corners_of_the_map():
    mn, mo, sk = tasks.min_length(), tasks.mode_length(), tasks.skew_length()
    assert mn.rarity < 2e-4 and mn.coverage == pytest.approx(1.0)
    assert mo.rarity > 0.3 and mo.coverage == pytest.approx(1.0)
    assert sk.rarity == pytest.approx(mn.rarity) and sk.coverage == pytest.approx(0.0, abs=1e-9)
    # Min Length: shorter is always better; Mode Length: peak at the reference's mode.
    assert np.all(np.diff(np.asarray(mn.problem.reward)) < 0)
    assert int(np.argmax(np.asarray(mo.problem.reward))) == int(np.argmax(np.asarray(mo.problem.ref_probs)))
    np.testing.assert_array_equal(np.asarray(sk.problem.reward), np.asarray(mn.problem.reward))
    assert tasks.names() == ("min_length", "mode_length", "skew_length")
    assert tasks.get("skew_length", coverage=0.5).coverage == pytest.approx(0.5, abs=1e-5)
    with pytest.raises(ValueError, match="task"):
        tasks.get("max_length")
