"""Token-sequence bandit: sampling, log-probabilities, rewards, losses and the engine."""

from __future__ import annotations

import dataclasses
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from modeseek import engine, regimes
from modeseek import losses as core_losses
from modeseek.losses import sequences as seq_losses
from modeseek.sequences import batches as sb
from modeseek.sequences import markov, policies, problems, rewards, sampling

V, L = 5, 3


def _random_params(policy, key, vocab=V, length=L, scale=1.0):
    return policy.init(key, vocab=vocab, length=length, init_scale=scale)


def _ref(vocab=V):
    p = np.arange(1, vocab + 1, dtype=np.float64)
    return jnp.asarray(p / p.sum(), jnp.float32)


def _sample_many(policy, params, prompt, n, key=0, length=L):
    return sampling.sample(policy, params, jax.random.PRNGKey(key), prompt, n, length)


def _max_z(counts, probs, n):
    # Binomial z-scores of empirical frequencies; with a few dozen cells the
    # chance of any |z| > 5 under the null is ~1e-5, while a wrong sampler
    # (e.g. an off-by-one position) gives |z| in the tens at n = 40000.
    sd = np.sqrt(np.maximum(probs * (1 - probs), 1e-12) / n)
    return float(np.max(np.abs(counts / n - probs) / sd))


# ----------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("kind", ["factorised", "bigram"])
def test_sampling_matches_exact_marginals(kind):
    ref = _ref()
    policy = policies.make(kind, ref, init="random")
    params = _random_params(policy, jax.random.PRNGKey(1))
    prompt, n = 2, 40000
    toks, _ = _sample_many(policy, params, prompt, n)
    toks = np.asarray(toks)
    assert np.all(toks[:, 0] == prompt)
    il, tl = policy.markov(params, prompt, L)
    marg = np.asarray(markov.marginals(jnp.exp(il), jnp.exp(tl)))
    counts = np.stack([np.bincount(toks[:, t + 1], minlength=V) for t in range(L)])
    assert _max_z(counts, marg, n) < 5.0


def test_bigram_sampling_matches_exact_pair_law():
    ref = _ref()
    policy = policies.bigram(ref, init="random")
    params = _random_params(policy, jax.random.PRNGKey(3))
    n = 40000
    toks = np.asarray(_sample_many(policy, params, 4, n, key=5)[0])
    il, tl = policy.markov(params, 4, L)
    joint = np.asarray(jnp.exp(il)[:, None] * jnp.exp(tl[0]))  # P(y1, y2)
    counts = np.zeros((V, V))
    np.add.at(counts, (toks[:, 1], toks[:, 2]), 1)
    assert _max_z(counts, joint, n) < 5.0


def test_transformer_cached_sampler_matches_teacher_forcing():
    policy = policies.transformer(policies.TransformerSizes(layers=2, heads=2, embed=16))
    params = policy.init(jax.random.PRNGKey(0), vocab=11, length=6, init_scale=1.0)
    # Larger weights than the init so that the conditionals are far from uniform.
    params = jax.tree.map(lambda a: a * 20.0 if a.ndim > 1 else a, params)
    toks, logq = sampling.sample(policy, params, jax.random.PRNGKey(1), 3, 16, 6)
    tok_logp, _ = sampling.sequence_logprobs(policy, params, toks)
    np.testing.assert_allclose(np.asarray(logq), np.asarray(tok_logp), atol=1e-4)
    assert float(jnp.std(logq)) > 0.1


def test_one_token_sampler_draws_what_the_core_sampler_draws():
    ref = _ref(8)
    policy = policies.factorised(ref, init="random")
    params = policy.init(jax.random.PRNGKey(2), vocab=8, length=1, init_scale=1.0)
    key = jax.random.PRNGKey(7)
    toks, _ = sampling.sample(policy, params, key, 0, 50, 1)
    core = regimes.sample_bins(key, params[0], 50)
    np.testing.assert_array_equal(np.asarray(toks[:, 1]), np.asarray(core))


# ----------------------------------------------------------------------------- log-probabilities


