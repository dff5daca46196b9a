"""The loss registry: every objective by name, with its family and the batch it consumes.

Three families (PAPER_NOTES E):

* ``mode_covering``: forward KL / weighted maximum likelihood (sft, best_of_n,
  pref_ft, rwr, forward_kl);
* ``contrastive``: negative-gradient pair losses (dpo, ipo); best_of_n with a
  ``negative`` term also carries a negative gradient;
* ``on_policy``: mode-seeking reverse-KL objectives (reinforce, ppo, reverse_kl).

Losses are pure and unbatched (one context); :class:`LossSpec.apply` adapts the
engine's hyperparameters to each loss's keyword arguments.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from modeseek import _checks
from modeseek.losses import contrastive, mode_covering, on_policy
from modeseek.losses.contrastive import dpo, implicit_margin, ipo
from modeseek.losses.mode_covering import NEGATIVE_TERMS, best_of_n, forward_kl, pref_ft, rwr, sft
from modeseek.losses.on_policy import ADVANTAGES, KL_ESTIMATORS, KL_PLACEMENTS, ppo, reinforce, reverse_kl

__all__ = [
    "LossSpec",
    "names",
    "get",
    "families",
    "sft",
    "best_of_n",
    "pref_ft",
    "rwr",
    "forward_kl",
    "dpo",
    "ipo",
    "reinforce",
    "ppo",
    "reverse_kl",
    "implicit_margin",
    "NEGATIVE_TERMS",
    "ADVANTAGES",
    "KL_ESTIMATORS",
    "KL_PLACEMENTS",
    "mode_covering",
    "contrastive",
    "on_policy",
]

#: Batch kinds a loss can consume (see modeseek.batches).
BATCH_KINDS = ("points", "best_of_n", "pairs", "target")


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """A registered loss.

    Attributes:
      name: registry name.
      family: "mode_covering", "contrastive" or "on_policy".
      batch: which batch it consumes: "points", "best_of_n", "pairs" or "target".
      fn: the pure unbatched loss function.
      apply: ``(logp, batch, ref_logp, hp, cfg) -> (loss, aux)``, mapping the
        engine's traced hyperparameters ``hp`` and static options ``cfg`` onto
        ``fn``'s keyword arguments.
    """

    name: str
    family: str
    batch: str
    fn: Callable[..., Any]
    apply: Callable[..., Any]

    @property
    def summary(self) -> str:
        """First line of the loss's docstring."""
        return (self.fn.__doc__ or "").strip().splitlines()[0]


def _points_rl(fn):
    def apply(logp, batch, ref_logp, hp, cfg):
        kw = dict(
            ref_logp=ref_logp,
            advantage=cfg.advantage,
            beta=hp.beta,
            kl_estimator=cfg.kl_estimator,
            kl_placement=cfg.kl_placement,
            entropy_coef=hp.entropy_coef,
        )
        if fn is ppo:
            kw["clip_eps"] = hp.clip_eps
        return fn(logp, batch, **kw)

    return apply


_REGISTRY = {
    s.name: s
    for s in [
        LossSpec("sft", "mode_covering", "points", sft, lambda lp, b, ref, hp, cfg: sft(lp, b)),
        LossSpec(
            "best_of_n",
            "mode_covering",
            "best_of_n",
            best_of_n,
            lambda lp, b, ref, hp, cfg: best_of_n(lp, b, negative=cfg.negative, negative_coef=hp.negative_coef),
        ),
        LossSpec("pref_ft", "mode_covering", "pairs", pref_ft, lambda lp, b, ref, hp, cfg: pref_ft(lp, b)),
        LossSpec("rwr", "mode_covering", "points", rwr, lambda lp, b, ref, hp, cfg: rwr(lp, b, beta=hp.beta, normalize=cfg.normalize)),
        LossSpec("forward_kl", "mode_covering", "target", forward_kl, lambda lp, b, ref, hp, cfg: forward_kl(lp, b)),
        LossSpec("dpo", "contrastive", "pairs", dpo, lambda lp, b, ref, hp, cfg: dpo(lp, b, ref_logp=ref, beta=hp.beta)),
        LossSpec(
            "ipo", "contrastive", "pairs", ipo, lambda lp, b, ref, hp, cfg: ipo(lp, b, ref_logp=ref, target_margin=hp.target_margin)
        ),
        LossSpec("reinforce", "on_policy", "points", reinforce, _points_rl(reinforce)),
        LossSpec("ppo", "on_policy", "points", ppo, _points_rl(ppo)),
        LossSpec("reverse_kl", "on_policy", "target", reverse_kl, lambda lp, b, ref, hp, cfg: reverse_kl(lp, b)),
    ]
}


def names() -> tuple[str, ...]:
    """All registered loss names."""
    return tuple(_REGISTRY)


def families() -> dict[str, str]:
    """Map from loss name to family."""
    return {n: s.family for n, s in _REGISTRY.items()}


def get(name: str) -> LossSpec:
    """The :class:`LossSpec` for ``name``; unknown names raise ValueError listing the valid ones."""
    _checks.choice("loss", name, _REGISTRY)
    return _REGISTRY[name]
