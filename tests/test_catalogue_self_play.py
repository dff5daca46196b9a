"""The self-play family: online_dpo, nash_md, xpo, mirror_descent / spo_exact (modeseek/losses/self_play.py).

Gradients against finite differences (float64), sampled duels against their
exact population batches (float32, fixed seeds), the exact mirror-descent step
and its fixed point pi_star, and runs through modeseek.run on every policy the
losses support (and the refusals where they do not).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import modeseek as ms
from modeseek import losses, regimes
from modeseek.losses import self_play
from modeseek.sequences import problems as seq_problems

SELF_PLAY = ("online_dpo", "nash_md", "xpo", "mirror_descent", "spo_exact")


def _random_contexts(b=3, k=7, seed=0):
    rng = np.random.default_rng(seed)
    z = jnp.asarray(rng.normal(size=(b, k)))
    ref_logp = jnp.log(jnp.asarray(rng.dirichlet(np.ones(k) * 2)))
    reward = jnp.asarray(rng.uniform(size=k))
    return z, ref_logp, reward


def _batched(fn, batches, ref_logp, **kw):
    """The mean over contexts of the unbatched loss, as a function of the (B, K) logits (rlax style)."""

    def f(z):
        logp = jax.nn.log_softmax(z, axis=-1)
        return jnp.mean(jax.vmap(lambda lp, b: fn(lp, b, ref_logp=ref_logp, **kw)[0])(logp, batches))

    # Jitted: check_grads evaluates it many times, and op-by-op dispatch is slow.
    return jax.jit(f)


# ----------------------------------------------------------------------------- gradients (float64)


# Reward labels run with make test-slow: the default suite keeps one label kind per test.
@pytest.mark.parametrize("labels", [pytest.param("reward", marks=pytest.mark.slow), "bradley_terry"])
def test_duel_loss_gradients_match_finite_differences(labels):
    with jax.enable_x64(True):
        z, ref_logp, reward = _random_contexts()
        keys = jax.random.split(jax.random.PRNGKey(3), z.shape[0])
        kw = dict(labels=labels, bt_scale=2.0)
        mix = jax.vmap(lambda lq: regimes.geometric_mixture(lq, ref_logp, 0.4))(z)
        nash = jax.vmap(lambda kk, lq, mq: regimes.sample_duels(kk, lq, mq, reward, 6, **kw))(keys, z, mix)
        xpo = jax.vmap(lambda kk, lq: regimes.sample_duels(kk, lq, ref_logp, reward, 6, **kw))(keys, z)
        check_grads(_batched(losses.nash_md, nash, ref_logp, beta=0.3), (z,), order=1, modes=["rev"])
        check_grads(_batched(losses.xpo, xpo, ref_logp, beta=0.7, xpo_alpha=0.2), (z,), order=1, modes=["rev"])
        # The exact batches as well (K x K duels).
        ex = jax.vmap(lambda lq: regimes.exact_duels(lq, ref_logp, reward, **kw))(z)
        check_grads(_batched(losses.xpo, ex, ref_logp, beta=0.7, xpo_alpha=0.2), (z,), order=1, modes=["rev"])
        pairs = jax.vmap(lambda kk, lq: regimes.sample_pairs(kk, lq, reward, 6, labels=labels))(keys, z)
        check_grads(_batched(losses.online_dpo, pairs, ref_logp, beta=0.5), (z,), order=1, modes=["rev"])


def test_mirror_descent_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        z, ref_logp, reward = _random_contexts(seed=1)
        # The batch's logq is the policy at collection time, here other logits than z.
        logq = z + 0.5
        pts = jax.vmap(lambda lq: regimes.exact_points(lq, reward))(logq)
        check_grads(_batched(losses.mirror_descent, pts, ref_logp, beta=0.3, eta=2.0), (z,), order=1, modes=["rev"])


def test_exact_nash_md_gradient_is_the_regularised_preference_game_gradient():
    # On the exact batch the policy-gradient loss must have the gradient of
    # -[P(pi > sg(pi_mix)) - beta KL(pi || pi_ref)], written here directly from the definitions.
    with jax.enable_x64(True):
        (z,), ref_logp, reward = _random_contexts(b=1, k=9, seed=2)
        beta, alpha, scale = 0.3, 0.25, 2.0
        for labels in ("reward", "bradley_terry"):
            mix = jax.nn.softmax((1 - alpha) * jax.nn.log_softmax(z) + alpha * ref_logp)
            gap = reward[:, None] - reward[None, :]
            pref = jax.nn.sigmoid(scale * gap) if labels == "bradley_terry" else (gap > 0) + 0.5 * (gap == 0)

            def objective(zz):
                p = jax.nn.softmax(zz)
                kl = jnp.sum(p * (jnp.log(p) - ref_logp))
                return -(p @ pref @ mix - beta * kl)

            batch = regimes.exact_duels(jax.nn.log_softmax(z), jnp.log(mix), reward, labels=labels, bt_scale=scale)
            got = jax.grad(lambda zz: losses.nash_md(jax.nn.log_softmax(zz), batch, ref_logp=ref_logp, beta=beta)[0])(z)
            np.testing.assert_allclose(got, jax.grad(objective)(z), rtol=1e-10, atol=1e-12)


def test_xpo_exploration_term_takes_mass_from_reference_samples():
    # The term xpo_alpha * E_ref[log pi] has logit gradient xpo_alpha * (pi_ref - pi):
    # a descent step lowers the logits where pi_ref has more mass than pi.
    with jax.enable_x64(True):
        (z,), ref_logp, reward = _random_contexts(b=1, k=6, seed=4)
        batch = regimes.exact_duels(jax.nn.log_softmax(z), ref_logp, reward)

        def grad(alpha):
            return jax.grad(lambda zz: losses.xpo(jax.nn.log_softmax(zz), batch, ref_logp=ref_logp, beta=0.5, xpo_alpha=alpha)[0])(z)

        np.testing.assert_allclose(grad(0.7) - grad(0.0), 0.7 * (jnp.exp(ref_logp) - jax.nn.softmax(z)), atol=1e-12)
        # With reward labels and alpha = 0 it is DPO on the (policy, reference) pairs.
        chosen = jnp.where(batch.win > 0.5, batch.y, batch.other)
        rejected = jnp.where(batch.win > 0.5, batch.other, batch.y)
        pairs = ms.batches.Pairs(chosen, rejected, batch.pair_weight)
        dpo = losses.dpo(jax.nn.log_softmax(z), pairs, ref_logp=ref_logp, beta=0.5)[0]
        np.testing.assert_allclose(losses.xpo(jax.nn.log_softmax(z), batch, ref_logp=ref_logp, beta=0.5, xpo_alpha=0.0)[0], dpo, rtol=1e-12)


# ----------------------------------------------------------------------------- sampled duels converge to the exact batch (float32)

# M = 4000 sampled batches of N = 10 duels each on the conftest 12-bin problem
# (exact reward ties). With weights 1/N the duel losses are linear in the draws,
# so the mean gradient is unbiased: its error has expected squared norm
# tr(Cov)/M = SE^2, SE measured from the same draws. Measured err/SE 0.63-1.31
# (nash_md and xpo, both label kinds, N in {4, 10, 32}); we allow 4 SE (Markov:
# probability < 1/16 for a random seed; the seeds are fixed). XPO with reward
# labels normalises its pair weights by the number of non-tied duels, a ratio
# estimator with an O(1/N) bias: measured err/|g| * N <= 0.20, allowed 1.0 |g|/N
# on top. Measured SE/|g| <= 0.029 at N = 10, so 1 - cos ~ 4e-4 at worst
# (measured cos >= 0.9996); we require cos >= 0.995.
_M, _N = 4000, 10


@pytest.mark.parametrize("labels", [pytest.param("reward", marks=pytest.mark.slow), "bradley_terry"])
def test_sampled_duel_gradients_converge_to_the_exact_batch(small_problem, small_policy_logits, labels):
    z = small_policy_logits
    ref_logp = jnp.log(small_problem.ref_probs)
    reward = small_problem.reward
    kw = dict(labels=labels, bt_scale=3.0)
    mix = regimes.geometric_mixture(z, ref_logp, 0.3)
    cases = {
        "nash_md": (lambda lp, b: losses.nash_md(lp, b, ref_logp=ref_logp, beta=0.2), mix, 0.0),
        "xpo": (lambda lp, b: losses.xpo(lp, b, ref_logp=ref_logp, beta=0.7, xpo_alpha=0.3), ref_logp, 1.0 if labels == "reward" else 0.0),
    }
    bad = []
    for name, (loss, opponent, bias) in cases.items():
        f = lambda zz, b: loss(jax.nn.log_softmax(zz), b)[0]  # noqa: E731
        draws = jax.jit(jax.vmap(lambda kk: jax.grad(f)(z, regimes.sample_duels(kk, z, opponent, reward, _N, **kw))))
        g = np.asarray(draws(jax.random.split(jax.random.PRNGKey(11), _M)), np.float64)
        exact = np.asarray(jax.grad(f)(z, regimes.exact_duels(z, opponent, reward, **kw)), np.float64)
        mean = g.mean(0)
        se = np.sqrt(np.trace(np.cov(g.T)) / _M)
        err, norm = np.linalg.norm(mean - exact), np.linalg.norm(exact)
        cos = mean @ exact / (np.linalg.norm(mean) * norm)
        if err > 4 * se + bias * norm / _N or cos < 0.995:
            bad.append(f"{name}: err {err:.4g} vs SE {se:.4g}, |g| {norm:.4g}, cos {cos:.5f}")
    assert not bad, "\n".join(bad)


def test_duel_batches_and_the_geometric_mixture():
    k = 8
    rng = np.random.default_rng(5)
    logq = jnp.log(jnp.asarray(rng.dirichlet(np.ones(k)), jnp.float32))
    ref = jnp.log(jnp.asarray(rng.dirichlet(np.ones(k)), jnp.float32))
    reward = jnp.asarray(np.repeat(rng.uniform(size=k // 2), 2), jnp.float32)  # ties in pairs of bins
    np.testing.assert_allclose(regimes.geometric_mixture(logq, ref, 0.0), logq, atol=1e-6)
    np.testing.assert_allclose(regimes.geometric_mixture(logq, ref, 1.0), ref, atol=1e-6)
    half = np.exp(0.5 * np.asarray(logq) + 0.5 * np.asarray(ref))
    np.testing.assert_allclose(np.exp(regimes.geometric_mixture(logq, ref, 0.5)), half / half.sum(), rtol=1e-5)
    ex = regimes.exact_duels(logq, ref, reward)
    assert ex.y.shape == (k * k,)
    np.testing.assert_allclose(float(ex.weight.sum()), 1.0, rtol=1e-6)
    np.testing.assert_allclose(float(ex.pair_weight.sum()), 1.0, rtol=1e-6)
    tie = np.asarray(reward[ex.y] == reward[ex.other])
    assert np.all(np.asarray(ex.win)[tie] == 0.5) and np.all(np.asarray(ex.pair_weight)[tie] == 0.0)
    s = regimes.sample_duels(jax.random.PRNGKey(0), logq, ref, reward, 9)
    np.testing.assert_allclose(np.asarray(s.weight), 1 / 9)
    counted = np.asarray(reward[s.y] != reward[s.other])
    np.testing.assert_allclose(np.asarray(s.pair_weight), counted / max(counted.sum(), 1), rtol=1e-6)
    with pytest.raises(ValueError, match=r"num_bins=600 is too large for exact duels"):
        regimes.exact_duels(jnp.zeros(600), jnp.zeros(600), jnp.zeros(600))


# ----------------------------------------------------------------------------- exact mirror descent


def test_one_sgd_step_realises_the_mirror_update_and_iterates_reach_pi_star(far):
    with jax.enable_x64(True):
        ref_logp = jnp.log(jnp.asarray(far.ref_probs, jnp.float64))
        reward = jnp.asarray(far.reward, jnp.float64)
        beta, eta = 0.1, 5.0

        def step(z):
            batch = regimes.exact_points(z, reward)
            g = jax.grad(lambda zz: losses.mirror_descent(jax.nn.log_softmax(zz), batch, ref_logp=ref_logp, beta=beta, eta=eta)[0])(z)
            return z - 1.0 * g

        z0 = ref_logp + 0.3 * jax.random.normal(jax.random.PRNGKey(0), ref_logp.shape, jnp.float64)
        # One step: pi_1 = (pi_0 pi_ref^(eta beta) exp(eta r))^(1/(1 + eta beta)) / Z, written out here.
        p0 = jax.nn.softmax(z0)
        want = (p0 * jnp.exp(eta * beta * ref_logp + eta * reward)) ** (1 / (1 + eta * beta))
        np.testing.assert_allclose(jax.nn.softmax(step(z0)), want / want.sum(), rtol=1e-10, atol=1e-14)
        # The log-error to pi_star contracts by exactly 1/(1 + eta beta) = 2/3 per step.
        star = jax.nn.log_softmax(ref_logp + reward / beta)

        def err(z):
            d = jax.nn.log_softmax(z) - star
            return float(jnp.max(d) - jnp.min(d))

        z = z0
        errs = [err(z)]
        for _ in range(40):
            z = step(z)
            errs.append(err(z))
        np.testing.assert_allclose(np.array(errs[1:6]) / np.array(errs[:5]), 1 / (1 + eta * beta), rtol=1e-8)
        # (2/3)^40 ~ 1e-7 of the initial log-error: pi_star to 1e-4 and better.
        np.testing.assert_allclose(jax.nn.softmax(z), jnp.exp(star), atol=1e-4)
        assert float(jnp.max(jnp.abs(jax.nn.softmax(z) - jnp.exp(star)))) < 1e-6


def test_mirror_descent_run_converges_to_pi_star(far):
    # float32 run: eta beta = 1 halves the log-error per step; 30 steps leave ~1e-9
    # of it, far below float32 rounding of probabilities (~1e-7), so 1e-5 is a safe margin.
    beta = 0.1
    tr = ms.run(far, loss="mirror_descent", sampling="exact", optimizer="sgd", learning_rate=1.0, beta=beta, eta=10.0, steps=30, seeds=1)
    np.testing.assert_allclose(tr.final_probs[0], np.asarray(ms.pi_star(far, beta)), atol=1e-5)
    assert tr.metrics["kl_pi_star"][0, -1] < 1e-5
    alias = ms.run(far, loss="spo_exact", sampling="exact", optimizer="sgd", learning_rate=1.0, beta=beta, eta=10.0, steps=30, seeds=1)
    for name in tr.metrics:
        np.testing.assert_array_equal(alias.metrics[name], tr.metrics[name])


# ----------------------------------------------------------------------------- runs


def test_online_dpo_is_dpo_on_policy_bit_for_bit(far):
    kw = dict(steps=20, seeds=2, num_samples=6, key=3, eval_every=5)
    a = ms.run(far, loss="online_dpo", **kw)
    b = ms.run(far, loss="dpo", sampling="on_policy", **kw)
    assert a.metrics.keys() == b.metrics.keys()
    for name in a.metrics:
        np.testing.assert_array_equal(a.metrics[name], b.metrics[name])
    np.testing.assert_array_equal(a.final_probs, b.final_probs)
    assert losses.get("online_dpo").family == "self_play"
    assert losses.get("online_dpo").summary.startswith("Online DPO")


_SLOW = pytest.mark.slow  # an MLP compile: 35-50 s on a busy 2-core machine


@pytest.mark.parametrize(
    "policy, loss, kw",
    [
        ("tabular", "nash_md", dict(sampling="on_policy")),
        ("tabular", "xpo", dict(sampling="on_policy", labels="bradley_terry")),
        ("tabular", "xpo", dict(sampling="exact")),
        ("tabular", "mirror_descent", dict(sampling="exact")),
        pytest.param("mlp", "nash_md", dict(sampling="on_policy"), marks=_SLOW),
        pytest.param("mlp", "xpo", dict(sampling="exact"), marks=_SLOW),
        pytest.param("mlp", "mirror_descent", dict(sampling="exact"), marks=_SLOW),
    ],
)
def test_self_play_losses_run_on_bandit_policies(far, policy, loss, kw):
    short = dict(num_contexts=2, num_eval_contexts=4, sft_steps=5) if policy == "mlp" else {}
    tr = ms.run(far, loss=loss, policy=policy, steps=6, seeds=1, num_samples=4, snapshot_every=6, **short, **kw)
    for name, v in tr.metrics.items():
        assert np.all(np.isfinite(v)), name
    # The policy moved.
    assert tr.metrics["kl_pi_ref"][0, -1] > tr.metrics["kl_pi_ref"][0, 0]
    if kw["sampling"] == "on_policy":
        # Each of the 6 collections reads the rewards of 4 duels, two responses each, per context.
        assert tr.metrics["reward_queries"][0, -1] == 6 * 4 * 2 * tr.config.num_contexts


@pytest.mark.slow
def test_nash_md_and_xpo_improve_the_far_bandit(far):
    # Exact updates, deterministic: a regression guard that the signs are right
    # (a sign error in either term lowers the reward instead).
    nm = ms.run(far, loss="nash_md", sampling="exact", steps=100, beta=0.05, learning_rate=0.1)
    xp = ms.run(far, loss="xpo", sampling="exact", steps=100, learning_rate=0.1)
    for tr in (nm, xp):
        er = tr.metrics["expected_reward"][0]
        assert er[-1] > er[0] + 0.2


@pytest.mark.parametrize("policy", [pytest.param("factorised", marks=pytest.mark.slow), pytest.param("transformer", marks=pytest.mark.slow)])
def test_online_dpo_runs_on_sequences(policy):
    # The transformer compiles for about a minute on a busy 2-core machine: slow.
    prob = seq_problems.paper_sequence_bandit("far", vocab=8, length=3)
    small = dict(layers=1, heads=1, embed=8, sft_steps=2) if policy == "transformer" else {}
    kw = dict(policy=policy, steps=2, seeds=1, num_samples=4, num_contexts=2, key=1, **small)
    tr = ms.run(prob, loss="online_dpo", **kw)
    assert np.all(np.isfinite(tr.metrics["expected_reward"]))
    np.testing.assert_array_equal(tr.final_probs, ms.run(prob, loss="dpo", sampling="on_policy", **kw).final_probs)
    with pytest.raises(ValueError, match=r"loss='online_dpo' trains on its own samples; expected sampling in 'on_policy', 'exact', got sampling='offline'"):
        ms.run(prob, loss="online_dpo", policy="factorised", sampling="offline", steps=2)


@pytest.mark.parametrize("loss", ["nash_md", "xpo", "mirror_descent", "spo_exact"])
def test_bandit_only_self_play_losses_refuse_sequence_problems(loss):
    prob = seq_problems.paper_sequence_bandit("far", vocab=8, length=3)
    with pytest.raises(ValueError, match=rf"loss='{loss}' (runs on bandit policies only|is an exact update)") as exc:
        ms.run(prob, loss=loss, policy="factorised", steps=2)
    assert "\n" not in str(exc.value)
    if loss == "nash_md":
        assert "per-token geometric mixture" in str(exc.value)


def test_self_play_refusals(far):
    cases = [
        (dict(loss="nash_md", sampling="offline"), r"loss='nash_md' trains on its own samples; expected sampling in 'on_policy', 'exact', got sampling='offline'"),
        (dict(loss="xpo", sampling="exact_offline"), r"loss='xpo' trains on its own samples"),
        (dict(loss="mirror_descent", sampling="on_policy"), r"loss='mirror_descent' trains on its own samples; expected sampling in 'exact'"),
        (dict(loss="online_dpo", arms=[{"sampling": "offline"}, {"sampling": "on_policy"}]), r"got arms mixing offline and on-policy sampling"),
        (dict(loss="nash_md", mixture_alpha=1.5), r"mixture_alpha=1.5 is invalid; expected a value in \[0, 1\]"),
        (dict(loss="nash_md", mixture_alpha=[0.2, -0.1]), r"mixture_alpha=-0.1 is invalid"),
        (dict(loss="xpo", xpo_alpha=-1.0), r"xpo_alpha=-1.0 is invalid; expected finite and >= 0"),
        (dict(loss="mirror_descent", sampling="exact", eta=0.0), r"eta=0.0 is invalid; expected finite and > 0"),
        (dict(loss="nash_md", clip_eps=0.2), r"clip_eps does not apply to loss='nash_md'; nash_md's options are beta, mixture_alpha, labels, bt_scale"),
        (dict(loss="dpo", mixture_alpha=0.3), r"mixture_alpha does not apply to loss='dpo'"),
        (dict(loss="xpo", eta=2.0), r"eta does not apply to loss='xpo'"),
        (dict(loss="nash_md", min_reward_gap=0.1), r"min_reward_gap does not apply to loss='nash_md'"),
    ]
    for kw, msg in cases:
        with pytest.raises(ValueError, match=msg) as exc:
            ms.run(far, steps=2, **kw)
        assert "\n" not in str(exc.value)
    pts = regimes.sample_points(jax.random.PRNGKey(0), jnp.zeros(5), jnp.zeros(5), 3)
    with pytest.raises(ValueError, match=r"mirror_descent got a batch of 3 responses; expected the exact batch of all 5 bins"):
        losses.mirror_descent(jnp.zeros(5), pts, ref_logp=jnp.zeros(5), beta=0.1, eta=1.0)


def test_registry_entries():
    fam = losses.families()
    assert {n for n, f in fam.items() if f == "self_play"} == set(SELF_PLAY)
    assert losses.get("spo_exact").fn is losses.get("mirror_descent").fn
    assert losses.get("nash_md").batch == losses.get("xpo").batch == "duels"
    assert set(self_play.SAMPLINGS) == set(SELF_PLAY)
    for name in SELF_PLAY:
        assert losses.get(name).summary, name
