"""The authors' bandit configurations as data, and how to run them with :func:`modeseek.run`.

Each :class:`Config` is one row of the table in PAPER_NOTES A.6 (1-token
variant, MLP policy): learning rate, train contexts, epochs, N samples per
context per epoch, T gradient steps per collected batch, and the loss's own
knobs. :meth:`Config.run_kwargs` maps it onto the engine's keywords under the
authors' protocol: the MLP policy with SFT to pi_ref first (A.5), epoch 0 drawn
from pi_data (A.6), exact expected reward plus the Monte-Carlo reward the
authors plot (1 draw per eval context, 4 for DPO/IPO, A.7).

Configurations without a published setting (REINFORCE, PPO, DPO, the
negative-gradient best-of-N variants) are built from the nearest published one
and marked ``published=False``; the figure pieces tune their open values and
say so in their captions.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from modeseek import _checks, losses

__all__ = [
    "Config",
    "OFFLINE_BEST_OF_N",
    "OFFLINE_IPO",
    "ON_POLICY_BEST_OF_N",
    "ON_POLICY_IPO",
    "AUTHORS",
    "OFFLINE_DPO",
    "ON_POLICY_DPO",
    "offline_negative_best_of_n",
    "on_policy_rl",
    "EVAL_CONTEXTS",
]

#: Evaluation contexts per run (PAPER_NOTES A.1: 100, never changed by the scripts).
EVAL_CONTEXTS = 100


@dataclasses.dataclass(frozen=True)
class Config:
    """One bandit training configuration (PAPER_NOTES A.6, B).

    Attributes:
      name: label used in figures and tables.
      loss: engine loss name (``modeseek.losses.names()``).
      learning_rate: Adam step size.
      train_contexts: number of fixed train contexts (the scripts' ``num_train_states``).
      epochs: batch collections; 1 is offline (one batch from pi_data), > 1 on-policy.
      num_samples: N responses per train context per epoch.
      reuse: T full-batch gradient steps on each collected batch.
      beta: DPO's inverse temperature (None: not used by the loss).
      target_margin: IPO's target margin, the authors' ``beta`` for IPO (B.6).
      min_reward_gap: pairs whose rewards differ by less are skipped (the
        authors' ``reward_threshold``; 0 keeps every pair with distinct rewards).
      negative: best-of-N negative term (None, "worst", "mean_worse", "sum_worse").
      negative_coef: its coefficient c2 (the authors' ``beta`` for best-of-N, default 0.05, B.2).
      extra: further engine keywords as (name, value) pairs (e.g. advantage, clip_eps).
      published: True when every number comes from the authors' scripts.
      source: where the numbers come from, for captions.
    """

    name: str
    loss: str
    learning_rate: float
    train_contexts: int
    epochs: int
    num_samples: int
    reuse: int
    beta: float | None = None
    target_margin: float | None = None
    min_reward_gap: float = 0.0
    negative: str | None = None
    negative_coef: float | None = None
    extra: tuple[tuple[str, Any], ...] = ()
    published: bool = True
    source: str = ""

    def __post_init__(self):
        losses.get(self.loss)
        _checks.positive("learning_rate", self.learning_rate)
        for n in ("train_contexts", "epochs", "num_samples", "reuse"):
            v = getattr(self, n)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{n}={v!r} is invalid; expected an integer >= 1")
        if self.beta is not None:
            _checks.positive("beta", self.beta)
        if self.target_margin is not None:
            _checks.positive("target_margin", self.target_margin)
        _checks.positive("min_reward_gap", self.min_reward_gap, allow_zero=True)
        _checks.choice("negative", self.negative, (None,) + losses.NEGATIVE_TERMS)
        if self.negative_coef is not None:
            _checks.positive("negative_coef", self.negative_coef, allow_zero=True)
        if losses.get(self.loss).batch == "pairs" and self.num_samples < 2:
            raise ValueError(f"num_samples={self.num_samples} is too small for loss={self.loss!r}; expected >= 2")

    @property
    def steps(self) -> int:
        """Total gradient steps, epochs x T."""
        return self.epochs * self.reuse

    @property
    def sampling(self) -> str:
        """The engine's regime: "offline" for one epoch, "on_policy" otherwise."""
        return "offline" if self.epochs == 1 else "on_policy"

    @property
    def reward_queries(self) -> int:
        """Reward queries of the whole run: epochs x train contexts x N (A.6)."""
        return self.epochs * self.train_contexts * self.num_samples

    @property
    def eval_samples(self) -> int:
        """Monte-Carlo draws per eval context for the sampled reward (A.7: 4 for DPO/IPO, else 1)."""
        return 4 if self.loss in ("dpo", "ipo") else 1

    def replace(self, **changes) -> "Config":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def run_kwargs(self, *, num_eval_contexts: int = EVAL_CONTEXTS, **overrides) -> dict[str, Any]:
        """Keyword arguments for :func:`modeseek.run` under the authors' protocol.

        Args:
          num_eval_contexts: evaluation contexts (A.1: 100).
          **overrides: engine keywords that replace the configuration's values,
            e.g. ``learning_rate=np.array([...])`` to sweep, or ``steps`` to
            shorten a run (on-policy: must stay a multiple of T).

        Returns:
          A dict with loss, sampling, steps, policy="mlp", first_batch="data",
          num_contexts, num_samples, reuse, learning_rate, eval_samples and the
          loss's own hyperparameters.
        """
        kw: dict[str, Any] = dict(
            loss=self.loss,
            sampling=self.sampling,
            steps=self.steps,
            policy="mlp",
            first_batch="data",
            num_contexts=self.train_contexts,
            num_eval_contexts=num_eval_contexts,
            num_samples=self.num_samples,
            reuse=self.reuse,
            learning_rate=self.learning_rate,
            eval_samples=self.eval_samples,
        )
        if self.beta is not None:
            kw["beta"] = self.beta
        if self.target_margin is not None:
            kw["target_margin"] = self.target_margin
        if losses.get(self.loss).batch == "pairs":
            kw["min_reward_gap"] = self.min_reward_gap
        if self.negative is not None:
            kw["negative"] = self.negative
            kw["negative_coef"] = 0.05 if self.negative_coef is None else self.negative_coef
        kw.update(dict(self.extra))
        kw.update(overrides)
        return kw

    def describe(self) -> str:
        """One line for captions: the numbers and where they come from."""
        parts = [
            f"lr {self.learning_rate:g}",
            f"{self.train_contexts} train contexts",
            f"{self.epochs} epoch{'s' if self.epochs > 1 else ''}",
            f"N = {self.num_samples}",
            f"T = {self.reuse}",
        ]
        if self.beta is not None:
            parts.append(f"beta {self.beta:g}")
        if self.target_margin is not None:
            parts.append(f"target margin {self.target_margin:g}")
        if self.min_reward_gap:
            parts.append(f"min reward gap {self.min_reward_gap:g}")
        if self.negative is not None:
            parts.append(f"negative term {self.negative} (coef {0.05 if self.negative_coef is None else self.negative_coef:g})")
        parts += [f"{k} {v}" for k, v in self.extra]
        tag = self.source or ("authors' script" if self.published else "not published")
        return f"{self.name}: " + ", ".join(parts) + f" ({tag})"


# The four configurations of the authors' 1-token scripts (PAPER_NOTES A.6).
OFFLINE_BEST_OF_N = Config("offline best-of-N", "best_of_n", 0.01, 5, 1, 10, 200, source="best_of_n.sh")
OFFLINE_IPO = Config(
    "offline IPO", "ipo", 0.003, 100, 1, 10, 200, target_margin=10.0, min_reward_gap=0.2, source="ipo.sh"
)
ON_POLICY_BEST_OF_N = Config("on-policy best-of-N", "best_of_n", 0.001, 10, 100, 10, 15, source="onpolicy_best_of_n.sh")
ON_POLICY_IPO = Config("on-policy IPO", "ipo", 0.01, 10, 100, 10, 15, target_margin=10.0, source="onpolicy_ipo.sh")

#: The published configurations by name.
AUTHORS: dict[str, Config] = {c.name: c for c in (OFFLINE_BEST_OF_N, OFFLINE_IPO, ON_POLICY_BEST_OF_N, ON_POLICY_IPO)}

# DPO has no bandit script (G.8): the IPO configurations with the DPO loss; beta
# (default 0.05 in the authors' CLI) is left for the figure to tune.
OFFLINE_DPO = OFFLINE_IPO.replace(
    name="offline DPO", loss="dpo", beta=0.05, target_margin=None, published=False, source="ipo.sh with the DPO loss"
)
ON_POLICY_DPO = ON_POLICY_IPO.replace(
    name="on-policy DPO", loss="dpo", beta=0.05, target_margin=None, published=False, source="onpolicy_ipo.sh with the DPO loss"
)


def offline_negative_best_of_n(negative: str, negative_coef: float = 0.05) -> Config:
    """Offline best-of-N with an explicit negative term (B.2); the authors' offline best-of-N otherwise.

    No script sets the negative term (G.7), so the coefficient is for the caller to sweep.
    """
    return OFFLINE_BEST_OF_N.replace(
        name=f"offline best-of-N + {negative}",
        negative=negative,
        negative_coef=negative_coef,
        published=False,
        source="best_of_n.sh with a negative term",
    )


def on_policy_rl(loss: str, learning_rate: float = 1e-3) -> Config:
    """REINFORCE or PPO on on-policy best-of-N's budget (equal steps and reward queries).

    Neither has a published bandit configuration (G.6): 10 train contexts, 100
    epochs of N = 10, T = 15 as ``onpolicy_best_of_n.sh``, per-context z-scored
    rewards as advantages (B.4, C.5), no KL or entropy term for REINFORCE (its
    tuned beta is 0, B.4); PPO clips at 0.2 and adds the authors' sampled
    beta (log pi - log pi_ref) term with beta 0.05 (B.5). The learning rate is
    for the caller to tune.
    """
    _checks.choice("loss", loss, ("reinforce", "ppo"))
    extra: tuple[tuple[str, Any], ...] = (("advantage", "zscore"),)
    kw: dict[str, Any] = {}
    if loss == "ppo":
        extra += (("clip_eps", 0.2), ("kl_estimator", "k1"), ("kl_placement", "loss"))
        kw["beta"] = 0.05
    return ON_POLICY_BEST_OF_N.replace(
        name="REINFORCE" if loss == "reinforce" else "PPO",
        loss=loss,
        learning_rate=learning_rate,
        extra=extra,
        published=False,
        source="on-policy best-of-N's budget, learning rate tuned",
        **kw,
    )
