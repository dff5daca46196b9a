"""Option validation: options a loss does not read are refused, booleans are not integers.

Every case is refused before anything compiles, so these tests are cheap; the
one accepted run (ppo with clip_eps) shares its tiny configuration with nothing
else and compiles once.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import modeseek as ms
from modeseek import cli, engine, losses

_TINY = dict(sampling="on_policy", steps=2, seeds=1, num_samples=4)


def _refused(problem, message, **kw):
    before = engine.compile_count()
    with pytest.raises(ValueError, match=message) as exc:
        ms.run(problem, **{**_TINY, **kw})
    assert "\n" not in str(exc.value)  # one line
    assert engine.compile_count() == before  # refused before anything compiles
    return str(exc.value)


# ----------------------------------------------------------------------------- loss-specific options


def test_dpo_refuses_clip_eps_and_lists_its_options(far):
    msg = _refused(far, r"clip_eps does not apply to loss='dpo'", loss="dpo", clip_eps=0.3)
    for name in losses.get("dpo").options:
        assert name in msg, name
    assert "beta" in msg and "pairing" in msg and "min_reward_gap" in msg


def test_several_inapplicable_options_are_all_named(far):
    msg = _refused(far, r"clip_eps, entropy_coef, negative do not apply to loss='dpo'", loss="dpo", negative="worst", entropy_coef=0.1, clip_eps=0.3)
    assert "learning_rate" not in msg.split(";")[0]


def test_reinforce_refuses_clip_eps(far):
    assert "clip_eps" not in losses.get("reinforce").options
    _refused(far, r"clip_eps does not apply to loss='reinforce'; reinforce's options are advantage, beta", loss="reinforce", clip_eps=0.3)


@pytest.mark.parametrize(
    "loss, kwargs",
    [
        ("sft", dict(negative_coef=0.1)),
        ("sft", dict(target_margin=1.0)),
        ("best_of_n", dict(bt_scale=2.0)),
        ("pref_ft", dict(normalize=True)),
        ("rwr", dict(advantage="zscore")),
        ("ipo", dict(kl_estimator="k1")),
        ("ppo", dict(labels="bradley_terry")),
        ("reinforce", dict(min_reward_gap=np.array([0.0, 0.1]))),
    ],
)
def test_options_of_other_losses_are_refused(far, loss, kwargs):
    (name,) = kwargs
    _refused(far, rf"{name} does not apply to loss='{loss}'", loss=loss, **kwargs)


@pytest.mark.parametrize("loss", ["forward_kl", "reverse_kl"])
def test_analytic_divergences_refuse_sampling_options(far, loss):
    _refused(far, rf"pairing does not apply to loss='{loss}'; {loss}'s options are beta", loss=loss, sampling="exact", pairing="disjoint")


def test_options_left_off_and_general_options_are_accepted():
    # None (and False for the normalize flag) switch a feature off: always allowed.
    losses.check_options("dpo", dict(negative=None, kl_estimator=None, normalize=False, clip_eps=None))
    general = (
        "learning_rate",
        "beta",
        "num_samples",
        "reuse",
        "num_contexts",
        "policy",
        "optimizer",
        "init",
        "init_scale",
        "sft_steps",
        "sft_learning_rate",
        "eval_samples",
        "first_batch",
        "num_eval_contexts",
    )
    for loss in losses.names():
        losses.check_options(loss, general)
        losses.check_options(loss, losses.get(loss).options)
    with pytest.raises(ValueError, match="normalize does not apply to loss='dpo'"):
        losses.check_options("dpo", dict(normalize=True))
    with pytest.raises(ValueError, match="clip_eps does not apply"):
        losses.check_options("dpo", ["learning_rate"], ["clip_eps"])


def test_ppo_accepts_clip_eps(far):
    tr = ms.run(far, loss="ppo", **{**_TINY, "clip_eps": 0.3})
    assert tr.hyperparameters["clip_eps"] == pytest.approx(0.3)


def test_declared_options_are_real_option_names():
    core = {f.name for f in dataclasses.fields(engine.RunConfig)} | {f.name for f in dataclasses.fields(engine.HyperParams)}
    seq = {f.name for f in dataclasses.fields(engine.RunConfig)} | {f.name for f in dataclasses.fields(engine.HyperParams)}
    not_options = {"loss", "sampling", "steps", "num_bins", "has_target", "has_train_reward", "snapshot_every"}
    for kind, names in (("bandit", core), ("sequence", seq)):
        for loss in losses.names(kind):
            impl = losses.get(loss).implementation(kind)
            opts = impl.options
            assert len(set(opts)) == len(opts), loss
            assert set(opts) <= names - not_options, (loss, set(opts) - names)
            # What bind fixes and what apply passes on are options the run reads.
            assert set(impl.static) | set(impl.traced) <= set(opts), loss


def test_each_loss_declares_what_it_reads():
    assert losses.get("sft").options == ()
    assert set(losses.get("best_of_n").options) == {"negative", "negative_coef"}
    assert set(losses.get("rwr").options) == {"beta", "normalize"}
    assert set(losses.get("ipo").options) >= {"target_margin", "beta", "labels", "pairing", "min_reward_gap", "bt_scale"}
    bandit = lambda name: set(losses.get(name).implementation("bandit").options)  # noqa: E731
    sequence = lambda name: set(losses.get(name).implementation("sequence").options)  # noqa: E731
    assert bandit("ppo") == bandit("reinforce") | {"clip_eps"}
    assert sequence("ppo") == sequence("reinforce") | {"clip_eps", "ratio"}
    assert set(losses.get("ppo").options) == sequence("ppo")
    for name in losses.names("sequence"):
        assert sequence(name) - {"ratio", "loss_aggregation"} == bandit(name), name


# ----------------------------------------------------------------------------- sequences


def test_sequence_run_refuses_inapplicable_options():
    problem = ms.sequences.paper_sequence_bandit("far", length=2, vocab=6)
    before = engine.compile_count()
    with pytest.raises(ValueError, match="ratio does not apply to loss='reinforce'; reinforce's options are advantage"):
        engine.run(problem, loss="reinforce", policy="factorised", steps=2, ratio="sequence")
    with pytest.raises(ValueError, match="clip_eps does not apply to loss='dpo'"):
        engine.run(problem, loss="dpo", policy="factorised", steps=2, arms=[{"sampling": "offline", "clip_eps": 0.1}])
    assert engine.compile_count() == before


def test_sequence_check_options():
    with pytest.raises(ValueError, match=r"clip_eps does not apply to loss='dpo'; dpo's options are beta"):
        losses.check_options("dpo", dict(clip_eps=0.3), kind="sequence")
    with pytest.raises(ValueError, match="ratio does not apply to loss='reinforce'"):
        losses.check_options("reinforce", ["ratio"], kind="sequence")
    losses.check_options("ppo", ["ratio", "clip_eps", "shift", "layers"], kind="sequence")
    # ratio is an option of ppo on sequences only.
    with pytest.raises(ValueError, match="ratio does not apply to loss='ppo' on bandit policies"):
        losses.check_options("ppo", ["ratio"], kind="bandit")
    # An arm's traced values count as given too; "sampling" and "label" are not loss options.
    with pytest.raises(ValueError, match="clip_eps does not apply to loss='dpo'"):
        losses.check_options("dpo", {}, {"sampling": "offline", "label": "a", "clip_eps": 0.1}, kind="sequence")
    # The analytic divergences have no sequence implementation.
    with pytest.raises(ValueError, match="loss='forward_kl' is not valid; expected one of 'sft'"):
        losses.check_options("forward_kl", [], kind="sequence")


# ----------------------------------------------------------------------------- command line


@pytest.mark.parametrize(
    "args, named",
    [
        (["run", "--loss", "dpo", "--clip-eps", "0.3"], "clip_eps does not apply to loss='dpo'"),
        (["run", "--loss", "sft", "--normalize"], "normalize does not apply to loss='sft'"),
        (["sweep", "--loss", "dpo", "--clip-eps", "0.1", "0.2"], "clip_eps does not apply to loss='dpo'"),
    ],
)
def test_cli_refuses_inapplicable_options(args, named, capsys, tmp_path):
    out = tmp_path / ("x.parquet" if args[0] == "run" else "sweep")
    with pytest.raises(SystemExit) as exc:
        cli.main([*args, "--steps", "2", "--seeds", "1", "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert named in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()


def test_sweep_spec_refuses_inapplicable_options():
    from modeseek.sweep import SweepSpec

    with pytest.raises(ValueError, match="entropy_coef does not apply to loss='dpo'"):
        SweepSpec(loss="dpo", options={"entropy_coef": 0.1})
    with pytest.raises(ValueError, match="clip_eps does not apply to loss='reinforce'"):
        SweepSpec(loss="reinforce", grid={"clip_eps": (0.1, 0.2)})
    # The command line always passes normalize (False unless --normalize): still accepted.
    SweepSpec(loss="dpo", options={"normalize": False, "negative": None, "beta": 0.2})


# ----------------------------------------------------------------------------- integers, not booleans


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(steps=True), "steps=True is invalid; expected an integer >= 1"),
        (dict(seeds=True), "seeds=True is invalid; expected an integer >= 1"),
        (dict(seed_offset=False), "seed_offset=False is invalid; expected an integer >= 0"),
        (dict(snapshot_every=True), "snapshot_every=True is invalid; expected an integer >= 1"),
        (dict(num_samples=True), "num_samples=True is invalid; expected an integer >= 1"),
        (dict(reuse=True), "reuse=True is invalid; expected an integer >= 1"),
        (dict(num_contexts=True), "num_contexts=True is invalid; expected an integer >= 1"),
        (dict(sft_steps=True), "sft_steps=True is invalid; expected an integer >= 0"),
        (dict(eval_samples=True), "eval_samples=True is invalid; expected an integer >= 0"),
    ],
)
def test_booleans_are_not_integers(far, kwargs, message):
    _refused(far, message, loss="sft", **kwargs)


def test_sequence_booleans_are_not_integers():
    problem = ms.sequences.paper_sequence_bandit("far", length=2, vocab=6)
    for name in ("steps", "num_samples", "eval_every"):
        with pytest.raises(ValueError, match=f"{name}=True is invalid"):
            ms.run(problem, loss="reinforce", policy="factorised", **{name: True})


# ----------------------------------------------------------------------------- analytic divergences


@pytest.mark.parametrize("loss, sampling", [("forward_kl", "on_policy"), ("forward_kl", "offline"), ("reverse_kl", "offline")])
def test_analytic_divergence_message_names_both_exact_regimes(far, loss, sampling):
    msg = _refused(far, rf"loss='{loss}' is an analytic divergence", loss=loss, sampling=sampling)
    assert "'exact'" in msg and "'exact_offline'" in msg and repr(sampling) in msg


def test_traced_schedule_refuses_inapplicable_options(far):
    with pytest.raises(ValueError, match="clip_eps does not apply to loss='reinforce'"):
        ms.run(far, loss="reinforce", reuse=[1, 2], num_samples=4, minibatch=4, steps=2, clip_eps=0.1)
