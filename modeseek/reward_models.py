"""Learned reward models: Bradley-Terry maximum-likelihood fits from preference pairs.

The paper's synthetic length tasks train the policy against a reward model
fitted to the preference data, while a gold reward scores the result
(docs/paper.md §D.6). This module fits such proxies over the K response bins:

* :func:`fit_tabular`: one free value per bin with a gaussian prior (no
  extrapolation past the data's support);
* :func:`fit_features`: a linear model over smooth bin features
  (:func:`rbf_features`) with a gaussian prior on the weights, which extrapolates.

Both maximise the Bradley-Terry log-likelihood
  (1/n) sum_{i,j} W_ij log sigmoid(s (v_i - v_j))
minus a gaussian prior term, where W is the (K, K) matrix of preference counts
(:func:`pair_counts`; W_ij = how often bin i was preferred to bin j, n = sum W)
and s the Bradley-Terry scale, so ``v`` is in reward units (up to an additive constant, which no preference
learner sees). The fits are pure functions of arrays, run a fixed number of
optax steps under ``lax.scan``, and can be jitted and vmapped over a grid of
datasets: everything that varies across a grid is array data, so one compiled
program fits every dataset.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from modeseek import _checks, regimes
from modeseek.problems import safe_log

__all__ = [
    "pair_counts",
    "sample_pair_counts",
    "rbf_features",
    "bt_log_likelihood",
    "fit_tabular",
    "fit_features",
    "MODELS",
]

#: Reward-model kinds understood by the phase-diagram sweep ("gold" = no model).
MODELS = ("tabular", "rbf", "gold")


def pair_counts(chosen: jax.Array, rejected: jax.Array, num_bins: int, weight: jax.Array | None = None) -> jax.Array:
    """(K, K) preference counts W with W[i, j] = total weight of pairs where i beat j.

    Args:
      chosen: (M,) int preferred bins.
      rejected: (M,) int dispreferred bins.
      num_bins: K.
      weight: (M,) pair weights (default 1 each; skipped pairs have weight 0).
    """
    chosen = jnp.asarray(chosen)
    w = jnp.ones(chosen.shape, jnp.float32) if weight is None else jnp.asarray(weight, jnp.float32)
    return jnp.zeros((num_bins, num_bins), jnp.float32).at[chosen, jnp.asarray(rejected)].add(w)


def sample_pair_counts(
    key: jax.Array,
    data_probs: jax.Array,
    reward: jax.Array,
    *,
    num_samples: int,
    num_contexts: int = 1,
    labels: str = "reward",
    bt_scale: float | jax.Array = 1.0,
    pairing: str = "all",
) -> jax.Array:
    """Draw a preference dataset from mu and return its (K, K) counts.

    ``num_contexts`` groups of ``num_samples`` draws from ``data_probs``, paired
    and labelled exactly as the engine's offline pair batches
    (:func:`modeseek.regimes.sample_pairs`, which checks the options). Vmappable
    over ``key``, ``data_probs`` and ``reward``.

    Args:
      key: PRNG key.
      data_probs: (K,) data distribution mu.
      reward: (K,) the reward that labels the pairs (the gold reward).
      num_samples: draws per group (static).
      num_contexts: number of groups (static).
      labels, bt_scale, pairing: as in :func:`modeseek.regimes.sample_pairs`.
    """
    num_contexts = _checks.integer("num_contexts", num_contexts)
    return _sample_counts(
        key,
        jnp.asarray(data_probs, jnp.float32),
        jnp.asarray(reward, jnp.float32),
        jnp.asarray(bt_scale, jnp.float32),
        num_samples=num_samples,
        num_contexts=num_contexts,
        labels=labels,
        pairing=pairing,
    )


@functools.partial(jax.jit, static_argnames=("num_samples", "num_contexts", "labels", "pairing"))
def _sample_counts(key: jax.Array, data_probs: jax.Array, reward: jax.Array, bt_scale: float | jax.Array, *, num_samples: int, num_contexts: int, labels: str, pairing: str) -> jax.Array:
    k = reward.shape[-1]
    logq = safe_log(data_probs)

    def one(kk: jax.Array) -> jax.Array:
        pairs = regimes.sample_pairs(kk, logq, reward, num_samples, labels=labels, pairing=pairing, bt_scale=bt_scale)
        # Unnormalised: every counted pair has weight 1 (sample_pairs divides by their number).
        return pair_counts(pairs.chosen, pairs.rejected, k, (pairs.weight > 0).astype(jnp.float32))

    return jnp.sum(jax.vmap(one)(jax.random.split(key, num_contexts)), axis=0)


def rbf_features(num_bins: int, num_centers: int = 10, width: float | None = None, *, linear: bool = False) -> jnp.ndarray:
    """(K, M) gaussian radial-basis features of the bin index, optionally with a linear trend.

    Feature m is exp(-(y - mu_m)^2 / (2 l^2)) with centres mu_m evenly spaced over
    [0, K - 1] and length scale l (default: the spacing between centres). With
    ``linear`` a last column (y - (K-1)/2) / (K - 1) is added, whose fitted slope
    extrapolates to the ends of the bin range.

    Args:
      num_bins: K.
      num_centers: M >= 1.
      width: length scale l in bins (> 0).
      linear: append the linear-trend feature.
    """
    num_centers = _checks.integer("num_centers", num_centers)
    num_bins = _checks.integer("num_bins", num_bins, 2)
    y = np.arange(num_bins, dtype=np.float64)[:, None]
    mu = np.linspace(0.0, num_bins - 1.0, num_centers)[None, :]
    spacing = (num_bins - 1.0) / max(num_centers - 1, 1)
    ell = spacing if width is None else float(width)
    _checks.positive("width", ell)
    feats = np.exp(-0.5 * ((y - mu) / ell) ** 2)
    if linear:
        feats = np.concatenate([feats, (y - (num_bins - 1) / 2.0) / (num_bins - 1.0)], axis=1)
    return jnp.asarray(feats, jnp.float32)


def bt_log_likelihood(values: jax.Array, counts: ArrayLike, bt_scale: float | jax.Array = 1.0) -> jax.Array:
    """sum_{i,j} W_ij log sigmoid(s (v_i - v_j)) for (K,) values and (K, K) counts."""
    diff = values[:, None] - values[None, :]
    return jnp.sum(counts * jax.nn.log_sigmoid(bt_scale * diff))


@functools.partial(jax.jit, static_argnames=("steps",))
def _fit(counts: ArrayLike, phi: jax.Array, offset: jax.Array, prior_scale: float | jax.Array, bt_scale: float | jax.Array, learning_rate: float | jax.Array, *, steps: int) -> jax.Array:
    """Posterior mode of v = offset + Phi a under a ~ N(0, sigma^2 I), by Adam under lax.scan."""
    n = jnp.maximum(jnp.sum(counts), 1.0)

    def loss(a: jax.Array) -> jax.Array:
        log_post = bt_log_likelihood(offset + phi @ a, counts, bt_scale) - jnp.sum(a**2) / (2.0 * prior_scale**2)
        # Divided by the number of pairs n (same optimum) so that Adam's step
        # size means the same thing for every dataset size.
        return -log_post / n

    opt = optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=1e-2))

    def step(carry: tuple[jax.Array, Any], _: None) -> tuple[tuple[jax.Array, Any], None]:
        a, state = carry
        u, state = opt.update(jax.grad(loss)(a), state, a)
        return (optax.apply_updates(a, u), state), None

    a0 = jnp.zeros((phi.shape[1],), jnp.float32)
    (a, _), _ = jax.lax.scan(step, (a0, opt.init(a0)), None, length=steps)
    return offset + phi @ a


def _check_fit_args(counts: ArrayLike, prior_scale: float | jax.Array, bt_scale: float | jax.Array, steps: int, learning_rate: float | jax.Array) -> jax.Array:
    counts = jnp.asarray(counts, jnp.float32)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"counts has shape {counts.shape}; expected a square (K, K) matrix")
    _checks.positive("prior_scale", prior_scale)
    _checks.positive("bt_scale", bt_scale)
    _checks.positive("learning_rate", learning_rate)
    _checks.integer("steps", steps)
    return counts


def fit_tabular(
    counts: ArrayLike, *, prior_mean: float | jax.Array = 0.0, prior_scale: float | jax.Array = 1.0, bt_scale: float | jax.Array = 1.0, steps: int = 1500, learning_rate: float | jax.Array = 1.0
) -> jax.Array:
    """Tabular Bradley-Terry fit: the posterior mode with one value per bin and prior v_i ~ N(m, sigma^2).

    Maximises  sum_ij W_ij log sigmoid(s (v_i - v_j)) - sum_i (v_i - m)^2 / (2 sigma^2)
    over v in R^K (a learned reward model as in docs/paper.md §D.6). A bin the data
    never shows keeps the prior mean m, so the proxy cannot extrapolate beyond
    the data's support. With deterministic labels (a bin that wins every
    comparison) the likelihood alone is unbounded; the prior keeps the optimum
    finite.

    Args:
      counts: (K, K) preference counts (:func:`pair_counts`).
      prior_mean: m, the value of unobserved bins (reward units; traced).
      prior_scale: sigma > 0 (reward units; traced).
      bt_scale: s > 0, the Bradley-Terry scale the labels were drawn with (traced).
      steps: Adam steps (static); 1500 at learning rate 1 converge to ~1e-3 for
        sigma <= 3 on K = 100 bins with deterministic labels.
      learning_rate: initial Adam step size (cosine-decayed; traced).

    Returns:
      (K,) fitted rewards in reward units.
    """
    counts = _check_fit_args(counts, prior_scale, bt_scale, steps, learning_rate)
    k = counts.shape[-1]
    offset = jnp.full((k,), prior_mean, jnp.float32)
    return _fit(counts, jnp.eye(k, dtype=jnp.float32), offset, prior_scale, bt_scale, learning_rate, steps=int(steps))


def fit_features(
    counts: ArrayLike, features: jax.Array, *, prior_scale: float | jax.Array = 1.0, bt_scale: float | jax.Array = 1.0, steps: int = 1500, learning_rate: float | jax.Array = 1.0
) -> jax.Array:
    """Feature-model Bradley-Terry fit: the posterior mode of v = Phi a with prior a ~ N(0, sigma^2 I).

    Maximises  sum_ij W_ij log sigmoid(s ((Phi a)_i - (Phi a)_j)) - |a|^2 / (2 sigma^2).
    The smooth counterpart of :func:`fit_tabular` (docs/paper.md §D.6): with
    radial-basis features (:func:`rbf_features`) the fitted reward is a smooth
    function of the bin, so it continues the data's trend for about one length
    scale past the edge of the data's support (and along the linear trend, if
    that feature is included).

    Args:
      counts: (K, K) preference counts.
      features: (K, M) bin features Phi.
      prior_scale: sigma > 0 of the weight prior (traced).
      bt_scale, steps, learning_rate: as in :func:`fit_tabular`.

    Returns:
      (K,) fitted rewards Phi a in reward units.
    """
    counts = _check_fit_args(counts, prior_scale, bt_scale, steps, learning_rate)
    phi = jnp.asarray(features, jnp.float32)
    if phi.ndim != 2 or phi.shape[0] != counts.shape[-1]:
        raise ValueError(f"features has shape {phi.shape}; expected ({counts.shape[-1]}, M)")
    return _fit(counts, phi, jnp.zeros((phi.shape[0],), jnp.float32), prior_scale, bt_scale, learning_rate, steps=int(steps))
