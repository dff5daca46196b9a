"""Policies: parameters -> per-context logits over K bins.

A policy is a pair of pure functions (optax/distrax style):

* ``init(key, *, num_bins, num_contexts) -> (params, contexts)`` draws parameters
  and the fixed context set (indices for tabular, feature vectors for the MLP);
* ``logits(params, contexts) -> (C, K)`` logits.

Shapes: tabular params are a (C, K) array of logits with contexts (C,) int
indices; MLP params are a dict of weight matrices and biases, with contexts
(C, context_dim) float feature vectors. C is the number of contexts and K the
number of bins.

Later policy classes (token sequences) implement the same two functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from modeseek import _checks
from modeseek.metrics import kl
from modeseek.problems import safe_log

__all__ = ["Policy", "tabular", "mlp", "make", "names", "sft_to_reference", "kl_to_reference"]


class Policy(NamedTuple):
    """A policy class: ``init`` and ``logits``, both pure."""

    name: str
    init: Callable[..., tuple[Any, jax.Array]]
    logits: Callable[[Any, jax.Array], jax.Array]
    #: True when each context has its own free logit vector (no generalisation
    #: across contexts), so train and evaluation contexts coincide.
    tabular: bool


def tabular(ref_probs: ArrayLike | None = None, *, init: str = "reference", init_scale: float = 1.0) -> Policy:
    """One free logit vector per context.

    Args:
      ref_probs: (K,) reference probabilities, needed for ``init="reference"``.
      init: "reference" (logits = log pi_ref, the policy starts at pi_ref),
        "zeros" (uniform) or "random" (log pi_ref + init_scale * N(0, 1) noise,
        so that every seed starts from a different policy).
      init_scale: standard deviation of the logit noise for ``init="random"``.
    """
    _checks.choice("init", init, ("reference", "zeros", "random"))
    if init in ("reference", "random") and ref_probs is None:
        raise ValueError(f"init={init!r} needs ref_probs")

    def init_fn(key: jax.Array, *, num_bins: int, num_contexts: int) -> tuple[jax.Array, jax.Array]:
        # ref_probs is not None unless init == "zeros" (checked above); the closure loses that narrowing.
        base = jnp.zeros((num_bins,), jnp.float32) if init == "zeros" else safe_log(cast(ArrayLike, ref_probs))
        params = jnp.broadcast_to(base, (num_contexts, num_bins))
        if init == "random":
            params = params + init_scale * jax.random.normal(key, params.shape)
        return params, jnp.arange(num_contexts)

    def logits_fn(params: jax.Array, contexts: jax.Array) -> jax.Array:
        return params[contexts]

    return Policy("tabular", init_fn, logits_fn, tabular=True)


@dataclasses.dataclass(frozen=True)
class MLPSizes:
    """Sizes of the paper's 1-token bandit network (docs/paper.md §A.4)."""

    context_dim: int = 100
    feature_dim: int = 50
    hidden_dim: int = 256
    init_gain: float = 1e-2


def _xavier(key: jax.Array, fan_in: int, fan_out: int, gain: float) -> jax.Array:
    bound = gain * jnp.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, (fan_in, fan_out), minval=-bound, maxval=bound)


def mlp(sizes: MLPSizes = MLPSizes()) -> Policy:
    """The paper's context-conditioned network (docs/paper.md §A.4).

    Linear(D -> 50) -> LayerNorm -> ReLU -> Linear(50 -> 256) -> ReLU ->
    Linear(256 -> 256) -> ReLU -> Linear(256 -> K); Xavier-uniform weights with
    gain 1e-2 and zero biases, so the initial policy is nearly uniform.
    Contexts are drawn uniform on [0, 1]^D.
    """

    def init_fn(key: jax.Array, *, num_bins: int, num_contexts: int) -> tuple[dict[str, Any], jax.Array]:
        kc, *ks = jax.random.split(key, 5)
        dims = [sizes.context_dim, sizes.feature_dim, sizes.hidden_dim, sizes.hidden_dim, num_bins]
        layers = [{"w": _xavier(k, a, b, sizes.init_gain), "b": jnp.zeros((b,))} for k, a, b in zip(ks, dims[:-1], dims[1:])]
        params = {"layers": layers, "ln_scale": jnp.ones((sizes.feature_dim,)), "ln_bias": jnp.zeros((sizes.feature_dim,))}
        contexts = jax.random.uniform(kc, (num_contexts, sizes.context_dim))
        return params, contexts

    def logits_fn(params: dict[str, Any], contexts: jax.Array) -> jax.Array:
        l0, l1, l2, l3 = params["layers"]
        h = contexts @ l0["w"] + l0["b"]
        mu = h.mean(-1, keepdims=True)
        var = ((h - mu) ** 2).mean(-1, keepdims=True)
        h = (h - mu) * jax.lax.rsqrt(var + 1e-5) * params["ln_scale"] + params["ln_bias"]
        h = jax.nn.relu(h)
        h = jax.nn.relu(h @ l1["w"] + l1["b"])
        h = jax.nn.relu(h @ l2["w"] + l2["b"])
        return h @ l3["w"] + l3["b"]

    return Policy("mlp", init_fn, logits_fn, tabular=False)


def names() -> tuple[str, ...]:
    """Names accepted by :func:`make`."""
    return ("tabular", "mlp")


def make(name: str, ref_probs: ArrayLike | None = None, *, init: str = "reference", init_scale: float = 1.0) -> Policy:
    """Build a policy by name ("tabular" or "mlp")."""
    _checks.choice("policy", name, names())
    if name == "tabular":
        return tabular(ref_probs, init=init, init_scale=init_scale)
    return mlp()


def kl_to_reference(logits: jax.Array, ref_logp: jax.Array) -> jax.Array:
    """Mean over contexts of the exact KL(pi(.|x) || pi_ref); logits (C, K), ref_logp (K,)."""
    return jnp.mean(kl(jax.nn.log_softmax(logits, axis=-1), ref_logp))


def sft_to_reference(policy: Policy, params: Any, contexts: jax.Array, ref_logp: jax.Array, *, steps: int = 100, learning_rate: float = 1e-2) -> Any:
    """Fit the policy to pi_ref before fine-tuning, as the paper does before every run.

    Minimises the exact mean reverse KL(pi_theta(.|x) || pi_ref) over the train
    contexts with ``steps`` full-batch Adam steps (docs/paper.md §A.5: 100 steps, lr 0.01).

    Args:
      policy: the policy class.
      params: initial parameters.
      contexts: (C, ...) train contexts.
      ref_logp: (K,) log pi_ref.

    Returns:
      The fitted parameters.
    """
    opt = optax.adam(learning_rate)

    def loss(p: Any) -> jax.Array:
        return kl_to_reference(policy.logits(p, contexts), ref_logp)

    def step(carry: tuple[Any, optax.OptState], _: None) -> tuple[tuple[Any, optax.OptState], None]:
        p, s = carry
        g = jax.grad(loss)(p)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    return params
