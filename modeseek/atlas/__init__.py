"""The objective atlas: where every registered bandit objective sits between mode-covering and mode-seeking.

Every loss in :func:`modeseek.losses.names` that runs on bandits is trained,
tabular from pi_ref with Adam at the engine's default learning rate, for one
fixed budget of steps on three problems of equal shape: the paper's "far" and
"near" bandits (docs/paper.md §A.3) and :func:`bimodal_problem`, two equal
reward modes of which pi_ref makes one far more probable. The list of
objectives is read from the registry at run time, so a newly registered loss
appears without any change here; :data:`SETTINGS` holds the few per-family and
per-loss choices, keyed by option name, each with a default.

**Data regime** (:data:`SETTINGS` "sampling"). Each family is run in the
population (exact) version of the regime that defines it: the mode-covering
family is offline maximum likelihood on pi_ref's data (Pref-FT, offline
best-of-N, offline RWR: docs/paper.md §D.2 Table 1 and §E.2), so it runs
``exact_offline``; the contrastive family (DPO, IPO) is offline too (Table 1),
``exact_offline``; the on-policy family runs ``exact`` (the population update on
the current policy). Losses whose batch is a fixed target (forward_kl,
reverse_kl) run ``exact``. A loss the engine refuses in its exact regime runs
the sampled counterpart (``exact`` -> ``on_policy``, ``exact_offline`` ->
``offline``) with :data:`SAMPLED_SEEDS` seeds; its rows carry ``exact=False``
and a band (min and max over seeds).

**Mode-seeking index.** With pi* = pi_ref exp(r/beta)/Z (docs/paper.md §E.1),
R = KL(pi || pi*) (reverse) and F = KL(pi* || pi) (forward), both exact over the
K bins::

    index(pi) = (F - R) / (F + R + EPS),   in (-1, 1).

Why this form. An error of the mode-covering kind (pi keeps mass where pi*
has little) inflates R, whose integrand pi log(pi/pi*) is large there; an
error of the mode-seeking kind (pi misses mass pi* has) inflates F. The
normalised difference says which kind of error dominates, independently of
its size, so policies far from and near to pi* are compared on one scale:
+1 is a policy collapsed inside pi*'s support (seeking), -1 one spread well
beyond it (covering); pi_ref itself sits at -0.16 on "far". (The sign is the
opposite of (R - F)/(R + F): a mode-seeking objective minimises R, so its R is
the small one.) EPS = :data:`EPS` nats: as pi -> pi*, F and R both vanish
quadratically and their difference cubically, so the plain ratio of two
float32-resolution numbers is noise at the target (exact forward KL after 2000
steps on "far": F = 3e-8, R = 9e-8, ratio -0.51, against -0.04 at 1000 steps);
EPS sends a policy that has reached pi* to 0 (neither seeking nor covering)
and changes the index of a policy with F + R >> EPS by a factor
(F + R)/(F + R + EPS) only (pi_ref on "far": F + R = 9 nats). F is computed
from the stored float32 final policy, with bins that underflowed counted at
:data:`PROB_FLOOR` (the smallest normal float32), so for a policy collapsed to
a few bins F is a lower bound (and the index, if anything, too low); R is the
engine's ``kl_pi_star`` metric computed from the log-probabilities.

Other measures per objective and problem: the final expected reward (and as
a fraction of max r), entropy, mass on the top mode (the connected run of
high-reward bins, r >= max r / 2, holding most of pi*'s mass:
:func:`top_mode`), and the steps to 90% of max r (first step at which the exact
expected reward reaches it; missing when it never does), and ``index_early``,
the index at :func:`early_step` (5% of the budget), with F and R both from the
stored policy there.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

import numpy as np

import modeseek as ms
from modeseek import losses
from modeseek.problems import Problem, high_reward_mask

if TYPE_CHECKING:
    from collections.abc import Iterable

    import pandas as pd
    from jax.typing import ArrayLike

    from modeseek.engine import Trajectory

__all__ = [
    "EPS",
    "PROB_FLOOR",
    "STEPS",
    "BETA",
    "SETTINGS",
    "SAMPLED_SEEDS",
    "BIMODAL_MODES",
    "REWARD_FRACTION",
    "EARLY_FRACTION",
    "early_step",
    "mode_seeking_index",
    "kl_pair",
    "bimodal_problem",
    "problems",
    "top_mode",
    "objectives",
    "settings_for",
    "measure",
    "Measured",
]

#: Nats added to F + R in the index (see the module docstring).
EPS = 0.01
#: The smallest normal float32: snapshot probabilities below it are taken at it.
PROB_FLOOR = float(np.finfo(np.float32).tiny)
#: The fixed budget of gradient steps.
STEPS = 2000
#: pi*'s temperature, and the loss's beta where it reads one.
BETA = 0.1
#: Seeds of an objective that has no exact batch.
SAMPLED_SEEDS = 4
#: "Reached" means expected reward >= this fraction of max r.
REWARD_FRACTION = 0.9
#: The early checkpoint, as a fraction of the budget: Theorem 6.5 (docs/paper.md §E.4) is about how fast each
#: divergence moves mass, which shows before objectives that share a target have both reached it.
EARLY_FRACTION = 0.05
#: Per-option settings: option -> (values by family or loss name, default). A loss name wins over its family.
SETTINGS: dict[str, tuple[dict[str, object], object]] = {
    "sampling": ({"mode_covering": "exact_offline", "contrastive": "exact_offline"}, "exact"),
    "beta": ({}, BETA),
}
_SAMPLED = {"exact": "on_policy", "exact_offline": "offline"}
#: Bimodal problem: equal bumps (centre, width); pi_ref holds ~100x more mass at the first.
BIMODAL_MODES = ((20.0, 5.0), (70.0, 5.0))


def kl_pair(p: ArrayLike, q: ArrayLike) -> tuple[float, float]:
    """(F, R) = (KL(q || p), KL(p || q)) in float64, p floored at :data:`PROB_FLOOR` and renormalised; rounding below 0 is clipped to 0."""
    p = np.maximum(np.asarray(p, np.float64), PROB_FLOOR)
    p = p / p.sum()
    q = np.asarray(q, np.float64)
    lq = np.log(np.where(q > 0, q, 1.0))
    forward = float(np.sum(np.where(q > 0, q * (lq - np.log(p)), 0.0)))
    reverse = float(np.sum(p * (np.log(p) - np.where(q > 0, lq, np.log(PROB_FLOOR)))))
    return max(forward, 0.0), max(reverse, 0.0)


def mode_seeking_index(forward: ArrayLike, reverse: ArrayLike, eps: float = EPS) -> np.ndarray:
    """(F - R) / (F + R + eps): > 0 when the forward KL(pi* || pi) dominates (mode-seeking), < 0 when the reverse does.

    Args:
      forward: F = KL(pi* || pi) >= 0 (scalar or array).
      reverse: R = KL(pi || pi*) >= 0.
      eps: nats added to the denominator (module docstring), >= 0.
    """
    f, r = np.asarray(forward, np.float64), np.asarray(reverse, np.float64)
    if eps < 0 or not np.isfinite(eps):
        raise ValueError(f"eps={eps!r}; expected a finite number >= 0")
    if np.any(~np.isfinite(f) | (f < 0)) or np.any(~np.isfinite(r) | (r < 0)):
        raise ValueError(f"forward={forward!r}, reverse={reverse!r}; expected finite KL divergences >= 0")
    den = f + r + eps
    return np.where(den > 0, (f - r) / np.where(den > 0, den, 1.0), 0.0)


def bimodal_problem(num_bins: int = 100) -> Problem:
    """pi_ref of the paper's bandit with two equal reward bumps (:data:`BIMODAL_MODES`): one by pi_ref's mode, one in its tail."""
    (c1, w1), (c2, w2) = BIMODAL_MODES
    scale = num_bins / 100.0
    return Problem(ms.references.squashed_cauchy(num_bins), ms.rewards.multi_bump(num_bins, [c1 * scale, c2 * scale], [w1, w2]), name="bimodal")


def problems() -> list[Problem]:
    """The atlas's problems, of equal shape: "far", "near" and :func:`bimodal_problem`."""
    return [ms.problems.get("far"), ms.problems.get("near"), bimodal_problem()]