def test_token_logprobs_shift_on_a_hand_built_sequence():
    logits = jnp.asarray(
        [
            [2.0, 0.0, 1.0, -1.0],  # predicts token 1
            [0.0, 3.0, 0.0, 0.5],  # predicts token 2
            [1.0, 1.0, 4.0, 0.0],  # predicts a token past the end
        ]
    )
    tokens = jnp.asarray([2, 0, 3])  # prompt 2, response (0, 3)
    lp = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    correct = np.asarray(sampling.token_logprobs(logits, tokens, "correct"))
    authors = np.asarray(sampling.token_logprobs(logits, tokens, "authors"))
    np.testing.assert_allclose(correct, [lp[0, 0], lp[1, 3]], rtol=1e-6)
    # The authors' gather scores each input token with the next token's distribution.
    np.testing.assert_allclose(authors, [lp[0, 2], lp[1, 0], lp[2, 3]], rtol=1e-6)
    assert abs(correct.sum() - authors.sum()) > 0.5
    with pytest.raises(ValueError, match="shift"):
        sampling.token_logprobs(logits, tokens, "left")


def test_sequence_logprob_is_the_factorised_product():
    ref = _ref()
    policy = policies.factorised(ref, init="random")
    params = _random_params(policy, jax.random.PRNGKey(4))
    tokens = jnp.asarray([[1, 4, 0, 2]])
    tok, nxt = sampling.sequence_logprobs(policy, params, tokens)
    lp = np.asarray(jax.nn.log_softmax(params, axis=-1))
    np.testing.assert_allclose(np.asarray(tok[0]), [lp[0, 4], lp[1, 0], lp[2, 2]], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(nxt[0]), lp, rtol=1e-6)


# ----------------------------------------------------------------------------- rewards and exact metrics


def _all_sequences(prompt, vocab=V, length=L):
    ys = np.array(list(itertools.product(range(vocab), repeat=length)), dtype=np.int32)
    return jnp.asarray(np.concatenate([np.full((len(ys), 1), prompt, np.int32), ys], axis=1))


REWARDS = {
    "bump": rewards.gaussian_bump(V, 3.0, 1.5),
    "bump_with_prompt": rewards.gaussian_bump(V, 3.0, 1.5, include_prompt=True),
    "length": rewards.length(V, eos=1, target=1.0),
    "sparse": rewards.all_in_set(V, 2, 4),
    "sparse_with_prompt": rewards.all_in_set(V, 1, 4, include_prompt=True),
}


@pytest.mark.parametrize("kind", ["factorised", "bigram"])
def test_exact_metrics_match_brute_force_enumeration(kind):
    ref = _ref()
    policy = policies.make(kind, ref, init="random")
    params = _random_params(policy, jax.random.PRNGKey(8))
    ref_params = _random_params(policy, jax.random.PRNGKey(9), scale=0.5)
    prompt = 3
    seqs = _all_sequences(prompt)
    logp = np.asarray(sampling.sequence_logprobs(policy, params, seqs)[0].sum(-1), np.float64)
    ref_logp = np.asarray(sampling.sequence_logprobs(policy, ref_params, seqs)[0].sum(-1), np.float64)
    p = np.exp(logp)
    assert abs(p.sum() - 1.0) < 1e-5

    @jax.jit
    def exact(params, ref_params):
        il, tl = policy.markov(params, prompt, L)
        ril, rtl = policy.markov(ref_params, prompt, L)
        er = {name: rw.expected_markov(prompt, jnp.exp(il), jnp.exp(tl)) for name, rw in REWARDS.items()}
        brute = {name: jax.vmap(rw)(seqs) for name, rw in REWARDS.items()}
        return markov.kl(il, tl, ril, rtl), markov.entropy(il, tl), er, brute

    kl, ent, er, values = exact(params, ref_params)
    np.testing.assert_allclose(float(kl), np.sum(p * (logp - ref_logp)), rtol=1e-4)
    np.testing.assert_allclose(float(ent), -np.sum(p * logp), rtol=1e-4)
    for name in REWARDS:
        brute = float(np.sum(p * np.asarray(values[name], np.float64)))
        assert abs(brute - float(er[name])) < 1e-5, name


def test_reward_values_on_hand_built_sequences():
    bump = rewards.gaussian_bump(10, 7.0, 2.0)
    t = jnp.asarray([7, 7, 5])
    assert float(bump(t)) == pytest.approx((1.0 + np.exp(-1.0)) / 2, rel=1e-6)
    with_prompt = rewards.gaussian_bump(10, 7.0, 2.0, include_prompt=True)
    assert float(with_prompt(t)) == pytest.approx((2.0 + np.exp(-1.0)) / 3, rel=1e-6)
    ln = rewards.length(10, eos=0, target=0.0)
    assert float(ln(jnp.asarray([3, 4, 0, 5, 0]))) == pytest.approx(1 - 1 / 4)  # length 1 of L = 4
    assert float(ln(jnp.asarray([3, 4, 2, 5, 6]))) == pytest.approx(0.0)  # no eos: length L
    sparse = rewards.all_in_set(10, 4, 6)
    assert float(sparse(jnp.asarray([0, 4, 6]))) == 1.0
    assert float(sparse(jnp.asarray([0, 4, 7]))) == 0.0


