"""The phase-diagram grid: configuration, algorithm families and the per-cell arrays.

A cell of the map is a (rarity, coverage) pair. Rarity picks the gold reward (a
gaussian bump shifted into the reference's tail until pi_ref(H) hits the
target, :func:`modeseek.geometry.bump_for_rarity`); coverage picks the offline
data distribution mu (:func:`modeseek.geometry.coverage_data`). From mu the
grid also draws a preference dataset per cell and fits the learned reward
models (:mod:`modeseek.reward_models`) that the on-policy families query.
Everything a sweep needs is built here once, as stacked arrays, so that each
algorithm family is one compiled program fed with grid data: the cells differ
only in array values (rewards, data distributions, proxies), never in shapes or
static options, so nothing recompiles from cell to cell.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from modeseek import _checks, geometry, regimes, reward_models, tasks
from modeseek.problems import Problem

#: Version of the sweep's outputs (table columns, proxy fits); part of the
#: configuration digest, so a change here invalidates resumed results.
SCHEMA = 1

__all__ = ["Family", "FAMILIES", "PhaseConfig", "BUDGETS", "budget", "Grid", "build_grid", "fit_proxies"]


@dataclasses.dataclass(frozen=True)
class Family:
    """An algorithm family of the map: one loss in one data regime.

    Attributes:
      name: table key.
      label: for figures.
      loss: registered loss name.
      sampling: "offline" (one dataset from mu) or "on_policy".
      on_policy: True when the learner queries a reward (the gold reward or a
        learned proxy); offline learners train on the preference dataset's own
        gold labels, as Pref-FT and DPO do in the paper (docs/paper.md §D.6).
      options: extra static options for :func:`modeseek.run`.
    """

    name: str
    label: str
    loss: str
    sampling: str
    on_policy: bool
    options: tuple[tuple[str, Any], ...] = ()


#: The four families of the paper's 2 x 2 (its Table 1, docs/paper.md §D.2, §E.2-§E.4): sampling
#: (offline / on-policy) x objective (maximum likelihood / negative gradient).
FAMILIES = {
    f.name: f
    for f in (
        Family("offline_ml", "offline max. likelihood (best-of-N)", "best_of_n", "offline", False),
        Family("offline_contrastive", "offline contrastive (DPO)", "dpo", "offline", False),
        Family("on_policy_rl", "on-policy RL (REINFORCE)", "reinforce", "on_policy", True),
        Family("on_policy_contrastive", "on-policy contrastive (DPO)", "dpo", "on_policy", True),
    )
}


@dataclasses.dataclass(frozen=True)
class PhaseConfig:
    """Everything that defines a phase-diagram sweep (hashed into the manifest).

    Attributes:
      rarities: target rarities pi_ref(H), one map column each.
      coverages: coverages mu(H) / pi_ref(H) in [0, 1], one map row each.
      families: names from FAMILIES.
      reward_models: what on-policy families query, from
        reward_models.MODELS ("rbf", "tabular", "gold"); the first is the
        primary one drawn in the main figures, the others are compared with it.
      seeds: independent runs per cell.
      steps: gradient steps per run.
      dataset_size: responses in the offline preference dataset: one batch of
        this size from mu (one context, all pairs), and an independent draw of
        the same size is what each learned reward model is fitted to.
      batch_size: responses per on-policy batch: a fresh batch of this size is
        drawn from the policy at every step.
      labels: how pairs are labelled from the gold reward ("reward": the higher
        reward is preferred, as the paper code; or "bradley_terry").
      bt_scale: Bradley-Terry scale for labels="bradley_terry" and for the fits.
      learning_rate, beta: Adam step size and DPO's beta.
      num_bins, length_mean, length_sd, width: the length reference and the bump
        width (see :mod:`modeseek.tasks`).
      rbf_centers, rbf_linear, rm_prior_scale, rm_steps: the reward models
        (prior scale sigma in reward units, Adam steps of the fit).
      record_every: store metrics every this many steps in the table.
      marked: (rarity index, coverage index) cells whose probability mass is plotted.
      key: base PRNG seed.
      name: budget name (for captions).
    """

    rarities: tuple[float, ...] = tuple(float(f"{v:.4g}") for v in np.geomspace(1e-4, 0.5, 8))
    coverages: tuple[float, ...] = (0.0, 0.01, 0.03, 0.1, 0.2, 0.4, 0.7, 1.0)
    families: tuple[str, ...] = tuple(FAMILIES)
    reward_models: tuple[str, ...] = ("rbf", "tabular", "gold")
    seeds: int = 5
    steps: int = 500
    dataset_size: int = 64
    batch_size: int = 16
    labels: str = "reward"
    bt_scale: float = 1.0
    learning_rate: float = 0.05
    beta: float = 0.1
    num_bins: int = tasks.NUM_LENGTHS
    length_mean: float = tasks.LENGTH_MEAN
    length_sd: float = tasks.LENGTH_SD
    width: float = tasks.WIDTH
    rbf_centers: int = 10
    rbf_linear: bool = True
    rm_prior_scale: float = 3.0
    rm_steps: int = 1500
    record_every: int = 5
    marked: tuple[tuple[int, int], ...] = ((7, 7), (3, 7), (3, 0), (5, 0), (0, 7), (0, 0))
    key: int = 0
    name: str = "custom"

    def __post_init__(self):
        for f in self.families:
            _checks.choice("family", f, FAMILIES)
        for m in self.reward_models:
            _checks.choice("reward_model", m, reward_models.MODELS)
        if not self.reward_models:
            raise ValueError("reward_models is empty; expected at least one of " + ", ".join(reward_models.MODELS))
        if len(set(self.families)) != len(self.families) or len(set(self.reward_models)) != len(self.reward_models):
            raise ValueError(f"families {self.families} and reward_models {self.reward_models} must not repeat names")
        for r in self.rarities:
            _checks.interval("rarity", r, 0.0, 1.0, low_open=True, high_open=True)
        for c in self.coverages:
            _checks.interval("coverage", c, 0.0, 1.0)
        for n in ("seeds", "steps", "record_every", "rm_steps", "rbf_centers"):
            object.__setattr__(self, n, _checks.integer(n, getattr(self, n)))
        for n in ("dataset_size", "batch_size"):
            object.__setattr__(self, n, _checks.integer(n, getattr(self, n), 2, reason="for pair losses"))
        if self.steps % self.record_every:
            raise ValueError(f"steps={self.steps} is not a multiple of record_every={self.record_every}")
        _checks.choice("labels", self.labels, regimes.PAIR_LABELS)
        for i, j in self.marked:
            if not (0 <= i < len(self.rarities) and 0 <= j < len(self.coverages)):
                raise ValueError(f"marked cell {(i, j)} is outside the {len(self.rarities)} x {len(self.coverages)} grid")

    def to_dict(self) -> dict:
        """JSON-ready dict of every field."""
        d = dataclasses.asdict(self)
        d["marked"] = [list(c) for c in self.marked]
        return d

    def digest(self) -> str:
        """A short hash of everything that changes results: the fields (not the name) and the families' definitions."""
        d = self.to_dict()
        d.pop("name")
        d["family_definitions"] = [dataclasses.asdict(FAMILIES[f]) for f in self.families]
        d["schema"] = SCHEMA
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def primary_reward_model(self) -> str:
        return self.reward_models[0]

    def chunks(self) -> list[tuple[str, str]]:
        """(family, reward model) units of work; offline families use the dataset's labels ("data")."""
        return [(f, m) for f in self.families for m in (self.reward_models if FAMILIES[f].on_policy else ("data",))]