def top_mode(reward: ArrayLike, target: ArrayLike) -> np.ndarray:
    """(K,) mask of the connected run of high-reward bins (r >= max r / 2) holding most of ``target``'s mass."""
    high = np.asarray(high_reward_mask(np.asarray(reward)))
    target = np.asarray(target, np.float64)
    labels = np.cumsum(np.diff(np.concatenate([[0], high.astype(int)])) == 1) * high
    runs = [labels == k for k in range(1, int(labels.max()) + 1)]
    return max(runs, key=lambda m: target[m].sum())


def objectives() -> tuple[str, ...]:
    """Every registered loss that runs on bandits, in registry order."""
    return losses.names("bandit")


def settings_for(name: str) -> dict[str, object]:
    """The :data:`SETTINGS` of loss ``name``: its own entry, else its family's, else the default; sampling "exact" for target losses."""
    spec = losses.get(name)
    out = {opt: by.get(name, by.get(spec.family, default)) for opt, (by, default) in SETTINGS.items()}
    if spec.batch == "target":
        out["sampling"] = "exact"
    return out


@dataclasses.dataclass
class Measured:
    """What :func:`measure` returns.

    Attributes:
      table: tidy DataFrame, one row per objective x problem (x seed for sampled objectives is reduced to mean and band).
      mass: tidy DataFrame, one row per objective x problem x bin x distribution (pi, pi_ref, pi_star).
      curves: objective -> (problems, seeds, steps + 1) expected reward.
      programs: compiled programs (one per objective).
      compile_seconds, run_seconds: sums of the engine's wall times.
      refused: objective -> why its exact regime was refused (it then ran sampled).
    """

    table: pd.DataFrame
    mass: pd.DataFrame
    curves: dict
    programs: int
    compile_seconds: float
    run_seconds: float
    refused: dict
    wall_seconds: float = 0.0


