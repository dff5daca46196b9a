"""Loss gradients: exact closed forms, and sampled batches against their exact (population) batches.

Part 1 (float64): each hand-derived logit gradient matches ``jax.grad`` and
central finite differences (PAPER_NOTES E.4 for the two KLs, E.3 for the pair
losses, B.1-B.6 for the others).

Part 2 (float32, fixed seeds): the mean over M = 4000 independent sampled
batches of the gradient w.r.t. the logits converges to the gradient on the exact
batch of ``modeseek.regimes.exact_*`` (convention 6: an exact batch is the
infinite-batch limit). The problem is a 12-bin one with exact reward ties
(conftest ``small_problem``). How the margins were set:

* Unbiased estimators: the error of the mean of M i.i.d. gradients has expected
  squared norm tr(Cov)/M =: SE^2, with SE measured from the same draws. We
  allow 4 SE. Measured err/SE: 0.48-1.00 here (0.2-2.4 in a wider exploration
  with N in {10, 64}); by Markov's inequality err > 4 SE has probability
  < 1/16 for a random seed, and the seeds are fixed, so the test is deterministic.
* Cosine similarity: for an unbiased mean, 1 - cos is about (SE/|g|)^2 / 2.
  Measured SE/|g| <= 0.058 (DPO on 5 disjoint pairs per batch; <= 0.027
  elsewhere), so 1 - cos ~ 0.0017 at worst; measured minimum cos 0.9987. We
  require cos >= 0.995.
* Self-normalised estimators (RWR's softmax weights, z-scored advantages, pair
  weights 1/(number of counted pairs) with reward labels or a minimum gap) are
  ratio estimators with an O(1/N) bias; the exact batch takes their
  normalisers in the population limit (see modeseek.regimes). Measured with
  M = 40000: relative bias * N between 0.3 and 0.85 for N in {4, 10, 32}. The
  test checks convergence as the batch grows: at N = 32 the error is within
  4 SE + 1.0 |g| / N, it is less than half the error at N = 4 (measured
  ratios 0.10-0.32: the bias shrinks 8x and the SE about 3x), and cos >= 0.999
  (measured minimum 0.9995).
* The one known bias of an otherwise linear estimator, REINFORCE's batch-mean
  baseline, is checked exactly: its mean is (N-1)/N times the exact gradient.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import modeseek as ms
from modeseek import losses, regimes
from modeseek.batches import Points, Target

# ============================================================================ part 1: exact gradients (x64)


def _logit_grad_fd(f, z, eps=1e-6):
    """Central finite differences of a scalar function of the (K,) logits, in float64."""
    z = np.asarray(z, np.float64)
    out = np.zeros_like(z)
    for i in range(z.size):
        e = np.zeros_like(z)
        e[i] = eps
        out[i] = (float(f(jnp.asarray(z + e))) - float(f(jnp.asarray(z - e)))) / (2 * eps)
    return out


def _scatter(k, idx, w):
    return np.bincount(np.asarray(idx), weights=np.asarray(w, np.float64), minlength=k)


def _random_case(k=7, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=k)
    q = rng.dirichlet(np.ones(k))
    ref = rng.dirichlet(np.ones(k) * 2)
    r = rng.uniform(size=k)
    return z, q, ref, r


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def _hand_cases(z, q, ref, r):
    """(name, loss of logits, hand-derived logit gradient) for each loss; arrays are float64.

    Notation: p = softmax(z). A weighted log-likelihood sum_j a_j log p(y_j) has
    logit gradient c - (sum_j a_j) p, with c the a-weighted bin counts.
    """
    k = z.size
    p = _softmax(z)
    kl_pq = float(np.sum(p * np.log(p / q)))
    cases = []

    cases.append(("forward_kl", lambda lp: losses.forward_kl(lp, Target(jnp.asarray(q)))[0], p - q))
    cases.append(("reverse_kl", lambda lp: losses.reverse_kl(lp, Target(jnp.asarray(q)))[0], p * (np.log(p / q) - kl_pq)))

    # SFT on a sampled batch (duplicates included) and on the exact batch of q.
    y = np.array([0, 3, 3, 5, 6])
    pts = Points(jnp.asarray(y), jnp.asarray(r[y]), jnp.full((5,), 0.2), jnp.asarray(np.log(q[y])), jnp.asarray(5.0))
    cases.append(("sft_sampled", lambda lp: losses.sft(lp, pts)[0], p - _scatter(k, y, np.full(5, 0.2))))
    ex_q = regimes.exact_points(jnp.asarray(np.log(q)), jnp.asarray(r))
    cases.append(("sft_exact", lambda lp: losses.sft(lp, ex_q)[0], p - q))

    # Best-of-N with each negative term, on the exact order statistics of q (N = 4).
    bon = regimes.exact_best_of_n(jnp.asarray(np.log(q)), jnp.asarray(r), 4)
    b, w, o = (np.asarray(bon.best_weight), np.asarray(bon.worst_weight), np.asarray(bon.others_weight))
    coef = 0.3
    base = p - b  # -log p(best)
    cases.append(("best_of_n", lambda lp: losses.best_of_n(lp, bon)[0], base))
    cases.append(("best_of_n_worst", lambda lp: losses.best_of_n(lp, bon, negative="worst", negative_coef=coef)[0], base + coef * (w - p)))
    cases.append(
        (
            "best_of_n_sum_worse",
            lambda lp: losses.best_of_n(lp, bon, negative="sum_worse", negative_coef=coef)[0],
            base + coef * (o - o.sum() * p),
        )
    )
    cases.append(
        (
            "best_of_n_mean_worse",
            lambda lp: losses.best_of_n(lp, bon, negative="mean_worse", negative_coef=coef)[0],
            base + coef / 3.0 * (o - o.sum() * p),
        )
    )
    # d/dz log(1 - p_y) = -p_y (e_y - p) / (1 - p_y).
    cases.append(
        (
            "best_of_n_log_complement",
            lambda lp: losses.best_of_n(lp, bon, negative="log_complement", negative_coef=coef)[0],
            base + coef * (o * p / (1 - p) - np.sum(o * p / (1 - p)) * p),
        )
    )

    # RWR on the exact batch of q: NLL under weights q exp(r/beta) / Z.
    beta = 0.4
    wr = q * np.exp(r / beta)
    wr /= wr.sum()
    cases.append(("rwr", lambda lp: losses.rwr(lp, ex_q, beta=beta)[0], p - wr))

    # Pair losses on all ordered pairs of q with reward labels: dh/dz = e_w - e_l.
    pairs = regimes.exact_pairs(jnp.asarray(np.log(q)), jnp.asarray(r))
    cw, cl, pw = (np.asarray(pairs.chosen), np.asarray(pairs.rejected), np.asarray(pairs.weight, np.float64))
    lref = np.log(ref)
    h = (np.log(p)[cw] - lref[cw]) - (np.log(p)[cl] - lref[cl])
    dpo_beta, margin = 0.7, 1.5
    c_dpo = -pw * dpo_beta / (1 + np.exp(dpo_beta * h))  # -beta sigma(-beta h)
    c_ipo = pw * 2 * (h - margin)
    cases.append(("dpo", lambda lp: losses.dpo(lp, pairs, ref_logp=jnp.asarray(lref), beta=dpo_beta)[0], _scatter(k, cw, c_dpo) - _scatter(k, cl, c_dpo)))
    cases.append(("ipo", lambda lp: losses.ipo(lp, pairs, ref_logp=jnp.asarray(lref), target_margin=margin)[0], _scatter(k, cw, c_ipo) - _scatter(k, cl, c_ipo)))
    cases.append(("pref_ft", lambda lp: losses.pref_ft(lp, pairs)[0], p - _scatter(k, cw, pw)))

    # REINFORCE and PPO on the exact on-policy batch (q = p): the exact policy
    # gradient of -E_p[r], -p (r - E_p r); at q = p the PPO ratio is 1 inside the clip.
    ex_p = regimes.exact_points(jnp.asarray(np.log(p)), jnp.asarray(r))
    pg = -p * (r - p @ r)
    cases.append(("reinforce", lambda lp: losses.reinforce(lp, ex_p, ref_logp=jnp.asarray(lref))[0], pg))
    cases.append(("ppo", lambda lp: losses.ppo(lp, ex_p, ref_logp=jnp.asarray(lref))[0], pg))
    # Exact KL(p || ref) in the loss and an exact entropy bonus:
    # grad KL(p||ref) = p (log(p/ref) - KL), grad H(p) = -p (log p + H).
    kl_ref = float(np.sum(p * np.log(p / ref)))
    ent = float(-np.sum(p * np.log(p)))
    kl_beta, ent_coef = 0.3, 0.2
    cases.append(
        (
            "reinforce_exact_kl_entropy",
            lambda lp: losses.reinforce(lp, ex_p, ref_logp=jnp.asarray(lref), beta=kl_beta, kl_estimator="exact", kl_placement="loss", entropy_coef=ent_coef)[0],
            pg + kl_beta * p * (np.log(p / ref) - kl_ref) + ent_coef * p * (np.log(p) + ent),
        )
    )
    # PPO off-policy with advantage "none": outside the clip range the sample's gradient vanishes.
    yq = np.array([0, 1, 2, 4])
    logq_y = np.log(p[yq]) + np.array([0.0, 0.5, -0.5, 0.05])  # ratios 1, e^-0.5, e^0.5, e^-0.05
    pts_q = Points(jnp.asarray(yq), jnp.asarray(r[yq]), jnp.full((4,), 0.25), jnp.asarray(logq_y), jnp.asarray(4.0))
    rho = np.exp(np.log(p[yq]) - logq_y)
    a = r[yq]
    # The pessimistic max clips only in the direction that would profit: for A > 0
    # the sample stops contributing once rho > 1 + eps (rho = e^0.5 here).
    active = ((a > 0) & (rho < 1.2)) | ((a < 0) & (rho > 0.8))
    assert active.sum() == 3
    c_ppo = -0.25 * a * rho * active  # d(-A rho)/d log p(y) = -A rho
    cases.append(
        (
            "ppo_off_policy_clipped",
            lambda lp: losses.ppo(lp, pts_q, ref_logp=jnp.asarray(lref), advantage="none", clip_eps=0.2)[0],
            _scatter(k, yq, c_ppo) - c_ppo.sum() * p,
        )
    )
    return cases


def test_hand_derived_logit_gradients_match_autodiff_and_finite_differences(x64):
    # One test for all cases: eager float64 ops compile once per process, so the
    # cases share that cost instead of paying it on both xdist workers.
    failures = []
    for seed in (0, 1):
        z, q, ref, r = _random_case(seed=seed)
        cases = _hand_cases(z, q, ref, r)
        assert len(cases) == 17
        for name, fn, hand in cases:
            hand = np.asarray(hand, np.float64)

            def f(zz, fn=fn):
                return fn(jax.nn.log_softmax(zz))

            auto = np.asarray(jax.grad(f)(jnp.asarray(z)))
            fd = _logit_grad_fd(f, z)
            assert auto.dtype == np.float64
            # float64 central differences with eps 1e-6: truncation ~1e-12, rounding ~1e-10.
            if not np.allclose(auto, hand, rtol=1e-9, atol=1e-11):
                failures.append(f"{name} (seed {seed}): jax.grad {auto} != hand-derived {hand}")
            if not np.allclose(fd, hand, rtol=1e-6, atol=1e-8):
                failures.append(f"{name} (seed {seed}): finite differences {fd} != hand-derived {hand}")
            if np.linalg.norm(hand) < 1e-3:
                failures.append(f"{name} (seed {seed}): degenerate case, |grad| = {np.linalg.norm(hand)}")
    assert not failures, "\n".join(failures)


def test_forward_kl_gradient_is_p_minus_q_even_with_target_zeros(x64):
    z = jnp.asarray([0.3, -1.0, 2.0, 0.0])
    q = jnp.asarray([0.5, 0.0, 0.25, 0.25])
    g = jax.grad(lambda zz: losses.forward_kl(jax.nn.log_softmax(zz), Target(q))[0])(z)
    np.testing.assert_allclose(np.asarray(g), np.asarray(jax.nn.softmax(z) - q), rtol=1e-12, atol=1e-14)
    # The loss value is the KL itself, with 0 log 0 = 0.
    p = np.asarray(jax.nn.softmax(z))
    qq = np.asarray(q)
    m = qq > 0
    kl = float(losses.forward_kl(jnp.log(jnp.asarray(p)), Target(q))[0])
    assert abs(kl - np.sum(qq[m] * np.log(qq[m] / p[m]))) < 1e-12


def test_reverse_kl_push_down_grows_without_bound_as_the_target_excludes_a_bin(x64):
    # PAPER_NOTES E.4: reverse KL's logit push-down on a bin grows like
    # p_i log(p_i / q_i); forward KL's stays below p_i - q_i <= p_i.
    z = jnp.zeros(4)
    pushes_rev, pushes_fwd = [], []
    for q0 in (1e-2, 1e-4, 1e-8):
        q = jnp.asarray([q0, (1 - q0) / 3, (1 - q0) / 3, (1 - q0) / 3])
        g_rev = jax.grad(lambda zz: losses.reverse_kl(jax.nn.log_softmax(zz), Target(q))[0])(z)
        g_fwd = jax.grad(lambda zz: losses.forward_kl(jax.nn.log_softmax(zz), Target(q))[0])(z)
        pushes_rev.append(float(g_rev[0]))
        pushes_fwd.append(float(g_fwd[0]))
    # Closed form at p = uniform: 0.25 (log(0.25 / q_0) - KL(p || q)).
    expected = []
    for q0 in (1e-2, 1e-4, 1e-8):
        q = np.array([q0] + [(1 - q0) / 3] * 3)
        expected.append(0.25 * (np.log(0.25 / q0) - np.sum(0.25 * np.log(0.25 / q))))
    np.testing.assert_allclose(pushes_rev, expected, rtol=1e-9)
    # Each factor 100 in q_0 adds about p_0 (1 - p_0) log(100) = 0.86 to the push-down.
    assert np.all(np.diff(pushes_rev) > 0.8 * np.array([1, 2]))
    assert max(pushes_fwd) < 0.25


def test_theory_toy_forward_kl_step(x64):
    # PAPER_NOTES D.8: p0 = (0.3, 0.3, 0.1, 0.3), q = (0.2, 0.1, 0.6, 0.1).
    p0 = jnp.asarray([0.3, 0.3, 0.1, 0.3])
    q = Target(jnp.asarray([0.2, 0.1, 0.6, 0.1]))
    z0 = jnp.log(p0)

    def after(eta, loss, target):
        g = jax.grad(lambda zz: loss(jax.nn.log_softmax(zz), target)[0])(z0)
        return jax.nn.softmax(z0 - eta * g)

    # First-order change of p(category 0): exactly 0 under forward KL, > 0 under reverse KL.
    _, d_fwd = jax.jvp(lambda e: after(e, losses.forward_kl, q), (0.0,), (1.0,))
    _, d_rev = jax.jvp(lambda e: after(e, losses.reverse_kl, q), (0.0,), (1.0,))
    assert abs(float(d_fwd[0])) < 1e-14
    assert float(d_rev[0]) > 1e-3
    # Reverse KL grows the under-covered category 2 more slowly (its gradient scales with p_2).
    assert float(d_rev[2]) < float(d_fwd[2])
    # The figure's forward bars: one step of size 1.21 towards the 3-sample target (1/3, 0, 2/3, 0).
    p1 = np.asarray(after(1.21, losses.forward_kl, Target(jnp.asarray([1 / 3, 0.0, 2 / 3, 0.0]))))
    np.testing.assert_allclose(p1, [0.33, 0.225, 0.22, 0.225], atol=0.007)


def test_kl_estimators_values_gradients_and_overflow():
    from modeseek.losses.on_policy import kl_estimate

    d = jnp.asarray([-19.0, -1.0, 0.0, 0.5, 5.0])
    dn = np.asarray(d, np.float64)
    np.testing.assert_allclose(np.asarray(kl_estimate(d, 0.0, "k1")), dn)
    np.testing.assert_allclose(np.asarray(kl_estimate(d, 0.0, "k2")), dn**2 / 2)
    np.testing.assert_allclose(np.asarray(kl_estimate(d + 1.0, 1.0, "k3")), np.expm1(-dn) + dn, rtol=1e-5)
    grad_k3 = jax.vmap(jax.grad(lambda x: kl_estimate(x, 0.0, "k3")))
    np.testing.assert_allclose(np.asarray(grad_k3(d)), 1 - np.exp(-dn), rtol=1e-5)
    # A sampled bin far below pi_ref (possible under sample reuse): exp(-d) would
    # overflow float32 below d = -88; the estimator continues linearly from
    # d = -20 with the slope there, so value and gradient stay finite and the
    # gradient still raises log pi(y).
    far_below = jnp.asarray([-20.0, -100.0, -1e4])
    vals, grads = kl_estimate(far_below, 0.0, "k3"), grad_k3(far_below)
    assert np.all(np.isfinite(np.asarray(vals))) and np.all(np.isfinite(np.asarray(grads)))
    np.testing.assert_allclose(np.asarray(grads), -np.expm1(20.0), rtol=1e-6)
    assert float(vals[1]) > float(vals[0]) > 0
    with pytest.raises(ValueError, match="kl_estimator='k4' is not valid here"):
        kl_estimate(d, 0.0, "k4")


def test_gradients_treat_batch_weights_as_constants(x64):
    # No gradient may flow into the sampling distribution through the batch.
    z, q, ref, r = _random_case(seed=3)

    def loss_through_batch(zz):
        lp = jax.nn.log_softmax(zz)
        b = regimes.exact_points(lp, jnp.asarray(r))
        return losses.reinforce(lp, b, ref_logp=jnp.asarray(np.log(ref)))[0]

    p = _softmax(z)
    g = np.asarray(jax.grad(loss_through_batch)(jnp.asarray(z)))
    np.testing.assert_allclose(g, -p * (r - p @ r), rtol=1e-9, atol=1e-12)


# ============================================================================ part 2: sampled vs exact

M_BATCHES = 4000
_N = 10
_SMALL_N, _LARGE_N = 4, 32


def _grad_logits(loss, logits, batch):
    return jax.grad(lambda zz: loss(jax.nn.log_softmax(zz), batch)[0])(logits)


def _compare(sources: dict, named_losses: dict, logits, *, m=M_BATCHES, seed=11):
    """Exact vs mean sampled logit gradients, for several losses in one compiled function.

    Args:
      sources: name -> (sample(key) -> batch, exact batch).
      named_losses: name -> (source name, loss(logp, batch) -> (loss, aux)).
      logits: (K,) policy logits at which the gradients are taken.

    Returns:
      name -> dict(exact, mean, se, err, cos, norm). One jit per call: compiles
      cost ~1.5 s each, evaluation of M batches a few ms.
    """
    src_names = list(sources)

    def all_grads(batches):
        return jnp.stack([_grad_logits(f, logits, batches[src_names.index(src)]) for src, f in named_losses.values()])

    def sample_all(key):
        ks = jax.random.split(key, len(src_names))
        return tuple(sources[n][0](k) for n, k in zip(src_names, ks))

    @jax.jit
    def stats(keys, exact):
        gs = jax.lax.map(lambda k: all_grads(sample_all(k)), keys, batch_size=1000)
        return all_grads(exact), gs.mean(0), jnp.sqrt(gs.var(0).sum(-1) / m)

    ge, gm, se = stats(jax.random.split(jax.random.PRNGKey(seed), m), tuple(sources[n][1] for n in src_names))
    out = {}
    for i, name in enumerate(named_losses):
        e, s = np.asarray(ge[i], np.float64), np.asarray(gm[i], np.float64)
        out[name] = dict(
            exact=e,
            mean=s,
            se=float(se[i]),
            err=float(np.linalg.norm(s - e)),
            cos=float(e @ s / (np.linalg.norm(e) * np.linalg.norm(s))),
            norm=float(np.linalg.norm(e)),
        )
    return out


def _unbiased_failures(stats: dict, names) -> list[str]:
    bad = []
    for name in names:
        st = stats[name]
        if st["norm"] < 1e-2:
            bad.append(f"{name}: degenerate exact gradient |g| = {st['norm']:.2e}")
        if st["err"] > 4 * st["se"]:
            bad.append(f"{name}: |mean - exact| = {st['err']:.5f} > 4 SE = {4 * st['se']:.5f}")
        if st["cos"] < 0.995:
            bad.append(f"{name}: cosine {st['cos']:.5f} < 0.995")
    return bad


def _points_source(logq, reward, n):
    return (lambda k: regimes.sample_points(k, logq, reward, n), regimes.exact_points(logq, reward))


def _pairs_source(logq, reward, n, labels, gap, pairing="all", bt_scale=3.0):
    kw = dict(labels=labels, min_reward_gap=gap, bt_scale=bt_scale)
    return (
        lambda k: regimes.sample_pairs(k, logq, reward, n, pairing=pairing, **kw),
        regimes.exact_pairs(logq, reward, **kw),
    )


def _pair_losses(ref_logp):
    return {
        "pref_ft": losses.pref_ft,
        "dpo": functools.partial(losses.dpo, ref_logp=ref_logp, beta=0.5),
        "ipo": functools.partial(losses.ipo, ref_logp=ref_logp, target_margin=1.0),
    }


# -------------------------------------------------- points: REINFORCE, PPO (on-policy), SFT and PPO off-policy


def test_points_losses_sampled_gradient_matches_exact(small_problem, small_policy_logits, small_data_logq):
    r, ref_logp = small_problem.reward, small_problem.ref_logp
    lq_pol = jax.nn.log_softmax(small_policy_logits)
    sources = {"policy": _points_source(lq_pol, r, _N), "data": _points_source(small_data_logq, r, _N)}
    named = {}
    for adv in ("none", "leave_one_out", "mean"):
        named[f"reinforce[{adv}]"] = ("policy", functools.partial(losses.reinforce, ref_logp=ref_logp, advantage=adv))
    named["reinforce[loo,entropy]"] = (
        "policy",
        functools.partial(losses.reinforce, ref_logp=ref_logp, advantage="leave_one_out", entropy_coef=0.1),
    )
    for est in losses.KL_ESTIMATORS:
        for place in losses.KL_PLACEMENTS:
            named[f"reinforce[loo,{est},{place}]"] = (
                "policy",
                functools.partial(
                    losses.reinforce,
                    ref_logp=ref_logp,
                    advantage="leave_one_out",
                    beta=0.3,
                    kl_estimator=est,
                    kl_placement=place,
                    entropy_coef=0.1,
                ),
            )
    named["ppo[loo]"] = ("policy", functools.partial(losses.ppo, ref_logp=ref_logp, advantage="leave_one_out"))
    named["ppo[loo,k3,reward]"] = (
        "policy",
        functools.partial(losses.ppo, ref_logp=ref_logp, advantage="leave_one_out", beta=0.3, kl_estimator="k3", kl_placement="reward"),
    )
    named["sft"] = ("data", losses.sft)
    # Off-policy PPO: ratios pi/q far from 1, so the clip is active on many samples.
    named["ppo[none,offpolicy]"] = ("data", functools.partial(losses.ppo, ref_logp=ref_logp, advantage="none", clip_eps=0.2))
    named["ppo[loo,k2,loss,offpolicy]"] = (
        "data",
        functools.partial(losses.ppo, ref_logp=ref_logp, advantage="leave_one_out", clip_eps=0.2, beta=0.3, kl_estimator="k2", kl_placement="loss"),
    )
    st = _compare(sources, named, small_policy_logits)

    bad = _unbiased_failures(st, [n for n in named if n != "reinforce[mean]"])

    # Advantage "mean": the batch mean includes the sample itself, so on-policy
    # E[(r_j - mean) grad log p(y_j)] = (1 - 1/N) E[r grad log p] (the other
    # samples' scores have mean 0). The exact batch has no such shrinkage.
    m = st["reinforce[mean]"]
    if np.linalg.norm(m["mean"] - (_N - 1) / _N * m["exact"]) > 4 * m["se"]:
        bad.append("reinforce[mean]: mean sampled gradient is not (N-1)/N times the exact one")
    if m["err"] <= 4 * m["se"]:
        bad.append("reinforce[mean]: the (N-1)/N shrinkage should be detectable at this M")

    # Expected gradients of the KL estimators used as losses (PAPER_NOTES B.5 and
    # kl_estimate's docstring): k1 has zero expected gradient on fresh samples,
    # k2 that of KL(pi || pi_ref) (same as the exact KL) and k3 that of
    # KL(pi_ref || pi), beta (p - pi_ref) in the logits.
    ex = {k: v["exact"] for k, v in st.items()}
    base = ex["reinforce[loo,entropy]"]
    p = np.asarray(jax.nn.softmax(small_policy_logits), np.float64)
    ref = np.asarray(small_problem.ref_probs, np.float64)
    kl = np.sum(p * np.log(p / ref))
    expected = {
        "reinforce[loo,k1,loss]": base,
        "reinforce[loo,k2,loss]": base + 0.3 * p * (np.log(p / ref) - kl),
        "reinforce[loo,exact,loss]": base + 0.3 * p * (np.log(p / ref) - kl),
        "reinforce[loo,k3,loss]": base + 0.3 * (p - ref),
    }
    for name, want in expected.items():
        if not np.allclose(ex[name], want, atol=1e-6):
            bad.append(f"{name}: exact gradient {ex[name]} != closed form {want}")
    assert np.linalg.norm(0.3 * (p - ref)) > 0.05  # the KL terms are not negligible here
    assert not bad, "\n".join(bad)


# -------------------------------------------------- best-of-N with each negative term; Bradley-Terry pairs


def test_best_of_n_and_fixed_count_pairs_sampled_gradient_matches_exact(small_problem, small_policy_logits, small_data_logq):
    r = small_problem.reward
    lq = small_data_logq
    sources = {
        "bon": (lambda k: regimes.sample_best_of_n(k, lq, r, _N), regimes.exact_best_of_n(lq, r, _N)),
        # Bradley-Terry labels with no gap count every pair, so the pair weights
        # are the constant 1/#pairs and the estimator is unbiased for any N.
        "bt_all": _pairs_source(lq, r, _N, "bradley_terry", 0.0, "all"),
        "bt_disjoint": _pairs_source(lq, r, _N, "bradley_terry", 0.0, "disjoint"),
    }
    named = {f"best_of_n[{neg}]": ("bon", functools.partial(losses.best_of_n, negative=neg, negative_coef=0.5)) for neg in (None,) + losses.NEGATIVE_TERMS}
    for src in ("bt_all", "bt_disjoint"):
        for lname, lf in _pair_losses(small_problem.ref_logp).items():
            named[f"{lname}[{src}]"] = (src, lf)
    st = _compare(sources, named, small_policy_logits)
    bad = _unbiased_failures(st, named)
    assert not bad, "\n".join(bad)


# -------------------------------------------------- self-normalised estimators: convergence in N

_PAIR_SETTINGS = {"reward": ("reward", 0.0), "reward_gap": ("reward", 0.2), "bt_gap": ("bradley_terry", 0.2)}


def test_self_normalised_sampled_gradient_converges_as_the_batch_grows(small_problem, small_policy_logits, small_data_logq):
    r = small_problem.reward
    lq_pol = jax.nn.log_softmax(small_policy_logits)
    sources = {}
    named = {}
    for n in (_SMALL_N, _LARGE_N):
        sources[f"points{n}"] = _points_source(lq_pol, r, n)
        named[f"rwr@{n}"] = (f"points{n}", functools.partial(losses.rwr, beta=0.5))
        named[f"rwr[normalize]@{n}"] = (f"points{n}", functools.partial(losses.rwr, beta=0.5, normalize=True))
        named[f"reinforce[zscore]@{n}"] = (
            f"points{n}",
            functools.partial(losses.reinforce, ref_logp=small_problem.ref_logp, advantage="zscore"),
        )
        for setting, (labels, gap) in _PAIR_SETTINGS.items():
            sources[f"{setting}{n}"] = _pairs_source(small_data_logq, r, n, labels, gap)
            for lname, lf in _pair_losses(small_problem.ref_logp).items():
                named[f"{lname}[{setting}]@{n}"] = (f"{setting}{n}", lf)
    st = _compare(sources, named, small_policy_logits)
    bad = []
    for name in [k.split("@")[0] for k in named if k.endswith(f"@{_LARGE_N}")]:
        small, large = st[f"{name}@{_SMALL_N}"], st[f"{name}@{_LARGE_N}"]
        assert large["norm"] > 1e-2, name
        # O(1/N) ratio-estimator bias: measured bias * N / |g| <= 0.85 (module docstring).
        if large["err"] > 4 * large["se"] + 1.0 * large["norm"] / _LARGE_N:
            bad.append(f"{name}: error {large['err']:.5f} at N={_LARGE_N} exceeds 4 SE + |g|/N")
        if large["err"] >= 0.5 * small["err"]:
            bad.append(f"{name}: error did not halve from N={_SMALL_N} ({small['err']:.5f}) to N={_LARGE_N} ({large['err']:.5f})")
        if large["cos"] < 0.999:
            bad.append(f"{name}: cosine {large['cos']:.5f} < 0.999 at N={_LARGE_N}")
    assert len({k.split("@")[0] for k in named}) == 12
    assert not bad, "\n".join(bad)


# ============================================================================ part 3: the registry binds static options once


def _bandit_batches(k=8, n=6, seed=3):
    rng = np.random.default_rng(seed)
    logq = jnp.asarray(np.log(rng.dirichlet(np.ones(k))), jnp.float32)
    reward = jnp.asarray(rng.uniform(size=k), jnp.float32)
    key = jax.random.PRNGKey(seed)
    return {
        "points": regimes.sample_points(key, logq, reward, n),
        "best_of_n": regimes.sample_best_of_n(key, logq, reward, n),
        "pairs": regimes.sample_pairs(key, logq, reward, n),
        "target": Target(jax.nn.softmax(jnp.asarray(rng.normal(size=k), jnp.float32))),
    }


#: (loss, static options to bind, the pure function's keywords given hp and ref_logp).
BIND_CASES = [
    ("sft", {}, lambda hp, ref: {}),
    ("best_of_n", {"negative": "mean_worse"}, lambda hp, ref: dict(negative="mean_worse", negative_coef=hp.negative_coef)),
    ("pref_ft", {}, lambda hp, ref: {}),
    ("rwr", {"normalize": True}, lambda hp, ref: dict(beta=hp.beta, normalize=True)),
    ("forward_kl", {}, lambda hp, ref: {}),
    ("dpo", {}, lambda hp, ref: dict(ref_logp=ref, beta=hp.beta)),
    ("ipo", {}, lambda hp, ref: dict(ref_logp=ref, target_margin=hp.target_margin)),
    (
        "reinforce",
        dict(advantage="zscore", kl_estimator="k3", kl_placement="loss"),
        lambda hp, ref: dict(ref_logp=ref, advantage="zscore", beta=hp.beta, kl_estimator="k3", kl_placement="loss", entropy_coef=hp.entropy_coef),
    ),
    (
        "ppo",
        dict(advantage="leave_one_out", kl_estimator="k2", kl_placement="reward"),
        lambda hp, ref: dict(ref_logp=ref, advantage="leave_one_out", beta=hp.beta, kl_estimator="k2", kl_placement="reward", entropy_coef=hp.entropy_coef, clip_eps=hp.clip_eps),
    ),
    ("reverse_kl", {}, lambda hp, ref: {}),
]


@pytest.mark.parametrize("name, static, keywords", BIND_CASES)
def test_bound_bandit_loss_is_the_pure_function(name, static, keywords):
    # The same operations in the same order as the pure function called directly:
    # equal programs, hence bit-identical values and gradients.
    spec = losses.get(name)
    batch = _bandit_batches()[spec.batch]
    rng = np.random.default_rng(0)
    logp = jax.nn.log_softmax(jnp.asarray(rng.normal(size=8), jnp.float32))
    ref = jax.nn.log_softmax(jnp.asarray(rng.normal(size=8), jnp.float32))
    hp = jax.tree.map(jnp.float32, ms.HyperParams(beta=0.3, negative_coef=0.2, entropy_coef=0.1, clip_eps=0.15, target_margin=1.5))
    apply = spec.bind("bandit", **static)
    fn = getattr(losses, name)

    def expected(lp, r, h):
        return fn(lp, batch, **keywords(h, r))

    got_jaxpr = jax.make_jaxpr(lambda lp, r, h: apply(lp, batch, r, h))(logp, ref, hp)
    assert str(got_jaxpr) == str(jax.make_jaxpr(expected)(logp, ref, hp))
    got, want = apply(logp, batch, ref, hp), expected(logp, ref, hp)
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))
    # Bound from a run configuration: the same static options, read from its fields.
    cfg = ms.RunConfig(loss=name, sampling="on_policy", steps=1, **static)
    from_cfg = spec.bind("bandit", cfg)
    assert str(jax.make_jaxpr(lambda lp, r, h: from_cfg(lp, batch, r, h))(logp, ref, hp)) == str(got_jaxpr)


def test_bind_refuses_inapplicable_and_unknown_options():
    with pytest.raises(ValueError, match=r"clip_eps does not apply to loss='dpo'; dpo's options are beta") as exc:
        losses.get("dpo").bind("bandit", clip_eps=0.2)
    assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match=r"ratio does not apply to loss='ppo' on bandit policies"):
        losses.get("ppo").bind("bandit", ratio="token")
    with pytest.raises(ValueError, match=r"ratio does not apply to loss='reinforce'"):
        losses.get("reinforce").bind("sequence", ratio="sequence")
    # Options the loss reads but that are not bound: traced values and batch options.
    with pytest.raises(ValueError, match=r"beta cannot be bound to loss='dpo' \(bandit\); it has no static options"):
        losses.get("dpo").bind("bandit", beta=0.1)
    with pytest.raises(ValueError, match=r"labels cannot be bound to loss='pref_ft' \(sequence\)"):
        losses.get("pref_ft").bind("sequence", labels="reward")
    with pytest.raises(ValueError, match=r"shfit cannot be bound to loss='ppo' \(sequence\); its static options are advantage, kl_estimator, kl_placement, ratio"):
        losses.get("ppo").bind("sequence", shfit="authors")
    with pytest.raises(ValueError, match=r"advantage='median' is not valid; expected one of 'none', 'mean'"):
        losses.get("reinforce").bind("bandit", advantage="median")
    with pytest.raises(ValueError, match=r"loss='reverse_kl' has no sequence implementation; it runs on tabular, mlp policies"):
        losses.get("reverse_kl").bind("sequence")
    with pytest.raises(ValueError, match=r"kind='token' is not valid; expected one of 'bandit', 'sequence'"):
        losses.get("sft").bind("token")
    # An option left off (None, or False for normalize) is accepted for any loss, as by check_options.
    losses.get("sft").bind("bandit", negative=None, kl_estimator=None, normalize=False)


def test_one_registry_lists_sequence_support():
    from modeseek import policies
    from modeseek.losses import sequences as seq_losses
    from modeseek.sequences import policies as seq_policies

    assert losses.POLICIES == {"bandit": policies.names(), "sequence": seq_policies.names()}
    bandit_only = {"forward_kl", "reverse_kl", "remax", "nash_md", "xpo", "mirror_descent", "spo_exact"}
    assert set(losses.names("bandit")) == set(losses.names())
    assert losses.names("sequence") == tuple(n for n in losses.names() if n not in bandit_only)
    for name in losses.names():
        spec = losses.get(name)
        assert spec.kinds == (("bandit",) if name in bandit_only else ("bandit", "sequence")), name
        assert spec.policies[:2] == ("tabular", "mlp"), name
        for p in ("factorised", "bigram", "transformer"):
            assert (p in spec.policies) == (name not in bandit_only), (name, p)
        assert spec.policies == tuple(p for k in spec.kinds for p in losses.POLICIES[k])
        own = spec.base or name  # a preset runs its base loss's functions
        assert spec.fn is getattr(losses, own)
        if "sequence" in spec.kinds:
            assert spec.implementation("sequence").fn is getattr(seq_losses, own), name
    with pytest.raises(ValueError, match="loss='forward_kl' is not valid; expected one of 'sft'"):
        losses.get("forward_kl", "sequence")
    # The registry is the only one: the sequence functions have none of their own.
    assert not hasattr(seq_losses, "get") and not hasattr(seq_losses, "names")
