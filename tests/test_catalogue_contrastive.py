"""The contrastive catalogue: slic, simpo, cpo, orpo, kto, bco, apo_zero, apo_down, sppo, dpop, chi_po, robust_dpo.

Per loss: values against formulas written here in NumPy from the papers'
definitions, float64 gradients against finite differences (vmapped over a
batch of contexts), sampled-batch gradients converging to the exact batch's,
the factored pair table against the materialised pairs, the 1-token sequence
implementation against the bandit one, runs through :func:`modeseek.run`, and
the fixed points of ipo and sppo on one repeated pair.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import modeseek as ms
from modeseek import losses, regimes
from modeseek.batches import Pairs
from modeseek.losses import contrastive
from modeseek.losses import sequences as seq_losses
from modeseek.sequences import batches as sb
from modeseek.sequences import policies as seq_policies
from modeseek.sequences import sampling as seq_sampling

PAIR_LOSSES = ("slic", "simpo", "cpo", "orpo", "apo_zero", "apo_down", "sppo", "dpop", "chi_po", "robust_dpo")
UNPAIRED_LOSSES = ("kto", "bco")
NEW = PAIR_LOSSES + UNPAIRED_LOSSES


def _some_fast(names, fast):
    """``names`` as parameters, those not in ``fast`` marked slow: each is a compiled program of
    its own, and the default suite keeps a representative few (make test-slow runs them all)."""
    return [n if n in fast else pytest.param(n, marks=pytest.mark.slow) for n in names]


#: Keyword values for each loss (its traced options at non-default values, so that each one matters).
KW = {
    "slic": dict(beta=0.7, nll_coef=0.3),
    "simpo": dict(beta=1.5, simpo_gamma=0.4),
    "cpo": dict(beta=0.8, nll_coef=0.5),
    "orpo": dict(beta=0.6),
    "apo_zero": dict(beta=0.9),
    "apo_down": dict(beta=0.9),
    "sppo": dict(beta=0.7),
    "dpop": dict(beta=0.5, dpop_lambda=3.0),
    "chi_po": dict(beta=0.4),
    "robust_dpo": dict(beta=0.8, label_smoothing=0.2),
    "kto": dict(beta=0.9, desirable_weight=1.0, undesirable_weight=1.3),
    "bco": dict(beta=0.9),
}


def _fn(name):
    return functools.partial(getattr(losses, name), **KW[name])


# ----------------------------------------------------------------------------- NumPy formulas from the papers


def _logsig(x):
    return -np.logaddexp(0.0, -x)


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _np_pair(name, lw, ll, hw, hl, kw):
    b = kw["beta"]
    if name == "slic":
        return np.maximum(0.0, 1.0 - b * (hw - hl)) - kw["nll_coef"] * lw
    if name == "simpo":
        return -_logsig(b * (lw - ll) - kw["simpo_gamma"])
    if name == "cpo":
        return -_logsig(b * (lw - ll)) - kw["nll_coef"] * lw
    if name == "orpo":
        odds = lambda lp: np.log(np.exp(lp) / (1.0 - np.exp(lp)))  # noqa: E731
        return -lw - b * _logsig(odds(lw) - odds(ll))
    if name == "apo_zero":
        return (1.0 - _sig(b * hw)) + _sig(b * hl)
    if name == "apo_down":
        return _sig(b * hw) + (1.0 - _sig(b * (hw - hl)))
    if name == "sppo":
        return (hw - 1.0 / (2 * b)) ** 2 + (hl + 1.0 / (2 * b)) ** 2
    if name == "dpop":
        return -_logsig(b * ((hw - hl) - kw["dpop_lambda"] * np.maximum(0.0, -hw)))
    if name == "chi_po":
        phi = lambda h: np.exp(h) + h  # noqa: E731  z + log z at z = exp(h)
        return -_logsig(b * (phi(hw) - phi(hl)))
    if name == "robust_dpo":
        e = kw["label_smoothing"]
        return -(1 - e) * _logsig(b * (hw - hl)) - e * _logsig(-b * (hw - hl))
    raise AssertionError(name)


def _np_unpaired(name, logp, ref, y, r, w, kw):
    h = logp[y] - ref[y]
    mean = np.sum(w * r) / np.sum(w)
    good, bad = r > mean, r < mean
    b = kw["beta"]
    if name == "kto":
        p = np.exp(logp)
        z0 = np.sum(p * (logp - ref))
        per = np.where(good, kw["desirable_weight"] * (1 - _sig(b * (h - z0))), np.where(bad, kw["undesirable_weight"] * (1 - _sig(b * (z0 - h))), 0.0))
        return np.sum(w * per)
    lab = (good | bad) * w
    delta = np.sum(lab * b * h) / np.sum(lab)
    per = np.where(good, -_logsig(b * h - delta), np.where(bad, -_logsig(-(b * h - delta)), 0.0))
    return np.sum(w * per)


def _case(k=9, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=k)
    logp = z - np.log(np.sum(np.exp(z)))
    ref = np.log(rng.dirichlet(np.ones(k) * 2))
    reward = rng.uniform(size=k)
    return logp, ref, reward


@pytest.mark.parametrize("name", NEW)
def test_values_match_the_papers_formulas(x64, name):
    logp, ref, reward = _case()
    key = jax.random.PRNGKey(4)
    if name in PAIR_LOSSES:
        batch = regimes.sample_pairs(key, jnp.asarray(ref), jnp.asarray(reward), 8)
        c, rj, w = (np.asarray(a) for a in batch)
        want = np.sum(w * _np_pair(name, logp[c], logp[rj], logp[c] - ref[c], logp[rj] - ref[rj], KW[name]))
    else:
        batch = regimes.sample_points(key, jnp.asarray(ref), jnp.asarray(reward), 12)
        want = _np_unpaired(name, logp, ref, np.asarray(batch.y), np.asarray(batch.reward), np.asarray(batch.weight), KW[name])
    got, aux = _fn(name)(jnp.asarray(logp), batch, ref_logp=jnp.asarray(ref))
    np.testing.assert_allclose(float(got), want, rtol=1e-10, atol=1e-12)
    assert all(np.all(np.isfinite(np.asarray(v))) for v in aux.values())


def test_special_cases_reduce_to_dpo(x64):
    logp, ref, reward = _case(seed=1)
    batch = regimes.sample_pairs(jax.random.PRNGKey(0), jnp.asarray(ref), jnp.asarray(reward), 8)
    args = (jnp.asarray(logp), batch)
    dpo = float(losses.dpo(*args, ref_logp=jnp.asarray(ref), beta=0.6)[0])
    assert float(losses.robust_dpo(*args, ref_logp=jnp.asarray(ref), beta=0.6, label_smoothing=0.0)[0]) == pytest.approx(dpo, rel=1e-12)
    assert float(losses.dpop(*args, ref_logp=jnp.asarray(ref), beta=0.6, dpop_lambda=0.0)[0]) == pytest.approx(dpo, rel=1e-12)
    # CPO is DPO against a uniform reference, plus the NLL of the chosen responses (pref_ft).
    uniform = jnp.full_like(jnp.asarray(ref), -np.log(ref.size))
    cpo = float(losses.cpo(*args, ref_logp=jnp.asarray(ref), beta=0.6, nll_coef=0.5)[0])
    want = float(losses.dpo(*args, ref_logp=uniform, beta=0.6)[0]) + 0.5 * float(losses.pref_ft(*args)[0])
    assert cpo == pytest.approx(want, rel=1e-12)


def test_log_odds_is_finite_with_finite_gradients_at_the_extremes():
    lp = jnp.array([0.0, -1e-9, -1e-6, -0.3, -0.7, -5.0, -80.0, -1e4], jnp.float32)
    v = contrastive.log_odds(lp)
    g = jax.grad(lambda x: jnp.sum(contrastive.log_odds(x)))(lp)
    assert np.all(np.isfinite(np.asarray(v))) and np.all(np.isfinite(np.asarray(g)))
    # Where both are representable: log(p / (1 - p)) in float64, to float32 accuracy.
    p = np.exp(np.asarray(lp[3:6], np.float64))
    np.testing.assert_allclose(np.asarray(v[3:6]), np.log(p / (1 - p)), rtol=1e-5)
    # The cap at log p = -1e-6: the odds term stops growing (13.8) instead of diverging.
    assert float(v[0]) == pytest.approx(float(v[2]), rel=1e-6) and float(v[0]) < 14.0


# ----------------------------------------------------------------------------- float64 gradients, vmapped over contexts


@pytest.mark.parametrize("name", NEW)
def test_gradient_matches_finite_differences(x64, name):
    c, k = 3, 7
    rng = np.random.default_rng(2)
    logits = jnp.asarray(rng.normal(size=(c, k)))
    ref = jnp.asarray(np.log(rng.dirichlet(np.ones(k) * 2)))
    reward = jnp.asarray(rng.uniform(size=k))
    keys = jax.random.split(jax.random.PRNGKey(5), c)
    if name in PAIR_LOSSES:
        batch = jax.vmap(lambda kk: regimes.sample_pairs(kk, ref, reward, 6))(keys)
    else:
        batch = jax.vmap(lambda kk: regimes.sample_points(kk, ref, reward, 8))(keys)
    fn = _fn(name)

    def total(z):
        # Unbatched loss, vmapped over the contexts (one batch each).
        vals, _ = jax.vmap(lambda zz, b: fn(jax.nn.log_softmax(zz), b, ref_logp=ref))(z, batch)
        return jnp.mean(vals)

    if name in UNPAIRED_LOSSES:
        # kto's reference point z0 and bco's shift delta are detached: the
        # gradient is that of the loss with them frozen at their current values
        # (finite differences of the loss itself would move them too).
        aux = jax.vmap(lambda zz, b: fn(jax.nn.log_softmax(zz), b, ref_logp=ref)[1])(logits, batch)
        kw = {k: v for k, v in KW[name].items()}

        def frozen_one(zz, b, a):
            lp = jax.nn.log_softmax(zz)
            h = lp[b.y] - ref[b.y]
            if name == "kto":
                return contrastive.kto_with_reference_point(h, b, a["reference_point"], **kw)[0]
            return contrastive.bco_from_log_ratios(h, b, reward_shift=a["reward_shift"], **kw)[0]

        frozen = lambda z: jnp.mean(jax.vmap(frozen_one)(z, batch, aux))  # noqa: E731
        np.testing.assert_allclose(np.asarray(jax.grad(total)(logits)), np.asarray(jax.grad(frozen)(logits)), rtol=1e-12, atol=1e-14)
        # The frozen values are not trivial: KL > 0, and the shift is not 0.
        assert np.all(np.abs(np.asarray(aux["reference_point" if name == "kto" else "reward_shift"])) > 1e-3)
        check_grads(frozen, (logits,), order=1, modes=["rev"])
    else:
        check_grads(total, (logits,), order=1, modes=["rev"])
    assert float(jnp.max(jnp.abs(jax.grad(total)(logits)))) > 1e-4  # not a comparison of zeros


@pytest.mark.parametrize("name", _some_fast(PAIR_LOSSES, ("orpo", "chi_po", "robust_dpo")))
def test_factored_pair_table_equals_materialised_pairs(x64, name):
    # The PairTable path (large K) evaluates the same sum block by block.
    k = 11
    rng = np.random.default_rng(7)
    z = jnp.asarray(rng.normal(size=k))
    q = jnp.asarray(rng.normal(size=k))
    ref = jnp.asarray(np.log(rng.dirichlet(np.ones(k) * 2)))
    reward = jnp.asarray(rng.uniform(size=k))
    kw = dict(labels="bradley_terry", bt_scale=2.0, min_reward_gap=0.05)
    full = regimes.exact_pairs(q, reward, **kw, factored=False)
    table = regimes.exact_pairs(q, reward, **kw, factored=True)
    fn = _fn(name)
    f = lambda b: lambda zz: fn(jax.nn.log_softmax(zz), b, ref_logp=ref)[0]  # noqa: E731
    np.testing.assert_allclose(float(f(table)(z)), float(f(full)(z)), rtol=1e-10)
    np.testing.assert_allclose(np.asarray(jax.grad(f(table))(z)), np.asarray(jax.grad(f(full))(z)), rtol=1e-8, atol=1e-12)
    aux_t, aux_f = fn(jax.nn.log_softmax(z), table, ref_logp=ref)[1], fn(jax.nn.log_softmax(z), full, ref_logp=ref)[1]
    for n in aux_f:
        np.testing.assert_allclose(float(aux_t[n]), float(aux_f[n]), rtol=1e-10)


# ----------------------------------------------------------------------------- sampled batches converge to the exact batch

M_BATCHES = 4000


def _grad_stats(named, logits, sample, exact, m=M_BATCHES, seed=11):
    """name -> (exact gradient, mean sampled gradient, SE of that mean) w.r.t. the logits, one jit for all losses."""

    def grads(batch):
        return jnp.stack([jax.grad(lambda z: f(jax.nn.log_softmax(z), batch)[0])(logits) for f in named.values()])

    @jax.jit
    def stats(keys):
        gs = jax.lax.map(lambda kk: grads(sample(kk)), keys, batch_size=500)
        return grads(exact), gs.mean(0), jnp.sqrt(gs.var(0).sum(-1) / m)

    ge, gm, se = stats(jax.random.split(jax.random.PRNGKey(seed), m))
    return {n: (np.asarray(ge[i], np.float64), np.asarray(gm[i], np.float64), float(se[i])) for i, n in enumerate(named)}


def test_pair_losses_sampled_gradient_matches_exact(small_problem, small_policy_logits, small_data_logq):
    # Bradley-Terry labels without a gap count every pair: the pair weights are
    # the constant 1/#pairs, so the mean sampled gradient is unbiased for the
    # exact one at any N. Margins as in tests/test_losses.py: |mean - exact| is
    # within 4 SE (SE from the same 4000 draws; by Markov's inequality a random
    # seed exceeds it with probability < 1/16, and the seed is fixed), and
    # cos >= 0.995 (1 - cos ~ (SE/|g|)^2 / 2; measured SE/|g| <= 0.022 here,
    # so 1 - cos ~ 2.4e-4; measured err/SE 0.36-0.85, minimum cos 0.99985).
    r, ref = small_problem.reward, small_problem.ref_logp
    kw = dict(labels="bradley_terry", min_reward_gap=0.0, bt_scale=3.0)
    n = 10
    named = {name: functools.partial(_fn(name), ref_logp=ref) for name in PAIR_LOSSES}
    st = _grad_stats(named, small_policy_logits, lambda kk: regimes.sample_pairs(kk, small_data_logq, r, n, **kw), regimes.exact_pairs(small_data_logq, r, **kw))
    bad = []
    for name, (e, s, se) in st.items():
        err, cos = np.linalg.norm(s - e), e @ s / (np.linalg.norm(e) * np.linalg.norm(s))
        if np.linalg.norm(e) < 1e-2 or err > 4 * se or cos < 0.995:
            bad.append(f"{name}: |g| {np.linalg.norm(e):.4f} err {err:.5f} 4SE {4 * se:.5f} cos {cos:.5f}")
    assert not bad, "\n".join(bad)


def test_unpaired_sampled_gradient_converges_as_the_batch_grows(small_policy_logits):
    # The labels compare each reward with the batch's mean and bco's shift is
    # the batch's mean implicit reward: ratio estimators. A bin whose reward is
    # d standard deviations from the mean flips label with probability about
    # Phi(-d sqrt(N)), so convergence is slow for bins at the mean (the
    # conftest's small problem has its policy mode 0.02 sd from it: error at
    # N = 256 still 0.48 |g|). Here the rewards form two clusters, every bin at
    # least 0.66 sd from the policy's mean (flip probability < 1e-7 at N = 64),
    # so kto (exact z0) is unbiased once labels are right and bco keeps the
    # O(1/N) bias of its shift. Measured with M = 2000: bias * N / |g| <= 1.3
    # (bco), error at N = 64 within noise for kto; ratio err(64) / err(4) <= 0.08;
    # cos >= 0.9997. Checks: err(64) <= 4 SE + 2 |g| / N, err(64) < err(4) / 2, cos >= 0.999.
    k = 12
    idx = np.arange(k)
    r = jnp.asarray(np.where(idx < 6, 0.1 * idx / 6, 0.8 + 0.2 * (idx - 6) / 6))
    ref = jnp.log(ms.references.mixture(k, [2.0, 8.0], [1.5, 2.0], [0.7, 0.3]))
    lq = jax.nn.log_softmax(small_policy_logits)
    q = np.exp(np.asarray(lq, np.float64))
    mean, sd = q @ np.asarray(r), np.sqrt(q @ (np.asarray(r) - q @ np.asarray(r)) ** 2)
    assert np.min(np.abs(np.asarray(r) - mean)) > 0.6 * sd
    named = {name: functools.partial(_fn(name), ref_logp=ref) for name in UNPAIRED_LOSSES}
    exact = regimes.exact_points(lq, r)
    st = {n: _grad_stats(named, small_policy_logits, lambda kk, n=n: regimes.sample_points(kk, lq, r, n), exact) for n in (4, 64)}
    bad = []
    for name in named:
        e, s_small, _ = st[4][name]
        _, s_large, se = st[64][name]
        g = np.linalg.norm(e)
        err_small, err_large = np.linalg.norm(s_small - e), np.linalg.norm(s_large - e)
        cos = e @ s_large / (g * np.linalg.norm(s_large))
        if g < 1e-2 or err_large > 4 * se + 2 * g / 64 or err_large >= 0.5 * err_small or cos < 0.999:
            bad.append(f"{name}: |g| {g:.4f} err@4 {err_small:.5f} err@64 {err_large:.5f} 4SE {4 * se:.5f} cos {cos:.5f}")
    assert not bad, "\n".join(bad)


def test_unpaired_labels_and_reference_point(x64):
    logp, ref, reward = _case(seed=3)
    exact = regimes.exact_points(jnp.asarray(ref), jnp.asarray(reward))
    good, bad = contrastive.unpaired_labels(exact.reward, exact.weight)
    mean = float(np.exp(ref) @ reward)
    np.testing.assert_array_equal(np.asarray(good), reward > mean)
    np.testing.assert_array_equal(np.asarray(bad), reward < mean)
    # Masked items (weight 0) get no label; a batch of equal rewards has none.
    assert not np.any(np.asarray(contrastive.unpaired_labels(jnp.array([1.0, 0.0, 2.0]), jnp.array([0.0, 0.5, 0.5]))[0])[:1])
    g, b = contrastive.unpaired_labels(jnp.ones(4), jnp.full(4, 0.25))
    assert not np.any(np.asarray(g | b))
    # KTO's reference point is the exact KL(pi || pi_ref), and gets no gradient.
    _, aux = losses.kto(jnp.asarray(logp), exact, ref_logp=jnp.asarray(ref), beta=1.0)
    assert float(aux["reference_point"]) == pytest.approx(float(np.exp(logp) @ (logp - ref)), rel=1e-12)


# ----------------------------------------------------------------------------- sequences: L = 1 equals the bandit loss

K, NS = 8, 12


@pytest.mark.parametrize("name", _some_fast(NEW, ("simpo", "orpo", "kto", "bco")))
def test_sequence_loss_reduces_to_core_loss_at_length_one(name):
    ks = jax.random.split(jax.random.PRNGKey(0), 5)
    theta = jax.random.normal(ks[0], (1, K))
    q_logits = jax.random.normal(ks[1], (K,))
    ref_logp = jax.nn.log_softmax(jax.random.normal(ks[2], (K,)))
    reward = jax.random.uniform(ks[3], (K,))
    policy = seq_policies.factorised(None, init="zeros")
    pairs = name in PAIR_LOSSES
    ksample, klabel = jax.random.split(ks[4]) if pairs else (ks[4], None)
    toks, logq = seq_sampling.sample(policy, q_logits[None], ksample, 0, NS, 1)
    y = toks[:, 1]
    items = sb.pair_items(klabel, reward[y]) if pairs else sb.points_items(reward[y], logq.sum(-1))
    seq_batch = sb.SequenceBatch(toks, reward[y], logq, ref_logp[y][:, None], items)
    core_batch = regimes.sample_pairs(ks[4], q_logits, reward, NS) if pairs else regimes.sample_points(ks[4], q_logits, reward, NS)
    kw = dict(KW[name])

    def seq_loss(th):
        tok, _ = seq_sampling.sequence_logprobs(policy, th, seq_batch.tokens)
        return getattr(seq_losses, name)(tok, seq_batch, **kw)[0]

    def core_loss(th):
        logp = jax.nn.log_softmax(th[0])
        if name == "kto":
            # The sequence kto estimates z0 from the batch (max(0, mean h)); give the core the same point.
            h = logp[core_batch.y] - ref_logp[core_batch.y]
            z0 = jnp.maximum(jnp.sum(core_batch.weight * h), 0.0)
            return contrastive.kto_with_reference_point(h, core_batch, z0, **kw)[0]
        return getattr(losses, name)(logp, core_batch, ref_logp=ref_logp, **kw)[0]

    v_seq, g_seq = jax.jit(jax.value_and_grad(seq_loss))(theta)
    v_core, g_core = jax.jit(jax.value_and_grad(core_loss))(theta)
    np.testing.assert_allclose(float(v_seq), float(v_core), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(g_seq), np.asarray(g_core), rtol=1e-4, atol=1e-6)
    assert float(jnp.max(jnp.abs(g_core))) > 1e-4


def test_simpo_and_orpo_normalise_by_the_number_of_tokens():
    # Three tokens per response: SimPO's reward is beta / 3 times the sequence log-probability,
    # ORPO's probabilities are the per-token geometric means.
    tok = jnp.log(jnp.array([[0.5, 0.4, 0.3], [0.2, 0.1, 0.6]]))
    ref = jnp.zeros_like(tok)
    items = Pairs(jnp.array([0], jnp.int32), jnp.array([1], jnp.int32), jnp.array([1.0]))
    batch = sb.SequenceBatch(jnp.zeros((2, 4), jnp.int32), jnp.zeros(2), tok, ref, items)
    lw, ll = np.log(0.5 * 0.4 * 0.3), np.log(0.2 * 0.1 * 0.6)
    got = float(seq_losses.simpo(tok, batch, beta=2.0, simpo_gamma=0.3)[0])
    assert got == pytest.approx(float(-_logsig(2.0 * (lw - ll) / 3 - 0.3)), rel=1e-5)
    got = float(seq_losses.orpo(tok, batch, beta=0.5)[0])
    assert got == pytest.approx(float(_np_pair("orpo", lw / 3, ll / 3, 0, 0, dict(beta=0.5))), rel=1e-5)


# ----------------------------------------------------------------------------- fixed points (float64, exact gradient descent)


def _descend(loss, z0, lr, steps):
    grad = jax.jit(jax.grad(loss))
    return jax.lax.fori_loop(0, steps, lambda i, z: z - lr * grad(z), z0)


def test_ipo_on_one_repeated_pair_converges_to_its_target_margin(x64):
    # One pair (chosen 1, rejected 3) with weight 1: the loss is (h - m)^2 with h
    # the difference of two logits minus a constant, so plain gradient descent
    # is a linear contraction h - m -> (1 - 4 lr)(h - m) per step: 0.6^400 < 1e-80.
    k, beta = 5, 0.7
    rng = np.random.default_rng(0)
    ref = jnp.asarray(np.log(rng.dirichlet(np.ones(k))))
    pair = Pairs(jnp.array([1], jnp.int32), jnp.array([3], jnp.int32), jnp.array([1.0]))
    m = 1.0 / (2.0 * beta)
    loss = lambda z: losses.ipo(jax.nn.log_softmax(z), pair, ref_logp=ref, target_margin=m)[0]  # noqa: E731
    z = _descend(loss, jnp.asarray(ref), 0.1, 400)
    h = float(contrastive.implicit_margin(jax.nn.log_softmax(z), ref, pair.chosen, pair.rejected)[0])
    assert h == pytest.approx(m, abs=1e-10)


def test_sppo_log_ratios_converge_to_plus_minus_half_over_beta(x64):
    # (h_w - a)^2 + (h_l + a)^2, a = 1/(2 beta): zero, its minimum, exactly when
    # pi(y_w) = pi_ref(y_w) e^a and pi(y_l) = pi_ref(y_l) e^-a, which a softmax
    # can represent when those two masses sum below 1 (0.2 (e^0.5 + e^-0.5) =
    # 0.45 here, uniform reference over 5 bins, beta = 1). The residual after
    # 3000 steps measured below 1e-12; we require 1e-8.
    k, beta = 5, 1.0
    ref = jnp.full((k,), -np.log(k))
    pair = Pairs(jnp.array([0], jnp.int32), jnp.array([2], jnp.int32), jnp.array([1.0]))
    loss = lambda z: losses.sppo(jax.nn.log_softmax(z), pair, ref_logp=ref, beta=beta)[0]  # noqa: E731
    z = _descend(loss, jnp.zeros(k), 0.5, 3000)
    h = np.asarray(jax.nn.log_softmax(z) - ref)
    assert h[0] == pytest.approx(0.5 / beta, abs=1e-8)
    assert h[2] == pytest.approx(-0.5 / beta, abs=1e-8)


# ----------------------------------------------------------------------------- modeseek.run and options

_SHORT = dict(steps=6, seeds=1, num_samples=6, learning_rate=0.1, beta=0.5, snapshot_every=6)


@pytest.mark.parametrize("name", _some_fast(NEW, ("simpo", "kto", "bco")))
def test_runs_on_tabular(far, name):
    tr = ms.run(far, loss=name, sampling="on_policy", **_SHORT)
    er = tr.metrics["expected_reward"]
    assert np.all(np.isfinite(er)) and np.all(np.isfinite(tr.final_probs))
    # The policy moved from the reference.
    assert float(tr.metrics["kl_pi_ref"][0, -1]) > 1e-4
    extra = {"kto": "reference_point", "bco": "reward_shift"}.get(name, "margin")
    assert extra in tr.metrics


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW)
def test_runs_on_mlp_and_exact(far, name):
    tr = ms.run(far, loss=name, sampling="exact", policy="mlp", num_contexts=2, num_eval_contexts=4, sft_steps=5, **_SHORT)
    assert np.all(np.isfinite(tr.metrics["expected_reward"])) and float(tr.metrics["kl_pi_ref"][0, -1]) > 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("name", NEW)
def test_runs_on_the_transformer(name):
    prob = ms.sequences.paper_sequence_bandit("near", vocab=6, length=2)
    tr = ms.run(
        prob,
        loss=name,
        sampling="on_policy",
        steps=4,
        num_contexts=2,
        num_samples=4,
        num_eval_contexts=4,
        eval_samples=2,
        layers=1,
        heads=1,
        embed=8,
        sft_steps=2,
        learning_rate=0.01,
        beta=0.5,
        snapshot_every=4,
    )
    assert all(np.all(np.isfinite(v)) for v in tr.metrics.values())


def test_kto_runs_on_the_factorised_policy():
    # The sequence engine scores pi_ref for the unpaired losses too (a points
    # batch); every loss on the transformer: the slow test above.
    prob = ms.sequences.paper_sequence_bandit("far", vocab=6, length=3)
    tr = ms.run(prob, loss="kto", policy="factorised", sampling="on_policy", steps=6, num_contexts=2, num_samples=6, learning_rate=0.3, beta=0.5)
    assert float(tr.metrics["kl_pi_ref"][0, -1]) > 1e-4 and np.all(np.isfinite(tr.metrics["expected_reward"]))
    assert np.all(tr.metrics["reference_point"][..., 1:] >= 0.0)


def test_options_belong_to_their_losses(far):
    assert set(losses.get("kto").options) == {"beta", "desirable_weight", "undesirable_weight"}
    assert set(losses.get("bco").options) == {"beta"}
    assert set(losses.get("slic").options) == {"beta", "nll_coef"} | set(losses.PAIR_OPTIONS)
    with pytest.raises(ValueError, match=r"nll_coef does not apply to loss='dpo'; dpo's options are beta") as exc:
        ms.run(far, loss="dpo", nll_coef=0.5, steps=2)
    assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match=r"labels does not apply to loss='kto'; kto's options are beta, desirable_weight, undesirable_weight"):
        ms.run(far, loss="kto", labels="bradley_terry", steps=2)
    with pytest.raises(ValueError, match=r"simpo_gamma does not apply to loss='cpo'"):
        losses.check_options("cpo", ["simpo_gamma"], kind="sequence")
    with pytest.raises(ValueError, match=r"label_smoothing=0.5 is invalid; expected a label-flip probability in \[0, 0.5\)"):
        ms.run(far, loss="robust_dpo", label_smoothing=[0.1, 0.5], steps=2)
    with pytest.raises(ValueError, match=r"dpop_lambda=-1.0 is invalid; expected finite and >= 0"):
        ms.run(far, loss="dpop", dpop_lambda=-1.0, steps=2)