def test_paper_problem_reference_values():
    # PAPER_NOTES C.3: with the prompt token counted, the best reachable reward is
    # (9 + E_uniform[r(x)]) / 10 ~ 0.918 and E_ref[r] ~ 0.053 (far) / 0.357 (near).
    far = problems.paper_sequence_bandit("far", include_prompt=True)
    near = problems.paper_sequence_bandit("near", include_prompt=True)
    table = np.asarray(far.reward.table)
    assert (9 + table.mean()) / 10 == pytest.approx(0.918, abs=1e-3)
    for prob, expect in ((far, 0.053), (near, 0.357)):
        ref = np.asarray(prob.ref_probs)
        t = np.asarray(prob.reward.table)
        assert (9 * ref @ t + t.mean()) / 10 == pytest.approx(expect, abs=2e-3)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="kind"):
        problems.paper_sequence_bandit("middle")
    with pytest.raises(ValueError, match="length"):
        problems.SequenceProblem(_ref(), rewards.gaussian_bump(V, 2.0), length=0)
    with pytest.raises(ValueError, match="vocabulary"):
        problems.SequenceProblem(_ref(6), rewards.gaussian_bump(V, 2.0))
    with pytest.raises(ValueError, match="0/1"):
        rewards.SequenceReward(jnp.linspace(0, 1, V), kind="all_in_set")
    with pytest.raises(ValueError, match="embed"):
        policies.TransformerSizes(heads=5, embed=48)
    prob = problems.paper_sequence_bandit("far", vocab=10, length=2)
    with pytest.raises(ValueError, match="shift='authors'"):
        engine.run(prob, loss="reinforce", policy="factorised", shift="authors")
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        engine.run(prob, loss="reinforce", policy="factorised", num_prompts=3)
    with pytest.raises(ValueError, match="first_batch applies to bandit problems only"):
        engine.run(prob, loss="reinforce", policy="factorised", first_batch="data")
    with pytest.raises(ValueError, match="policy='tabular' is not valid"):
        engine.run(prob, loss="reinforce", policy="tabular")
    with pytest.raises(ValueError, match="loss"):
        engine.run(prob, loss="forward_kl", policy="factorised")
    with pytest.raises(ValueError, match="snapshot_every"):
        engine.run(prob, loss="reinforce", policy="factorised", steps=10, eval_every=2, snapshot_every=3)
    with pytest.raises(ValueError, match="ratio"):
        engine.run(prob, loss="ppo", policy="factorised", ratio="tokens")


# ----------------------------------------------------------------------------- losses reduce to the core at L = 1


K, NS = 8, 12


def _one_token_setup(key=0):
    """A factorised L = 1 policy, a sampling policy q and a reference, over K tokens."""
    ks = jax.random.split(jax.random.PRNGKey(key), 4)
    theta = jax.random.normal(ks[0], (1, K))
    q_logits = jax.random.normal(ks[1], (K,))
    ref_logp = jax.nn.log_softmax(jax.random.normal(ks[2], (K,)))
    reward = jax.random.uniform(ks[3], (K,))
    return theta, q_logits, ref_logp, reward


def _seq_batch(key, q_logits, ref_logp, reward, kind, **pair_kw):
    """The sequence batch for one prompt, drawn with ``key`` the way the core draws its batch."""
    policy = policies.factorised(None, init="zeros")
    ks, kl = jax.random.split(key) if kind == "pairs" else (key, None)
    toks, logq = sampling.sample(policy, q_logits[None], ks, 0, NS, 1)
    y = toks[:, 1]
    r = reward[y]
    ref_tok = ref_logp[y][:, None]
    if kind == "points":
        items = sb.points_items(r, logq.sum(-1))
    elif kind == "best_of_n":
        items = sb.best_of_n_items(r)
    else:
        items = sb.pair_items(kl, r, **pair_kw)
    nxt_ref = jnp.broadcast_to(ref_logp, (NS, 1, K))
    return sb.SequenceBatch(toks, r, logq, ref_tok, items, nxt_ref), y


