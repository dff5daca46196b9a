"""The two-level inverse-CDF search in regimes.sample_bins draws exactly the exhaustive count's bins.

Results and tests depend on the bits of every draw, so the faster search must
not change a single one: it is compared with the exhaustive count
(``jnp.searchsorted(method="compare_all")``, the rule used before) over many keys,
sizes and awkward distributions (zero-mass bins, -inf and NaN logits, ties,
a single dominant bin).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from modeseek import regimes
from modeseek.problems import LOG_ZERO


def _exhaustive(key, logq, n):
    """The previous rule: count cdf_j <= u over all K entries (searchsorted's total order)."""
    probs = jnp.exp(logq - jnp.max(logq))
    cdf = jnp.cumsum(probs)
    u = jax.random.uniform(key, (n,), dtype=cdf.dtype) * cdf[-1]
    idx = jnp.searchsorted(cdf, u, side="right", method="compare_all")
    return jnp.minimum(idx, cdf.shape[0] - 1).astype(jnp.int32)


def _logits(k: int, rows: int, seed: int) -> np.ndarray:
    """(rows, k) float32 logits: smooth, spiky, sparse (zero-mass bins), flat and degenerate rows."""
    rng = np.random.default_rng(seed)
    scale = rng.choice([0.01, 1.0, 5.0, 40.0], size=(rows, 1))
    lq = rng.normal(size=(rows, k)) * scale
    sparse = rng.random((rows, k)) < rng.choice([0.0, 0.3, 0.9], size=(rows, 1))
    lq = np.where(sparse, LOG_ZERO, lq)
    lq[0::7] = 0.0  # flat: exact ties in the increments
    lq[1::7, : k // 2] = -np.inf  # leading excluded bins
    lq[2::7] = LOG_ZERO
    lq[2::7, rng.integers(k)] = 0.0  # one bin holds all the mass
    lq[3::7, k // 2 :] = LOG_ZERO  # trailing zero-mass bins
    lq[4::7, rng.integers(k)] = 30.0  # a dominant bin over a tail of tiny ones
    if rows > 5:
        lq[5] = np.nan  # degenerate input: both rules give the last bin
    return lq.astype(np.float32)


# Block sizes 1, 2, 4, 8 and 16, full and partial last blocks, the largest K of
# the two-level search and the first one past it. One odd n per K keeps the
# compiles few; n = 1 and n = 128 run at the paper's K = 100.
@pytest.mark.parametrize(("k", "ns"), [(1, (5,)), (3, (5,)), (17, (97,)), (100, (1, 97, 128)), (255, (97,)), (256, (97,)), (257, (9,))])
def test_two_level_search_matches_exhaustive_count(k, ns):
    rows = 700
    lq = jnp.asarray(_logits(k, rows, seed=k))
    keys = jax.random.split(jax.random.PRNGKey(k), rows)
    for n in ns:
        new = np.asarray(jax.jit(jax.vmap(lambda kk, lg: regimes.sample_bins(kk, lg, n)))(keys, lq))
        old = np.asarray(jax.jit(jax.vmap(lambda kk, lg: _exhaustive(kk, lg, n)))(keys, lq))
        assert new.dtype == np.int32 and new.shape == (rows, n)
        np.testing.assert_array_equal(new, old, err_msg=f"K={k} n={n}")
    # The test would catch a wrong search: the draws cover many bins.
    assert len(np.unique(new)) >= min(k, 10)


def test_cdf_is_non_decreasing_up_to_256_bins():
    # The premise of the two-level search (regimes._MONOTONE_CDF_BINS): the compiled
    # cumsum of non-negative values never decreases for K <= 256. Checked on the
    # rows of the previous test, which include long runs of zero-mass bins.
    f = jax.jit(jax.vmap(lambda lg: jnp.cumsum(jnp.exp(lg - jnp.max(lg)))))
    for k in (100, 200, regimes._MONOTONE_CDF_BINS):
        lq = _logits(k, 3000, seed=1000 + k)
        lq = lq[np.all(np.isfinite(lq) | (lq == -np.inf), axis=1)]
        cdf = np.asarray(f(jnp.asarray(lq)))
        assert np.all(np.diff(cdf, axis=1) >= 0), f"K={k}"


def test_two_level_search_under_float64(x64):
    k, rows, n = 100, 200, 64
    lq = jnp.asarray(_logits(k, rows, seed=7), jnp.float64)
    keys = jax.random.split(jax.random.PRNGKey(7), rows)
    new = jax.vmap(lambda kk, lg: regimes.sample_bins(kk, lg, n))(keys, lq)
    old = jax.vmap(lambda kk, lg: _exhaustive(kk, lg, n))(keys, lq)
    np.testing.assert_array_equal(np.asarray(new), np.asarray(old))


@pytest.mark.parametrize("width_stable", [False, True])
def test_prefix_sums_have_the_bits_of_cumsum(width_stable):
    # regimes.prefix_sums re-enacts XLA:CPU's blocked cumsum as two loops; every
    # draw of sample_bins depends on these bits. Rows of 700 awkward
    # distributions (zeros, ties, a dominant bin, NaN) at K around the block
    # length of 16 and the 256 limit, batched and unbatched, under both option
    # sets the engine compiles with (modeseek._xla.WIDTH_STABLE_OPTIONS for
    # tabular programs). A plain left-to-right sum fails this for K > 16.
    from modeseek._xla import compile_lowered

    platform = jax.devices()[0].platform
    for k in (1, 16, 17, 33, 100, 128, 200, 256, 257, 1000):
        x = jnp.exp(jnp.asarray(_logits(k, 700, seed=2000 + k)))
        batched = (jax.vmap(regimes.prefix_sums), jax.vmap(jnp.cumsum))
        one_row = (lambda v: regimes.prefix_sums(v[3]), lambda v: jnp.cumsum(v[3]))
        for f, g in (batched, one_row):
            new = compile_lowered(jax.jit(f).lower(x), platform, width_stable)(x)
            old = compile_lowered(jax.jit(g).lower(x), platform, width_stable)(x)
            np.testing.assert_array_equal(np.asarray(new), np.asarray(old), err_msg=f"K={k}")
