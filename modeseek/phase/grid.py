"""The phase maps' grid: configuration, the objectives and their tuning grids, the per-cell arrays.

A cell of a map is a (rarity, coverage, budget) triple. Rarity picks the gold
reward (a gaussian bump shifted into the reference's tail until pi_ref(H) hits
the target, :func:`modeseek.geometry.bump_for_rarity`); coverage picks the
offline data distribution mu (:func:`modeseek.geometry.coverage_data`); the
budget is a number of gold reward queries (labels), the same for every
objective:

* on-policy objectives draw B responses per step and query the reward of
  each, so budget Q buys Q / B steps. The batch size B is a tuning knob (it
  decides exploration as much as the learning rate does): every B of
  ``batch_sizes`` gets one long run per cell, read at its checkpoints Q_b / B.
  Exact-population versions have no batch; they run the step counts of the
  reference ``batch_size``;
* offline objectives get a dataset of Q gold-labelled responses drawn from mu
  (all pairs, labelled by the gold reward), a separate axis value per budget;
* on-policy objectives of the "learned reward model" map query a
  Bradley-Terry proxy fitted to a dataset of Q labelled responses from mu, and
  then query the proxy (free) for the longest run.

Datasets are drawn here, once, as bin counts (nested: the dataset of a smaller
budget is the first part of the larger one's). With a tabular policy and one
context, training on a dataset is training on its empirical distribution mu_hat:
the all-pairs preference loss over a dataset equals the exact population pair
loss over mu_hat (identical-bin pairs have no reward gap and are skipped in
both), and the dataset's best response is one bin. So every offline objective,
sampled or exact, is one ``exact_offline`` program fed with data arrays
(mu_hat per budget and draw for the sampled version, mu or the exact best-of-N
distribution for the exact one), and nothing recompiles across cells or budgets.
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

#: Version of the sweep's outputs (table columns, proxy fits, datasets); part of
#: the configuration digest, so a change here invalidates resumed results.
SCHEMA = 3

__all__ = ["Family", "FAMILIES", "GROUPS", "MAPS", "PhaseConfig", "BUDGETS", "budget", "Grid", "build_grid", "fit_proxies", "pair_counts_from_bins"]

#: The paper's 2 x 2 (its Table 1, docs/paper.md §D.2, §E.2-§E.4) as groups, and which side of the
#: mode-covering / mode-seeking divide each group sits on (on-policy sampling or a negative gradient: seeking).
GROUPS = {
    "offline_ml": ("offline max. likelihood", "covering"),
    "offline_contrastive": ("offline contrastive", "seeking"),
    "on_policy_rl": ("on-policy RL", "seeking"),
    "on_policy_contrastive": ("on-policy contrastive", "seeking"),
}

#: The maps: "oracle" (on-policy objectives query the gold reward) and one per learned reward model.
MAPS = {
    "oracle": "Map A, oracle: on-policy objectives query the gold reward",
    "rm_rbf": "Map B, learned reward model (RBF Bradley-Terry proxy)",
    "rm_tabular": "Map B, learned reward model (tabular Bradley-Terry proxy)",
}


@dataclasses.dataclass(frozen=True)
class Family:
    """One objective of the maps: a registered loss in one data regime, with its tuning grid.

    Attributes:
      name: table key.
      label: for figures.
      group: a key of GROUPS.
      loss: registered loss name. Offline best-of-N is "sft" on the dataset's
        best response (best-of-N maximum likelihood without a negative term is
        the NLL of the best response, docs/paper.md §B.2).
      on_policy: True when the learner queries a reward during training.
      exact: also run the exact-population version ("exact" on-policy: the
        expected update under the current policy; "exact_offline": the
        expected update under mu, or under the exact best-of-N distribution).
      grid: traced hyperparameter name -> values crossed into the tuning grid.
      exact_grid: the grid of the exact-population version, when it differs
        (exact pair tables are costly; None: ``grid``).
      options: extra static options for :func:`modeseek.run`.
    """

    name: str
    label: str
    group: str
    loss: str
    on_policy: bool
    exact: bool = True
    grid: tuple[tuple[str, tuple[float, ...]], ...] = ()
    exact_grid: tuple[tuple[str, tuple[float, ...]], ...] | None = None
    options: tuple[tuple[str, Any], ...] = ()

    def for_variant(self, variant: str) -> Family:
        """This family with the grid of ``variant`` ("sampled" or "exact")."""
        return dataclasses.replace(self, grid=self.exact_grid) if variant == "exact" and self.exact_grid is not None else self

    @property
    def configs(self) -> list[dict[str, float]]:
        """The tuning grid as a list of dicts (outer product, in the order of ``grid``)."""
        names = [n for n, _ in self.grid]
        mesh = np.meshgrid(*[np.asarray(v, np.float64) for _, v in self.grid], indexing="ij") if names else []
        flat = [m.reshape(-1) for m in mesh]
        return [{n: float(f[i]) for n, f in zip(names, flat)} for i in range(flat[0].size)] if names else [{}]


_LR = ("learning_rate", (0.05, 0.2))
_ENT = ("entropy_coef", (0.0, 0.01))
_BETA = ("beta", (0.1, 1.0))
# Offline pair objectives see no new data, only their 100 free steps: a larger step size is their exploration knob.
_LR_OFFLINE_PAIRS = ("learning_rate", (0.2, 1.0))

FAMILIES = {
    f.name: f
    for f in (
        Family("best_of_n", "best-of-N (offline ML)", "offline_ml", "sft", False, grid=(_LR,)),
        Family("rwr", "RWR (offline)", "offline_ml", "rwr", False, grid=(_LR, ("beta", (0.1, 0.3)))),
        # Exact pair batches cost ~300x a points batch per step (a K x K table): DPO tunes beta at one step size.
        Family("dpo", "DPO (offline)", "offline_contrastive", "dpo", False, grid=(_LR_OFFLINE_PAIRS, _BETA)),
        Family("kto", "KTO (offline)", "offline_contrastive", "kto", False, grid=(_LR_OFFLINE_PAIRS, _BETA)),
        Family("ipo", "IPO (offline)", "offline_contrastive", "ipo", False, grid=(_LR_OFFLINE_PAIRS, _BETA)),
        Family("reinforce", "REINFORCE", "on_policy_rl", "reinforce", True, grid=(_LR, _ENT)),
        Family("rloo", "RLOO", "on_policy_rl", "rloo", True, exact=False, grid=(_LR, _ENT)),
        Family("online_dpo", "on-policy DPO", "on_policy_contrastive", "dpo", True, grid=(_LR, _BETA), exact_grid=(("learning_rate", (0.2,)), _BETA)),
        Family("nash_md", "Nash-MD", "on_policy_contrastive", "nash_md", True, exact=False, grid=(_LR, _BETA)),
    )
}


@dataclasses.dataclass(frozen=True)
class PhaseConfig:
    """Everything that defines a phase-map sweep (hashed into the manifest).

    Attributes:
      rarities: target rarities pi_ref(H), one map column each.
      coverages: coverages mu(H) / pi_ref(H) in [0, 1], one map row each.
      budgets: gold reward queries (labels) per objective, ascending, each a
        multiple of ``batch_size``: on-policy Q / batch_size steps, offline a
        dataset of Q responses, the proxy of map B fitted to Q responses.
      batch_size: the reference batch size: budgets are multiples of it, and
        the exact-population on-policy versions (no batch) run Q / batch_size
        steps, read at :attr:`checkpoints`.
      batch_sizes: responses (reward queries) per on-policy step, a tuning
        knob of every sampled on-policy objective (duels draw B / 2 pairs of
        responses); each B runs Q_max / B steps, read at Q_b / B.
      families: names from FAMILIES.
      reward_models: learned proxies of map B ("rbf", "tabular").
      rm_families: on-policy families also run on map B (the learned proxies).
      selection_seeds: seeds (offline: dataset draws) on which each cell's
        configuration is chosen; report_seeds: fresh seeds it is reported on.
      offline_steps: Adam steps of the offline objectives (free: no queries).
      labels, bt_scale: how pairs are labelled from the gold reward.
      num_bins, length_mean, length_sd, width: the length reference and the bump width.
      rbf_centers, rbf_linear, rm_prior_scale, rm_steps: the reward-model fits.
      marked: (rarity index, coverage index) cells of the mass plot.
      key: base seed.
      name: budget name (for captions).
    """

    rarities: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 0.05, 0.3)
    coverages: tuple[float, ...] = (0.0, 0.3, 1.0)
    budgets: tuple[int, ...] = (1600, 4800, 16000)
    batch_size: int = 16
    batch_sizes: tuple[int, ...] = (8, 16, 32)
    families: tuple[str, ...] = tuple(f for f in FAMILIES if f != "ipo")
    reward_models: tuple[str, ...] = ("rbf", "tabular")
    # One objective per on-policy group on map B keeps make figures within its 10 minutes; "large" runs all four.
    rm_families: tuple[str, ...] = ("reinforce", "nash_md")
    selection_seeds: int = 2
    report_seeds: int = 2
    offline_steps: int = 100
    labels: str = "reward"
    bt_scale: float = 1.0
    num_bins: int = tasks.NUM_LENGTHS
    length_mean: float = tasks.LENGTH_MEAN
    length_sd: float = tasks.LENGTH_SD
    width: float = tasks.WIDTH
    rbf_centers: int = 10
    rbf_linear: bool = True
    rm_prior_scale: float = 3.0
    rm_steps: int = 600
    marked: tuple[tuple[int, int], ...] = ((0, 0), (0, 2), (2, 2), (4, 2))
    key: int = 0
    name: str = "custom"

    def __post_init__(self) -> None:
        for f in self.families:
            _checks.choice("family", f, FAMILIES)
        for f in self.rm_families:
            _checks.choice("rm_family", f, [g for g in self.families if FAMILIES[g].on_policy])
        for m in self.reward_models:
            _checks.choice("reward_model", m, ("rbf", "tabular"))
        if len(set(self.families)) != len(self.families) or len(set(self.reward_models)) != len(self.reward_models):
            raise ValueError(f"families {self.families} and reward_models {self.reward_models} must not repeat names")
        for r in self.rarities:
            _checks.interval("rarity", r, 0.0, 1.0, low_open=True, high_open=True)
        for c in self.coverages:
            _checks.interval("coverage", c, 0.0, 1.0)
        for n in ("selection_seeds", "report_seeds", "offline_steps", "rm_steps", "rbf_centers"):
            object.__setattr__(self, n, _checks.integer(n, getattr(self, n)))
        object.__setattr__(self, "batch_size", _checks.integer("batch_size", self.batch_size, 2, reason="for pair losses"))
        if not self.budgets or list(self.budgets) != sorted(set(self.budgets)):
            raise ValueError(f"budgets={self.budgets} must be a non-empty strictly increasing tuple of query counts")
        if not self.batch_sizes or len(set(self.batch_sizes)) != len(self.batch_sizes):
            raise ValueError(f"batch_sizes={self.batch_sizes} must be a non-empty tuple without repeats")
        for b in self.batch_sizes:
            _checks.integer("batch_sizes entry", b, 2, reason="for pair losses")
            if b % 2:
                raise ValueError(f"batch size {b} is odd; expected even sizes (a duel reads two rewards, so it draws B / 2)")
        for q in self.budgets:
            _checks.integer("budget", q, self.batch_size)
            for b in (self.batch_size,) + tuple(self.batch_sizes):
                if q % b:
                    raise ValueError(f"budget {q} is not a multiple of batch_size={b}; expected whole steps")
        if self.steps % self.eval_every:
            raise ValueError(f"budgets {self.budgets} give checkpoints that are not multiples of their gcd; expected integers")
        _checks.choice("labels", self.labels, regimes.PAIR_LABELS)
        for i, j in self.marked:
            if not (0 <= i < len(self.rarities) and 0 <= j < len(self.coverages)):
                raise ValueError(f"marked cell {(i, j)} is outside the {len(self.rarities)} x {len(self.coverages)} grid")

    @property
    def seeds(self) -> int:
        """Selection plus report seeds."""
        return self.selection_seeds + self.report_seeds

    @property
    def checkpoints(self) -> tuple[int, ...]:
        """On-policy steps at which each budget is read: Q_b / batch_size."""
        return self.checkpoints_for(self.batch_size)

    def checkpoints_for(self, batch_size: int) -> tuple[int, ...]:
        """On-policy steps at which each budget is read with ``batch_size`` responses per step: Q_b / batch_size."""
        return tuple(q // batch_size for q in self.budgets)

    @property
    def steps(self) -> int:
        """Steps of the one long on-policy run (the largest budget)."""
        return self.checkpoints[-1]

    def eval_every_for(self, batch_size: int) -> int:
        """Evaluation period with ``batch_size`` responses per step: the gcd of its checkpoints, so every checkpoint is recorded."""
        return int(np.gcd.reduce(np.asarray(self.checkpoints_for(batch_size))))

    @property
    def eval_every(self) -> int:
        """Evaluation period of the reference ``batch_size`` (:meth:`eval_every_for`)."""
        return self.eval_every_for(self.batch_size)

    @property
    def maps(self) -> tuple[str, ...]:
        """Map keys: "oracle" and one "rm_<model>" per learned reward model."""
        return ("oracle",) + tuple(f"rm_{m}" for m in self.reward_models)

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

    def chunks(self) -> list[str]:
        """Units of work: one per family (the family's maps and variants run inside it)."""
        return list(self.families)


#: Budgets. "default" is the figure of ``make figures`` (<= 120 s on an idle 2-core machine);
#: "large" more rarities, coverages, budgets and seeds (``MODESEEK_PHASE_BUDGET=large``); "smoke" for tests.
BUDGETS = {
    "default": PhaseConfig(name="default"),
    "large": PhaseConfig(
        rarities=tuple(float(f"{v:.3g}") for v in np.geomspace(1e-4, 0.3, 8)),
        coverages=(0.0, 0.1, 0.3, 0.6, 1.0),
        budgets=(1600, 4800, 16000, 48000),
        families=tuple(FAMILIES),
        rm_families=("reinforce", "rloo", "online_dpo", "nash_md"),
        rm_steps=1500,
        selection_seeds=3,
        report_seeds=5,
        offline_steps=400,
        marked=((0, 0), (0, 4), (3, 4), (7, 4)),
        name="large",
    ),
    "smoke": PhaseConfig(
        rarities=(1e-3, 0.3),
        coverages=(0.0, 1.0),
        budgets=(32, 64, 320),
        batch_size=16,
        batch_sizes=(16,),
        # Three compiled programs (sft exact_offline, reinforce on_policy and exact): compiling is most of a smoke run.
        families=("best_of_n", "reinforce"),
        rm_families=("reinforce",),
        reward_models=("rbf",),
        selection_seeds=1,
        report_seeds=2,
        offline_steps=10,
        rm_steps=50,
        marked=((0, 0), (1, 1)),
        name="smoke",
    ),
}


def budget(name: str, **overrides: Any) -> PhaseConfig:
    """A named budget ("default", "large" or "smoke"), with optional field overrides."""
    _checks.choice("budget", name, BUDGETS)
    return dataclasses.replace(BUDGETS[name], **overrides)


def pair_counts_from_bins(counts: np.ndarray, reward: np.ndarray) -> np.ndarray:
    """(K, K) all-pairs preference counts W[a, b] = n_a n_b [r_a > r_b] of a dataset given by bin counts.

    Every unordered pair of distinct responses is labelled by the gold reward
    (the higher reward preferred; equal rewards, which include same-bin pairs,
    are skipped), as :func:`modeseek.regimes.sample_pairs` with pairing "all"
    and labels "reward" does, without enumerating the N (N - 1) / 2 pairs.
    """
    n = np.asarray(counts, np.float64)
    r = np.asarray(reward, np.float64)
    return np.outer(n, n) * (r[:, None] > r[None, :])


@dataclasses.dataclass
class Grid:
    """The per-cell arrays of a sweep (R rarities x C coverages x B budgets x S seeds, K bins).

    Attributes:
      config: the PhaseConfig.
      ref: (K,) reference.
      bumps: R RarityBump (gold reward, centre, achieved rarity).
      gold: (R, K) gold rewards.
      data: (R, C, K) offline data distributions mu.
      coverage: (R, C) achieved coverage mu(H)/pi_ref(H).
      counts: (R, C, B, S, K) bin counts of the datasets (nested over budgets).
      best_bin: (R, C, B, S) the dataset's best response (highest gold reward among drawn bins).
      best_of_n: (R, C, B, K) exact distribution of the best of Q_b draws from mu.
      proxies: reward-model name -> (R, C, B, K) rewards fitted to seed 0's dataset.
      fit_seconds: wall time of the proxy fits (compile included).
    """

    config: PhaseConfig
    ref: np.ndarray
    bumps: list
    gold: np.ndarray
    data: np.ndarray
    coverage: np.ndarray
    counts: np.ndarray
    best_bin: np.ndarray
    best_of_n: np.ndarray
    proxies: dict
    fit_seconds: float

    def problems(self, rarity_index: np.ndarray) -> list[Problem]:
        """One Problem per entry of ``rarity_index`` (flattened), for paired sweeps."""
        return [Problem(self.ref, self.gold[i], name=f"rarity_{self.bumps[i].rarity:.3g}") for i in np.asarray(rarity_index).reshape(-1)]


def build_grid(cfg: PhaseConfig, *, fit: bool = True) -> Grid:
    """Build every cell's gold reward, data distribution and datasets, and (``fit``) the learned proxies."""
    ref = np.asarray(tasks.length_reference(cfg.num_bins, cfg.length_mean, cfg.length_sd), np.float64)
    bumps = geometry.bumps_for_rarities(ref, cfg.rarities, method="shift", width=cfg.width, side="left")
    gold = np.stack([np.asarray(b.reward, np.float64) for b in bumps])
    data = np.stack([np.asarray(geometry.coverage_grid(ref, b.reward, cfg.coverages), np.float64) for b in bumps])
    data = data / data.sum(-1, keepdims=True)
    cov = np.asarray([[geometry.coverage(d, ref, b.reward) for d in rows] for b, rows in zip(bumps, data)])
    r_n, c_n, k = data.shape
    b_n, s_n = len(cfg.budgets), cfg.seeds
    rng = np.random.default_rng([cfg.key, 2404])
    # Nested datasets: budget b's dataset is budget b-1's plus Q_b - Q_{b-1} fresh draws.
    inc = np.diff(np.asarray((0,) + tuple(cfg.budgets)))
    counts = np.zeros((r_n, c_n, b_n, s_n, k), np.int64)
    for i in range(r_n):
        for j in range(c_n):
            draws = np.stack([rng.multinomial(q, data[i, j], size=s_n) for q in inc])  # (B, S, K)
            counts[i, j] = np.cumsum(draws, axis=0)
    masked = np.where(counts > 0, gold[:, None, None, None, :], -np.inf)
    best_bin = np.argmax(masked, axis=-1)
    logq = jnp.asarray(np.log(np.maximum(data, 1e-300)), jnp.float32)
    best_of_n = np.stack(
        [np.stack([np.stack([np.asarray(regimes.exact_best_of_n(logq[i, j], jnp.asarray(gold[i], jnp.float32), int(q)).best_weight) for q in cfg.budgets]) for j in range(c_n)]) for i in range(r_n)]
    ).astype(np.float64)
    best_of_n = best_of_n / best_of_n.sum(-1, keepdims=True)
    grid = Grid(cfg, ref, bumps, gold, data, cov, counts, best_bin, best_of_n, {}, 0.0)
    if fit:
        fit_proxies(grid)
    return grid


def _fit_all(cfg: PhaseConfig, models: tuple[str, ...]) -> Any:
    """A jitted (counts (G, K, K)) -> {model: (G, K)} over the grid's datasets."""
    feats = reward_models.rbf_features(cfg.num_bins, cfg.rbf_centers, linear=cfg.rbf_linear)

    def one(w: jax.Array) -> dict:
        out = {}
        if "tabular" in models:
            out["tabular"] = reward_models.fit_tabular(w, prior_scale=cfg.rm_prior_scale, bt_scale=cfg.bt_scale, steps=cfg.rm_steps)
        if "rbf" in models:
            out["rbf"] = reward_models.fit_features(w, feats, prior_scale=cfg.rm_prior_scale, bt_scale=cfg.bt_scale, steps=cfg.rm_steps)
        return out

    return jax.jit(jax.vmap(one))


def fit_proxies(grid: Grid) -> dict:
    """Fill ``grid.proxies``: every reward model fitted to each (cell, budget)'s seed-0 dataset, and ``grid.fit_seconds``.

    The fit is the Bradley-Terry posterior mode of :mod:`modeseek.reward_models`
    on the dataset's all-pairs counts (:func:`pair_counts_from_bins`); counts
    are scaled by 1 / (Q - 1) so that the likelihood weighs every response as
    one comparison's worth and the prior keeps its meaning across budgets.
    """
    cfg = grid.config
    r_n, c_n, b_n, _, k = grid.counts.shape
    w = np.stack([pair_counts_from_bins(grid.counts[i, j, b, 0], grid.gold[i]) / (cfg.budgets[b] - 1) for i in range(r_n) for j in range(c_n) for b in range(b_n)])
    t0 = time.perf_counter()
    fitted = _fit_all(cfg, tuple(cfg.reward_models))(jnp.asarray(w, jnp.float32))
    grid.proxies = {m: np.asarray(fitted[m], np.float64).reshape(r_n, c_n, b_n, k) for m in cfg.reward_models}
    grid.fit_seconds = time.perf_counter() - t0
    return grid.proxies
