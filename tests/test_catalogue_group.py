"""The on-policy group methods: grpo (dr_grpo, dapo), gspo, cispo, rloo, reinforce_pp, remax, gpg.

Gradients against finite differences (float64), sampled batches against exact
ones, the fixed points of exact on-policy dynamics with a KL estimator in the
loss (modeseek.losses.on_policy.kl_fixed_point), presets, and runs through
modeseek.run on every policy kind each loss is implemented for.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import modeseek as ms
from modeseek import losses, regimes
from modeseek.engine import HyperParams
from modeseek.losses import on_policy
from modeseek.losses import sequences as seq_losses
from modeseek.sequences import batches as sb

GROUP_LOSSES = ("grpo", "dr_grpo", "dapo", "gspo", "cispo", "rloo", "reinforce_pp", "remax", "gpg")

# Static variants whose gradients are checked (each loss, its fragile options).
_VARIANTS = [
    ("grpo", {}),
    ("grpo", dict(scale_rewards="batch", drop_uniform_groups=True, kl_estimator="k3", kl_placement="loss")),
    ("grpo", dict(scale_rewards="none", kl_estimator="k2", kl_placement="reward")),
    ("dapo", {}),
    ("gspo", dict(kl_estimator="exact", kl_placement="loss")),
    ("cispo", dict(scale_rewards="batch")),
    ("rloo", {}),
    ("reinforce_pp", dict(kl_estimator="k1")),
    ("reinforce_pp", dict(baseline=True, kl_estimator="k3", kl_placement="loss")),
    ("remax", {}),
    ("gpg", {}),
]


def _hp(dtype=jnp.float32, **kw):
    base = dict(beta=0.3, clip_eps=0.2, clip_eps_high=0.28, entropy_coef=0.0)
    base.update(kw)
    return HyperParams(**{k: jnp.asarray(v, dtype) for k, v in base.items()})


def _bandit_batch(key, policy_logits, sample_logits, reward, n, *, exact=False):
    """Per-context Points (stacked over contexts) drawn from ``sample_logits``, with the greedy reward filled in."""

    def one(k, lq):
        b = regimes.exact_points(lq, reward) if exact else regimes.sample_points(k, lq, reward, n)
        return b._replace(greedy_reward=reward[jnp.argmax(lq)])

    return jax.vmap(one)(jax.random.split(key, sample_logits.shape[0]), sample_logits)


def _batch_loss(name, opts, ref_logp, hp, num_samples):
    """The engine's batch loss for a bandit: the hook's statistic, then the mean of the unbatched loss over contexts."""
    spec = losses.get(name)
    apply = spec.bind("bandit", **opts)
    hook = spec.batch_hook("bandit", **opts)

    def f(logits, batch):
        if hook is not None:
            batch = hook(batch, ref_logp, hp, num_samples)
        logp = jax.nn.log_softmax(logits, axis=-1)
        vals, _ = jax.vmap(lambda lp, b: apply(lp, b, ref_logp, hp))(logp, batch)
        return jnp.mean(vals)

    return f


# ============================================================================ gradients (float64)


@pytest.mark.parametrize("name, opts", _VARIANTS)
def test_gradient_matches_finite_differences(name, opts):
    with jax.enable_x64(True):
        k, c, n = 6, 5, 4
        key = jax.random.PRNGKey(0)
        k1, k2, k3, k4 = jax.random.split(key, 4)
        logits = jax.random.normal(k1, (c, k), jnp.float64)
        # Sampling policy away from the policy: ratios differ from 1 on both sides of the clip range.
        sample_logits = logits + 0.3 * jax.random.normal(k2, (c, k), jnp.float64)
        # Discrete rewards: some groups of 4 are uniform (dynamic sampling has something to drop).
        reward = jnp.asarray([0.0, 1.0, 1.0, 0.0, 2.0, 0.0], jnp.float64)
        ref_logp = jax.nn.log_softmax(jax.random.normal(k3, (k,), jnp.float64))
        batch = _bandit_batch(k4, logits, sample_logits, reward, n)
        f = _batch_loss(name, opts, ref_logp, _hp(jnp.float64), n)
        assert np.isfinite(float(f(logits, batch)))
        if name == "cispo":
            # CISPO's weight is a stop-gradient: its gradient is that of the loss with the weight held
            # at its value at the logits checked. Shifting logq with log pi keeps pi/q, hence the
            # weight, fixed for the finite differences; autodiff sees no path through the weight.
            z0 = logits

            def g(z):
                shift = jnp.take_along_axis(jax.nn.log_softmax(z) - jax.nn.log_softmax(z0), batch.y, axis=-1)
                return f(z, batch._replace(logq=batch.logq + shift))

            check_grads(g, (logits,), order=1, modes=("rev",))
            return
        check_grads(lambda z: f(z, batch), (logits,), order=1, modes=("rev",))


# ============================================================================ sampled batches against exact ones


def _sampled_vs_exact(name, opts, n, m=400, seed=0):
    """(mean over m sampled batches of N draws of the gradient, its standard error per coordinate, the exact gradient)."""
    k = 12
    key = jax.random.PRNGKey(seed)
    logits = jax.random.normal(jax.random.fold_in(key, 1), (1, k))
    # Continuous rewards: groups are never uniform, so the dynamic-sampling factors are 1.
    reward = jax.random.uniform(jax.random.fold_in(key, 2), (k,))
    ref_logp = jax.nn.log_softmax(jnp.zeros(k))
    hp = _hp(beta=0.1)
    f = _batch_loss(name, opts, ref_logp, hp, n)
    grad = jax.grad(f)
    exact = grad(logits, _bandit_batch(key, logits, logits, reward, n, exact=True))[0]
    keys = jax.random.split(jax.random.fold_in(key, 3), m)
    grads = jax.lax.map(lambda kk: grad(logits, _bandit_batch(kk, logits, logits, reward, n))[0], keys)
    return np.asarray(grads.mean(0)), np.asarray(grads.std(0) / np.sqrt(m)), np.asarray(exact)


def test_dr_grpo_sampled_gradient_is_one_minus_one_over_n_of_the_exact():
    # The group mean contains the sample itself: E[(r_j - mean_k r_k) g_j] = (1 - 1/N) E[(r - E r) g].
    # Unbiased for that target, so the error of the mean of m = 4000 gradients is within 4 SE per
    # coordinate (a normal tail of 6e-5 per coordinate; the seed is fixed). Measured: max err/SE 0.85
    # against (1 - 1/N) exact, while |mean - exact| is 21 times |SE| (norms).
    n = 4
    mean, se, exact = _sampled_vs_exact("dr_grpo", {}, n, m=4000)
    np.testing.assert_array_less(np.abs(mean - (1 - 1 / n) * exact), 4 * se + 1e-7)
    # And the factor is visible: the exact gradient itself is off by |exact| / N, far outside 4 SE.
    assert np.linalg.norm(mean - exact) > 5 * np.linalg.norm(se)


@pytest.mark.parametrize(
    "name, opts, unbiased_factor",
    [
        ("grpo", {}, None),
        ("grpo", dict(scale_rewards="batch"), None),
        ("gspo", {}, None),
        ("cispo", {}, None),
        ("reinforce_pp", {}, None),
        ("reinforce_pp", dict(baseline=True), None),
        ("remax", {}, 1.0),
        ("gpg", {}, "n"),
        ("rloo", {}, 1.0),
        ("dapo", {}, None),
    ],
)
def test_large_sampled_batches_converge_to_the_exact_batch(name, opts, unbiased_factor):
    # N = 256 draws per batch, m = 400 batches. Linear estimators (remax, rloo: unbiased; gpg: its
    # mean baseline gives the factor 1 - 1/N) must agree within 4 SE per coordinate. Normalised ones
    # (group or batch std) are ratio estimators with an O(1/N) bias; the exact batch takes the
    # normaliser in the population limit. Allowed: 4 SE + 2 |exact|_inf / N. Measured (12 coordinates,
    # max over them): linear cases err/SE <= 2.37, i.e. 0.59 of the margin; normalised cases err/SE
    # <= 2.46, 0.25 of the margin. With one context and on-policy draws the normalised cases are one
    # estimator (batch std = group std, CISPO's weight 1), so they measure the same; the test still
    # runs each loss's own code path.
    n = 256
    mean, se, exact = _sampled_vs_exact(name, opts, n)
    if unbiased_factor is None:
        target, margin = exact, 4 * se + 2 * np.max(np.abs(exact)) / n
    else:
        factor = (1 - 1 / n) if unbiased_factor == "n" else unbiased_factor
        target, margin = factor * exact, 4 * se + 1e-7
    ratio = np.max(np.abs(mean - target) / margin)
    assert ratio < 1.0, (name, opts, ratio)


def test_nonuniform_probability_matches_enumeration():
    # Exact P(a group of N draws is not uniform) = 1 - sum_v q(v)^N, checked against all K^N outcomes.
    with jax.enable_x64(True):
        q = np.array([0.5, 0.2, 0.3])
        r = np.array([1.0, 0.0, 1.0])  # bins 0 and 2 share a reward value
        n = 3
        b = regimes.exact_points(jnp.log(jnp.asarray(q)), jnp.asarray(r))
        got = float(on_policy.nonuniform_probability(b, n))
        grid = np.stack(np.meshgrid(*[np.arange(3)] * n, indexing="ij"), -1).reshape(-1, n)
        p = np.prod(q[grid], axis=1)
        nonuni = np.array([len(set(r[g])) > 1 for g in grid])
        assert got == pytest.approx(float(np.sum(p * nonuni)), abs=1e-12)
        sampled = regimes.sample_points(jax.random.PRNGKey(0), jnp.log(jnp.asarray(q)), jnp.asarray(r), 2)
        assert float(on_policy.nonuniform_probability(sampled._replace(reward=jnp.array([1.0, 1.0])), 2)) == 0.0
        assert float(on_policy.nonuniform_probability(sampled._replace(reward=jnp.array([1.0, 0.0])), 2)) == 1.0


def test_dapo_drops_uniform_groups_and_averages_over_the_rest():
    # Three contexts, the second has a uniform group: its loss is 0 and the others are scaled by 3/2.
    k, n = 4, 3
    reward = jnp.asarray([0.0, 1.0, 2.0, 3.0])
    y = jnp.asarray([[0, 1, 2], [3, 3, 3], [1, 2, 3]], jnp.int32)
    logq = jnp.full((3, n), -jnp.log(4.0))
    pts = ms.batches.Points(y, reward[y], jnp.full((3, n), 1 / n), logq, jnp.full((3,), float(n)))
    logits = jax.random.normal(jax.random.PRNGKey(1), (3, k))
    ref_logp = jnp.full((k,), -jnp.log(4.0))
    hp = _hp()
    spec = losses.get("grpo")
    with_drop = spec.bind("bandit", drop_uniform_groups=True, kl_estimator="k3", kl_placement="loss")
    plain = spec.bind("bandit", kl_estimator="k3", kl_placement="loss")
    batch = spec.batch_hook("bandit", drop_uniform_groups=True)(pts, ref_logp, hp, n)
    logp = jax.nn.log_softmax(logits)
    a = jax.vmap(lambda lp, b: with_drop(lp, b, ref_logp, hp)[0])(logp, batch)
    b = jax.vmap(lambda lp, b: plain(lp, b, ref_logp, hp)[0])(logp, pts)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b) * np.array([1.5, 0.0, 1.5]), rtol=1e-6)


def test_gpg_rescales_by_the_share_of_groups_with_signal():
    k, n = 4, 3
    reward = jnp.asarray([0.0, 1.0, 2.0, 3.0])
    y = jnp.asarray([[0, 1, 2], [3, 3, 3], [1, 2, 3], [2, 2, 2]], jnp.int32)
    pts = ms.batches.Points(y, reward[y], jnp.full((4, n), 1 / n), jnp.zeros((4, n)), jnp.full((4,), float(n)))
    logp = jax.nn.log_softmax(jax.random.normal(jax.random.PRNGKey(2), (4, k)))
    spec = losses.get("gpg")
    batch = spec.batch_hook("bandit")(pts, jnp.zeros(k), _hp(), n)
    got = jax.vmap(lambda lp, b: spec.bind("bandit")(lp, b, None, _hp())[0])(logp, batch)
    mean_baseline = jax.vmap(lambda lp, b: losses.reinforce(lp, b, ref_logp=jnp.zeros(k))[0])(logp, pts)
    # 2 of 4 groups carry a signal: B / B_signal = 2.
    np.testing.assert_allclose(np.asarray(got), 2.0 * np.asarray(mean_baseline), rtol=1e-6, atol=1e-7)


# ============================================================================ single-token identities


def test_gspo_on_a_one_token_bandit_is_ppo_with_group_advantages():
    # The geometric mean of one token ratio is the ratio: gspo = grpo = ppo(advantage="zscore"), value and gradient.
    k, n = 8, 6
    key = jax.random.PRNGKey(3)
    logits = jax.random.normal(key, (k,))
    lq = logits + 0.4 * jax.random.normal(jax.random.fold_in(key, 1), (k,))
    reward = jax.random.uniform(jax.random.fold_in(key, 2), (k,))
    ref = jax.nn.log_softmax(jnp.zeros(k))
    batch = regimes.sample_points(jax.random.fold_in(key, 3), lq, reward, n)
    g = lambda z: losses.get("gspo").fn(jax.nn.log_softmax(z), batch, ref_logp=ref, clip_eps=0.1)[0]  # noqa: E731
    p = lambda z: losses.ppo(jax.nn.log_softmax(z), batch, ref_logp=ref, advantage="zscore", clip_eps=0.1)[0]  # noqa: E731
    assert float(g(logits)) == pytest.approx(float(p(logits)), rel=1e-6)
    np.testing.assert_allclose(np.asarray(jax.grad(g)(logits)), np.asarray(jax.grad(p)(logits)), rtol=1e-5, atol=1e-8)
    # And the sequence gspo at L = 1 is the bandit one.
    tok = jax.nn.log_softmax(logits)[batch.y][:, None]
    sbatch = sb.SequenceBatch(jnp.zeros((n, 2), jnp.int32), batch.reward, batch.logq[:, None], ref[batch.y][:, None], sb.points_items(batch.reward, batch.logq))
    assert float(seq_losses.gspo(tok, sbatch, clip_eps=0.1)[0]) == pytest.approx(float(g(logits)), rel=1e-6)
    assert float(seq_losses.grpo(tok, sbatch, clip_eps=0.1)[0]) == pytest.approx(float(g(logits)), rel=1e-6)


def test_gspo_and_grpo_differ_on_longer_sequences():
    n, t = 5, 4
    key = jax.random.PRNGKey(4)
    tok = -jax.random.uniform(key, (n, t), minval=0.5, maxval=2.0)
    logq = tok + 0.5 * jax.random.normal(jax.random.fold_in(key, 1), (n, t))
    r = jax.random.uniform(jax.random.fold_in(key, 2), (n,))
    batch = sb.SequenceBatch(jnp.zeros((n, t + 1), jnp.int32), r, logq, jnp.zeros((n, t)), sb.points_items(r, logq.sum(-1)))
    a = float(seq_losses.gspo(tok, batch, clip_eps=0.1)[0])
    b = float(seq_losses.grpo(tok, batch, clip_eps=0.1, loss_aggregation="seq_mean_token_mean")[0])
    assert abs(a - b) > 1e-3


def test_loss_aggregations_on_fixed_length_sequences():
    # Every sequence has T tokens: token_mean == seq_mean_token_mean, and seq_mean_token_sum is T times them.
    n, t = 6, 5
    key = jax.random.PRNGKey(5)
    tok = -jax.random.uniform(key, (n, t), minval=0.5, maxval=2.0)
    logq = tok + 0.3 * jax.random.normal(jax.random.fold_in(key, 1), (n, t))
    r = jax.random.uniform(jax.random.fold_in(key, 2), (n,))
    batch = sb.SequenceBatch(jnp.zeros((n, t + 1), jnp.int32), r, logq, jnp.zeros((n, t)), sb.points_items(r, logq.sum(-1)))
    vals = {agg: float(seq_losses.grpo(tok, batch, loss_aggregation=agg)[0]) for agg in losses.LOSS_AGGREGATIONS}
    assert vals["token_mean"] == pytest.approx(vals["seq_mean_token_mean"], rel=1e-6)
    assert vals["seq_mean_token_sum"] == pytest.approx(t * vals["token_mean"], rel=1e-6)
    # A per-token term by hand: token mean of max(-A rho, -A clip(rho)).
    a = (r - r.mean()) / (r.std() + 1e-8)
    rho = jnp.exp(tok - logq)
    by_hand = jnp.mean(jnp.maximum(-a[:, None] * rho, -a[:, None] * jnp.clip(rho, 0.8, 1.2)))
    assert vals["token_mean"] == pytest.approx(float(by_hand), rel=1e-5)


def test_cispo_weight_is_capped_and_carries_no_gradient():
    k, n = 6, 5
    key = jax.random.PRNGKey(6)
    logits = jax.random.normal(key, (k,))
    lq = logits - 2.0 * jax.nn.one_hot(2, k)  # bin 2 is 7x more likely under pi than q: weight capped
    reward = jnp.arange(k, dtype=jnp.float32)
    ref = jnp.zeros(k)
    batch = regimes.sample_points(jax.random.fold_in(key, 1), lq, reward, n)._replace(y=jnp.asarray([2, 0, 1, 3, 4], jnp.int32))
    batch = batch._replace(reward=reward[batch.y], logq=jax.nn.log_softmax(lq)[batch.y])
    eps_high = 0.5
    f = lambda z: on_policy.cispo(jax.nn.log_softmax(z), batch, ref_logp=ref, clip_eps_high=eps_high)[0]  # noqa: E731
    lp = jax.nn.log_softmax(logits)
    w = jnp.minimum(jnp.exp(lp[batch.y] - batch.logq), 1 + eps_high)
    assert float(w[0]) == pytest.approx(1 + eps_high)
    a = (batch.reward - batch.reward.mean()) / (batch.reward.std() + 1e-8)
    by_hand = lambda z: -jnp.mean(w * a * jax.nn.log_softmax(z)[batch.y])  # noqa: E731
    np.testing.assert_allclose(np.asarray(jax.grad(f)(logits)), np.asarray(jax.grad(by_hand)(logits)), rtol=1e-5, atol=1e-7)


# ============================================================================ fixed points of KL in the loss


def _exact_dynamics(name, opts, ref_probs, reward, beta, steps, lr):
    """Exact on-policy SGD on tabular logits (float64), through the registered loss on exact batches."""
    apply = losses.get(name).bind("bandit", **opts)
    ref_logp = jnp.log(ref_probs)
    hp = _hp(jnp.float64, beta=beta)

    def step(z, _):
        batch = regimes.exact_points(jax.nn.log_softmax(z), reward)
        g = jax.grad(lambda zz: apply(jax.nn.log_softmax(zz), batch, ref_logp, hp)[0])(z)
        return z - lr * g, None

    z, _ = jax.jit(lambda z0: jax.lax.scan(step, z0, None, length=steps))(ref_logp)
    return np.asarray(jax.nn.softmax(z))


_REF = np.array([0.35, 0.25, 0.2, 0.12, 0.08])
_REWARD = np.array([0.0, 0.3, 0.5, 0.2, 1.0])


@pytest.mark.parametrize("estimator", ["k2", "k3"])
@pytest.mark.parametrize("with_reward", [True, False])
def test_dr_grpo_with_kl_in_the_loss_reaches_the_estimators_fixed_point(estimator, with_reward):
    # k2 in the loss: E[grad k2] = grad KL(pi||pi_ref), fixed point pi_star; k3: grad KL(pi_ref||pi),
    # fixed point pi_i = beta pi_ref_i / (beta + lambda - r_i). 4000 steps at lr 2: the slowest mode
    # contracts by about 1 - lr beta min(pi) ~ 0.96 per step (measured residual < 1e-9).
    with jax.enable_x64(True):
        reward = _REWARD if with_reward else np.zeros_like(_REWARD)
        beta = 0.5
        got = _exact_dynamics("grpo", dict(scale_rewards="none", kl_estimator=estimator, kl_placement="loss"), jnp.asarray(_REF), jnp.asarray(reward), beta, 4000, 2.0)
        want = on_policy.kl_fixed_point(_REF, reward, beta, estimator)
        np.testing.assert_allclose(got, want, atol=1e-4)
        if with_reward:
            # The two fixed points are different distributions (k3 keeps more mass on the reference's bins).
            other = on_policy.kl_fixed_point(_REF, reward, beta, "k2" if estimator == "k3" else "k3")
            assert np.max(np.abs(want - other)) > 1e-2


def test_k1_in_the_loss_does_not_regularise():
    # E[grad k1] = 0 on fresh samples: the trajectory is beta = 0's, and it heads to the best bin.
    with jax.enable_x64(True):
        ref, reward = jnp.asarray(_REF), jnp.asarray(_REWARD)
        with_k1 = _exact_dynamics("grpo", dict(scale_rewards="none", kl_estimator="k1", kl_placement="loss"), ref, reward, 5.0, 20000, 20.0)
        without = _exact_dynamics("grpo", dict(scale_rewards="none"), ref, reward, 5.0, 20000, 20.0)
        np.testing.assert_allclose(with_k1, without, atol=1e-10)
        np.testing.assert_allclose(with_k1, on_policy.kl_fixed_point(_REF, _REWARD, 5.0, "k1"), atol=1e-3)


def test_reinforce_with_exact_kl_in_the_loss_reaches_pi_star():
    with jax.enable_x64(True):
        got = _exact_dynamics("reinforce", dict(kl_estimator="exact", kl_placement="loss"), jnp.asarray(_REF), jnp.asarray(_REWARD), 0.5, 4000, 2.0)
        pi_star = _REF * np.exp(_REWARD / 0.5)
        np.testing.assert_allclose(got, pi_star / pi_star.sum(), atol=1e-4)


def test_k3_fixed_point_solves_its_stationarity_equation():
    beta = 0.3
    p = on_policy.kl_fixed_point(_REF, _REWARD, beta, "k3")
    lam = p @ _REWARD
    np.testing.assert_allclose(p * (_REWARD - lam) - beta * (p - _REF), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="estimator='k4'"):
        on_policy.kl_fixed_point(_REF, _REWARD, beta, "k4")


# ============================================================================ registry: presets and options


def test_presets_fill_in_their_options_and_refuse_contradictions():
    assert losses.apply_preset("dapo", {}, "bandit") == dict(clip_eps=0.2, clip_eps_high=0.28, drop_uniform_groups=True, kl_estimator=None)
    assert losses.apply_preset("dapo", {}, "sequence")["loss_aggregation"] == "token_mean"
    assert losses.apply_preset("dr_grpo", {"beta": 0.1}, "bandit") == dict(beta=0.1, scale_rewards="none")
    assert losses.apply_preset("dapo", {"clip_eps_high": 0.28, "kl_estimator": None}, "bandit")["drop_uniform_groups"] is True
    with pytest.raises(ValueError, match="clip_eps_high=0.3 contradicts loss='dapo'.*use loss='grpo'"):
        losses.apply_preset("dapo", {"clip_eps_high": 0.3}, "bandit")
    with pytest.raises(ValueError, match="advantage='mean' contradicts loss='rloo'"):
        ms.run(ms.paper_bandit("far"), loss="rloo", advantage="mean", steps=2)
    with pytest.raises(ValueError, match="scale_rewards='group' contradicts loss='dr_grpo'"):
        losses.get("dr_grpo").bind("bandit", scale_rewards="group")
    assert losses.get("rloo").base == "reinforce" and "leave-one-out" in losses.get("rloo").summary


def test_options_of_the_group_losses_are_checked():
    with pytest.raises(ValueError, match="scale_rewards does not apply to loss='dpo'"):
        losses.check_options("dpo", {"scale_rewards": "none"})
    with pytest.raises(ValueError, match="clip_eps_high does not apply to loss='reinforce_pp'"):
        losses.check_options("reinforce_pp", {"clip_eps_high": 0.3})
    with pytest.raises(ValueError, match="loss_aggregation does not apply to loss='gspo'"):
        losses.check_options("gspo", {"loss_aggregation": "token_mean"}, kind="sequence")
    with pytest.raises(ValueError, match="scale_rewards='mean'"):
        losses.get("grpo").bind("bandit", scale_rewards="mean")
    assert set(losses.get("gpg").options) == set() and set(losses.get("remax").options) == set()


def test_remax_is_refused_on_sequences_and_under_a_traced_schedule():
    seq = ms.sequences.paper_sequence_bandit("far", vocab=8, length=2)
    with pytest.raises(ValueError, match="remax"):
        ms.run(seq, loss="remax", steps=2, policy="factorised")
    with pytest.raises(ValueError, match="loss='remax' needs the greedy response's reward"):
        ms.run(ms.paper_bandit("far"), loss="remax", steps=4, minibatch=5)


def test_remax_batch_carries_the_greedy_reward():
    far = ms.paper_bandit("far")
    cfg = ms.engine.RunConfig(loss="remax", sampling="on_policy", steps=1, num_samples=4, num_bins=far.num_bins)
    for exact in (False, True):
        batch = ms.engine._collector(losses.get("remax"), cfg, exact, HyperParams(), far.reward)(jax.random.PRNGKey(0), far.ref_logp)
        assert float(batch.greedy_reward) == float(far.reward[int(np.argmax(np.asarray(far.ref_probs)))])


# ============================================================================ runs through modeseek.run


def test_rloo_runs_bit_identical_to_reinforce_with_leave_one_out():
    far = ms.paper_bandit("far")
    a = ms.run(far, loss="rloo", steps=30, seeds=3, num_samples=8)
    b = ms.run(far, loss="reinforce", advantage="leave_one_out", steps=30, seeds=3, num_samples=8)
    np.testing.assert_array_equal(a.final_probs, b.final_probs)
    np.testing.assert_array_equal(a.metrics["expected_reward"], b.metrics["expected_reward"])


# Each loss is a compiled program of its own: the default suite keeps grpo, dapo and remax
# (make test-slow runs them all; tests/test_properties.py's slow stability test covers them too).
@pytest.mark.parametrize("loss", [n if n in ("grpo", "dapo", "remax") else pytest.param(n, marks=pytest.mark.slow) for n in GROUP_LOSSES])
def test_runs_on_tabular_with_extreme_beta_and_learning_rate_one(loss):
    # beta 1e-3 and 1e3 with a KL term where the loss has one; lr 1; sample reuse so that ratios move.
    opts = {"kl_estimator": "k3", "kl_placement": "loss"} if "kl_estimator" in losses.get(loss).options and loss != "dapo" else {}
    reuse = 2 if "clip_eps" in losses.get(loss).options else 1
    tr = ms.run(ms.paper_bandit("far"), loss=loss, steps=8, seeds=2, reuse=reuse, beta=np.array([1e-3, 1e3]), learning_rate=1.0, num_samples=8, snapshot_every=8, **opts)
    for name, v in tr.metrics.items():
        assert np.all(np.isfinite(v)), (loss, name)
    np.testing.assert_allclose(tr.final_probs.sum(-1), 1.0, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("loss", GROUP_LOSSES)
def test_runs_on_the_mlp_and_in_the_exact_regime(loss):
    far = ms.paper_bandit("far")
    tr = ms.run(far, loss=loss, policy="mlp", steps=4, num_contexts=3, num_eval_contexts=4, sft_steps=2)
    assert np.all(np.isfinite(tr.metrics["expected_reward"]))
    ex = ms.run(far, loss=loss, sampling="exact", steps=30, learning_rate=0.5)
    assert ex.metrics["expected_reward"][0, -1] > ex.metrics["expected_reward"][0, 0]


@pytest.mark.slow
@pytest.mark.parametrize("loss", [n for n in GROUP_LOSSES if n != "remax"])
def test_runs_on_sequence_policies(loss):
    seq = ms.sequences.paper_sequence_bandit("far", vocab=12, length=3)
    opts = {"kl_estimator": "k3", "kl_placement": "reward"} if "kl_estimator" in losses.get(loss).options and loss != "dapo" else {}
    tr = ms.run(seq, loss=loss, policy="factorised", steps=6, reuse=2, num_samples=6, num_contexts=2, **opts)
    assert np.all(np.isfinite(tr.metrics["expected_reward"]))
    tr = ms.run(seq, loss=loss, policy="transformer", steps=2, num_samples=4, num_contexts=2, num_eval_contexts=2, layers=1, heads=1, embed=8, sft_steps=2, **opts)
    assert np.all(np.isfinite(tr.metrics["expected_reward"]))