def _core_batch(key, q_logits, reward, kind, **pair_kw):
    if kind == "points":
        return regimes.sample_points(key, q_logits, reward, NS)
    if kind == "best_of_n":
        return regimes.sample_best_of_n(key, q_logits, reward, NS)
    return regimes.sample_pairs(key, q_logits, reward, NS, **pair_kw)


LOSS_CASES = [
    ("sft", {}, {}),
    ("best_of_n", {}, {}),
    ("best_of_n", {"negative": "worst", "negative_coef": 0.3}, {}),
    ("best_of_n", {"negative": "mean_worse", "negative_coef": 0.3}, {}),
    ("best_of_n", {"negative": "sum_worse", "negative_coef": 0.3}, {}),
    ("best_of_n", {"negative": "log_complement", "negative_coef": 0.3}, {}),
    ("pref_ft", {}, {}),
    ("pref_ft", {}, {"labels": "bradley_terry", "bt_scale": 3.0}),
    ("rwr", {"beta": 0.3}, {}),
    ("rwr", {"beta": 0.3, "normalize": True}, {}),
    ("dpo", {"beta": 0.5}, {}),
    ("dpo", {"beta": 0.5}, {"pairing": "disjoint", "min_reward_gap": 0.1}),
    ("ipo", {"target_margin": 2.0}, {}),
    ("reinforce", {"advantage": "zscore"}, {}),
    ("reinforce", {"advantage": "leave_one_out", "beta": 0.2, "kl_estimator": "k3", "kl_placement": "reward"}, {}),
    ("reinforce", {"advantage": "mean", "beta": 0.2, "kl_estimator": "k1", "kl_placement": "loss", "entropy_coef": 0.1}, {}),
    ("reinforce", {"advantage": "none", "beta": 0.2, "kl_estimator": "exact", "kl_placement": "loss"}, {}),
    ("ppo", {"advantage": "mean", "clip_eps": 0.2}, {}),
    ("ppo", {"advantage": "zscore", "clip_eps": 0.1, "ratio": "sequence", "beta": 0.3, "kl_estimator": "k2", "kl_placement": "loss"}, {}),
    ("ppo", {"advantage": "mean", "clip_eps": 0.2, "beta": 0.3, "kl_estimator": "exact", "kl_placement": "reward"}, {}),
]


@pytest.mark.parametrize("name, kw, pair_kw", LOSS_CASES)
def test_sequence_loss_reduces_to_core_loss_at_length_one(name, kw, pair_kw):
    theta, q_logits, ref_logp, reward = _one_token_setup()
    spec = core_losses.get(name, "sequence")
    key = jax.random.PRNGKey(11)
    seq_batch, y = _seq_batch(key, q_logits, ref_logp, reward, spec.batch, **pair_kw)
    core_batch = _core_batch(key, q_logits, reward, spec.batch, **pair_kw)
    if spec.batch == "points":
        np.testing.assert_array_equal(np.asarray(y), np.asarray(core_batch.y))
    if spec.batch == "pairs":
        np.testing.assert_array_equal(np.asarray(y[seq_batch.items.chosen]), np.asarray(core_batch.chosen))
        np.testing.assert_array_equal(np.asarray(seq_batch.items.weight), np.asarray(core_batch.weight))
        assert float(jnp.sum(core_batch.weight)) > 0.5  # some pairs count
    policy = policies.factorised(None, init="zeros")
    core_kw = {k: v for k, v in kw.items() if k != "ratio"}
    if name in ("dpo", "ipo", "reinforce", "ppo"):
        core_kw["ref_logp"] = ref_logp

    def seq_loss(th):
        tok, nxt = sampling.sequence_logprobs(policy, th, seq_batch.tokens)
        extra = {"next_logp": nxt} if name in ("reinforce", "ppo") else {}
        return spec.implementation("sequence").fn(tok, seq_batch, **kw, **extra)[0]

    def core_loss(th):
        return core_losses.get(name).fn(jax.nn.log_softmax(th[0]), core_batch, **core_kw)[0]

    v_seq, g_seq = jax.jit(jax.value_and_grad(seq_loss))(theta)
    v_core, g_core = jax.jit(jax.value_and_grad(core_loss))(theta)
    np.testing.assert_allclose(float(v_seq), float(v_core), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(g_seq), np.asarray(g_core), rtol=1e-4, atol=1e-6)
    assert float(jnp.max(jnp.abs(g_core))) > 1e-4  # the comparison is not between zeros


