"""Groups with no signal: how often a GRPO group's rewards are all equal, and what dropping such groups changes.

GRPO (Shao et al. 2024, arXiv 2402.03300, §4.1) centres each reward on its
group of G responses. With a binary reward and success probability
p = P_pi(r = 1), a group is uniform (all G rewards equal, every advantage 0,
no gradient from the reward) with probability

    P_uniform = p^G + (1 - p)^G,

which at pi = pi_ref is a function of the rarity p = pi_ref(good set) alone.
DAPO (Yu et al. 2025, arXiv 2503.14476, §3.2, "dynamic sampling") drops these
groups and samples more until the batch is full of groups with a signal; the
engine models dropping by scaling the kept groups by (groups) / (groups kept)
(:func:`modeseek.losses.on_policy.grpo`, ``drop_uniform_groups``).

What is computed here:

* P_uniform exactly against rarity and G, checked three ways: the closed form,
  the engine's exact-batch statistic
  (:func:`modeseek.losses.on_policy.nonuniform_probability` on
  :func:`modeseek.regimes.exact_points`) and the share of uniform groups among
  groups drawn by the engine's sampler (:func:`modeseek.regimes.sample_points`),
  within a binomial margin.
* Training, sampled ``grpo`` against the ``dapo`` preset, one group of G = 8
  per step, at the same reward-query budget, at a few rarities. With one group
  per step a uniform group's GRPO gradient is already 0, so dropping it cannot
  change an update: the two runs are the same per query. DAPO's gain is per
  gradient step: refilling, it takes one step per group with a signal, so its
  steps are the expected number of useful groups the run drew,
  sum_t (1 - P_uniform(p_t)), with p_t the policy's exact success probability
  at step t (an accounting of the same groups, not a separate simulation:
  GRPO's zero-gradient steps still move Adam's momentum).
* "The loss is 0 but the gradient is not" (trl issue 2703): on fresh samples
  the ratio is 1, so GRPO's surrogate is -sum_j w_j A_j = 0 (the advantages
  are centred on the group), while its gradient is -sum_j w_j A_j grad log pi(y_j),
  the policy gradient. Checked with ``jax.grad`` on the registered loss, and
  seen in the engine's ``train_loss``.

Problems: :func:`rarity_problem`, pi_ref of the paper's bandit (docs/paper.md
§A.1) with bin 70 ("far"'s reward peak) given mass p exactly, reward 1 there and 0 elsewhere.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

import modeseek as ms
from modeseek import pieces, regimes
from modeseek.losses import on_policy
from modeseek.pieces import Claim, Piece
from modeseek.problems import Problem

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "GOOD_BIN",
    "RARITIES",
    "GROUP_SIZES",
    "SAMPLED_GROUPS",
    "MARGIN_SIGMAS",
    "TRAIN_RARITIES",
    "TRAIN_G",
    "LEVEL",
    "rarity_problem",
    "uniform_probability",
    "sampled_uniform_share",
    "loss_and_gradient",
    "measure",
    "claims",
    "make",
    "PIECE",
]

GOOD_BIN = 70
RARITIES = (0.3, 0.1, 3e-2, 1e-2, 3e-3, 1e-3)
GROUP_SIZES = (2, 4, 8, 16, 64)
SAMPLED_GROUPS = 20000
#: Sampled share against exact: |difference| <= 4 binomial standard errors. Over 30 cells the chance that any
#: honest cell falls outside is about 30 x 6.3e-5 = 2e-3.
MARGIN_SIGMAS = 4.0
#: Engine exact statistic against the closed form: this many float32 ulps per unit of G (measured: 5.7e-6 at G = 64, 0.8 ulps per G).
ENGINE_ULPS = 4.0
TRAIN_RARITIES = (0.1, 1e-2, 1e-3)
TRAIN_G = 8
TRAIN_SEEDS = 4
TRAIN_STEPS = 1500
SMOKE_STEPS = 100
#: "Reached": the exact success probability E_pi[r] >= this.
LEVEL = 0.5


def rarity_problem(p: float, num_bins: int = 100) -> Problem:
    """pi_ref of the paper's bandit with bin :data:`GOOD_BIN` holding mass ``p`` exactly (the rest rescaled); reward 1 there, 0 elsewhere."""
    if not 0 < p < 1:
        raise ValueError(f"p={p!r}; expected a rarity in (0, 1)")
    base = np.asarray(ms.references.squashed_cauchy(num_bins), np.float64)
    good = GOOD_BIN * num_bins // 100
    ref = base * (1.0 - p) / (1.0 - base[good])
    ref[good] = p
    reward = np.zeros(num_bins)
    reward[good] = 1.0
    return Problem(ref, reward, name=f"rarity {p:g}")


