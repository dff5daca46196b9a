"""Sequence policies: a prompt token, then ``length`` response tokens over a vocabulary of V.

The paper's combinatorial bandit (docs/paper.md §C.1-§C.2) generates 9 tokens after
a one-token prompt. A sequence is stored as ``tokens`` of shape (L + 1,):
``tokens[0]`` is the prompt x and ``tokens[1:]`` the response y_1..y_L.

A :class:`SequencePolicy` is a set of pure functions:

* ``init(key, *, vocab, length, init_scale) -> params``;
* ``logits(params, tokens, *, dropout_key=None) -> (L + 1, V)`` next-token
  logits: row t is the distribution of token t + 1 given ``tokens[:t + 1]``
  (teacher forcing). Row L predicts a token past the end; it is never sampled
  and only the authors' off-by-one log-probability reads it
  (:func:`modeseek.sequences.sampling.token_logprobs`);
* ``start(params) -> state`` and ``step(params, state, token, position) ->
  (logits (V,), state)`` for autoregressive sampling (the transformer keeps a
  key/value cache in ``state``);
* ``markov(params, prompt, length) -> (init_logp (V,), trans_logp (L - 1, V, V))`` or
  None: the policy written as a first-order Markov chain over the response, the
  form in which exact metrics are computed by dynamic programming
  (:mod:`modeseek.sequences.markov`).

Three classes: :func:`factorised` (independent per-position categoricals),
:func:`bigram` (first-order Markov) and :func:`transformer` (the authors'
"gpt-nano" in pure JAX).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from modeseek import _checks
from modeseek.problems import safe_log

__all__ = [
    "SequencePolicy",
    "TransformerSizes",
    "factorised",
    "bigram",
    "transformer",
    "make",
    "names",
    "INITS",
]

INITS = ("reference", "zeros", "random")


class SequencePolicy(NamedTuple):
    """A sequence policy class (see the module docstring for the signatures)."""

    name: str
    init: Callable[..., Any]
    logits: Callable[..., jax.Array]
    start: Callable[[Any], Any]
    step: Callable[..., tuple[jax.Array, Any]]
    #: None for policies without an exact Markov form (the transformer).
    markov: Callable[..., tuple[jax.Array, jax.Array]] | None


def _init_logits(key: jax.Array, ref_probs: ArrayLike | None, init: str, shape: tuple[int, ...], init_scale: float | jax.Array) -> jax.Array:
    """Logits of ``shape`` whose every row is log ref_probs (0 for init "zeros"), plus init_scale * N(0, 1) for "random"."""
    vocab = shape[-1]
    if init == "zeros":
        return jnp.broadcast_to(jnp.zeros((vocab,), jnp.float32), shape)
    if ref_probs is None:
        raise ValueError(f"init={init!r} needs ref_probs (the per-token reference distribution)")
    base = safe_log(jnp.asarray(ref_probs, jnp.float32))
    if base.shape != (vocab,):
        raise ValueError(f"ref_probs has shape {base.shape}; expected ({vocab},) for vocab={vocab}")
    base = jnp.broadcast_to(base, shape)
    return base + init_scale * jax.random.normal(key, shape) if init == "random" else base


def factorised(ref_probs: ArrayLike | None = None, *, init: str = "reference") -> SequencePolicy:
    """Independent per-position categoricals: pi(y|x) = prod_t p_t(y_t), ignoring the prompt.

    Parameters are (L, V) logits. Exact per-position marginals are the
    parameters' softmax; every metric is exact (docs/paper.md §C.1 with the
    transformer replaced by the simplest sequence model).

    Args:
      ref_probs: (V,) per-token reference, needed for init "reference"/"random".
      init: "reference" (every position starts at ref_probs), "zeros" (uniform)
        or "random" (reference logits + init_scale * N(0, 1)).
    """
    _checks.choice("init", init, INITS)

    def init_fn(key: jax.Array, *, vocab: int, length: int, init_scale: float | jax.Array = 1.0) -> jax.Array:
        return _init_logits(key, ref_probs, init, (length, vocab), init_scale)

    def logits_fn(params: jax.Array, tokens: jax.Array, *, dropout_key: jax.Array | None = None) -> jax.Array:
        # Row L (past the end) is uniform: a constant that carries no gradient.
        return jnp.concatenate([params, jnp.zeros((1, params.shape[-1]), params.dtype)], axis=0)

    def step_fn(params: jax.Array, state: Any, token: int | jax.Array, position: int | jax.Array) -> tuple[jax.Array, Any]:
        return params[position], state

    def markov_fn(params: jax.Array, prompt: int | jax.Array, length: int) -> tuple[jax.Array, jax.Array]:
        logp = jax.nn.log_softmax(params, axis=-1)
        v = params.shape[-1]
        trans = jnp.broadcast_to(logp[1:, None, :], (params.shape[0] - 1, v, v))
        return logp[0], trans

    return SequencePolicy("factorised", init_fn, logits_fn, lambda params: (), step_fn, markov_fn)


def bigram(ref_probs: ArrayLike | None = None, *, init: str = "reference", shared: bool = False) -> SequencePolicy:
    """First-order Markov policy: pi(y|x) = prod_t p_t(y_t | y_{t-1}), with y_0 = the prompt.

    Parameters are (L, V, V) logits (row [t, a] is the distribution of y_{t+1}
    given the previous token a), or one shared (V, V) table with ``shared``.
    Exact metrics follow by dynamic programming over the chain.

    Args:
      ref_probs, init: as for :func:`factorised`; "reference" makes every row
        ref_probs, i.e. the policy starts as i.i.d. reference tokens.
      shared: one transition table for all positions.
    """
    _checks.choice("init", init, INITS)

    def init_fn(key: jax.Array, *, vocab: int, length: int, init_scale: float | jax.Array = 1.0) -> jax.Array:
        return _init_logits(key, ref_probs, init, (vocab, vocab) if shared else (length, vocab, vocab), init_scale)

    def table(params: jax.Array, length: int) -> jax.Array:
        return jnp.broadcast_to(params, (length,) + params.shape[-2:]) if shared else params

    def logits_fn(params: jax.Array, tokens: jax.Array, *, dropout_key: jax.Array | None = None) -> jax.Array:
        length = tokens.shape[0] - 1
        rows = table(params, length)[jnp.arange(length), tokens[:length]]
        return jnp.concatenate([rows, jnp.zeros((1, rows.shape[-1]), rows.dtype)], axis=0)

    def step_fn(params: jax.Array, state: Any, token: int | jax.Array, position: int | jax.Array) -> tuple[jax.Array, Any]:
        return (params[token] if shared else params[position, token]), state

    def markov_fn(params: jax.Array, prompt: int | jax.Array, length: int) -> tuple[jax.Array, jax.Array]:
        logp = jax.nn.log_softmax(table(params, length), axis=-1)
        return logp[0, prompt], logp[1:]

    return SequencePolicy("bigram", init_fn, logits_fn, lambda params: (), step_fn, markov_fn)


# ----------------------------------------------------------------------------- transformer


@dataclasses.dataclass(frozen=True)
class TransformerSizes:
    """Sizes of the authors' minGPT "gpt-nano" (docs/paper.md §C.2).

    Attributes:
      layers: transformer blocks (3).
      heads: attention heads (3); ``embed`` must be divisible by it.
      embed: embedding width (48).
      dropout: dropout rate on embeddings, attention weights and residual
        branches during gradient steps (the authors train with 0.1; default 0,
        which makes a run deterministic in its data only). Sampling and
        evaluation never use dropout (the authors sample in eval mode).
      init_std: standard deviation of the normal weight init (0.02); residual
        output projections use init_std / sqrt(2 * layers).
    """

    layers: int = 3
    heads: int = 3
    embed: int = 48
    dropout: float = 0.0
    init_std: float = 0.02

    def __post_init__(self) -> None:
        for name in ("layers", "heads", "embed"):
            object.__setattr__(self, name, _checks.integer(name, getattr(self, name)))
        if self.embed % self.heads:
            raise ValueError(f"embed={self.embed} is not divisible by heads={self.heads}; expected embed % heads == 0")
        _checks.interval("dropout", self.dropout, 0.0, 1.0, high_open=True)


def _layer_norm(x: jax.Array, g: jax.Array, b: jax.Array) -> jax.Array:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + 1e-5) * g + b


def _dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def transformer(sizes: TransformerSizes = TransformerSizes()) -> SequencePolicy:
    """The authors' tiny causal transformer ("gpt-nano", docs/paper.md §C.2) in pure JAX.

    Token and learned position embeddings, ``layers`` pre-LayerNorm blocks of
    causal multi-head self-attention and a GELU (tanh) MLP of width 4 * embed,
    a final LayerNorm and a bias-free LM head. Init: N(0, 0.02) weights, zero
    biases, residual projections N(0, 0.02 / sqrt(2 * layers)). The context
    window is L + 1 tokens (prompt and response). The initial policy is close to
    uniform; the engine fits it to the reference before fine-tuning (docs/paper.md §C.4).

    Sampling uses a key/value cache, so generating L tokens costs one forward
    pass in total, not L.
    """
    nl, nh, d = sizes.layers, sizes.heads, sizes.embed
    hd = d // nh

    def init_fn(key: jax.Array, *, vocab: int, length: int, init_scale: float | jax.Array = 1.0) -> dict[str, jax.Array]:
        std = sizes.init_std
        proj_std = std / math.sqrt(2 * nl)
        normal = {
            "wte": ((vocab, d), std),
            "wpe": ((length + 1, d), std),
            "attn_w": ((nl, d, 3 * d), std),
            "proj_w": ((nl, d, d), proj_std),
            "fc_w": ((nl, d, 4 * d), std),
            "fc_proj_w": ((nl, 4 * d, d), proj_std),
            "head": ((d, vocab), std),
        }
        # One normal draw for every weight (each PRNG call is a separate kernel to compile).
        sizes_ = [math.prod(shape) for shape, _ in normal.values()]
        z = jax.random.normal(key, (sum(sizes_),))
        offsets = [0, *itertools.accumulate(sizes_)]
        params = {name: s * z[o : o + math.prod(shape)].reshape(shape) for (name, (shape, s)), o in zip(normal.items(), offsets)}
        params.update(
            ln1_g=jnp.ones((nl, d)),
            ln1_b=jnp.zeros((nl, d)),
            attn_b=jnp.zeros((nl, 3 * d)),
            proj_b=jnp.zeros((nl, d)),
            ln2_g=jnp.ones((nl, d)),
            ln2_b=jnp.zeros((nl, d)),
            fc_b=jnp.zeros((nl, 4 * d)),
            fc_proj_b=jnp.zeros((nl, d)),
            lnf_g=jnp.ones((d,)),
            lnf_b=jnp.zeros((d,)),
        )
        return params

    layer_names = ("ln1_g", "ln1_b", "attn_w", "attn_b", "proj_w", "proj_b", "ln2_g", "ln2_b", "fc_w", "fc_b", "fc_proj_w", "fc_proj_b")

    def over_layers(fn: Callable[..., tuple[jax.Array, Any]], x: jax.Array, params: dict[str, jax.Array], xs: Any) -> tuple[jax.Array, Any]:
        """Apply ``fn(x, layer_params, extra) -> (x, out)`` to every block, as one compiled
        loop body (a third of the program to compile, against ``layers`` unrolled blocks)."""
        return jax.lax.scan(lambda c, a: fn(c, *a), x, ({n: params[n] for n in layer_names}, xs))

    def mlp(lp: dict[str, jax.Array], x: jax.Array, key: jax.Array | None) -> jax.Array:
        h = jax.nn.gelu(x @ lp["fc_w"] + lp["fc_b"], approximate=True)
        return _dropout(h @ lp["fc_proj_w"] + lp["fc_proj_b"], sizes.dropout, key)

    def logits_fn(params: dict[str, jax.Array], tokens: jax.Array, *, dropout_key: jax.Array | None = None) -> jax.Array:
        p = params
        t = tokens.shape[0]
        keys = jax.random.split(dropout_key, 1 + 3 * nl) if dropout_key is not None and sizes.dropout > 0 else None
        drop = keys is not None
        x = _dropout(p["wte"][tokens] + p["wpe"][:t], sizes.dropout, keys[0] if keys is not None else None)
        causal = jnp.tril(jnp.ones((t, t), bool))

        def block(x: jax.Array, lp: dict[str, jax.Array], ks: jax.Array) -> tuple[jax.Array, None]:
            k1, k2, k3 = (ks[0], ks[1], ks[2]) if drop else (None, None, None)
            h = _layer_norm(x, lp["ln1_g"], lp["ln1_b"])
            q, k, v = (a.reshape(t, nh, hd) for a in jnp.split(h @ lp["attn_w"] + lp["attn_b"], 3, axis=-1))
            s = jnp.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd)
            a = _dropout(jax.nn.softmax(jnp.where(causal, s, -1e9), axis=-1), sizes.dropout, k1)
            y = jnp.einsum("hqk,khd->qhd", a, v).reshape(t, d)
            x = x + _dropout(y @ lp["proj_w"] + lp["proj_b"], sizes.dropout, k2)
            return x + mlp(lp, _layer_norm(x, lp["ln2_g"], lp["ln2_b"]), k3), None

        ks = keys[1:].reshape(nl, 3, *keys.shape[1:]) if keys is not None else jnp.zeros((nl, 0))
        x, _ = over_layers(block, x, p, ks)
        return _layer_norm(x, p["lnf_g"], p["lnf_b"]) @ p["head"]

    def start_fn(params: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        t = params["wpe"].shape[0]
        z = jnp.zeros((nl, t, nh, hd), params["wte"].dtype)
        return (z, z)

    def step_fn(params: dict[str, jax.Array], state: Any, token: int | jax.Array, position: int | jax.Array) -> tuple[jax.Array, Any]:
        p = params
        t = state[0].shape[1]
        x = p["wte"][token] + p["wpe"][position]
        visible = jnp.arange(t) <= position

        def block(x: jax.Array, lp: dict[str, jax.Array], cache: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
            kc, vc = cache
            h = _layer_norm(x, lp["ln1_g"], lp["ln1_b"])
            q, k, v = (a.reshape(nh, hd) for a in jnp.split(h @ lp["attn_w"] + lp["attn_b"], 3))
            kc = kc.at[position].set(k)
            vc = vc.at[position].set(v)
            s = jnp.einsum("hd,khd->hk", q, kc) / math.sqrt(hd)
            a = jax.nn.softmax(jnp.where(visible, s, -1e9), axis=-1)
            y = jnp.einsum("hk,khd->hd", a, vc).reshape(d)
            x = x + y @ lp["proj_w"] + lp["proj_b"]
            return x + mlp(lp, _layer_norm(x, lp["ln2_g"], lp["ln2_b"]), None), (kc, vc)

        x, state = over_layers(block, x, p, state)
        return _layer_norm(x, p["lnf_g"], p["lnf_b"]) @ p["head"], state

    return SequencePolicy("transformer", init_fn, logits_fn, start_fn, step_fn, None)


def names() -> tuple[str, ...]:
    """Names accepted by :func:`make`."""
    return ("factorised", "bigram", "transformer")


def make(name: str, ref_probs: ArrayLike | None = None, *, init: str = "reference", sizes: TransformerSizes = TransformerSizes(), shared: bool = False) -> SequencePolicy:
    """Build a sequence policy by name ("factorised", "bigram" or "transformer")."""
    _checks.choice("policy", name, names())
    if name == "factorised":
        return factorised(ref_probs, init=init)
    if name == "bigram":
        return bigram(ref_probs, init=init, shared=shared)
    return transformer(sizes)