#: The traced values each sequence loss reads from HyperParams (its static options are the rest of its keywords).
SEQUENCE_TRACED = {
    "best_of_n": ("negative_coef",),
    "rwr": ("beta",),
    "dpo": ("beta",),
    "ipo": ("target_margin",),
    "reinforce": ("beta", "entropy_coef"),
    "ppo": ("beta", "entropy_coef", "clip_eps"),
}


@pytest.mark.parametrize("name, kw, pair_kw", LOSS_CASES)
def test_bound_sequence_loss_is_the_pure_function(name, kw, pair_kw):
    # bind fixes the static options once; apply must then perform exactly the
    # operations of the pure function called with those options and hp's values.
    from modeseek.engine import HyperParams

    theta, q_logits, ref_logp, reward = _one_token_setup()
    seq_batch, _ = _seq_batch(jax.random.PRNGKey(11), q_logits, ref_logp, reward, core_losses.get(name).batch, **pair_kw)
    policy = policies.factorised(None, init="zeros")
    tok, nxt = sampling.sequence_logprobs(policy, theta, seq_batch.tokens)
    traced = SEQUENCE_TRACED.get(name, ())
    static = {k: v for k, v in kw.items() if k not in traced}
    hp = HyperParams(beta=0.3, negative_coef=0.2, entropy_coef=0.1, clip_eps=0.15, target_margin=1.5)
    hp = jax.tree.map(jnp.float32, dataclasses.replace(hp, **{k: v for k, v in kw.items() if k in traced}))
    apply = core_losses.get(name).bind("sequence", **static)
    fn = getattr(seq_losses, name)

    def expected(t, n, h):
        extra = {"next_logp": n} if name in ("reinforce", "ppo") else {}
        return fn(t, seq_batch, **static, **{k: getattr(h, k) for k in traced}, **extra)

    got_jaxpr = jax.make_jaxpr(lambda t, n, h: apply(t, seq_batch, n, h))(tok, nxt, hp)
    want_jaxpr = jax.make_jaxpr(expected)(tok, nxt, hp)
    assert str(got_jaxpr) == str(want_jaxpr)
    got, want = apply(tok, seq_batch, nxt, hp), expected(tok, nxt, hp)
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))


def test_ppo_token_and_sequence_ratios_differ_for_longer_sequences():
    ref = _ref()
    policy = policies.factorised(ref, init="random")
    theta = _random_params(policy, jax.random.PRNGKey(1))
    q = _random_params(policy, jax.random.PRNGKey(2))
    toks, logq = sampling.sample(policy, q, jax.random.PRNGKey(3), 0, 16, L)
    r = jax.vmap(REWARDS["bump"])(toks)
    batch = sb.SequenceBatch(toks, r, logq, jnp.zeros_like(logq), sb.points_items(r, logq.sum(-1)))

    @functools.partial(jax.jit, static_argnums=1)
    def loss(th, ratio):
        tok, _ = sampling.sequence_logprobs(policy, th, toks)
        return seq_losses.ppo(tok, batch, ratio=ratio, clip_eps=0.2)[0]

    # At theta = q every ratio is 1 and both surrogates have the REINFORCE gradient.
    g_tok = jax.jit(jax.grad(loss), static_argnums=1)(q, "token")
    g_seq = jax.jit(jax.grad(loss), static_argnums=1)(q, "sequence")
    np.testing.assert_allclose(np.asarray(g_tok), np.asarray(g_seq), rtol=1e-4, atol=1e-7)
    assert abs(float(loss(theta, "token")) - float(loss(theta, "sequence"))) > 1e-3


def test_reference_kl_is_the_core_sft_objective_at_length_one():
    from modeseek import policies as core_policies

    theta, _, ref_logp, _ = _one_token_setup(3)
    nxt = jax.nn.log_softmax(theta)[:, None, :]
    np.testing.assert_allclose(
        float(seq_losses.reference_kl(nxt, ref_logp)),
        float(core_policies.kl_to_reference(theta, ref_logp)),
        rtol=1e-6,
    )


# ----------------------------------------------------------------------------- engine


TINY_RUN = dict(loss="reinforce", policy="factorised", steps=30, reuse=2, num_contexts=2, num_samples=6, learning_rate=0.3, advantage="zscore", eval_every=10, key=5)


@pytest.fixture(scope="module")
def tiny():
    return [problems.paper_sequence_bandit("far", vocab=12, length=3), problems.paper_sequence_bandit("near", vocab=12, length=3)]


@pytest.fixture(scope="module")
def tiny_run(tiny):
    return engine.run(tiny, seeds=2, **TINY_RUN)