def uniform_probability(p: ArrayLike, group_size: int) -> np.ndarray:
    """P(G binary rewards all equal) = p^G + (1 - p)^G, float64, for scalar or array success probability ``p``."""
    p = np.asarray(p, np.float64)
    if np.any((p < 0) | (p > 1)) or int(group_size) < 1:
        raise ValueError(f"p={p!r}, group_size={group_size!r}; expected probabilities in [0, 1] and a group size >= 1")
    return p**group_size + (1.0 - p) ** group_size


def _engine_exact_uniform(prob: Problem, group_size: int) -> float:
    """1 - the engine's exact-batch P(non-uniform group) at pi = pi_ref."""
    items = regimes.exact_points(jnp.log(prob.ref_probs), prob.reward)
    return float(1.0 - on_policy.nonuniform_probability(items, group_size))


@partial(jax.jit, static_argnames=("sizes", "groups"))
def _uniform_shares(key: jax.Array, logq: jax.Array, reward: jax.Array, sizes: tuple[int, ...], groups: int) -> jax.Array:
    def one(k: jax.Array) -> jax.Array:
        items = regimes.sample_points(k, logq, reward, max(sizes))
        # The group of size G is the first G draws (with weights 1/G): one compiled sampler for every G.
        return jnp.stack([on_policy.nonuniform_probability(items._replace(y=items.y[:g], reward=items.reward[:g], weight=jnp.full((g,), 1.0 / g), logq=items.logq[:g]), g) for g in sizes])

    return 1.0 - jnp.mean(jax.vmap(one)(jax.random.split(key, groups)), axis=0)


def sampled_uniform_share(prob: Problem, sizes: tuple[int, ...], groups: int, key: int = 0) -> dict[int, float]:
    """G -> share of ``groups`` groups of G drawn from pi_ref by the engine's sampler whose rewards are all equal, for G in ``sizes``."""
    sizes = tuple(int(g) for g in sizes)
    out = _uniform_shares(jax.random.key(key), jnp.log(prob.ref_probs), prob.reward, sizes=sizes, groups=groups)
    return dict(zip(sizes, np.asarray(out, np.float64).tolist()))


def loss_and_gradient(p: float = 0.3, group_size: int = TRAIN_G, key: int = 1) -> dict:
    """GRPO's loss value and logit-gradient norm on one fresh group with a signal (pi = pi_ref = q), by ``jax.grad``.

    Returns a dict: the group's rewards, its mean advantage, and loss and gradient norm of GRPO
    without KL ("no_kl_*") and with k3 in the loss at beta 0.04, DeepSeekMath's coefficient ("k3_loss_*").
    """
    prob = rarity_problem(p)
    ref_logp = jnp.log(prob.ref_probs)
    draw = jax.jit(regimes.sample_points, static_argnums=3)
    # Draw groups until one has both rewards (at p = 0.3 and G = 8 the first nearly always does).
    k = jax.random.key(key)
    for _ in range(100):
        k, sub = jax.random.split(k)
        batch = draw(sub, ref_logp, prob.reward, group_size)
        if float(jnp.max(batch.reward)) != float(jnp.min(batch.reward)):
            break
    out: dict = {"rewards": np.asarray(batch.reward).tolist()}
    for name, opts in (("no_kl", {}), ("k3_loss", {"beta": 0.04, "kl_estimator": "k3", "kl_placement": "loss"})):

        def f(logits: jax.Array, opts: dict = opts) -> jax.Array:
            return on_policy.grpo(jax.nn.log_softmax(logits), batch, ref_logp=ref_logp, **opts)[0]

        val, grad = jax.jit(jax.value_and_grad(f))(ref_logp)
        out[f"{name}_loss"] = float(val)
        out[f"{name}_grad_norm"] = float(jnp.linalg.norm(grad))
    a = on_policy.group_advantages(batch.reward, batch, lambda _: jnp.zeros(()), scale_rewards="group", beta=0.0, kl_estimator=None, kl_placement="reward")
    out["mean_advantage"] = float(jnp.sum(batch.weight * a))
    return out


