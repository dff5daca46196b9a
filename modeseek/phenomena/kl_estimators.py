"""The KL-estimator trap: k1, k2, k3, in the reward or in the loss, converge to six different policies.

Schulman's per-sample estimators of KL(pi || pi_ref) at y ~ pi, with
d = log(pi(y)/pi_ref(y)): k1 = d, k2 = d^2/2, k3 = e^-d - 1 + d
(:func:`modeseek.losses.kl_estimate`). GRPO (Shao et al. 2024, arXiv
2402.03300, §4.1 eq. 3-4) puts k3 in the loss; PPO-style RLHF puts k1 in the
reward; practitioners ask which to use (trl issues 2854 and 4967). Exact
on-policy gradient ascent (the engine's ``sampling="exact"``, tabular softmax)
converges to (derivations: :func:`modeseek.losses.kl_fixed_point`):

* k1 in the reward: pi* = pi_ref exp(r/beta)/Z, the KL-regularised optimum;
* k2 in the loss: pi* too (its expected gradient is grad KL(pi || pi_ref));
* k3 in the loss: the rational tilt pi_i = beta pi_ref,i / (beta + lambda - r_i)
  (its expected gradient is grad KL(pi_ref || pi), a forward KL: every bin of
  pi_ref stays covered, so it is mode-covering relative to pi*);
* k1 in the loss: no regularisation at all (E_pi[grad log pi] = 0), the
  trajectory of beta = 0, which ends on argmax r;
* k2 and k3 in the reward: a detached penalty that grows as a bin falls below
  pi_ref, so those bins die out; the policy ends on a support S with
  r_i - beta k(d_i) equal on S and d_i >= 0 there: mode-seeking at any beta.

GRPO divides the reward's advantage by the group std sigma but not its KL
term, so its k3-in-loss fixed point is the k3 one at beta_eff = beta *
sigma_pi(r), solved self-consistently here (:func:`grpo_beta_eff`).

Mode-seeking index: :func:`modeseek.atlas.mode_seeking_index` of
(KL(pi* || pi), KL(pi || pi*)) with pi* at the same beta (> 0: seeking, < 0: covering).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import modeseek as ms
from modeseek import atlas, pieces
from modeseek.losses import kl_fixed_point
from modeseek.pieces import Claim, Piece

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PROBLEMS", "BETAS", "PAIRS", "STEPS", "SMOKE_STEPS", "TOL", "SHOW_BETA", "grpo_beta_eff", "closed_form", "measure", "claims", "make", "PIECE"]

PROBLEMS = ("far", "near")
BETAS = (0.03, 0.1, 0.3, 1.0)
PAIRS = tuple((e, p) for p in ("reward", "loss") for e in ("k1", "k2", "k3"))
STEPS = 3000
SMOKE_STEPS = 150
#: Smoke mode: two programs, on the first problem only.
SMOKE_PAIRS = (("k1", "reward"), ("k3", "loss"))
#: L1 distance to the closed form that counts as "matches": float32 policies; k1 in the loss approaches a vertex
#: (argmax r) only as its logit gap grows, and leaves 9e-4 of L1 after 3000 Adam steps on "far" at lr 0.05.
TOL = 2e-3
#: k1 in the loss "does not regularise": its final policy equals beta = 0's to this L1 (float32 rounding of a zero term).
TOL_SAME = 1e-4
SHOW_BETA = 0.1


def grpo_beta_eff(ref: np.ndarray, reward: np.ndarray, beta: float, iters: int = 2000) -> float:
    """beta_eff = beta * sigma, sigma the std of r under the k3 fixed point at beta_eff (damped fixed-point iteration).

    GRPO's advantage is (r - mean)/sigma while its k3 term keeps the weight
    beta, so exact stationarity is that of k3 in the loss with beta * sigma.
    """
    r = np.asarray(reward, np.float64)
    p = np.asarray(ref, np.float64)
    be = beta * float(np.sqrt(p @ (r - p @ r) ** 2))
    for _ in range(iters):
        p = kl_fixed_point(ref, r, be, "k3")
        new = beta * float(np.sqrt(p @ (r - p @ r) ** 2))
        if abs(new - be) <= 1e-12 * max(be, 1e-30):
            break
        be = 0.5 * (be + new)
    return be


def closed_form(ref: np.ndarray, reward: np.ndarray, beta: float, estimator: str, placement: str, final: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """(the closed-form fixed point, its name) of exact REINFORCE with ``estimator`` at ``placement``.

    k2 and k3 in the reward take their support from ``final`` (the bins a run ends above pi_ref).
    """
    ref = np.asarray(ref, np.float64)
    if placement == "reward" and estimator in ("k2", "k3"):
        return kl_fixed_point(ref, reward, beta, estimator, "reward", support=np.asarray(final) > ref), "tilt on the run's support"
    names = {("k1", "reward"): "pi* (exponential tilt)", ("k2", "loss"): "pi* (exponential tilt)", ("k3", "loss"): "rational tilt", ("k1", "loss"): "argmax r"}
    return kl_fixed_point(ref, reward, beta, estimator, placement), names[(estimator, placement)]


def _runs(probs: list, steps: int, pairs: tuple[tuple[str, str], ...], full: bool) -> dict:
    """The engine runs, problems x BETAS swept in each: REINFORCE for each of ``pairs``; with ``full`` also REINFORCE without KL and GRPO with k3 in the loss."""
    out = {}
    if full:
        out[("reinforce", "none", "none")] = ms.run(probs, loss="reinforce", sampling="exact", steps=steps, eval_every=steps)
    for est, place in pairs:
        out[("reinforce", est, place)] = ms.run(probs, loss="reinforce", sampling="exact", steps=steps, kl_estimator=est, kl_placement=place, beta=np.asarray(BETAS), eval_every=steps)
    if full:
        out[("grpo", "k3", "loss")] = ms.run(probs, loss="grpo", sampling="exact", steps=steps, kl_estimator="k3", kl_placement="loss", beta=np.asarray(BETAS), eval_every=steps)
    return out


def measure(steps: int = STEPS, problems: tuple[str, ...] = PROBLEMS, pairs: tuple[tuple[str, str], ...] = PAIRS, full: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, int, float, float]:
    """Run :func:`_runs` and tabulate: (table, mass table, programs, compile seconds, run seconds).

    Without ``full`` (smoke) there is no beta = 0 run (``l1_beta0`` is NaN) and no GRPO run.
    """
    import pandas as pd

    probs = [ms.problems.get(n) for n in problems]
    runs = _runs(probs, steps, pairs, full)
    unregularised = runs.pop(("reinforce", "none", "none"), None)
    # The engine drops the problem axis when it sweeps one problem.
    one = int(len(probs) == 1)
    rows, mass = [], []
    for (obj, est, place), tr in runs.items():
        for g, prob in enumerate(probs):
            ref = np.asarray(prob.ref_probs, np.float64)
            r = np.asarray(prob.reward, np.float64)
            base = np.asarray(unregularised.final_probs[(g, 0)[one:]], np.float64) if unregularised is not None else np.full(r.size, np.nan)
            for b, beta in enumerate(BETAS):
                final = np.asarray(tr.final_probs[(g, b, 0)[one:]], np.float64)
                star = kl_fixed_point(ref, r, beta, "k2")
                if obj == "grpo":
                    beta_eff = grpo_beta_eff(ref, r, beta)
                    cf, cf_name = kl_fixed_point(ref, r, beta_eff, "k3"), "rational tilt at beta * sigma"
                else:
                    beta_eff = beta
                    cf, cf_name = closed_form(ref, r, beta, est, place, final)
                forward, reverse = atlas.kl_pair(final, star)
                support = final > ref
                top = np.zeros(r.size, bool)
                top[np.argsort(-r, kind="stable")[: support.sum()]] = True
                rows.append(
                    {
                        "objective": obj,
                        "estimator": est,
                        "placement": place,
                        "pair": f"{est} in {place}",
                        "problem": prob.name,
                        "beta": beta,
                        "beta_eff": beta_eff,
                        "closed_form": cf_name,
                        "kl_reverse": reverse,
                        "kl_forward": forward,
                        "index": float(atlas.mode_seeking_index(forward, reverse)),
                        "l1_closed_form": float(np.abs(final - cf).sum()),
                        "l1_beta0": float(np.abs(final - base).sum()),
                        "entropy": float(tr.metrics["entropy"][(g, b, 0, -1)[one:]]),
                        "expected_reward": float(tr.metrics["expected_reward"][(g, b, 0, -1)[one:]]),
                        "support_above_ref": int(support.sum()),
                        "mass_below_ref": float(final[~support].sum()),
                        "min_ratio_to_ref": float(np.min(final[ref > 0] / ref[ref > 0])),
                        # kl_pair(p, q) = (KL(q || p), KL(p || q)).
                        "kl_ref_to_pi": atlas.kl_pair(final, ref)[0],
                        "kl_pi_to_ref": atlas.kl_pair(final, ref)[1],
                        "support_is_top_reward": bool((support == top).all()),
                        "steps": steps,
                    }
                )
                if beta == SHOW_BETA:
                    for which, v in (("engine", final), ("closed form", cf), ("pi_ref", ref), ("pi*", star)):
                        mass.append(pd.DataFrame({"objective": obj, "pair": f"{est} in {place}", "problem": prob.name, "beta": beta, "distribution": which, "bin": np.arange(r.size), "prob": v}))
    compile_s = sum(t.compile_seconds for t in runs.values())
    run_s = sum(t.run_seconds for t in runs.values())
    if unregularised is not None:
        compile_s += unregularised.compile_seconds
        run_s += unregularised.run_seconds
    return pd.DataFrame(rows), pd.concat(mass, ignore_index=True), len(runs) + (unregularised is not None), compile_s, run_s


def claims(table: pd.DataFrame) -> list[Claim]:
    """The piece's claims, computed from the table (a claim whose runs are missing, as in smoke mode, fails saying so)."""
    out: list[Claim] = []
    rf = table[table["objective"] == "reinforce"]
    have = set(rf["pair"])
    if have != {f"{e} in {p}" for e, p in PAIRS} or "grpo" not in set(table["objective"]) or rf["l1_beta0"].isna().any():
        return [
            Claim(
                "kl_six_fixed_points",
                "Exact REINFORCE with each of the six (estimator, placement) pairs converges to its closed form",
                False,
                f"pairs run: {sorted(have)}",
                "not every run was made (smoke mode)",
            )
        ]
    worst = rf.groupby("pair")["l1_closed_form"].max()
    ok = bool((worst <= TOL).all())
    out.append(
        Claim(
            "kl_six_fixed_points",
            f"Exact REINFORCE with each of k1, k2, k3 in the reward and in the loss converges to its closed-form fixed point (L1 <= {TOL:g}) at every beta and problem",
            ok,
            "max L1 over beta and problem: " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()),
            "" if ok else f"above the tolerance: {', '.join(k for k, v in worst.items() if v > TOL)}",
        )
    )
    piv = rf.pivot_table(index=["problem", "beta"], columns="pair", values="index")
    diff = piv["k3 in loss"] - piv["k1 in reward"]
    ok = bool((diff < 0).all())
    out.append(
        Claim(
            "kl_k3_loss_covers",
            "k3 in the loss (GRPO's placement) has a lower (more covering) mode-seeking index than k1 in the reward (pi*) at every beta and problem",
            ok,
            "; ".join(f"{p} beta {b:g}: k3-loss {piv.loc[(p, b), 'k3 in loss']:+.3f} vs k1-reward {piv.loc[(p, b), 'k1 in reward']:+.3f}" for p, b in piv.index),
            ""
            if ok
            else f"not below at {', '.join(f'{p} beta {b:g}' for (p, b), v in diff.items() if v >= 0)}: where the index is positive the rational tilt piles more mass than pi* on the top bins "
            "(F = KL(pi*||pi) grows) while its tails stay covered (see kl_k3_loss_keeps_tails); where both are ~0 both policies are within the index's eps of pi*",
        )
    )
    ratio = rf.pivot_table(index=["problem", "beta"], columns="pair", values="min_ratio_to_ref")
    ok = bool((ratio["k3 in loss"] > ratio["k1 in reward"]).all())
    out.append(
        Claim(
            "kl_k3_loss_keeps_tails",
            "k3 in the loss keeps every bin of pi_ref covered: min_i pi_i / pi_ref,i is larger than pi*'s (k1 in the reward) at every beta and problem",
            ok,
            "; ".join(f"{p} beta {b:g}: {ratio.loc[(p, b), 'k3 in loss']:.2e} vs {ratio.loc[(p, b), 'k1 in reward']:.2e}" for p, b in ratio.index),
            ""
            if ok
            else f"not larger at {', '.join(f'{p} beta {b:g}' for (p, b) in ratio.index if ratio.loc[(p, b), 'k3 in loss'] <= ratio.loc[(p, b), 'k1 in reward'])}: "
            "the k3 tilt's floor is beta / (beta + lambda - min r), linear in beta, against pi*'s exp((min r - log Z') / beta); "
            "it covers far more at small beta, but at large beta pi* is itself close to pi_ref and the floor is the lower one",
        )
    )
    obj = rf.assign(forward_objective=rf["expected_reward"] - rf["beta"] * rf["kl_ref_to_pi"], reverse_objective=rf["expected_reward"] - rf["beta"] * rf["kl_pi_to_ref"])
    fw = obj.pivot_table(index=["problem", "beta"], columns="pair", values="forward_objective")
    rv = obj.pivot_table(index=["problem", "beta"], columns="pair", values="reverse_objective")
    # 1e-6: float32 expected rewards and KLs of two policies that are both at their own optimum.
    ok = bool((fw["k3 in loss"] >= fw["k1 in reward"] - 1e-6).all() and (rv["k1 in reward"] >= rv["k3 in loss"] - 1e-6).all())
    out.append(
        Claim(
            "kl_k3_loss_is_forward_kl",
            "k3 in the loss regularises toward the forward KL: its final policy scores at least as high as pi* on E_pi[r] - beta KL(pi_ref || pi), and pi* at least as high on E_pi[r] - beta KL(pi || pi_ref), at every beta and problem",
            ok,
            "; ".join(
                f"{p} beta {b:g}: forward objective k3-loss {fw.loc[(p, b), 'k3 in loss']:.4f} vs pi* {fw.loc[(p, b), 'k1 in reward']:.4f}, reverse objective pi* {rv.loc[(p, b), 'k1 in reward']:.4f} vs k3-loss {rv.loc[(p, b), 'k3 in loss']:.4f}"
                for p, b in fw.index
            ),
            "" if ok else "an ordering is reversed somewhere",
        )
    )
    k1 = rf[rf["pair"] == "k1 in loss"]
    gap = float(k1["l1_beta0"].max())
    ok = gap <= TOL_SAME
    out.append(
        Claim(
            "kl_k1_loss_no_regularisation",
            f"k1 in the loss does not regularise: at every beta its final policy is beta = 0's (L1 <= {TOL_SAME:g})",
            bool(ok),
            f"max L1 to the beta = 0 run {gap:.1e}; entropy {k1['entropy'].min():.3g}..{k1['entropy'].max():.3g} nats, E[r] {k1['expected_reward'].min():.4f}..{k1['expected_reward'].max():.4f}",
            "" if ok else "the k1-in-loss runs differ from the unregularised run",
        )
    )
    seek = rf[rf["pair"].isin(["k2 in reward", "k3 in reward"])]
    ok = bool((seek["index"] > 0).all())
    out.append(
        Claim(
            "kl_k23_reward_seek",
            "k2 and k3 in the reward are mode-seeking relative to pi* (index > 0) at every beta: bins below pi_ref die out",
            ok,
            "index: " + "; ".join(f"{r.pair} {r.problem} beta {r.beta:g} {r.index:+.3f} ({r.support_above_ref} bins kept)" for r in seek.itertuples()),
            ""
            if ok
            else "index <= 0 at "
            + ", ".join(f"{r.pair} {r.problem} beta {r.beta:g} (mass still below pi_ref {r.mass_below_ref:.1e})" for r in seek[seek["index"] <= 0].itertuples())
            + ": the dying bins decay slowly (k2's push on a bin is pi (log pi/pi_ref)^2), and R = KL(pi||pi*) weighs their residual mass by log(pi/pi*), large where pi* is exp(-r/beta)-thin",
        )
    )
    gr = table[table["objective"] == "grpo"]
    g_worst = float(gr["l1_closed_form"].max())
    ok = g_worst <= TOL
    out.append(
        Claim(
            "kl_grpo_effective_beta",
            f"Exact GRPO with k3 in the loss converges to the k3 fixed point at beta_eff = beta * sigma_pi(r) (L1 <= {TOL:g}): its std division weakens the KL",
            bool(ok),
            f"max L1 {g_worst:.1e}; " + "; ".join(f"{r.problem} beta {r.beta:g}: beta_eff {r.beta_eff:.3g}" for r in gr.itertuples()),
            "" if ok else "GRPO's k3-in-loss run is not at the effective-beta fixed point",
        )
    )
    return out