#: Budgets: "default" is the figure of ``make figures``; "smoke" is for tests and smoke runs.
BUDGETS = {
    "default": PhaseConfig(name="default"),
    "smoke": PhaseConfig(
        rarities=(1e-3, 0.05, 0.4),
        coverages=(0.0, 1.0),
        seeds=2,
        steps=20,
        dataset_size=8,
        batch_size=4,
        rm_steps=100,
        marked=((2, 1), (1, 0)),
        name="smoke",
    ),
}


def budget(name: str, **overrides) -> PhaseConfig:
    """A named budget ("default" or "smoke"), with optional field overrides."""
    _checks.choice("budget", name, BUDGETS)
    return dataclasses.replace(BUDGETS[name], **overrides)


@dataclasses.dataclass
class Grid:
    """The per-cell arrays of a sweep (R rarities x C coverages, K bins).

    Attributes:
      config: the PhaseConfig.
      ref: (K,) reference.
      bumps: R RarityBump (gold reward, centre, achieved rarity).
      problems: R Problems (reference, gold reward).
      data: (R, C, K) offline data distributions mu.
      coverage: (R, C) achieved coverage mu(H)/pi_ref(H).
      proxies: reward-model name -> (R, C, K) rewards the on-policy learners query.
      fit_seconds: wall time of building the proxies (compile included).
    """

    config: PhaseConfig
    ref: np.ndarray
    bumps: list
    problems: list
    data: np.ndarray
    coverage: np.ndarray
    proxies: dict
    fit_seconds: float