def measure(steps: int = TRAIN_STEPS, smoke: bool = False) -> dict:
    """Everything the piece shows: tidy tables "fraction" and "runs", the gradient check, and compute times."""
    import pandas as pd

    t0 = time.perf_counter()
    # Smoke: two rarities and two group sizes (each group size is one compiled sampler).
    rarities = (0.1, 1e-3) if smoke else RARITIES
    sizes = (2, 8) if smoke else GROUP_SIZES
    groups = 2000 if smoke else SAMPLED_GROUPS
    rows = []
    for i, p in enumerate(rarities):
        prob = rarity_problem(p)
        shares = sampled_uniform_share(prob, sizes, groups, key=i)
        for g in sizes:
            exact = float(uniform_probability(p, g))
            share = shares[g]
            se = np.sqrt(exact * (1 - exact) / groups)
            rows.append(
                {
                    "rarity": p,
                    "group_size": g,
                    "p_uniform_exact": exact,
                    "p_uniform_engine_exact": _engine_exact_uniform(prob, g),
                    "p_uniform_sampled": share,
                    "groups": groups,
                    "se": se,
                    "z": (share - exact) / se if se > 0 else 0.0,
                }
            )
    fraction = pd.DataFrame(rows)
    t_frac = time.perf_counter() - t0

    probs = [rarity_problem(p) for p in TRAIN_RARITIES]
    seeds = 2 if smoke else TRAIN_SEEDS
    curves = []
    compile_s = run_s = 0.0
    for loss in ("grpo", "dapo"):
        tr = ms.run(probs, loss=loss, sampling="on_policy", steps=steps, seeds=seeds, num_samples=TRAIN_G, key=0)
        compile_s += tr.compile_seconds
        run_s += tr.run_seconds
        er = np.asarray(tr.metrics["expected_reward"], np.float64)  # (problems, seeds, steps + 1)
        tl = np.asarray(tr.metrics["train_loss"], np.float64)
        for g, p in enumerate(TRAIN_RARITIES):
            for s in range(seeds):
                useful = np.cumsum(np.concatenate([[0.0], 1.0 - uniform_probability(np.clip(er[g, s, :-1], 0, 1), TRAIN_G)]))
                curves.append(
                    pd.DataFrame(
                        {
                            "loss": loss,
                            "rarity": p,
                            "seed": s,
                            "step": tr.eval_steps,
                            "reward_queries": tr.eval_steps * TRAIN_G,
                            "expected_reward": er[g, s],
                            "useful_groups": useful,
                            "train_loss": tl[g, s],
                        }
                    )
                )
    runs = pd.concat(curves, ignore_index=True)
    return {
        "fraction": fraction,
        "runs": runs,
        "grad": loss_and_gradient(),
        "compile_s": compile_s,
        "run_s": run_s,
        "fraction_s": t_frac,
        "wall_s": time.perf_counter() - t0,
        "steps": steps,
        "seeds": seeds,
    }