def test_engine_is_deterministic_and_seed_batch_independent(tiny, tiny_run):
    again = engine.run(tiny, seeds=2, **TINY_RUN)  # cached program, same key
    alone = engine.run(tiny, seeds=1, **TINY_RUN)  # a new program with one run per problem
    for name in tiny_run.metrics:
        np.testing.assert_array_equal(tiny_run.metrics[name], again.metrics[name])
        np.testing.assert_allclose(tiny_run.metrics[name][:, :1], alone.metrics[name], rtol=1e-5, atol=1e-6)
    assert tiny_run.metrics["expected_reward"].shape == (2, 2, 4)
    np.testing.assert_array_equal(tiny_run.eval_steps, [0, 10, 20, 30])
    # Seeds differ (different prompts and samples).
    assert not np.allclose(tiny_run.metrics["expected_reward"][:, 0, -1], tiny_run.metrics["expected_reward"][:, 1, -1])


def test_engine_exact_metrics_start_at_the_reference_and_improve(tiny, tiny_run):
    tr = tiny_run
    er = tr.metrics["expected_reward"]
    for g, prob in enumerate(tiny):
        exact0 = float(np.asarray(prob.ref_probs) @ np.asarray(prob.reward.table))
        np.testing.assert_allclose(er[g, :, 0], exact0, rtol=1e-5)
    np.testing.assert_allclose(tr.metrics["kl_pi_ref"][..., 0], 0.0, atol=1e-6)
    assert np.all(er[..., -1] > er[..., 0] + 0.05)
    assert np.all(tr.metrics["kl_pi_ref"][..., -1] > 0.01)
    # Marginal snapshots are distributions per position, and the last one is the final policy's.
    np.testing.assert_allclose(tr.snapshots.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(tr.snapshots[..., -1, :, :], tr.final_probs)
    np.testing.assert_array_equal(tr.metrics["reward_queries"][0, 0], [0, 60, 120, 180])  # 6 x 2 per collection, every 2 steps
    df = tr.to_dataframe()
    assert len(df) == 2 * 2 * 4 and set(df["problem"]) == {"far", "near"}
    assert len(tr.snapshots_dataframe()) == 2 * len(tr.snapshot_steps) * 3 * 12


def test_engine_arms_share_a_program_and_keep_their_settings(tiny):
    arms = [dict(label="off", sampling="offline", learning_rate=0.3), dict(label="on", sampling="on_policy", learning_rate=0.1)]
    tr = engine.run(tiny[:1], loss="best_of_n", policy="factorised", arms=arms, steps=6, reuse=3, num_contexts=2, num_samples=4, eval_every=3, batching="map")
    assert tr.grid["arm"].tolist() == ["off", "on"] and tr.config.sampling == "mixed"
    np.testing.assert_array_equal(tr.metrics["reward_queries"][0, 0], [0, 8, 8])  # offline: one dataset
    np.testing.assert_array_equal(tr.metrics["reward_queries"][1, 0], [0, 8, 16])  # on-policy: a batch every 3 steps
    df = tr.to_dataframe()
    assert set(zip(df["arm"], df["sampling"], df["learning_rate"].round(3))) == {("off", "offline", 0.3), ("on", "on_policy", 0.1)}
    with pytest.raises(ValueError, match="not unique"):
        engine.run(tiny[:1], loss="best_of_n", policy="factorised", arms=[dict(label="a"), dict(label="a")])
    with pytest.raises(ValueError, match="both swept and set by arms"):
        engine.run(tiny[:1], loss="best_of_n", policy="factorised", arms=arms, learning_rate=[0.1, 0.2])


@pytest.mark.slow
def test_transformer_engine_fits_reference_then_learns():
    prob = [problems.paper_sequence_bandit("near", vocab=12, length=3)]
    tr = engine.run(
        prob,
        loss="ipo",
        sampling="on_policy",
        steps=20,
        reuse=5,
        seeds=2,
        num_contexts=4,
        num_eval_contexts=32,
        eval_samples=4,
        layers=1,
        heads=2,
        embed=16,
        sft_steps=100,
        target_margin=2.0,
        learning_rate=3e-3,
        eval_every=5,
    )
    er = tr.metrics["expected_reward"]
    ref = np.asarray(prob[0].ref_probs) @ np.asarray(prob[0].reward.table)
    # The fitted reference's per-token reward is within 0.05 of pi_data's (estimated from 128 sequences).
    np.testing.assert_allclose(er[:, 0], ref, atol=0.05)
    assert np.all(er[:, -1] > er[:, 0] + 0.05)