def _fit_all(cfg: PhaseConfig, models: tuple[str, ...]):
    """A jitted (data (G, K), gold (G, K)) -> {model: (G, K)} over the grid's cells."""
    feats = reward_models.rbf_features(cfg.num_bins, cfg.rbf_centers, linear=cfg.rbf_linear)
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.key), 7919)

    def one(mu, gold):
        # The same key in every cell: common random numbers across the map, so
        # neighbouring cells differ by their distributions, not by fresh noise.
        counts = reward_models.sample_pair_counts(key, mu, gold, num_samples=cfg.dataset_size, labels=cfg.labels, bt_scale=cfg.bt_scale)
        out = {}
        if "tabular" in models:
            out["tabular"] = reward_models.fit_tabular(counts, prior_scale=cfg.rm_prior_scale, bt_scale=cfg.bt_scale, steps=cfg.rm_steps)
        if "rbf" in models:
            out["rbf"] = reward_models.fit_features(counts, feats, prior_scale=cfg.rm_prior_scale, bt_scale=cfg.bt_scale, steps=cfg.rm_steps)
        return out

    return jax.jit(jax.vmap(one))


def build_grid(cfg: PhaseConfig, *, fit: bool = True) -> Grid:
    """Build every cell's gold reward and data distribution, and (``fit``) the learned proxies."""
    ref = np.asarray(tasks.length_reference(cfg.num_bins, cfg.length_mean, cfg.length_sd), np.float64)
    bumps = geometry.bumps_for_rarities(ref, cfg.rarities, method="shift", width=cfg.width, side="left")
    problems = [Problem(ref, b.reward, name=f"rarity_{b.rarity:.3g}") for b in bumps]
    data = np.stack([np.asarray(geometry.coverage_grid(ref, b.reward, cfg.coverages)) for b in bumps])
    cov = np.asarray([[geometry.coverage(d, ref, b.reward) for d in rows] for b, rows in zip(bumps, data)])
    grid = Grid(cfg, ref, bumps, problems, data, cov, {}, 0.0)
    if fit:
        fit_proxies(grid)
    return grid


def fit_proxies(grid: Grid) -> dict:
    """Fill ``grid.proxies`` (every reward model of the config, one per cell) and ``grid.fit_seconds``."""
    cfg = grid.config
    r, c, k = grid.data.shape
    gold = np.stack([np.asarray(p.reward) for p in grid.problems])  # (R, K)
    t0 = time.perf_counter()
    proxies = {}
    learned = tuple(m for m in cfg.reward_models if m != "gold")
    if learned:
        fitted = _fit_all(cfg, learned)(jnp.asarray(grid.data.reshape(r * c, k)), jnp.asarray(np.repeat(gold, c, axis=0)))
        proxies = {m: np.asarray(v).reshape(r, c, k) for m, v in fitted.items()}
    if "gold" in cfg.reward_models:
        proxies["gold"] = np.broadcast_to(gold[:, None, :], (r, c, k)).copy()
    grid.proxies = {m: proxies[m] for m in cfg.reward_models}
    grid.fit_seconds = time.perf_counter() - t0
    return grid.proxies