def _reach(runs: pd.DataFrame) -> pd.DataFrame:
    """Per loss, rarity and seed: the first step with E[r] >= LEVEL, its reward queries and the useful groups drawn by then (NaN: never)."""
    import pandas as pd

    out = []
    for (loss, p, s), d in runs.groupby(["loss", "rarity", "seed"]):
        hit = d[d["expected_reward"] >= LEVEL]
        first = hit.iloc[0] if len(hit) else None
        out.append(
            {
                "loss": loss,
                "rarity": p,
                "seed": s,
                "steps": float(first["step"]) if first is not None else np.nan,
                "reward_queries": float(first["reward_queries"]) if first is not None else np.nan,
                "useful_groups": float(first["useful_groups"]) if first is not None else np.nan,
            }
        )
    return pd.DataFrame(out)


def claims(m: dict) -> list[Claim]:
    """The piece's claims, computed from :func:`measure`'s output."""
    out = []
    fr = m["fraction"]
    worst_z = float(fr["z"].abs().max())
    # The engine's exact statistic is float32 and raises a mass to the power G - 1: its rounding grows like G ulps.
    engine_tol = ENGINE_ULPS * fr["group_size"] * np.finfo(np.float32).eps
    engine_err = (fr["p_uniform_engine_exact"] - fr["p_uniform_exact"]).abs()
    engine_gap = float(engine_err.max())
    ok = worst_z <= MARGIN_SIGMAS and bool((engine_err <= engine_tol).all())
    out.append(
        Claim(
            "ug_exact_matches_sampled",
            f"P(all G rewards equal) = p^G + (1-p)^G matches the engine's exact-batch statistic (to {ENGINE_ULPS:g} G float32 ulps) and the share among sampled groups (within {MARGIN_SIGMAS:g} binomial standard errors) at every rarity and group size",
            bool(ok),
            f"{len(fr)} cells x {int(fr['groups'].iloc[0])} groups; max |z| {worst_z:.2f}; max |engine exact - closed form| {engine_gap:.1e}",
            ""
            if ok
            else "a cell is outside the margin: "
            + "; ".join(
                f"p {r.rarity:g} G {r.group_size}: z {r.z:+.2f}, engine error {abs(r.p_uniform_engine_exact - r.p_uniform_exact):.1e}"
                for r in fr.itertuples()
                if abs(r.z) > MARGIN_SIGMAS or abs(r.p_uniform_engine_exact - r.p_uniform_exact) > ENGINE_ULPS * r.group_size * np.finfo(np.float32).eps
            ),
        )
    )
    useful = 1.0 - float(uniform_probability(1e-3, 8))
    ok = useful < 0.01
    out.append(
        Claim(
            "ug_rare_groups_useless",
            "At rarity 1e-3 with G = 8, fewer than 1% of GRPO groups from pi_ref carry a reward signal",
            bool(ok),
            f"useful fraction 1 - (1e-3)^8 - (1 - 1e-3)^8 = {useful:.5f} (about G p = 0.008)",
            "" if ok else "the useful fraction is not below 1%",
        )
    )
    reach = _reach(m["runs"])
    runs = m["runs"]
    same = runs.pivot_table(index=["rarity", "seed", "step"], columns="loss", values="expected_reward")
    diff = float((same["grpo"] - same["dapo"]).abs().max())
    ok = diff <= 1e-6
    out.append(
        Claim(
            "ug_drop_same_per_query",
            f"With one group of {TRAIN_G} per step, dropping uniform groups (the dapo preset) leaves sampled GRPO's trajectory unchanged at an equal reward-query budget: a uniform group's gradient is already 0",
            bool(ok),
            f"max |E[r]_grpo - E[r]_dapo| over {len(TRAIN_RARITIES)} rarities x {m['seeds']} seeds x {m['steps']} steps: {diff:.1e}",
            "" if ok else "the two runs differ",
        )
    )
    ratios = []
    ev = []
    for p in TRAIN_RARITIES:
        sel = reach[(reach["loss"] == "grpo") & (reach["rarity"] == p)]
        st, us = sel["steps"].to_numpy(), sel["useful_groups"].to_numpy()
        r = float(np.nanmean(st) / np.nanmean(us)) if np.isfinite(st).any() else np.nan
        ratios.append(r)
        if np.isfinite(st).any():
            ev.append(
                f"rarity {p:g}: {int(np.isfinite(st).sum())}/{len(st)} seeds reach E[r] >= {LEVEL:g} in {np.nanmean(st):.0f} steps ({np.nanmean(st) * TRAIN_G:.0f} queries) holding {np.nanmean(us):.0f} useful groups: ratio {r:.2f}"
            )
        else:
            ev.append(f"rarity {p:g}: no seed reaches E[r] >= {LEVEL:g} in {m['steps']} steps")
    ok = bool(np.all(np.isfinite(ratios)) and np.all(np.diff(ratios) > 0) and ratios[0] > 1)
    out.append(
        Claim(
            "ug_dynamic_sampling_per_step",
            "Per gradient step, dynamic sampling (DAPO) needs fewer steps to reach the reward level, and more so the rarer the reward: the ratio of GRPO's steps to useful groups grows as the rarity falls (per reward query there is no gain)",
            ok,
            "; ".join(ev),
            "" if ok else "some rarity never reached the level, or the ratio does not grow with rarity",
        )
    )
    g = m["grad"]
    ok = abs(g["no_kl_loss"]) < 1e-6 and g["no_kl_grad_norm"] > 1e-2
    out.append(
        Claim(
            "ug_loss_zero_gradient_not",
            "On fresh samples GRPO's loss is 0 while its gradient is not (trl issue 2703): the ratio is 1 and the group-centred advantages sum to 0",
            bool(ok),
            f"one group (rewards {g['rewards']}): loss {g['no_kl_loss']:.1e}, |grad| {g['no_kl_grad_norm']:.3f}, mean advantage {g['mean_advantage']:.1e}; with k3 in the loss (beta 0.04) at pi = pi_ref: loss {g['k3_loss_loss']:.1e}, |grad| {g['k3_loss_grad_norm']:.3f}; "
            f"engine train_loss (fresh batch, steps before the last) over the runs: max |.| {float(runs.loc[runs['step'] < m['steps'], 'train_loss'].abs().max()):.1e}",
            "" if ok else "the loss is not ~0 or the gradient is ~0",
        )
    )
    return out