def _first_reach(curve: np.ndarray, level: float) -> float:
    hit = np.flatnonzero(curve >= level)
    return float(hit[0]) if hit.size else np.nan


def early_step(steps: int) -> int:
    """The early checkpoint of a budget of ``steps``: :data:`EARLY_FRACTION` of it, at least 1."""
    return max(1, round(EARLY_FRACTION * steps))


def _run(name: str, probs: list[Problem], steps: int, opts: dict, seeds: int, key: int) -> Trajectory:
    # Snapshots at the early checkpoint's multiples, so that it and the final step are both stored.
    return ms.run(probs, loss=name, steps=steps, seeds=seeds, key=key, snapshot_every=early_step(steps), block=len(probs) * seeds, **opts)


def measure(names: Iterable[str] | None = None, *, steps: int = STEPS, probs: Iterable[Problem] | None = None, key: int = 0, overrides: dict | None = None) -> Measured:
    """Train every objective in ``names`` (default :func:`objectives`) on ``probs`` (default :func:`problems`) and tabulate.

    One ``modeseek.run`` call (one compiled program) per objective, the
    problems swept in it. ``overrides`` maps a loss name to options replacing
    its :func:`settings_for` (used by the tests to force a sampled regime).
    """
    import pandas as pd

    names = objectives() if names is None else tuple(names)
    probs = problems() if probs is None else list(probs)
    bad = [n for n in names if n not in objectives()]
    if bad:
        raise ValueError(f"objectives {bad} do not run on bandits; expected names from {', '.join(objectives())}")
    rows, mass, curves, refused = [], [], {}, {}
    compile_s = run_s = 0.0
    t_wall = time.perf_counter()
    stars = [np.asarray(ms.pi_star(p, BETA), np.float64) for p in probs]
    for name in names:
        spec = losses.get(name)
        opts = {**settings_for(name), **(overrides or {}).get(name, {})}
        exact = opts["sampling"] in _SAMPLED
        seeds = 1
        try:
            if not exact:
                raise ValueError(f"sampling={opts['sampling']!r} was asked for")
            tr = _run(name, probs, steps, opts, 1, key)
        except (ValueError, NotImplementedError) as err:
            refused[name] = str(err)
            sampled = _SAMPLED.get(opts["sampling"], opts["sampling"])
            opts = {**opts, "sampling": sampled}
            exact, seeds = False, SAMPLED_SEEDS
            tr = _run(name, probs, steps, opts, seeds, key)
        compile_s += tr.compile_seconds
        run_s += tr.run_seconds
        er = np.asarray(tr.metrics["expected_reward"], np.float64)  # (problems, seeds, steps + 1)
        early = int(np.flatnonzero(tr.snapshot_steps == early_step(steps))[0])
        curves[name] = er
        for g, prob in enumerate(probs):
            reward = np.asarray(prob.reward, np.float64)
            ref = np.asarray(prob.ref_probs, np.float64)
            top = top_mode(reward, stars[g])
            per_seed = []
            for s in range(seeds):
                final = np.asarray(tr.final_probs[g, s], np.float64)
                forward, _ = kl_pair(final, stars[g])
                reverse = float(tr.metrics["kl_pi_star"][g, s, -1])
                per_seed.append(
                    {
                        "kl_reverse": reverse,
                        "kl_forward": forward,
                        "index": float(mode_seeking_index(forward, max(reverse, 0.0))),
                        "expected_reward": float(er[g, s, -1]),
                        "reward_fraction": float(er[g, s, -1] / reward.max()),
                        "entropy": float(tr.metrics["entropy"][g, s, -1]),
                        "mass_top_mode": float(final[top].sum()),
                        "steps_to_90": _first_reach(er[g, s], REWARD_FRACTION * reward.max()),
                        "index_early": float(mode_seeking_index(*kl_pair(tr.snapshots[g, s, early], stars[g]))),
                    }
                )
            cols = pd.DataFrame(per_seed)
            row = {
                "objective": name,
                "family": spec.family,
                "batch": spec.batch,
                "problem": prob.name,
                "sampling": opts["sampling"],
                "exact": exact,
                "seeds": seeds,
                "steps": steps,
                "beta": float(opts.get("beta", BETA)),
            }
            for c in cols.columns:
                row[c] = float(cols[c].mean())
                row[c + "_lo"] = float(cols[c].min())
                row[c + "_hi"] = float(cols[c].max())
            rows.append(row)
            final_mean = np.asarray(tr.final_probs[g], np.float64).mean(axis=0)
            for which, v in (("pi", final_mean), ("pi_ref", ref), ("pi_star", stars[g])):
                mass.append(pd.DataFrame({"objective": name, "family": spec.family, "problem": prob.name, "distribution": which, "bin": np.arange(len(v)), "prob": v}))
    table = pd.DataFrame(rows)
    mass_table = pd.concat(mass, ignore_index=True) if mass else pd.DataFrame()
    return Measured(table, mass_table, curves, len(names), compile_s, run_s, refused, time.perf_counter() - t_wall)
