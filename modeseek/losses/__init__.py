"""The loss registry: every objective by name, with its family and the batch it consumes.

Three families (PAPER_NOTES E):

* ``mode_covering``: forward KL / weighted maximum likelihood (sft, best_of_n,
  pref_ft, rwr, forward_kl);
* ``contrastive``: negative-gradient pair losses (dpo, ipo); best_of_n with a
  ``negative`` term also carries a negative gradient;
* ``on_policy``: mode-seeking reverse-KL objectives (reinforce, ppo, reverse_kl).

Losses are pure and unbatched (one context); :class:`LossSpec.apply` adapts the
engine's hyperparameters to each loss's keyword arguments, and
:attr:`LossSpec.options` names the options it reads, so that :func:`check_options`
can refuse an option the chosen loss would silently ignore.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Mapping

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
    "check_options",
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
    "PAIR_OPTIONS",
    "RL_OPTIONS",
    "ALWAYS_ACCEPTED",
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
      options: the loss-specific options the run reads for this loss: the fields
        of ``hp`` and ``cfg`` that ``apply`` passes on, and those its batch is
        built from (pair losses: labels, pairing, min_reward_gap, bt_scale).
        Options every loss uses (learning_rate, num_samples, reuse, policy, ...)
        are not listed; see :func:`check_options`.
    """

    name: str
    family: str
    batch: str
    fn: Callable[..., Any]
    apply: Callable[..., Any]
    options: tuple[str, ...] = ()

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


#: Options of every pair loss: how its pairs are drawn and labelled
#: (modeseek.regimes.sample_pairs / exact_pairs; pairing for sampled pairs only).
PAIR_OPTIONS = ("labels", "pairing", "min_reward_gap", "bt_scale")
#: Options of REINFORCE (and PPO): the advantage and the KL and entropy terms.
#: beta is the KL coefficient, read only when kl_estimator is set.
RL_OPTIONS = ("advantage", "beta", "kl_estimator", "kl_placement", "entropy_coef")
#: Loss-specific options every loss accepts anyway: beta is also pi_star's
#: temperature, which the kl_pi_star metric reads in every run.
ALWAYS_ACCEPTED = ("beta",)

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
            ("negative", "negative_coef"),
        ),
        LossSpec("pref_ft", "mode_covering", "pairs", pref_ft, lambda lp, b, ref, hp, cfg: pref_ft(lp, b), PAIR_OPTIONS),
        LossSpec(
            "rwr",
            "mode_covering",
            "points",
            rwr,
            lambda lp, b, ref, hp, cfg: rwr(lp, b, beta=hp.beta, normalize=cfg.normalize),
            ("beta", "normalize"),
        ),
        # beta sets the default target, pi_star.
        LossSpec("forward_kl", "mode_covering", "target", forward_kl, lambda lp, b, ref, hp, cfg: forward_kl(lp, b), ("beta",)),
        LossSpec(
            "dpo", "contrastive", "pairs", dpo, lambda lp, b, ref, hp, cfg: dpo(lp, b, ref_logp=ref, beta=hp.beta), ("beta",) + PAIR_OPTIONS
        ),
        # beta sets the default target margin, 1 / (2 beta).
        LossSpec(
            "ipo",
            "contrastive",
            "pairs",
            ipo,
            lambda lp, b, ref, hp, cfg: ipo(lp, b, ref_logp=ref, target_margin=hp.target_margin),
            ("target_margin", "beta") + PAIR_OPTIONS,
        ),
        LossSpec("reinforce", "on_policy", "points", reinforce, _points_rl(reinforce), RL_OPTIONS),
        LossSpec("ppo", "on_policy", "points", ppo, _points_rl(ppo), ("clip_eps",) + RL_OPTIONS),
        LossSpec("reverse_kl", "on_policy", "target", reverse_kl, lambda lp, b, ref, hp, cfg: reverse_kl(lp, b), ("beta",)),
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


def _given_names(given) -> set[str]:
    """Names set in ``given``: a mapping's keys whose values are not None or False, or an iterable's names."""
    if isinstance(given, Mapping):
        # None (negative, kl_estimator) and False (normalize) leave a feature off,
        # as the command line passes every flag it has: switching one off is always allowed.
        return {str(n) for n, v in given.items() if v is not None and v is not False}
    return {str(n) for n in given}


def _refuse_inapplicable(spec: LossSpec, registry: Mapping[str, LossSpec], given) -> None:
    """Raise :func:`check_options`'s error for the names in ``given`` that some loss of ``registry`` reads but ``spec`` does not."""
    specific = {n for s in registry.values() for n in s.options} - set(ALWAYS_ACCEPTED)
    bad = sorted((set().union(*(_given_names(g) for g in given)) & specific) - set(spec.options))
    if bad:
        own = f"{spec.name}'s options are {', '.join(spec.options)}" if spec.options else f"{spec.name} has no options of its own"
        raise ValueError(
            f"{', '.join(bad)} {'does' if len(bad) == 1 else 'do'} not apply to loss={spec.name!r}; {own}, "
            "besides those every loss takes (learning_rate, beta, num_samples, reuse, policy, ...)"
        )


def check_options(loss: str, *given: Iterable[str] | Mapping[str, Any]) -> None:
    """Refuse options that ``loss`` would ignore, e.g. ``clip_eps`` for ``dpo``.

    An option is loss-specific when some registered loss reads it (the union of
    the :attr:`LossSpec.options`); it applies to ``loss`` when ``loss`` reads it.
    Options no loss singles out (learning_rate, optimizer, policy, num_samples,
    reuse, ...) and beta (:data:`ALWAYS_ACCEPTED`) are always accepted, and so
    are names this check does not know (the engines report unknown names).

    Args:
      loss: a registered loss name.
      *given: option names, or mappings from name to value in which a value of
        None or False (an option left off) does not count as given.

    Raises:
      ValueError: one line naming the options that do not apply and listing
        those that do.
    """
    _refuse_inapplicable(get(loss), _REGISTRY, given)