def _figure(m: dict, path: Path, smoke: bool) -> None:
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(17, 4.8))
    fr = m["fraction"]
    fine = np.logspace(-4, np.log10(0.5), 200)
    lines = pd.DataFrame([{"rarity": p, "group_size": g, "p_useful": 1.0 - float(uniform_probability(p, g))} for g in sorted(set(fr["group_size"])) for p in fine])
    sns.lineplot(data=lines, x="rarity", y="p_useful", hue="group_size", palette="viridis", ax=a, legend="full")
    sns.scatterplot(data=fr.assign(p_useful=1.0 - fr["p_uniform_sampled"]), x="rarity", y="p_useful", hue="group_size", palette="viridis", ax=a, legend=False, marker="x", s=50)
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_ylabel("P(group has a signal) = 1 - p^G - (1-p)^G")
    a.set_xlabel("rarity p = pi_ref(good)")
    a.set_title(f"exact (lines) and {int(fr['groups'].iloc[0])} sampled groups (x)", fontsize=10)
    a.grid(alpha=0.3)
    # Log axes from the first step on; rarities as categories so that each gets a distinct colour.
    # ...on ~150 log-spaced steps: seaborn's per-x aggregation over every step costs seconds.
    shown = np.unique(np.geomspace(1, max(m["steps"], 1), 150).astype(int))
    runs = m["runs"][m["runs"]["step"].isin(shown)].assign(rarity=lambda d: d["rarity"].map("{:g}".format))
    order = [f"{p:g}" for p in TRAIN_RARITIES]
    sns.lineplot(data=runs, x="reward_queries", y="expected_reward", hue="rarity", hue_order=order, style="loss", palette="colorblind", errorbar=("pi", 100), ax=b)
    b.axhline(LEVEL, color="0.5", lw=0.8, ls=":")
    b.set_xscale("log")
    b.set_title(f"sampled grpo vs dapo (identical), G = {TRAIN_G}, one group per step ({m['seeds']} seeds, band: min-max)", fontsize=10)
    b.grid(alpha=0.3)
    sns.lineplot(data=runs[runs["loss"] == "grpo"], x="reward_queries", y="useful_groups", hue="rarity", hue_order=order, palette="colorblind", ax=c, errorbar=("pi", 100), legend=False)
    c.plot(runs["reward_queries"].unique(), runs["reward_queries"].unique() / TRAIN_G, color="k", ls="--", lw=0.8, label="all groups (GRPO's gradient steps)")
    c.set_xscale("log")
    c.set_yscale("log")
    c.set_ylabel("expected groups with a signal (DAPO's gradient steps)")
    c.set_title("useful groups drawn: the steps a refilling DAPO takes", fontsize=10)
    c.legend(fontsize=8)
    c.grid(alpha=0.3)
    pieces.save_figure(fig, path, title="Groups with no signal: uniform GRPO groups against rarity and group size, and what dropping them changes", smoke=smoke)


