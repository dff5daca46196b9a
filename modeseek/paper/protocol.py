"""The authors' bandit configurations as data, and how to run them with :func:`modeseek.run`.

Each :class:`Config` is one row of the table in docs/paper.md §A.6 (1-token
variant, MLP policy). :meth:`Config.run_kwargs` maps it onto the engine's
keywords under the authors' protocol: the MLP policy with SFT to pi_ref first
(§A.5), epoch 0 drawn from pi_data (§A.6), exact expected reward plus the
Monte-Carlo reward the authors plot (1 draw per eval context, 4 for DPO/IPO, §A.7).

Configurations without a published setting (REINFORCE, PPO, DPO, the
negative-gradient best-of-N variants) are built from the nearest published one
and marked ``published=False``; the figure pieces tune their open values and
say so in their captions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from modeseek import _checks, losses

if TYPE_CHECKING:
    from modeseek.engine import Trajectory

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
    "Budget",
    "budget",
    "problems",
    "run_config",
    "clear_cache",
    "split_seeds",
    "select_best",
    "difference_band",
    "steps_to_reach",
]

#: Evaluation contexts per run (docs/paper.md §A.1: 100, never changed by the scripts).
EVAL_CONTEXTS = 100
#: The two geometries, in the order of :func:`problems` (the first grid axis of every run).
KINDS = ("far", "near")
#: The engine metrics that figures 2-4 plot and tabulate.
METRICS = ("expected_reward", "sampled_reward", "kl_pi_ref", "entropy", "mass_high_reward", "reward_queries")


@dataclasses.dataclass(frozen=True)
class Config:
    """One bandit training configuration (docs/paper.md §A.6, §B).

    Attributes:
      name: label used in figures and tables.
      loss: engine loss name (``modeseek.losses.names()``).
      learning_rate: Adam step size.
      train_contexts: number of fixed train contexts (the scripts' ``num_train_states``).
      epochs: batch collections; 1 is offline (one batch from pi_data), > 1 on-policy.
      num_samples: N responses per train context per epoch.
      reuse: T full-batch gradient steps on each collected batch.
      beta: DPO's inverse temperature (None: not used by the loss).
      target_margin: IPO's target margin, the authors' ``beta`` for IPO (§B.6).
      min_reward_gap: pairs whose rewards differ by less are skipped (the
        authors' ``reward_threshold``; 0 keeps every pair with distinct rewards).
      negative: best-of-N negative term (None, "worst", "mean_worse", "sum_worse").
      negative_coef: its coefficient c2 (the authors' ``beta`` for best-of-N, default 0.05, §B.2).
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

    def __post_init__(self) -> None:
        losses.get(self.loss)
        _checks.positive("learning_rate", self.learning_rate)
        for n in ("train_contexts", "epochs", "num_samples", "reuse"):
            object.__setattr__(self, n, _checks.integer(n, getattr(self, n)))
        for n in ("beta", "target_margin"):
            if getattr(self, n) is not None:
                _checks.positive(n, getattr(self, n))
        _checks.positive("min_reward_gap", self.min_reward_gap, allow_zero=True)
        _checks.choice("negative", self.negative, (None,) + losses.NEGATIVE_TERMS)
        if self.negative_coef is not None:
            _checks.positive("negative_coef", self.negative_coef, allow_zero=True)
        if losses.get(self.loss).batch == "pairs":
            _checks.integer("num_samples", self.num_samples, 2, reason=f"for loss={self.loss!r}")

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
        """Reward queries of the whole run: epochs x train contexts x N (docs/paper.md §A.6)."""
        return self.epochs * self.train_contexts * self.num_samples

    @property
    def eval_samples(self) -> int:
        """Monte-Carlo draws per eval context for the sampled reward (docs/paper.md §A.7: 4 for DPO/IPO, else 1)."""
        return 4 if self.loss in ("dpo", "ipo") else 1

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def run_kwargs(self, *, num_eval_contexts: int = EVAL_CONTEXTS, **overrides: Any) -> dict[str, Any]:
        """Keyword arguments for :func:`modeseek.run` under the authors' protocol.

        Args:
          num_eval_contexts: evaluation contexts (docs/paper.md §A.1: 100).
          **overrides: engine keywords that replace the configuration's values,
            e.g. ``learning_rate=np.array([...])`` to sweep, or ``steps`` to
            shorten a run (on-policy: must stay a multiple of T).
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
        kw.update({n: getattr(self, n) for n in ("beta", "target_margin") if getattr(self, n) is not None})
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


# The four configurations of the authors' 1-token scripts (docs/paper.md §A.6).
OFFLINE_BEST_OF_N = Config("offline best-of-N", "best_of_n", 0.01, 5, 1, 10, 200, source="best_of_n.sh")
OFFLINE_IPO = Config("offline IPO", "ipo", 0.003, 100, 1, 10, 200, target_margin=10.0, min_reward_gap=0.2, source="ipo.sh")
ON_POLICY_BEST_OF_N = Config("on-policy best-of-N", "best_of_n", 0.001, 10, 100, 10, 15, source="onpolicy_best_of_n.sh")
ON_POLICY_IPO = Config("on-policy IPO", "ipo", 0.01, 10, 100, 10, 15, target_margin=10.0, source="onpolicy_ipo.sh")

#: The published configurations by name.
AUTHORS: dict[str, Config] = {c.name: c for c in (OFFLINE_BEST_OF_N, OFFLINE_IPO, ON_POLICY_BEST_OF_N, ON_POLICY_IPO)}

# DPO has no bandit script (docs/paper.md §G.8): the IPO configurations with the DPO loss; beta
# (default 0.05 in the authors' CLI) is left for the figure to tune.
OFFLINE_DPO = OFFLINE_IPO.replace(name="offline DPO", loss="dpo", beta=0.05, target_margin=None, published=False, source="ipo.sh with the DPO loss")
ON_POLICY_DPO = ON_POLICY_IPO.replace(name="on-policy DPO", loss="dpo", beta=0.05, target_margin=None, published=False, source="onpolicy_ipo.sh with the DPO loss")


def offline_negative_best_of_n(negative: str, negative_coef: float = 0.05) -> Config:
    """Offline best-of-N with an explicit negative term (docs/paper.md §B.2); the authors' offline best-of-N otherwise.

    No script sets the negative term (§G.7), so the coefficient is for the caller to sweep.
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

    Neither has a published bandit configuration (docs/paper.md §G.6): per-context
    z-scored rewards as advantages (§B.4, §C.5), no KL or entropy term for
    REINFORCE (its tuned beta is 0, §B.4); PPO clips at 0.2 and adds the authors'
    sampled beta (log pi - log pi_ref) term with beta 0.05 (§B.5). The learning
    rate is for the caller to tune.
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


# ----------------------------------------------------------------------------- budgets and runs


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much of the authors' protocol a reproduction run affords.

    Attributes:
      seeds: reported seeds per method and geometry (seed indices 0..seeds-1,
        shared by every method, so runs with equal seed index share their
        contexts, SFT initialisation and, at equal context count, their offline data).
      tune_seeds: extra seeds (indices seeds..seeds+tune_seeds-1) on which open
        hyperparameters are chosen, so the reported seeds are held out from the choice.
      on_policy_epochs: epochs of the on-policy runs (the authors: 100).
      offline_steps: gradient steps of the offline runs (the authors: T = 200).
      eval_contexts: evaluation contexts (the authors: 100).
      policy: "mlp" (the authors' network, docs/paper.md §A.4) or "tabular" (the smoke budget:
        about half the MLP's compile time, same pipeline).
      smoke: tiny budget for tests; numbers are not meaningful.
    """

    seeds: int
    tune_seeds: int
    on_policy_epochs: int
    offline_steps: int
    eval_contexts: int = EVAL_CONTEXTS
    policy: str = "mlp"
    smoke: bool = False

    def __post_init__(self) -> None:
        for n in ("seeds", "tune_seeds", "on_policy_epochs", "offline_steps", "eval_contexts"):
            object.__setattr__(self, n, _checks.integer(n, getattr(self, n)))
        _checks.choice("policy", self.policy, ("mlp", "tabular"))

    def on_policy_steps(self, cfg: Config) -> int:
        """Gradient steps of an on-policy configuration under this budget (epochs x T)."""
        return self.on_policy_epochs * cfg.reuse

    def describe(self) -> str:
        """One line for captions."""
        return (
            f"{self.seeds} reported seeds per curve (mean and 95% band, mean +- 1.96 s.e.)"
            f"{f', open hyperparameters chosen on {self.tune_seeds} further held-out seeds' if self.tune_seeds else ''}; "
            f"on-policy runs {self.on_policy_epochs} epochs (the authors: 100); offline runs {self.offline_steps} steps; "
            f"{self.eval_contexts} evaluation contexts; {self.policy} policy" + (" (SMOKE budget: numbers not meaningful)" if self.smoke else "")
        )


def budget(smoke: bool) -> Budget:
    """The default budget (fits the pipeline's time limit on 2 CPU cores) or the smoke one.

    The default shortens the on-policy runs to 20 epochs of T = 15 (300 steps,
    against the authors' 1500): every claim is read by step 300, and every tuned
    on-policy method but best-of-N at the authors' lr 0.001 on "far" has plateaued by then.
    """
    if smoke:
        return Budget(seeds=2, tune_seeds=1, on_policy_epochs=2, offline_steps=20, eval_contexts=10, policy="tabular", smoke=True)
    return Budget(seeds=10, tune_seeds=3, on_policy_epochs=20, offline_steps=200)


def problems() -> list:
    """The two geometries of the figures, in order: "far" (reward id 4) and "near" (id 5)."""
    from modeseek.problems import paper_bandit

    return [paper_bandit(kind) for kind in KINDS]


_RUNS: dict[tuple, Any] = {}


def _freeze(v: Any) -> Any:
    if isinstance(v, np.ndarray) or isinstance(v, (list, tuple)):
        return ("array",) + tuple(np.asarray(v, dtype=np.float64).ravel().tolist())
    return v


def run_config(cfg: Config, b: Budget, *, tuned: bool = False, key: int = 0, **overrides: Any) -> Trajectory:
    """Run ``cfg`` on both geometries under budget ``b``, memoised within the process; returns the engine's Trajectory.

    The problem list is the first grid axis ("far", "near"), traced values
    passed as arrays in ``overrides`` (engine keywords replacing the
    configuration's, see Config.run_kwargs) the next ones, then the seeds:
    reported seeds first, then (with ``tuned``) ``b.tune_seeds`` seeds for
    choosing open hyperparameters; ``key`` is the base PRNG seed. Figures that
    show the same runs share one call, so each static configuration compiles once.
    """
    from modeseek.engine import run

    steps = b.offline_steps if cfg.sampling == "offline" else b.on_policy_steps(cfg)
    kw = cfg.run_kwargs(num_eval_contexts=b.eval_contexts, steps=steps, policy=b.policy, **overrides)
    seeds = b.seeds + (b.tune_seeds if tuned else 0)
    memo = (cfg, seeds, key, tuple(sorted((k, _freeze(v)) for k, v in kw.items())))
    if memo not in _RUNS:
        _RUNS[memo] = run(problems(), seeds=seeds, key=key, **kw)
    return _RUNS[memo]


def clear_cache() -> None:
    """Forget memoised runs (e.g. between a smoke and a full reproduction in one process)."""
    _RUNS.clear()


# ----------------------------------------------------------------------------- summaries


def split_seeds(x: np.ndarray, seeds: int, *, axis: int = -2) -> tuple[np.ndarray, np.ndarray]:
    """Split ``x`` along its seed axis ``axis`` into (reported, tuning) parts: the first ``seeds`` and the rest.

    The engine's metrics are grid + (seeds, steps + 1), hence the default axis -2.
    """
    x = np.asarray(x)
    n = x.shape[axis]
    if not 1 <= seeds <= n:
        raise ValueError(f"seeds={seeds} is invalid for a seed axis of length {n}; expected 1 <= seeds <= {n}")
    return np.take(x, np.arange(seeds), axis=axis), np.take(x, np.arange(seeds, n), axis=axis)


def select_best(curves: np.ndarray) -> int:
    """Index of the grid value with the highest mean over seeds and steps (area under the curve) of ``curves`` (G, S, T).

    Rewarding the area favours settings that get high *and* get there early,
    which is what a learning-rate choice at a fixed step budget should favour.
    """
    c = np.asarray(curves, dtype=np.float64)
    if c.ndim != 3 or c.shape[0] < 1:
        raise ValueError(f"curves has shape {c.shape}; expected (grid values, seeds, steps)")
    score = np.nan_to_num(c.mean(axis=(1, 2)), nan=-np.inf)
    return int(np.argmax(score))


def difference_band(a: ArrayLike, b: ArrayLike) -> tuple[float, float, float]:
    """(difference, lower, upper): mean of a minus mean of b (per-seed values of two methods), with a 95% normal band (Welch standard error, unpaired)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.size < 1 or b.size < 1:
        raise ValueError(f"need at least one value per side; got {a.size} and {b.size}")
    var_a = a.var(ddof=1) / a.size if a.size > 1 else 0.0
    var_b = b.var(ddof=1) / b.size if b.size > 1 else 0.0
    d = float(a.mean() - b.mean())
    half = 1.96 * float(np.sqrt(var_a + var_b))
    return d, d - half, d + half


def steps_to_reach(curve: Sequence[float], threshold: float) -> int | None:
    """First step at which ``curve`` (values at steps 0, 1, ...) is >= threshold; None if never."""
    c = np.asarray(curve, dtype=np.float64)
    if c.ndim != 1:
        raise ValueError(f"curve has shape {c.shape}; expected a 1-D curve over steps")
    hit = np.flatnonzero(c >= threshold)
    return int(hit[0]) if hit.size else None


# ----------------------------------------------------------------------------- shared sweeps

#: Coefficients of the "worst" negative term (0 first: plain offline best-of-N in the same program).
WORST_COEFS = (0.0, 0.05, 0.2, 1.0)
#: Coefficients of "mean over worse"; run as "sum over worse" with coef / (N - 1), the same loss for fixed N.
MEAN_WORSE_COEFS = (0.05, 0.2, 1.0)
#: Coefficients of "sum over worse" (N - 1 = 9 terms, hence a smaller range).
SUM_WORSE_COEFS = (0.01, 0.05, 0.2)
#: Learning rates tried for REINFORCE and PPO (a slice of the authors' grid, docs/paper.md §A.8, where a few hundred steps can move the MLP).
RL_LEARNING_RATES = (1e-3, 3e-3, 1e-2)
#: On-policy best-of-N at the authors' learning rate and at the contrastive methods' (onpolicy_ipo.sh).
ON_POLICY_BEST_OF_N_LRS = (1e-3, 1e-2)


def offline_worst_sweep(b: Budget) -> Trajectory:
    """Offline best-of-N + "worst" over WORST_COEFS (coef 0 is plain offline best-of-N), with tuning seeds."""
    return run_config(offline_negative_best_of_n("worst"), b, tuned=True, negative_coef=np.asarray(WORST_COEFS))


def sum_worse_grid(num_samples: int = OFFLINE_BEST_OF_N.num_samples) -> tuple[np.ndarray, np.ndarray]:
    """The "sum over worse" coefficients that realise MEAN_WORSE_COEFS and SUM_WORSE_COEFS.

    Returns:
      (coefs, is_mean): the swept sum-over-worse coefficients, and a mask of
      those that stand for mean-over-worse (their coef x (N - 1) is the mean's).
    """
    mean = np.asarray(MEAN_WORSE_COEFS) / (num_samples - 1)
    total = np.asarray(SUM_WORSE_COEFS)
    return np.concatenate([mean, total]), np.concatenate([np.ones(mean.size, bool), np.zeros(total.size, bool)])


def offline_sum_worse_sweep(b: Budget) -> Trajectory:
    """Offline best-of-N + "sum over worse" over sum_worse_grid() (mean-over-worse included), with tuning seeds."""
    coefs, _ = sum_worse_grid()
    return run_config(offline_negative_best_of_n("sum_worse"), b, tuned=True, negative_coef=coefs)


def on_policy_best_of_n(b: Budget) -> Trajectory:
    """On-policy best-of-N at ON_POLICY_BEST_OF_N_LRS (index 0 is the authors' setting)."""
    return run_config(ON_POLICY_BEST_OF_N, b, learning_rate=np.asarray(ON_POLICY_BEST_OF_N_LRS))


def rl_sweep(loss: str, b: Budget) -> Trajectory:
    """REINFORCE or PPO over RL_LEARNING_RATES, with tuning seeds."""
    return run_config(on_policy_rl(loss), b, tuned=True, learning_rate=np.asarray(RL_LEARNING_RATES))