def _figure(table: pd.DataFrame, mass: pd.DataFrame, path: Path, smoke: bool) -> None:
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig = plt.figure(figsize=(15, 10))
    grid = fig.add_gridspec(3, 3, height_ratios=[1, 1, 1.1])
    sub = mass[(mass["problem"] == PROBLEMS[0]) & (mass["objective"] == "reinforce")]
    palette = {"pi_ref": "0.6", "pi*": "C0", "closed form": "k", "engine": "C3"}
    for i, (est, place) in enumerate(PAIRS):
        ax = fig.add_subplot(grid[i // 3, i % 3])
        d = sub[sub["pair"] == f"{est} in {place}"]
        if d.empty:
            ax.set_title(f"{est} in the {place}: not run (smoke)", fontsize=9)
            continue
        sns.lineplot(data=d[d["distribution"] != "closed form"], x="bin", y="prob", hue="distribution", palette=palette, ax=ax, legend=i == 0, lw=1.3)
        cf = d[d["distribution"] == "closed form"]
        ax.plot(cf["bin"], cf["prob"], "k.", ms=3, label="closed form" if i == 0 else None)
        row = table[(table["objective"] == "reinforce") & (table["pair"] == f"{est} in {place}") & (table["problem"] == PROBLEMS[0]) & (table["beta"] == SHOW_BETA)].iloc[0]
        ax.set_title(f"{est} in the {place}: index {row['index']:+.2f}, L1 to closed form {row['l1_closed_form']:.0e}", fontsize=9)
        ax.set_yscale("log")
        ax.set_ylim(1e-6, 1.5)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=7)
    tab = table.assign(run=table["objective"] + ": " + table["pair"])
    for j, prob in enumerate(dict.fromkeys(table["problem"])):
        ax = fig.add_subplot(grid[2, j])
        sns.lineplot(data=tab[tab["problem"] == prob], x="beta", y="index", hue="run", style="objective", marker="o", ax=ax, legend=j == 0)
        ax.set_xscale("log")
        ax.axhline(0, color="0.5", lw=0.8, ls=":")
        ax.set_ylim(-1.05, 1.05)
        ax.set_title(f'"{prob}": mode-seeking index of the final policy', fontsize=9)
        ax.grid(alpha=0.3)
        if j == 0:
            ax.legend(fontsize=6, ncol=2)
    ax = fig.add_subplot(grid[2, 2])
    sns.scatterplot(data=tab, x="beta", y="l1_closed_form", hue="run", style="problem", ax=ax, legend=False)
    ax.axhline(TOL, color="k", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title(f"L1 distance to the closed form (dashed: tolerance {TOL:g})", fontsize=9)
    ax.grid(alpha=0.3)
    pieces.save_figure(fig, path, title=f'KL estimators k1/k2/k3 in the reward or the loss: final pi on "{PROBLEMS[0]}" at beta {SHOW_BETA:g} (exact REINFORCE, log scale)', smoke=smoke)


def make(out_dir: Path, smoke: bool) -> list[Claim]:
    out_dir = Path(out_dir)
    steps = SMOKE_STEPS if smoke else STEPS
    t0 = time.perf_counter()
    table, mass, programs, compile_s, run_s = measure(steps, PROBLEMS[:1], SMOKE_PAIRS, full=False) if smoke else measure(steps)
    wall = time.perf_counter() - t0
    pieces.save_table(table, out_dir / "data" / "kl_estimators.parquet")
    pieces.save_table(mass, out_dir / "data" / "kl_estimators_mass.parquet")
    _figure(table, mass, out_dir / "kl_estimators.png", smoke)
    found = claims(table)
    cols = ["objective", "pair", "problem", "beta", "kl_reverse", "kl_forward", "index", "l1_closed_form", "entropy", "expected_reward", "closed_form"]
    lines = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for r in table.itertuples():
        lines.append("| " + " | ".join(f"{getattr(r, c):.3g}" if isinstance(getattr(r, c), float) else str(getattr(r, c)) for c in cols) + " |")
    bullets = [
        f'Problems {", ".join(PROBLEMS)} (docs/paper.md §A.3); tabular policy from pi_ref, Adam at the engine\'s default learning rate, exact population updates (sampling="exact"), {steps} steps, one deterministic run per cell.',
        f"REINFORCE (mean baseline) with kl_estimator in (k1, k2, k3) x kl_placement in (reward, loss), and GRPO (group-std advantages) with k3 in the loss; beta swept over {BETAS} in one compiled program per run; plus REINFORCE without a KL term (beta = 0), the reference of k1 in the loss.",
        "Closed forms (modeseek.losses.kl_fixed_point): k1-reward and k2-loss pi* = pi_ref exp(r/beta)/Z; k3-loss the rational tilt beta pi_ref/(beta + lambda - r); k1-loss argmax r; k2/k3-reward the tilt d = k^-1((r - c)/beta) on the support the run kept (bins above pi_ref); GRPO k3-loss the rational tilt at beta * sigma_pi(r).",
        f'Index: modeseek.atlas.mode_seeking_index (F - R)/(F + R + {atlas.EPS:g}) against pi* at the same beta. Top panels: final pi (red), closed form (black dots), pi_ref, pi* at beta {SHOW_BETA:g} on "{PROBLEMS[0]}".',
        f"Compute: {programs} compiled programs; compile {compile_s:.1f} s, run {run_s:.1f} s, measure {wall:.1f} s wall.",
        "Data: data/kl_estimators.parquet (one row per objective x pair x problem x beta > 0), data/kl_estimators_mass.parquet (final pi, closed form, pi_ref, pi* at the shown beta).",
    ]
    title = "The KL-estimator trap: six fixed points of k1/k2/k3 in the reward or the loss (kl_estimators.png)"
    pieces.atomic_write_text(out_dir / "kl_estimators.caption.md", f"# {title}\n\n" + "\n".join(f"- {b}" for b in bullets) + "\n\n" + "\n".join(lines) + "\n")
    return found


PIECE = Piece(
    "kl_estimators",
    "The KL-estimator trap: k1, k2, k3 in the reward or the loss",
    make,
    'Exact REINFORCE with Schulman\'s k1/k2/k3 KL estimators placed in the reward or in the loss, against the closed-form fixed point of each, on "far" and "near" across beta; GRPO\'s k3-in-loss with its effective beta.\n'
    "Look for: only k1-in-reward and k2-in-loss reach pi*; k3-in-loss (GRPO) covers (index < 0), k1-in-loss does not regularise at all, k2/k3-in-reward collapse onto a top set of bins.",
)