def make(out_dir: Path, smoke: bool) -> list[Claim]:
    out_dir = Path(out_dir)
    m = measure(SMOKE_STEPS if smoke else TRAIN_STEPS, smoke)
    pieces.save_table(m["fraction"], out_dir / "data" / "uniform_groups.parquet")
    pieces.save_table(m["runs"], out_dir / "data" / "uniform_groups_runs.parquet")
    _figure(m, out_dir / "uniform_groups.png", smoke)
    found = claims(m)
    bullets = [
        f"Problems: pi_ref of the paper's bandit with bin {GOOD_BIN} at mass p exactly (rest rescaled), reward 1 at that bin and 0 elsewhere; rarities {', '.join(f'{p:g}' for p in sorted(set(m['fraction']['rarity'])))}; group sizes {', '.join(str(g) for g in sorted(set(m['fraction']['group_size'])))}.",
        f"Fractions: closed form p^G + (1-p)^G; the engine's exact statistic (nonuniform_probability on exact_points); {int(m['fraction']['groups'].iloc[0])} groups per cell drawn from pi_ref by the engine's inverse-CDF sampler ({m['fraction_s']:.1f} s).",
        f"Training: sampled on-policy grpo and the dapo preset (clip-higher 0.28, drop_uniform_groups), tabular from pi_ref, Adam at the engine's default learning rate, G = {TRAIN_G}, one group per step, {m['steps']} steps ({m['steps'] * TRAIN_G} reward queries), {m['seeds']} seeds, rarities {', '.join(f'{p:g}' for p in TRAIN_RARITIES)}; reached = E_pi[r] >= {LEVEL:g}.",
        "Useful groups: sum over steps of 1 - P_uniform at the policy's exact success probability: the gradient steps a DAPO that refills its batch with signal-carrying groups would take for the same draws (an accounting, not a separate simulation).",
        "Loss 0, gradient not: jax.value_and_grad of the registered grpo loss on one fresh group with both rewards (pi = q = pi_ref), without KL and with k3 in the loss at beta 0.04.",
        f"Compute: 2 compiled training programs; compile {m['compile_s']:.1f} s, run {m['run_s']:.1f} s; measure {m['wall_s']:.1f} s wall.",
        "Data: data/uniform_groups.parquet (rarity x G: exact, engine exact, sampled share, standard error), data/uniform_groups_runs.parquet (per loss, rarity, seed and step: E[r], reward queries, useful groups, train_loss).",
    ]
    pieces.write_caption(out_dir / "uniform_groups.caption.md", "Groups with no signal: uniform GRPO groups and dynamic sampling (uniform_groups.png)", bullets)
    return found


PIECE = Piece(
    "uniform_groups",
    "Groups with no signal: uniform GRPO groups and DAPO's dynamic sampling",
    make,
    "The probability that a GRPO group of G binary rewards carries no signal, p^G + (1-p)^G, exact against sampled groups across rarity and G; sampled grpo against the dapo preset at equal reward queries; GRPO's zero loss with a non-zero gradient.\n"
    "Look for: below rarity ~1/G almost every group is useless; dropping them changes nothing per query, and saves gradient steps in proportion to the useless share.",
)
