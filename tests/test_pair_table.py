"""The factored exact pair batch (PairTable, for large K) equals the materialised one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import modeseek as ms
from modeseek import regimes
from modeseek.batches import Pairs, PairTable
from modeseek.losses import contrastive, mode_covering

# K = 600 spans three blocks of 256 rows, the last one padded.
K = 600


@pytest.fixture(scope="module")
def setup():
    logq = jax.random.normal(jax.random.PRNGKey(0), (K,))
    # Rewards on a coarse grid, so that ties (skipped pairs) are frequent.
    reward = jnp.round(jax.random.uniform(jax.random.PRNGKey(1), (K,)) * 5) / 5
    ref = jax.nn.log_softmax(jax.random.normal(jax.random.PRNGKey(2), (K,)))
    z = jax.random.normal(jax.random.PRNGKey(3), (K,))
    return logq, reward, ref, z


LOSSES = {
    "dpo": lambda lp, b, ref: contrastive.dpo(lp, b, ref_logp=ref, beta=0.5),
    "ipo": lambda lp, b, ref: contrastive.ipo(lp, b, ref_logp=ref, target_margin=2.0),
    "pref_ft": lambda lp, b, ref: mode_covering.pref_ft(lp, b),
}


@pytest.mark.parametrize("labels,gap", [("reward", 0.0), ("reward", 0.3), ("bradley_terry", 0.0)])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_factored_pairs_match_materialised(setup, name, labels, gap):
    logq, reward, ref, z = setup
    full = regimes.exact_pairs(logq, reward, labels=labels, min_reward_gap=gap, factored=False)
    table = regimes.exact_pairs(logq, reward, labels=labels, min_reward_gap=gap, factored=True)
    assert isinstance(full, Pairs) and isinstance(table, PairTable)
    f = LOSSES[name]

    def value(batch):
        return jax.value_and_grad(lambda u: f(jax.nn.log_softmax(u), batch, ref)[0])(z)

    (la, ga), (lb, gb) = value(full), value(table)
    # float32 sums over 360,000 pairs in different orders: agree to ~1e-6 relative.
    np.testing.assert_allclose(float(la), float(lb), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ga), np.asarray(gb), atol=1e-6 * float(jnp.abs(ga).max()) + 1e-9)
    sa, sb = f(jax.nn.log_softmax(z), full, ref)[1], f(jax.nn.log_softmax(z), table, ref)[1]
    for k in sa:
        np.testing.assert_allclose(float(sa[k]), float(sb[k]), rtol=1e-5, atol=1e-6)


def test_large_k_exact_dpo_runs_without_k_squared_memory():
    # 8,192 bins: a materialised pair batch would hold 6.7e7 pairs (~0.8 GB); the
    # factored one needs O(256 K) per block.
    k = 8192
    ref = ms.references.squashed_cauchy(k)
    problem = ms.Problem(ref, ms.rewards.gaussian_bump(k, 0.7 * k, 0.1 * k))
    traj = ms.run(problem, loss="dpo", sampling="exact_offline", steps=2, seeds=1)
    er = traj.metrics["expected_reward"][0]
    assert np.all(np.isfinite(er)) and er[-1] > er[0]
