"""Property tests (hypothesis): the identities and qualitative claims of PAPER_NOTES E.

Shapes are drawn from a small fixed set (K in {4, 16}; fixed sweep lengths for
engine runs) so that each jitted function compiles once and the examples only
change traced values. The profile in conftest sets deadline=None and
derandomize=True: the examples are a fixed function of each test.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

import modeseek as ms
from modeseek import losses, metrics, regimes
from modeseek.batches import Target

KS = (4, 16)


def _vec(k, lo=-3.0, hi=3.0):
    return st.lists(st.floats(lo, hi, allow_nan=False), min_size=k, max_size=k).map(np.array)


@st.composite
def _bandit(draw):
    """A random policy (logits), reference (logits, some bins nearly excluded), reward and beta."""
    k = draw(st.sampled_from(KS))
    pi_logits = draw(_vec(k))
    ref_logits = draw(_vec(k, -12.0, 3.0))
    reward = draw(_vec(k, -1.0, 1.0))
    beta = 10.0 ** draw(st.floats(-3.0, 3.0))
    return pi_logits, ref_logits, reward, beta


# ----------------------------------------------------------------------------- Lemma 6.1


@functools.cache
def _metrics_x64():
    return jax.jit(metrics.exact_metrics)


@settings(max_examples=60)
@given(_bandit())
def test_lemma_6_1_identity(case):
    # PAPER_NOTES E.1-E.2: E_pi[r] - beta KL(pi||ref) = beta log Z - beta KL(pi||pi*),
    # with pi* = ref exp(r/beta) / Z. Checked in float64 through the library's
    # metrics (kl_pi_ref, kl_pi_star use log pi* from the same table as training).
    pi_logits, ref_logits, reward, beta = case
    with jax.enable_x64(True):
        logp = jax.nn.log_softmax(jnp.asarray(pi_logits))
        ref = jax.nn.softmax(jnp.asarray(ref_logits))
        m = _metrics_x64()(logp, ref, jnp.asarray(reward), jnp.asarray(beta))
        m = {k: float(v) for k, v in m.items()}
    a = np.asarray(ref_logits, np.float64) + np.asarray(reward) / beta
    log_z = a.max() + np.log(np.exp(a - a.max()).sum()) - (ref_logits.max() + np.log(np.exp(ref_logits - ref_logits.max()).sum()))
    lhs = m["expected_reward"] - beta * m["kl_pi_ref"]
    rhs = beta * log_z - beta * m["kl_pi_star"]
    scale = abs(m["expected_reward"]) + beta * (m["kl_pi_ref"] + abs(log_z) + m["kl_pi_star"]) + 1.0
    assert abs(lhs - rhs) <= 1e-10 * scale, (lhs, rhs)
    # Consequences: both KLs are >= 0, so the objective never exceeds beta log Z.
    assert m["kl_pi_star"] >= -1e-12 and m["kl_pi_ref"] >= -1e-12
    assert lhs <= beta * log_z + 1e-10 * scale


def test_lemma_6_1_optimum_is_pi_star(far):
    # The objective at pi* equals beta log Z (KL(pi*||pi*) = 0), and beats pi_ref and a peaked policy.
    beta = 0.1
    star = ms.pi_star(far, beta)
    j = {}
    for name, p in {"star": star, "ref": far.ref_probs, "peak": jax.nn.one_hot(70, 100) * 0.99 + 0.0001}.items():
        m = metrics.exact_metrics(jnp.log(p), far.ref_probs, far.reward, beta)
        j[name] = float(m["expected_reward"] - beta * m["kl_pi_ref"])
        if name == "star":
            assert abs(float(m["kl_pi_star"])) < 1e-5
    log_z = float(jax.nn.logsumexp(jnp.log(far.ref_probs) + far.reward / beta))
    assert abs(j["star"] - beta * log_z) < 1e-5
    assert j["star"] > j["ref"] + 0.1 and j["star"] > j["peak"] + 0.1


# ----------------------------------------------------------------------------- reverse vs forward KL step
#
# One exact logit step of size eta (PAPER_NOTES E.4) with p = softmax(theta):
#   forward:  theta' = theta - eta (p - q)
#   reverse:  theta' = theta - eta g,   g = p * (log(p/q) - KL(p||q)).
# The change of log p_i is Delta_i - log sum_j p_j exp(Delta_j). For the forward
# step the log-sum is <= eta max_j (q_j - p_j); for the reverse step it is
# >= -eta p.g (Jensen). Hence, for every eta > 0, the reverse step lowers
# log p_i strictly more than the forward step whenever
#
#   (C)   g_i - p.g  >  (p_i - q_i) + max_j (q_j - p_j).
#
# As q_i -> 0 with p fixed, the left side grows like
# p_i [(1 - p_i)^2 + sum_{j != i} p_j^2] log(1/q_i) while the right side stays
# below 2, so (C) holds on every bin the target nearly excludes. (C) is
# sufficient, not necessary; without it the claim can fail (see the next test).


def _log_probs_after_step(grad_fn, logits, q, eta):
    g = jax.grad(lambda z: grad_fn(jax.nn.log_softmax(z), Target(q))[0])(logits)
    return jax.nn.log_softmax(logits - eta * g), g


@functools.cache
def _kl_steps():
    @jax.jit
    def f(logits, q, eta):
        lp_f, g_f = _log_probs_after_step(losses.forward_kl, logits, q, eta)
        lp_r, g_r = _log_probs_after_step(losses.reverse_kl, logits, q, eta)
        return lp_f, lp_r, g_f, g_r

    return f


@st.composite
def _excluding_target(draw):
    k = draw(st.sampled_from(KS))
    logits = draw(_vec(k))
    q_logits = draw(_vec(k))
    i = draw(st.integers(0, k - 1))
    # The target keeps p_i exp(-u) on bin i: u large = "nearly excludes".
    u = draw(st.floats(6.0, 30.0))
    eta = 10.0 ** draw(st.floats(-3.0, 1.0))
    return logits, q_logits, i, u, eta


@settings(max_examples=60)
@given(_excluding_target())
@example((np.array([0.0, 0.0, 0.0, 0.0]), np.array([0.0, 0.0, 0.0, 0.0]), 0, 6.0, 10.0))
def test_reverse_kl_step_lowers_nearly_excluded_bins_more(case):
    logits, q_logits, i, u, eta = case
    with jax.enable_x64(True):
        p = np.asarray(jax.nn.softmax(jnp.asarray(logits)), np.float64)
        q = np.exp(q_logits - q_logits.max())
        q[i] = 0.0
        q = q / q.sum() * (1 - p[i] * np.exp(-u))
        q[i] = p[i] * np.exp(-u)
        lp_f, lp_r, g_f, g_r = (np.asarray(a) for a in _kl_steps()(jnp.asarray(logits), jnp.asarray(q), eta))
    g = p * (np.log(p / q) - np.sum(p * np.log(p / q)))
    np.testing.assert_allclose(g_r, g, rtol=1e-8, atol=1e-12)  # the closed form of E.4
    cond = g[i] - p @ g > (p[i] - q[i]) + np.max(q - p)
    assume(cond)  # holds for ~all drawn cases with u >= 6
    lp0 = np.log(p[i])
    assert lp_r[i] - lp0 < lp_f[i] - lp0, (lp_r[i] - lp0, lp_f[i] - lp0)


def test_reverse_kl_step_can_raise_an_undercovered_bin_that_forward_kl_lowers(x64):
    # Without (C) the claim fails: bin 0 is under-covered (q_0 = 0.15 < p_0 = 0.35)
    # but not nearly excluded, while bin 2 is (q_2 = 0.05 vs p_2 = 0.5). Reverse KL
    # first removes mass where p/q is largest (bin 2), and bin 0 gains.
    p = jnp.asarray([0.35, 0.15, 0.5])
    q = jnp.asarray([0.15, 0.8, 0.05])
    lp_f, lp_r, _, g_r = _kl_steps()(jnp.log(p), q, 0.1)
    g = np.asarray(g_r)
    pn, qn = np.asarray(p), np.asarray(q)
    assert not (g[0] - pn @ g > (pn[0] - qn[0]) + np.max(qn - pn))  # (C) fails on bin 0
    assert float(lp_f[0]) < np.log(0.35) < float(lp_r[0])
    # ... while the bin with the largest p/q (bin 2) loses more under reverse KL.
    assert float(lp_r[2]) < float(lp_f[2]) < np.log(0.5)


# ----------------------------------------------------------------------------- on-policy concentrates, offline spreads

_CONC_STEPS = 200


@settings(max_examples=8)
@given(st.lists(st.floats(np.log10(0.03), 0.0), min_size=3, max_size=3))
def test_on_policy_concentrates_where_offline_maximum_likelihood_spreads(far, log_lrs):
    # Exact best-of-10 updates on "far" with Adam at the same learning rate:
    # offline (population batch of pi_ref's best-of-10) minimises a forward KL to
    # the best-of-10 distribution of pi_ref and converges to it: entropy
    # H(BoN_10) = 4.20 nats, high-reward mass 0.31. On-policy (best-of-10 of the
    # current policy) keeps moving the target and concentrates. Measured after
    # 200 steps for lr in [0.03, 1]: on-policy entropy <= 0.62, high-reward mass
    # >= 0.958; offline entropy >= 4.20, mass <= 0.311 (lr 0.02 gives 1.47 and
    # 0.88 on-policy: the condition is lr >= 0.03 at 200 steps).
    lrs = 10.0 ** np.asarray(log_lrs)
    on = ms.run(far, loss="best_of_n", sampling="exact", steps=_CONC_STEPS, learning_rate=lrs, snapshot_every=_CONC_STEPS)
    off = ms.run(far, loss="best_of_n", sampling="exact_offline", steps=_CONC_STEPS, learning_rate=lrs, snapshot_every=_CONC_STEPS)
    bon = regimes.exact_best_of_n(jnp.log(far.ref_probs), far.reward, 10).best_weight
    w = np.asarray(bon, np.float64)
    h_bon = -np.sum(w[w > 0] * np.log(w[w > 0]))
    high = np.asarray(far.reward) >= 0.5
    m_bon = w[high].sum()
    h_on, h_off = on.metrics["entropy"][:, 0, -1], off.metrics["entropy"][:, 0, -1]
    mass_on, mass_off = on.metrics["mass_high_reward"][:, 0, -1], off.metrics["mass_high_reward"][:, 0, -1]
    assert np.all(h_off >= h_bon - 0.01) and np.all(mass_off <= m_bon + 0.01)
    assert np.all(h_on <= 1.0) and np.all(mass_on >= 0.9)
    assert np.all(h_on < h_off / 4) and np.all(mass_on > 2.5 * mass_off)


# ----------------------------------------------------------------------------- no NaN under extreme settings

# One configuration per registered loss, each with its most fragile options:
# log-complement negatives, z-scored advantages, k3 KL (exp of a log-ratio),
# PPO ratios under reuse, RWR's exp(r / beta), IPO's target margin 1/(2 beta) up to 500.
_STABILITY = {
    "sft": dict(sampling="on_policy"),
    "best_of_n": dict(sampling="on_policy", negative="log_complement"),
    "pref_ft": dict(sampling="offline"),
    "rwr": dict(sampling="on_policy", normalize=True),
    "forward_kl": dict(sampling="exact"),
    "dpo": dict(sampling="on_policy"),
    "ipo": dict(sampling="offline"),
    "reinforce": dict(sampling="on_policy", advantage="zscore", kl_estimator="k3", kl_placement="loss", entropy_coef=0.1),
    "ppo": dict(sampling="on_policy", reuse=4, kl_estimator="k3", kl_placement="reward"),
    "reverse_kl": dict(sampling="exact"),
    "grpo": dict(sampling="on_policy", reuse=4, scale_rewards="batch", drop_uniform_groups=True, kl_estimator="k3", kl_placement="loss"),
    "dr_grpo": dict(sampling="on_policy", reuse=4, kl_estimator="k2", kl_placement="reward"),
    "dapo": dict(sampling="on_policy", reuse=4),
    "gspo": dict(sampling="on_policy", reuse=4, kl_estimator="k3", kl_placement="reward"),
    "cispo": dict(sampling="on_policy", reuse=4, kl_estimator="k3", kl_placement="loss"),
    "rloo": dict(sampling="on_policy", kl_estimator="k3", kl_placement="loss"),
    "reinforce_pp": dict(sampling="on_policy", reuse=4, baseline=True, kl_estimator="k3", kl_placement="reward"),
    "remax": dict(sampling="on_policy"),
    "gpg": dict(sampling="exact"),
    # The contrastive catalogue: hinge and squared targets 1/(2 beta) up to 500,
    # odds near p = 1, chi^2 links exp(h), KTO/BCO sigmoids of beta * h.
    "slic": dict(sampling="on_policy", nll_coef=1.0),
    "simpo": dict(sampling="offline", simpo_gamma=2.0),
    "cpo": dict(sampling="on_policy"),
    "orpo": dict(sampling="on_policy"),
    "kto": dict(sampling="on_policy", desirable_weight=1.0, undesirable_weight=1.33),
    "bco": dict(sampling="exact"),
    "apo_zero": dict(sampling="offline"),
    "apo_down": dict(sampling="on_policy"),
    "sppo": dict(sampling="exact"),
    "dpop": dict(sampling="offline", dpop_lambda=500.0),
    "chi_po": dict(sampling="on_policy"),
    "robust_dpo": dict(sampling="offline", label_smoothing=0.3),
    # Self-play: Bradley-Terry win probabilities, a mixture at both ends, the exploration term at full weight.
    "online_dpo": dict(sampling="on_policy", labels="bradley_terry"),
    "nash_md": dict(sampling="on_policy", mixture_alpha=np.array([0.0, 1.0])),
    "xpo": dict(sampling="on_policy", xpo_alpha=1.0),
    "mirror_descent": dict(sampling="exact", eta=np.array([1e-3, 1e3])),
    "spo_exact": dict(sampling="exact", optimizer="sgd"),
}


def test_stability_table_covers_every_loss():
    assert set(_STABILITY) == set(ms.losses.names())


_BETAS = st.lists(st.floats(-3.0, 3.0), min_size=3, max_size=3)
_LRS = st.lists(st.floats(-4.0, 0.0), min_size=2, max_size=2)


# The paper's ten losses run in the default suite; the catalogue's later objectives (each
# a compiled program of its own) run with make test-slow, to keep make test near 12 minutes.
_PAPER_LOSSES = ("sft", "best_of_n", "pref_ft", "rwr", "forward_kl", "dpo", "ipo", "reinforce", "ppo", "reverse_kl")


@pytest.mark.parametrize("loss", [n if n in _PAPER_LOSSES else pytest.param(n, marks=pytest.mark.slow) for n in _STABILITY])
def test_no_nan_or_inf_for_extreme_beta_and_learning_rate(far, loss):
    opts = _STABILITY[loss]

    @settings(max_examples=6)
    @given(_BETAS, _LRS)
    @example([-3.0, 0.0, 3.0], [0.0, 0.0])  # the corners: beta 1e-3 and 1e3 at lr 1
    def check(log_betas, log_lrs):
        tr = ms.run(
            far,
            loss=loss,
            steps=8,
            seeds=1,
            beta=10.0 ** np.asarray(log_betas),
            learning_rate=10.0 ** np.asarray(log_lrs),
            snapshot_every=8,
            **opts,
        )
        for name, v in tr.metrics.items():
            assert np.all(np.isfinite(v)), f"{loss}: metric {name} not finite at betas {log_betas}, lrs {log_lrs}"
        assert np.all(np.isfinite(tr.final_probs))
        np.testing.assert_allclose(tr.final_probs.sum(-1), 1.0, atol=1e-4)

    check()


def _stability_matrix():
    """Every static variant of every loss, in the sampling regimes that apply to it."""
    rows = []
    for sampling in ("offline", "on_policy", "exact", "exact_offline"):
        rows.append(("sft", dict(sampling=sampling)))
        for neg in (None,) + ms.losses.NEGATIVE_TERMS:
            rows.append(("best_of_n", dict(sampling=sampling, negative=neg, negative_coef=np.array([0.0, 1.0, 10.0]))))
        for normalize in (False, True):
            rows.append(("rwr", dict(sampling=sampling, normalize=normalize)))
        for loss in ("pref_ft", "dpo", "ipo"):
            for labels in ms.regimes.PAIR_LABELS:
                rows.append((loss, dict(sampling=sampling, labels=labels, min_reward_gap=np.array([0.0, 0.2]))))
    for loss in ("pref_ft", "dpo", "ipo"):
        rows.append((loss, dict(sampling="on_policy", pairing="disjoint", num_samples=2)))
    for adv in ms.losses.ADVANTAGES:
        for sampling in ("on_policy", "exact"):
            rows.append(("reinforce", dict(sampling=sampling, advantage=adv, entropy_coef=np.array([0.0, 1.0]))))
    for est in ms.losses.KL_ESTIMATORS:
        for place in ms.losses.KL_PLACEMENTS:
            rows.append(("reinforce", dict(sampling="on_policy", kl_estimator=est, kl_placement=place)))
            rows.append(("ppo", dict(sampling="on_policy", reuse=4, kl_estimator=est, kl_placement=place)))
    rows.append(("ppo", dict(sampling="on_policy", reuse=8, advantage="zscore", clip_eps=np.array([0.01, 10.0]))))
    rows.append(("forward_kl", dict(sampling="exact")))
    rows.append(("reverse_kl", dict(sampling="exact")))
    for loss in ("slic", "simpo", "cpo", "orpo", "apo_zero", "apo_down", "sppo", "dpop", "chi_po", "robust_dpo"):
        rows.append((loss, dict(sampling="on_policy", labels="reward", min_reward_gap=np.array([0.0, 0.2]))))
        rows.append((loss, dict(sampling="exact", labels="bradley_terry")))
    for loss in ("kto", "bco"):
        for sampling in ("offline", "on_policy", "exact", "exact_offline"):
            rows.append((loss, dict(sampling=sampling)))
    rows.append(("sft", dict(sampling="on_policy", first_batch="data", reuse=4, data=np.full(100, 0.01))))
    for labels in ms.regimes.PAIR_LABELS:
        for sampling in ("on_policy", "exact"):
            rows.append(("online_dpo", dict(sampling=sampling, labels=labels)))
            rows.append(("nash_md", dict(sampling=sampling, labels=labels, mixture_alpha=np.array([0.0, 0.5, 1.0]))))
            rows.append(("xpo", dict(sampling=sampling, labels=labels, xpo_alpha=np.array([0.0, 1.0]), min_reward_gap=np.array([0.0, 0.2]))))
    for loss in ("mirror_descent", "spo_exact"):
        rows.append((loss, dict(sampling="exact", eta=np.array([1e-3, 1.0, 1e3]))))
    return [(loss, dict(opts, optimizer=opt)) for loss, opts in rows for opt in ("adam", "sgd")]


@pytest.mark.slow
def test_no_nan_or_inf_for_every_static_variant(far):
    # Not hypothesis-driven: a fixed corner grid (beta 1e-3, 1, 1e3 x lr 1e-3, 1)
    # over every static variant and both optimizers (~150 compiles).
    bad = []
    for loss, opts in _stability_matrix():
        tr = ms.run(far, loss=loss, steps=8, beta=np.array([1e-3, 1.0, 1e3]), learning_rate=np.array([1e-3, 1.0]), snapshot_every=8, **opts)
        nonfinite = [n for n, v in tr.metrics.items() if not np.all(np.isfinite(v))]
        if nonfinite or not np.all(np.isfinite(tr.final_probs)):
            shown = {k: v for k, v in opts.items() if not isinstance(v, np.ndarray)}
            bad.append(f"{loss} {shown}: {nonfinite or 'final_probs'}")
    assert not bad, "\n".join(bad)


def _on_kind(opts: dict, kind: str) -> dict:
    """A stability row's options for ``kind``: sequence runs are offline or on-policy and read no bandit-only option."""
    opts = dict(opts)
    if kind == "sequence":
        opts["sampling"] = "offline" if opts.get("sampling") in ("offline", "exact_offline") else "on_policy"
        for name in ("first_batch", "minibatch", "max_samples"):
            opts.pop(name, None)
    return opts


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["mlp", "factorised", "transformer"])
def test_no_nan_or_inf_on_every_policy_kind_at_the_corners(far, policy):
    """Every loss that runs on the policy, at beta 1e-3 and 1e3 and learning rate 1 (the corners of the tabular test)."""
    kind = "bandit" if policy == "mlp" else "sequence"
    problem = far if kind == "bandit" else ms.sequences.paper_sequence_bandit("far", vocab=6, length=2)
    sizes = dict(num_contexts=2, num_eval_contexts=4, sft_steps=5) if policy == "mlp" else dict(num_contexts=2)
    if policy == "transformer":
        sizes.update(num_eval_contexts=4, eval_samples=2, layers=1, heads=1, embed=8, sft_steps=2)
    bad = []
    for loss in ms.losses.names(kind):
        tr = ms.run(problem, loss=loss, policy=policy, steps=4, seeds=1, num_samples=4, beta=np.array([1e-3, 1e3]), learning_rate=1.0, snapshot_every=4, **sizes, **_on_kind(_STABILITY[loss], kind))
        bad += [f"{loss}: {name}" for name, v in tr.metrics.items() if not np.all(np.isfinite(v))]
    assert not bad, bad
