"""Phenomena pieces: likelihood displacement, squeezing, entropy collapse, ranking accuracy.

The first-order identities are checked twice: the closed forms against an
exact float64 step computed here, and against the engine's own step
(``modeseek.run``), where the error must shrink as O(eta^2).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modeseek import pieces
from modeseek.phenomena import displacement, entropy_collapse, ranking_accuracy, squeezing
from modeseek.pieces import Claim


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def _random_pi(seed: int, k: int = 12) -> np.ndarray:
    return _softmax(np.random.default_rng(seed).normal(size=k) * 2.0)


# ----------------------------------------------------------------------------- closed forms, float64


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_squeezing_formula_matches_an_exact_float64_step(seed: int) -> None:
    pi = _random_pi(seed)
    neg = 3
    z = np.log(pi)
    for eta in (1e-3, 5e-4):
        # The exact SGD step on log pi(neg): dz = -eta (e_neg - pi).
        step = -eta * (np.eye(pi.size)[neg] - pi)
        observed = np.log(_softmax(z + step)) - np.log(pi)
        err = np.abs(observed - squeezing.first_order(pi, neg, eta)).max()
        # Second-order remainder: <= eta^2 * (a few units) for probabilities <= 1; 10 eta^2 is a loose bound, 1e-3 the size of the change.
        assert err < 10 * eta**2


def test_squeezing_first_order_rejects_a_bad_index() -> None:
    with pytest.raises(ValueError, match="neg=7"):
        squeezing.first_order(np.full(4, 0.25), 7, 0.1)


@pytest.mark.parametrize("seed", [0, 1])
def test_entropy_formula_matches_an_exact_float64_step(seed: int) -> None:
    pi = _random_pi(seed)
    reward = np.random.default_rng(seed + 10).uniform(size=pi.size)
    for eta in (1e-3, 5e-4):
        a = reward - pi @ reward
        after = _softmax(np.log(pi) + eta * pi * a)
        observed = entropy_collapse.entropy(after) - entropy_collapse.entropy(pi)
        assert abs(observed - entropy_collapse.first_order(pi, reward, eta)) < 10 * eta**2


def test_tabular_pair_step_never_lowers_the_chosen_log_prob() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        pi = _softmax(rng.normal(size=8) * 3.0)
        w, lo = rng.choice(8, size=2, replace=False)
        c = float(rng.choice([1e-4, 0.1, 1.0, 10.0]))
        z = np.log(pi)
        z[w] += c
        z[lo] -= c
        change = np.log(_softmax(z))[w] - np.log(pi[w])
        # The exact change is c - log(1 + pi_w (e^c - 1) + pi_l (e^-c - 1)) >= 0 (displacement docstring).
        assert change >= -1e-12
        if c == 1e-4:
            assert abs(change - displacement.first_order_tabular(pi[w], pi[lo], c)[0]) < 1e-7


# ----------------------------------------------------------------------------- against the engine


def test_squeezing_first_order_against_the_engine() -> None:
    err = squeezing.errors(squeezing.check((0.2, 0.1, 0.05)))
    # Measured: relative errors 0.29%, 0.54%, 1.05%; error ratios 3.79 and 3.84 on doubling eta (O(eta^2): 4).
    assert err["rel_err"].iloc[0] < 0.01
    ratios = err["max_err"].to_numpy()[1:] / err["max_err"].to_numpy()[:-1]
    assert np.all((ratios > 3.0) & (ratios < 5.0)), ratios


def test_entropy_first_order_against_the_engine() -> None:
    chk = entropy_collapse.check((2.0, 1.0, 0.5))
    near = chk[chk["problem"] == "near"].sort_values("eta")
    far = chk[chk["problem"] == "far"].sort_values("eta")
    # Measured on "near": relative error 2.8% at eta 0.5, error ratios 3.97 and 3.99 (O(eta^2): 4).
    assert near["rel_error"].iloc[0] < 0.05
    ratios = near["error"].to_numpy()[1:] / near["error"].to_numpy()[:-1]
    assert np.all((ratios > 3.0) & (ratios < 5.0)), ratios
    # "far" moves little at these eta (dH ~ 4e-4): measured relative error 0.02%, its absolute error near the float32 floor.
    assert far["rel_error"].iloc[0] < 0.01


def test_tabular_displacement_in_the_engine() -> None:
    table, *_ = displacement.measure(5, (("dpo", "tabular"),))
    for _, d in table.groupby("pair"):
        c = d.sort_values("step")["chosen_logp"].to_numpy()
        assert np.all(np.diff(c) > 0), c
    found = {c.id: c for c in displacement.claims(table)}
    assert found["displacement_tabular_first_step"].passed
    assert found["displacement_tabular_never"].passed


def test_displacement_claims_can_fail() -> None:
    steps = np.arange(3)
    table = pd.DataFrame(
        {"loss": "dpo", "policy": "tabular", "pair": "tail", "step": steps, "chosen_logp": [-1.0, -1.5, -2.0], "rejected_logp": -3.0, "margin": [0.0, 1.0, 2.0], "mass_elsewhere": 0.5}
    )
    found = {c.id: c for c in displacement.claims(table)}
    assert not found["displacement_tabular_first_step"].passed
    assert not found["displacement_tabular_never"].passed


def test_ranking_idealised_optimum_closed_form() -> None:
    prob, _ = ranking_accuracy.setup()
    w, lo = ranking_accuracy.pairs(prob.reward)
    ref = np.asarray(prob.ref_probs, np.float64)
    # beta -> infinity: the optimum is pi_ref, so its accuracy is the reference's; beta -> 0: the reward's ranking, accuracy 1.
    assert ranking_accuracy.accuracy(ranking_accuracy.idealised_logp(ref, prob.reward, 1e6), w, lo) == pytest.approx(ranking_accuracy.accuracy(np.log(ref), w, lo))
    assert ranking_accuracy.accuracy(ranking_accuracy.idealised_logp(ref, prob.reward, 1e-4), w, lo) == 1.0


# ----------------------------------------------------------------------------- the pieces, smoke budget


@pytest.mark.parametrize("name", ["displacement", "squeezing", "entropy_collapse", "ranking_accuracy"])
def test_piece_smoke(name: str, tmp_path) -> None:
    piece = pieces.load(name)
    found = piece.make(tmp_path, True)
    assert found and all(isinstance(c, Claim) for c in found)
    for rel in (f"{name}.png", f"{name}.caption.md", f"data/{name}.parquet"):
        assert (tmp_path / rel).stat().st_size > 0, rel
    table = pd.read_parquet(tmp_path / "data" / f"{name}.parquet")
    assert len(table) > 0
    assert not table.select_dtypes("number").isin([np.inf, -np.inf]).any().any()
