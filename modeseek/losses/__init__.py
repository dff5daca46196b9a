"""The loss registry: every objective by name, with its family, its batch and the policies it runs on.

Four families (docs/paper.md §E for the first three):

* ``mode_covering``: forward KL / weighted maximum likelihood (sft, best_of_n,
  pref_ft, rwr, forward_kl);
* ``contrastive``: negative-gradient pair losses (dpo, ipo, slic, simpo, cpo,
  orpo, apo_zero, apo_down, sppo, dpop, chi_po, robust_dpo) and the unpaired
  kto and bco on labelled points; best_of_n with a ``negative`` term also
  carries a negative gradient;
* ``on_policy``: mode-seeking reverse-KL objectives (reinforce, ppo, reverse_kl)
  and the group methods (grpo with its presets dr_grpo and dapo, gspo, cispo,
  rloo = reinforce with a leave-one-out baseline, reinforce_pp, remax, gpg);
* ``self_play``: self-play and general-preference objectives (online_dpo,
  nash_md, xpo, mirror_descent and its alias spo_exact), which train on their
  own samples only (:data:`modeseek.losses.self_play.SAMPLINGS`); nash_md and
  xpo consume "duels", a policy draw against an opponent's draw
  (:class:`modeseek.batches.Duels`).

Losses are pure and unbatched (one context). Each :class:`LossSpec` has one
:class:`Implementation` per kind of policy it runs on: "bandit" (the tabular
and MLP policies; the functions of the four family modules) and "sequence"
(the factorised, bigram and transformer token policies of
:mod:`modeseek.sequences`; the functions of :mod:`modeseek.losses.sequences`),
which every loss but the analytic divergences forward_kl and reverse_kl has. :meth:`LossSpec.bind` fixes a
loss's static options once and returns ``apply(logp, batch, ref, hp)``, which
passes the engine's traced hyperparameters on; :attr:`LossSpec.options` names
the options a run reads for the loss, so that :func:`check_options` can refuse
an option the chosen loss would silently ignore.

A preset (:attr:`LossSpec.preset`) is a registered name for another loss with
some options fixed, e.g. ``dapo`` is ``grpo`` with DAPO's clip-higher, dynamic
sampling and token-mean aggregation. The preset's values are the run's
options; an option given explicitly that equals the preset's value is
accepted, one that contradicts it is refused with a one-line error naming the
base loss to use instead (:func:`apply_preset`). A loss that needs a statistic
over every context of the batch declares it (:attr:`Implementation.stat`);
:meth:`LossSpec.batch_hook` computes it once per batch and puts it in the
batch, so that the loss itself stays unbatched.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp

from modeseek import _checks
from modeseek.batches import Points
from modeseek.losses import contrastive, mode_covering, on_policy, self_play, sequences
from modeseek.losses.contrastive import (
    apo_down,
    apo_zero,
    bco,
    chi_po,
    cpo,
    dpo,
    dpop,
    implicit_margin,
    ipo,
    kto,
    orpo,
    robust_dpo,
    simpo,
    slic,
    sppo,
)
from modeseek.losses.mode_covering import NEGATIVE_TERMS, best_of_n, forward_kl, pref_ft, rwr, sft
from modeseek.losses.on_policy import (
    ADVANTAGES,
    KL_ESTIMATORS,
    KL_PLACEMENTS,
    SCALE_REWARDS,
    cispo,
    gpg,
    grpo,
    gspo,
    kl_fixed_point,
    ppo,
    reinforce,
    reinforce_pp,
    remax,
    reverse_kl,
)
from modeseek.losses.self_play import mirror_descent, nash_md, online_dpo, spo_exact, xpo
from modeseek.losses.sequences import LOSS_AGGREGATIONS, RATIOS

if TYPE_CHECKING:
    from modeseek.engine import HyperParams
    from modeseek.sequences.batches import SequenceBatch

__all__ = [
    "LossSpec",
    "Implementation",
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
    "slic",
    "simpo",
    "cpo",
    "orpo",
    "kto",
    "bco",
    "apo_zero",
    "apo_down",
    "sppo",
    "dpop",
    "chi_po",
    "robust_dpo",
    "reinforce",
    "ppo",
    "reverse_kl",
    "grpo",
    "gspo",
    "cispo",
    "reinforce_pp",
    "remax",
    "gpg",
    "kl_fixed_point",
    "online_dpo",
    "nash_md",
    "xpo",
    "mirror_descent",
    "spo_exact",
    "implicit_margin",
    "NEGATIVE_TERMS",
    "ADVANTAGES",
    "KL_ESTIMATORS",
    "KL_PLACEMENTS",
    "RATIOS",
    "SCALE_REWARDS",
    "LOSS_AGGREGATIONS",
    "GROUP_OPTIONS",
    "apply_preset",
    "KINDS",
    "POLICIES",
    "STATIC_CHOICES",
    "PAIR_OPTIONS",
    "RL_OPTIONS",
    "ALWAYS_ACCEPTED",
    "mode_covering",
    "contrastive",
    "on_policy",
    "self_play",
    "sequences",
]

#: Kinds of policy a loss is implemented for.
KINDS = ("bandit", "sequence")
#: The policies of each kind (modeseek.policies.names(), modeseek.sequences.policies.names()).
POLICIES = {"bandit": ("tabular", "mlp"), "sequence": ("factorised", "bigram", "transformer")}
#: The values each static option (bound by :meth:`LossSpec.bind`) may take.
STATIC_CHOICES = {
    "negative": (None,) + NEGATIVE_TERMS,
    "normalize": (False, True),
    "advantage": ADVANTAGES,
    "kl_estimator": (None,) + KL_ESTIMATORS,
    "kl_placement": KL_PLACEMENTS,
    "ratio": RATIOS,
    "scale_rewards": SCALE_REWARDS,
    "drop_uniform_groups": (False, True),
    "loss_aggregation": LOSS_AGGREGATIONS,
    "baseline": (False, True),
}


@dataclasses.dataclass(frozen=True)
class Implementation:
    """A loss on one kind of policy: its pure function and what the engine passes to it.

    Attributes:
      fn: the pure unbatched loss function, ``fn(logp, batch, **keywords) -> (loss, aux)``.
      static: static options: keyword arguments of the function that
        :meth:`LossSpec.bind` fixes once (values in :data:`STATIC_CHOICES`).
      traced: fields of :class:`modeseek.engine.HyperParams` passed on as the
        keyword arguments of the same name at every call.
      ref: the keyword that receives ``apply``'s third argument (bandit:
        "ref_logp", the (K,) log pi_ref; sequence: "next_logp", the (N, L, V)
        next-token log-distributions), or None when the function reads neither.
      options: the options a run reads for this loss: ``static``, ``traced``
        and those its batch is built from (pair losses: labels, pairing,
        min_reward_gap, bt_scale); not those every loss uses (:func:`check_options`).
      stat: None, or ``stat(batch, ref, *, num_samples, **options) -> pytree | None``,
        a per-context statistic of one context's batch (no gradient flows
        through it) that the loss needs averaged over every context of the
        batch; None as its result means these options need none. See
        :meth:`LossSpec.batch_hook`.
    """

    fn: Callable[..., Any]
    static: tuple[str, ...] = ()
    traced: tuple[str, ...] = ()
    ref: str | None = None
    options: tuple[str, ...] = ()
    stat: Callable[..., Any] | None = None


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """A registered loss.

    Attributes:
      name: registry name.
      family: "mode_covering", "contrastive", "on_policy" or "self_play".
      batch: which batch it consumes: "points", "best_of_n", "pairs", "duels" or "target".
      implementations: the :class:`Implementation` for each kind of policy it runs on.
      preset: options this name fixes (a preset of the loss ``base``), e.g.
        {"advantage": "leave_one_out"} for rloo; empty for a loss of its own.
      base: the loss a preset's implementations come from, or None.
      description: one-line summary of a preset (a loss's own is its docstring's first line).
      greedy_reward: the batch carries the reward of the sampling policy's
        greedy response (``Points.greedy_reward``; ReMax's baseline).
    """

    name: str
    family: str
    batch: str
    implementations: Mapping[str, Implementation] = dataclasses.field(hash=False)
    preset: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    base: str | None = None
    description: str | None = None
    greedy_reward: bool = False

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds of policy the loss runs on, a subset of :data:`KINDS`."""
        return tuple(self.implementations)

    @property
    def policies(self) -> tuple[str, ...]:
        """The policies the loss runs on, e.g. ("tabular", "mlp") for a bandit-only loss."""
        return tuple(p for k in self.kinds for p in POLICIES[k])

    def implementation(self, kind: str) -> Implementation:
        """The implementation for ``kind``; a kind the loss does not run on raises a one-line ValueError."""
        _checks.choice("kind", kind, KINDS)
        if kind not in self.implementations:
            raise ValueError(f"loss={self.name!r} has no {kind} implementation; it runs on {', '.join(self.policies)} policies")
        return self.implementations[kind]

    @property
    def fn(self) -> Callable[..., Any]:
        """The bandit loss function."""
        return self.implementation("bandit").fn

    @property
    def options(self) -> tuple[str, ...]:
        """The options a run reads for this loss on any kind of policy (ratio: sequence ppo only)."""
        return tuple(dict.fromkeys(n for impl in self.implementations.values() for n in impl.options))

    @property
    def summary(self) -> str:
        """First line of the loss's docstring (a preset's description)."""
        if self.description:
            return self.description
        return (self.fn.__doc__ or "").strip().splitlines()[0]

    @property
    def source(self) -> str:
        """The primary source its documentation cites: the first arXiv id, else the first docs/paper.md
        section, else the paper this library reproduces (arXiv 2404.14367)."""
        doc = (self.description or "") + " " + (self.fn.__doc__ or "")
        found = re.search(r"arXiv[\s:]*(\d{4}\.\d{4,5})", doc)
        if found:
            return f"arXiv {found.group(1)}"
        found = re.search(r"docs/paper\.md (§[A-Z][0-9.]*[0-9A-Z])", doc)
        return f"docs/paper.md {found.group(1)}" if found else "arXiv 2404.14367"

    def batch_hook(self, kind: str, config: Any = None, /, **static_options: Any) -> Callable[..., Any] | None:
        """The batch-level statistic the loss needs, as ``hook(batches, ref, hp, num_samples) -> batches``, or None.

        ``batches`` is the stacked batch of every context (leading axis C;
        bandits: Points, sequences: SequenceBatch). The hook computes the
        implementation's per-context statistic for each context, averages it
        over the contexts (each context counts once) and stores
        ``{"group": its own, "batch": the average}`` in each context's
        ``Points.stat`` (a sequence batch's ``items``). ``ref`` is what the
        bandit statistic reads pi_ref from ((K,) log pi_ref); ``num_samples``
        is N, which exact batches need (e.g. P(a group of N is uniform)).
        Static options are resolved as in :meth:`bind`.
        """
        impl = self.implementation(kind)
        stat_fn = impl.stat
        if stat_fn is None:
            return None
        bound = self._static(kind, config, static_options)

        def hook(batches: Points | SequenceBatch, ref: jax.Array | None, hp: HyperParams, num_samples: int) -> Points | SequenceBatch:
            kw = {n: getattr(hp, n) for n in impl.traced}
            per = jax.vmap(lambda b: stat_fn(b, ref, num_samples=num_samples, **bound, **kw))(batches)
            if per is None:
                return batches
            stat = {"group": per, "batch": jax.tree.map(lambda x: jnp.broadcast_to(jnp.mean(x, axis=0), x.shape), per)}
            if isinstance(batches, Points):
                return batches._replace(stat=stat)
            return batches._replace(items=batches.items._replace(stat=stat))

        return hook

    def _static(self, kind: str, config: Any, static_options: Mapping[str, Any]) -> dict[str, Any]:
        """The static options of ``kind`` bound from the preset, ``config`` and ``static_options`` (see :meth:`bind`)."""
        impl = self.implementation(kind)
        given = {n: getattr(config, n) for n in impl.static if hasattr(config, n)}
        # A preset's values replace a config's (run() has already refused contradictions there);
        # an explicit static option must agree with them.
        for n, v in self.preset.items():
            if n in impl.static:
                if n in static_options and static_options[n] != v:
                    raise ValueError(_contradiction(self, n, static_options[n]))
                given[n] = v
        given.update(static_options)
        _refuse_inapplicable(self, kind, [given])
        bad = sorted(n for n, v in given.items() if n not in impl.static and (n not in _ALL_STATIC or (v is not None and v is not False)))
        if bad:
            own = f"its static options are {', '.join(impl.static)}" if impl.static else "it has no static options"
            raise ValueError(f"{', '.join(bad)} cannot be bound to loss={self.name!r} ({kind}); {own} (traced values such as beta come in apply's hp, batch options such as labels go to the batch)")
        return {n: _checks.choice(n, v, STATIC_CHOICES[n]) for n, v in given.items() if n in impl.static}

    def bind(self, kind: str, config: Any = None, /, **static_options: Any) -> Callable[..., tuple[jax.Array, dict[str, jax.Array]]]:
        """Fix the static options once; return ``apply(logp, batch, ref, hp) -> (loss, aux)``.

        ``apply`` calls the loss function of ``kind`` with the bound static
        options, the traced values ``hp`` (a :class:`modeseek.engine.HyperParams`)
        and ``ref``: for "bandit", ``apply(logp (K,), batch, ref_logp (K,), hp)``;
        for "sequence", ``apply(tok_logp (N, T), batch, next_logp (N, L, V), hp)``.

        Args:
          kind: "bandit" or "sequence".
          config: optional run configuration (RunConfig, SequenceRunConfig):
            the static options this loss reads are taken from its attributes.
          **static_options: static options, overriding ``config``'s; those left
            out take the loss function's defaults. An option left off (None, or
            False for normalize) is accepted for any loss, as in :func:`check_options`.

        Raises:
          ValueError: one line, for a kind the loss does not run on, an option
            of another loss, a name that is not a static option of this loss
            (traced values such as beta come in ``hp``, batch options such as
            labels go to the batch) or a value it cannot take.
        """
        impl = self.implementation(kind)
        bound = self._static(kind, config, static_options)

        def apply(logp: jax.Array, batch: Any, ref: jax.Array | None, hp: HyperParams) -> tuple[jax.Array, dict[str, jax.Array]]:
            kw = {n: getattr(hp, n) for n in impl.traced}
            if impl.ref is not None:
                kw[impl.ref] = ref
            return impl.fn(logp, batch, **bound, **kw)

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

_RL_STATIC = ("advantage", "kl_estimator", "kl_placement")
#: Options of the GRPO family (grpo, gspo), besides the KL ones of RL_OPTIONS.
GROUP_OPTIONS = ("scale_rewards", "drop_uniform_groups", "clip_eps", "clip_eps_high")
_KL = ("beta", "kl_estimator", "kl_placement")
_KL_STATIC = ("kl_estimator", "kl_placement")
_KTO = ("beta", "desirable_weight", "undesirable_weight")


def _loss(
    name: str,
    family: str,
    batch: str,
    *,
    static: tuple[str, ...] = (),
    traced: tuple[str, ...] = (),
    ref: str | None = None,
    options: tuple[str, ...] = (),
    sequence: bool | dict[str, Any] = True,
    stat: Callable[..., dict[str, jax.Array] | None] | None = None,
    **spec_fields: Any,
) -> LossSpec:
    """A LossSpec whose bandit function is ``<family module>.<name>``.

    ``sequence``: False for a bandit-only loss; otherwise its sequence function is
    ``modeseek.losses.sequences.<name>``, with the bandit fields except ``ref``
    (None) and those a dict ``sequence`` changes. ``stat``: a per-context
    statistic ``stat_fn(reward, items, sampled_kl, ...)`` of
    :mod:`modeseek.losses.on_policy`, wrapped for each kind.
    """
    module = {"mode_covering": mode_covering, "contrastive": contrastive, "on_policy": on_policy, "self_play": self_play}[family]
    bandit = Implementation(getattr(module, name), static, traced, ref, options, on_policy.bandit_stat(stat) if stat else None)
    impls = {"bandit": bandit}
    if sequence is not False:
        changes = sequence if isinstance(sequence, dict) else {}
        seq_stat = sequences.sequence_stat(stat) if stat else None
        impls["sequence"] = dataclasses.replace(bandit, **{"fn": getattr(sequences, name), "ref": None, "stat": seq_stat, **changes})
    return LossSpec(name, family, batch, impls, **spec_fields)


def _preset(name: str, base: str, description: str, **preset: Any) -> LossSpec:
    """A registered name for ``base`` with the options ``preset`` fixed."""
    b = _REGISTRY[base]
    return LossSpec(name, b.family, b.batch, b.implementations, preset=preset, base=base, description=description, greedy_reward=b.greedy_reward)


_GRPO_TRACED = ("beta", "clip_eps", "clip_eps_high")
_GRPO_STATIC = ("scale_rewards", "drop_uniform_groups") + _KL_STATIC


_REGISTRY = {
    s.name: s
    for s in [
        _loss("sft", "mode_covering", "points"),
        _loss("best_of_n", "mode_covering", "best_of_n", static=("negative",), traced=("negative_coef",), options=("negative", "negative_coef")),
        _loss("pref_ft", "mode_covering", "pairs", options=PAIR_OPTIONS),
        _loss("rwr", "mode_covering", "points", static=("normalize",), traced=("beta",), options=("beta", "normalize")),
        # beta sets the default target, pi_star.
        _loss("forward_kl", "mode_covering", "target", options=("beta",), sequence=False),
        # On sequences pi_ref's log-probabilities come in the batch.
        _loss("dpo", "contrastive", "pairs", traced=("beta",), ref="ref_logp", options=("beta",) + PAIR_OPTIONS),
        # beta sets the default target margin, 1 / (2 beta).
        _loss("ipo", "contrastive", "pairs", traced=("target_margin",), ref="ref_logp", options=("target_margin", "beta") + PAIR_OPTIONS),
        _loss("reinforce", "on_policy", "points", static=_RL_STATIC, traced=("beta", "entropy_coef"), ref="ref_logp", options=RL_OPTIONS, sequence={"ref": "next_logp"}),
        _loss(
            "ppo",
            "on_policy",
            "points",
            static=_RL_STATIC,
            traced=("beta", "entropy_coef", "clip_eps"),
            ref="ref_logp",
            options=("clip_eps",) + RL_OPTIONS,
            sequence={"ref": "next_logp", "static": _RL_STATIC + ("ratio",), "options": ("clip_eps", "ratio") + RL_OPTIONS},
        ),
        _loss("reverse_kl", "on_policy", "target", options=("beta",), sequence=False),
        _loss(
            "grpo",
            "on_policy",
            "points",
            static=_GRPO_STATIC,
            traced=_GRPO_TRACED,
            ref="ref_logp",
            options=GROUP_OPTIONS + _KL,
            sequence={"ref": "next_logp", "static": _GRPO_STATIC + ("loss_aggregation",), "options": GROUP_OPTIONS + ("loss_aggregation",) + _KL},
            stat=on_policy.grpo_stat,
        ),
        _loss(
            "gspo",
            "on_policy",
            "points",
            static=_GRPO_STATIC,
            traced=_GRPO_TRACED,
            ref="ref_logp",
            options=GROUP_OPTIONS + _KL,
            sequence={"ref": "next_logp"},
            stat=on_policy.grpo_stat,
        ),
        _loss(
            "cispo",
            "on_policy",
            "points",
            static=("scale_rewards",) + _KL_STATIC,
            traced=_GRPO_TRACED,
            ref="ref_logp",
            options=("scale_rewards", "clip_eps", "clip_eps_high") + _KL,
            sequence={"ref": "next_logp", "static": ("scale_rewards", "loss_aggregation") + _KL_STATIC, "options": ("scale_rewards", "loss_aggregation", "clip_eps", "clip_eps_high") + _KL},
            stat=on_policy.grpo_stat,
        ),
        _loss(
            "reinforce_pp",
            "on_policy",
            "points",
            static=("baseline",) + _KL_STATIC,
            traced=("beta", "clip_eps"),
            ref="ref_logp",
            options=("baseline", "clip_eps") + _KL,
            sequence={"ref": "next_logp"},
            stat=on_policy.reinforce_pp_stat,
        ),
        # Bandit only: decoding the greedy sequence is not implemented for the sequence policies.
        _loss("remax", "on_policy", "points", sequence=False, greedy_reward=True),
        _loss("gpg", "on_policy", "points", stat=on_policy.gpg_stat),
        # The contrastive catalogue. Every pair loss gets pi_ref, the
        # reference-free ones (simpo, cpo, orpo) for the pair statistics only.
        *[
            _loss(name, "contrastive", "pairs", traced=("beta",) + extra, ref="ref_logp", options=("beta",) + extra + PAIR_OPTIONS)
            for name, extra in (
                ("slic", ("nll_coef",)),
                ("simpo", ("simpo_gamma",)),
                ("cpo", ("nll_coef",)),
                ("orpo", ()),
                ("apo_zero", ()),
                ("apo_down", ()),
                ("sppo", ()),
                ("dpop", ("dpop_lambda",)),
                ("chi_po", ()),
                ("robust_dpo", ("label_smoothing",)),
            )
        ],
        # Unpaired: the points batch, labelled desirable / undesirable by the context's mean reward.
        _loss("kto", "contrastive", "points", traced=_KTO, ref="ref_logp", options=_KTO),
        _loss("bco", "contrastive", "points", traced=("beta",), ref="ref_logp", options=("beta",)),
        # dpo's functions on both kinds; online through its batch (self_play.SAMPLINGS).
        _loss("online_dpo", "self_play", "pairs", traced=("beta",), ref="ref_logp", options=("beta",) + PAIR_OPTIONS),
        # mixture_alpha shapes the opponent's draws (the batch), not the loss.
        _loss("nash_md", "self_play", "duels", traced=("beta",), ref="ref_logp", options=("beta", "mixture_alpha", "labels", "bt_scale"), sequence=False),
        _loss("xpo", "self_play", "duels", traced=("beta", "xpo_alpha"), ref="ref_logp", options=("beta", "xpo_alpha", "labels", "min_reward_gap", "bt_scale"), sequence=False),
        _loss("mirror_descent", "self_play", "points", traced=("beta", "eta"), ref="ref_logp", options=("beta", "eta"), sequence=False),
        _loss("spo_exact", "self_play", "points", traced=("beta", "eta"), ref="ref_logp", options=("beta", "eta"), sequence=False),
    ]
}
_REGISTRY["dr_grpo"] = _preset(
    "dr_grpo",
    "grpo",
    "Dr. GRPO (Liu et al. 2025, arXiv 2503.20783): grpo without the std division, token sums over a constant",
    scale_rewards="none",
    loss_aggregation="seq_mean_token_sum",
)
_REGISTRY["dapo"] = _preset(
    "dapo",
    "grpo",
    "DAPO (Yu et al. 2025, arXiv 2503.14476): grpo with clip-higher, dynamic sampling, token-mean loss, no KL",
    clip_eps=0.2,
    clip_eps_high=0.28,
    drop_uniform_groups=True,
    loss_aggregation="token_mean",
    kl_estimator=None,
)
_REGISTRY["rloo"] = _preset(
    "rloo",
    "reinforce",
    "RLOO (Ahmadian et al. 2024, arXiv 2402.14740): reinforce with the leave-one-out baseline",
    advantage="leave_one_out",
)
_ALL_STATIC = frozenset(n for s in _REGISTRY.values() for impl in s.implementations.values() for n in impl.static)


def names(kind: str | None = None) -> tuple[str, ...]:
    """The registered loss names; with ``kind`` ("bandit" or "sequence"), those that run on it."""
    if kind is None:
        return tuple(_REGISTRY)
    _checks.choice("kind", kind, KINDS)
    return tuple(n for n, s in _REGISTRY.items() if kind in s.implementations)


def families() -> dict[str, str]:
    """Map from loss name to family."""
    return {n: s.family for n, s in _REGISTRY.items()}


def get(name: str, kind: str | None = None) -> LossSpec:
    """The :class:`LossSpec` for ``name``; unknown names (or, with ``kind``, names that
    do not run on it) raise a ValueError listing the valid ones."""
    _checks.choice("loss", name, names(kind))
    return _REGISTRY[name]


def _given_names(given: Iterable[str] | Mapping[str, Any]) -> set[str]:
    """Names set in ``given``: a mapping's keys whose values are not None or False, or an iterable's names."""
    if isinstance(given, Mapping):
        # None (negative, kl_estimator) and False (normalize) leave a feature off,
        # as the command line passes every flag it has: switching one off is always allowed.
        return {str(n) for n, v in given.items() if v is not None and v is not False}
    return {str(n) for n in given}


def _refuse_inapplicable(spec: LossSpec, kind: str | None, given: Iterable[Iterable[str] | Mapping[str, Any]]) -> None:
    """Raise :func:`check_options`'s error for the names in ``given`` that some loss reads but ``spec`` on ``kind`` does not."""
    specific = {n for s in _REGISTRY.values() for n in s.options} - set(ALWAYS_ACCEPTED)
    options = spec.options if kind is None else spec.implementation(kind).options
    bad = sorted((set().union(*(_given_names(g) for g in given)) & specific) - set(options))
    if bad:
        # Name the kind only where the loss's options depend on it (ppo's ratio).
        where = f" on {kind} policies" if kind is not None and options != spec.options else ""
        own = f"{spec.name}'s options are {', '.join(options)}" if options else f"{spec.name} has no options of its own"
        raise ValueError(
            f"{', '.join(bad)} {'does' if len(bad) == 1 else 'do'} not apply to loss={spec.name!r}{where}; {own}, besides those every loss takes (learning_rate, beta, num_samples, reuse, policy, ...)"
        )


def _contradiction(spec: LossSpec, name: str, value: object) -> str:
    return f"{name}={value!r} contradicts loss={spec.name!r}, which fixes {name}={spec.preset[name]!r}; use loss={spec.base!r} to set {name} yourself"


def apply_preset(loss: str, options: Mapping[str, Any], kind: str | None = None) -> dict[str, Any]:
    """``options`` with the preset of ``loss`` filled in (unchanged for a loss that is no preset).

    Only the preset's options that apply on ``kind`` are added (dr_grpo's
    loss_aggregation is a sequence option). An option given in ``options``
    must equal the preset's value (arrays: every value): a contradiction
    raises a one-line ValueError naming the base loss to use instead.
    """
    import numpy as np

    spec = get(loss)
    out = dict(options)
    applicable = spec.options if kind is None else spec.implementation(kind).options
    for n, v in spec.preset.items():
        if n not in applicable:
            continue
        if n in out:
            given = out[n]
            if v is None or isinstance(v, (bool, str)):
                same = given is None if v is None else given == v
            else:
                same = given is not None and bool(np.all(np.asarray(given, dtype=np.float64) == v))
            if not same:
                raise ValueError(_contradiction(spec, n, given))
        out[n] = v
    return out


def check_options(loss: str, *given: Iterable[str] | Mapping[str, Any], kind: str | None = None) -> None:
    """Refuse options that ``loss`` would ignore, e.g. ``clip_eps`` for ``dpo``.

    An option is loss-specific when some registered loss reads it (the union of
    the :attr:`LossSpec.options`); it applies to ``loss`` when ``loss`` reads it
    (on ``kind``, when given: ``ratio`` applies to ppo on sequences only).
    Options no loss singles out (learning_rate, optimizer, policy, num_samples,
    reuse, shift, ...) and beta (:data:`ALWAYS_ACCEPTED`) are always accepted,
    and so are names this check does not know (the engines report unknown names).

    Args:
      loss: a registered loss name (with ``kind``, one that runs on it).
      *given: option names, or mappings from name to value in which a value of
        None or False (an option left off) does not count as given, e.g. a
        run's keyword options and its arms.
      kind: None (any kind of policy), "bandit" or "sequence".

    Raises:
      ValueError: one line naming the options that do not apply and listing
        those that do.
    """
    _refuse_inapplicable(get(loss, kind), kind, given)
