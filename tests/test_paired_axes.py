"""run(paired=...): swept axes zipped into one grid axis instead of crossed."""

from __future__ import annotations

import numpy as np
import pytest

import modeseek as ms


@pytest.fixture(scope="module")
def two_problems():
    far, near = ms.paper_bandit("far"), ms.paper_bandit("near")
    # A different data distribution for each problem: its own reference, and the reversed one.
    data = np.stack([np.asarray(far.ref_probs, np.float64), np.asarray(near.ref_probs, np.float64)[::-1]])
    data /= data.sum(axis=1, keepdims=True)
    return far, near, data


KW = dict(loss="best_of_n", sampling="offline", steps=15, seeds=3, key=4)


def test_paired_is_the_diagonal_of_the_crossed_grid(two_problems):
    far, near, data = two_problems
    crossed = ms.run([far, near], data=data, **KW)
    zipped = ms.run([far, near], data=data, paired=("problem", "data"), **KW)
    assert crossed.grid_shape == (2, 2) and zipped.grid_shape == (2,)
    assert zipped.axes == (("problem", "data"),)
    for name, arr in zipped.metrics.items():
        assert arr.shape == (2, 3, 16), name
        for i in range(2):
            np.testing.assert_allclose(arr[i], crossed.metrics[name][i, i], rtol=1e-6, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(zipped.final_probs[1], crossed.final_probs[1, 1], rtol=1e-6, atol=1e-7)


def test_paired_equals_separate_runs(two_problems):
    far, near, data = two_problems
    zipped = ms.run([far, near], data=data, paired=("problem", "data"), **KW)
    for i, prob in enumerate((far, near)):
        alone = ms.run(prob, data=data[i], **KW)
        np.testing.assert_allclose(zipped.metrics["expected_reward"][i], alone.metrics["expected_reward"], rtol=1e-6, atol=1e-7)


def test_paired_with_a_crossed_axis_and_two_groups(two_problems):
    far, near, data = two_problems
    t = ms.run(
        [far, near],
        data=data,
        paired=[("problem", "data"), ("learning_rate", "negative_coef")],
        learning_rate=[0.01, 0.02, 0.05],
        negative_coef=[0.0, 0.5, 1.0],
        negative="worst",
        **KW,
    )
    assert t.axes == (("problem", "data"), ("learning_rate", "negative_coef"))
    assert t.metrics["expected_reward"].shape == (2, 3, 3, 16)
    df = t.to_dataframe()
    assert len(df) == 2 * 3 * 3 * 16
    # Paired columns move together: each learning rate comes with its own coefficient only.
    pairs = set(map(tuple, df[["learning_rate", "negative_coef"]].drop_duplicates().to_numpy()))
    assert pairs == {(0.01, 0.0), (0.02, 0.5), (0.05, 1.0)}
    assert set(map(tuple, df[["problem", "data"]].drop_duplicates().to_numpy())) == {("far", 0), ("near", 1)}
    # The table's rows are the metric arrays in order.
    np.testing.assert_array_equal(df["expected_reward"].to_numpy(), t.metrics["expected_reward"].reshape(-1))
    # Each (problem, learning rate) cell equals a run with that pair alone.
    alone = ms.run(near, data=data[1], learning_rate=0.02, negative_coef=0.5, negative="worst", **KW)
    np.testing.assert_allclose(t.metrics["expected_reward"][1, 1], alone.metrics["expected_reward"], rtol=1e-6, atol=1e-7)


def test_paired_errors_name_the_problem(two_problems):
    far, near, data = two_problems
    with pytest.raises(ValueError, match="not a swept axis"):
        ms.run([far, near], paired=("problem", "data"), **KW)  # data not swept
    with pytest.raises(ValueError, match="equal lengths"):
        ms.run([far, near], learning_rate=[0.1, 0.2, 0.3], paired=("problem", "learning_rate"), **KW)
    with pytest.raises(ValueError, match="single name"):
        ms.run([far, near], data=data, paired="problem", **KW)
    with pytest.raises(ValueError, match="two or more"):
        ms.run([far, near], data=data, paired=[("problem",)], **KW)
    with pytest.raises(ValueError, match="more than one group"):
        ms.run([far, near], data=data, learning_rate=[0.1, 0.2], paired=[("problem", "data"), ("data", "learning_rate")], **KW)


def test_cli_summary_labels_paired_points(two_problems):
    from modeseek.cli import _summary

    far, near, data = two_problems
    t = ms.run([far, near], data=data, paired=("problem", "data"), learning_rate=[0.01, 0.05], **KW)
    text = _summary(t)
    assert "[problem=far, learning_rate=0.05, data=0]" in text
    assert "[problem=near, learning_rate=0.01, data=1]" in text
    assert "data=1" not in text.split("problem=near")[0]


def test_chunked_sweep_with_paired_axes_equals_one_run(tmp_path):
    import pandas as pd

    from modeseek import sweep

    spec = sweep.SweepSpec(
        loss="reinforce",
        sampling="on_policy",
        problems=("far", "near"),
        steps=4,
        seeds=5,
        chunk_seeds=2,
        key=2,
        options={"num_samples": 2},
        grid={"learning_rate": (0.01, 0.03), "beta": (0.1, 0.2, 0.3)},
        paired=("problem", "learning_rate"),
    )
    assert spec.grid_points == 2 * 3
    assert sweep.SweepSpec.from_dict(spec.to_dict()) == spec
    # A spec without pairing serialises as before (its digest does not change).
    assert "paired" not in sweep.SweepSpec(loss="dpo").to_dict()
    result = sweep.run_sweep(spec, tmp_path / "sw", progress=False)
    merged = pd.read_parquet(result.merged)
    reference = ms.run(**spec.run_kwargs(), seeds=spec.seeds).to_dataframe()
    pd.testing.assert_frame_equal(merged, reference, check_exact=True)
    assert set(map(tuple, merged[["problem", "learning_rate"]].drop_duplicates().to_numpy())) == {("far", 0.01), ("near", 0.03)}
    with pytest.raises(ValueError, match="equal lengths"):
        sweep.SweepSpec(loss="dpo", problems=("far", "near"), grid={"beta": (0.1, 0.2, 0.3)}, paired=("problem", "beta"))
    with pytest.raises(ValueError, match="not a swept axis"):
        sweep.SweepSpec(loss="dpo", grid={"beta": (0.1, 0.2)}, paired=("problem", "beta"))


def test_cli_run_paired(tmp_path, capsys):
    from modeseek import cli

    out = tmp_path / "runs.parquet"
    args = [
        "run",
        "--loss",
        "dpo",
        "--sampling",
        "offline",
        "--steps",
        "5",
        "--seeds",
        "2",
        "--out",
        str(out),
        "--beta",
        "0.1",
        "0.3",
        "--learning-rate",
        "0.05",
        "0.02",
        "--paired",
        "beta",
        "learning-rate",
    ]
    assert cli.main(args) == 0
    import pandas as pd

    df = pd.read_parquet(out)
    assert set(map(tuple, df[["beta", "learning_rate"]].drop_duplicates().to_numpy())) == {(0.1, 0.05), (0.3, 0.02)}
    assert len(df) == 2 * 2 * 6
