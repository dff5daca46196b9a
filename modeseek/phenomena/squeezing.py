"""Squeezing: pushing one response down moves its mass to the already likely responses.

Ren and Sutherland 2024 (arXiv 2407.10490) show that a gradient step lowering
log pi(y-) in a softmax policy does not spread the freed mass evenly: it goes to
the responses that are already likely, and unlikely ones lose mass too.

**First-order statement.** Tabular logits z, pi = softmax(z), and plain SGD with
learning rate eta on the loss L = log pi(y-) (gradient descent on it pushes y-
down). With d log pi_i / dz = e_i - pi,

    grad_z L = e_- - pi,     dz = -eta (e_- - pi),   so  dz_i = eta pi_i (i != y-), dz_- = -eta (1 - pi_-),

and d log pi_i = dz_i - sum_j pi_j dz_j with sum_j pi_j dz_j = eta (sum_j pi_j^2 - pi_-), so

    d log pi_i = eta (pi_i + pi_- - sum_j pi_j^2)      for i != y-,
    d log pi_- = -eta (1 - pi_-) - eta (sum_j pi_j^2 - pi_-) = -eta (1 - 2 pi_- + sum_j pi_j^2),

up to O(eta^2). For i != y- the change is negative exactly when
pi_i < sum_j pi_j^2 - pi_-: when y- is unlikely, every response less likely
than the "typical" probability sum_j pi_j^2 loses mass, and the argmax
(pi_max >= sum_j pi_j^2) always gains.

**The engine's step.** No registered loss is the bare push-down, so it is
built from REINFORCE in the offline exact regime: data distribution one-hot on
y-, reward -1 on y-, ``advantage="none"``. The engine's loss is then
-sum_y q_y A_y log pi_y = +log pi(y-) exactly (q = the data distribution,
A = r), and with ``optimizer="sgd"`` one step is the update above. The
verification runs one step at several eta (one compiled program, the learning
rate traced) and compares the change of log pi from the stored float32
policies with the formula: the error must shrink as O(eta^2).

**Multi-step consequence.** Repeating the push (same loss, :data:`MULTI_STEPS`
SGD steps at :data:`MULTI_ETA`) squeezes the mass: the argmax grows, the
least likely responses shrink, and y- itself vanishes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

import modeseek as ms
from modeseek import pieces
from modeseek.pieces import Claim, Piece

#: The response pushed down (a bin of the "far" bandit's pi_ref, K = 100, between its mode and its tail).
NEG = 40
#: SGD learning rates of the one-step check (halving: the error should quarter).
ETAS = (0.8, 0.4, 0.2, 0.1, 0.05, 0.025)
SMOKE_ETAS = (0.2, 0.1, 0.05)
MULTI_ETA = 0.1
MULTI_STEPS = 200
SMOKE_MULTI_STEPS = 20
#: The "least likely" group of the claim: this many bins with the smallest pi_ref (y- excluded).
LOW_BINS = 50
#: Tolerance of the relative first-order error at the smallest eta. Measured: 0.16% at eta 0.025,
#: against a float32 floor ~1e-6 / 2.5e-4 = 0.4% of the smallest predicted change would allow; 1% leaves room for both.
REL_TOL = 0.01


def setup() -> tuple[ms.Problem, np.ndarray]:
    """(problem, data): pi_ref of "far", reward -1 on :data:`NEG` and 0 elsewhere; data one-hot on :data:`NEG`."""
    base = ms.problems.get("far")
    k = base.num_bins
    reward = np.zeros(k)
    reward[NEG] = -1.0
    data = np.zeros(k)
    data[NEG] = 1.0
    return ms.Problem(base.ref_probs, reward, name="push_down"), data


def first_order(pi: ArrayLike, neg: int, eta: float) -> np.ndarray:
    """(K,) first-order change of log pi after one SGD step of size eta on log pi(neg) (module docstring)."""
    pi = np.asarray(pi, np.float64)
    if not 0 <= neg < pi.shape[-1]:
        raise ValueError(f"neg={neg}; expected a bin index in [0, {pi.shape[-1]})")
    d = eta * (pi + pi[neg] - np.sum(pi**2))
    d[neg] -= eta
    return d


def push_down(steps: int, etas: Sequence[float], snapshot_every: int = 1) -> ms.Trajectory:
    """The engine run: ``steps`` SGD steps on log pi(NEG) from pi_ref, one run per learning rate in ``etas``."""
    prob, data = setup()
    return ms.run(
        prob,
        loss="reinforce",
        sampling="exact_offline",
        data=data,
        advantage="none",
        optimizer="sgd",
        steps=steps,
        learning_rate=np.asarray(etas, np.float64),
        snapshot_every=snapshot_every,
        block=1,
    )


def check(etas: Sequence[float] = ETAS) -> pd.DataFrame:
    """One engine step per eta against :func:`first_order`; one row per eta and bin (observed, predicted)."""
    tr = push_down(1, etas)
    rows = []
    for g, eta in enumerate(etas):
        p0 = np.asarray(tr.snapshots[g, 0, 0], np.float64)
        p1 = np.asarray(tr.snapshots[g, 0, 1], np.float64)
        rows.append(pd.DataFrame({"eta": float(eta), "bin": np.arange(p0.size), "pi0": p0, "observed": np.log(p1) - np.log(p0), "predicted": first_order(p0, NEG, float(eta))}))
    out = pd.concat(rows, ignore_index=True)
    out.attrs["compile_seconds"], out.attrs["run_seconds"] = tr.compile_seconds, tr.run_seconds
    return out


def errors(table: pd.DataFrame) -> pd.DataFrame:
    """Per eta: the largest |observed - predicted| over i != y-, and that relative to the largest |predicted|."""
    d = table[table["bin"] != NEG].assign(err=lambda x: (x["observed"] - x["predicted"]).abs(), size=lambda x: x["predicted"].abs())
    e = d.groupby("eta").agg(max_err=("err", "max"), max_pred=("size", "max")).reset_index()
    e["rel_err"] = e["max_err"] / e["max_pred"]
    return e.sort_values("eta").reset_index(drop=True)


def slope(err: pd.DataFrame) -> float:
    """Least-squares slope of log(max error) against log(eta): 2 for an O(eta^2) remainder."""
    return float(np.polyfit(np.log(err["eta"]), np.log(err["max_err"]), 1)[0])


def trajectory(steps: int) -> pd.DataFrame:
    """The repeated push at :data:`MULTI_ETA`: one row per stored step and bin (prob, pi_ref, group)."""
    every = max(1, steps // 40)
    tr = push_down(steps, [MULTI_ETA], snapshot_every=every)
    snaps = np.asarray(tr.snapshots[0, 0], np.float64)
    ref = snaps[0]
    order = np.argsort(ref)
    low = set(int(i) for i in order[order != NEG][:LOW_BINS])
    top = int(np.argmax(ref))
    group = np.array(["y-" if i == NEG else "argmax" if i == top else f"{LOW_BINS} least likely" if i in low else "other" for i in range(ref.size)])
    rows = [pd.DataFrame({"step": int(s), "bin": np.arange(ref.size), "prob": snaps[j], "pi_ref": ref, "group": group}) for j, s in enumerate(tr.snapshot_steps)]
    out = pd.concat(rows, ignore_index=True)
    out.attrs["compile_seconds"], out.attrs["run_seconds"] = tr.compile_seconds, tr.run_seconds
    return out


def claims(check_table: pd.DataFrame, traj: pd.DataFrame) -> list[Claim]:
    """The first-order check and the multi-step squeeze, from the tables."""
    err = errors(check_table)
    s = slope(err)
    small = err.iloc[0]
    ok = bool(small["rel_err"] < REL_TOL and 1.8 <= s <= 2.2)
    ratios = err["max_err"].to_numpy()[1:] / err["max_err"].to_numpy()[:-1]
    out = [
        Claim(
            "squeezing_first_order",
            f"One SGD step of size eta on log pi(y-) changes log pi_i (i != y-) by eta (pi_i + pi_- - sum_j pi_j^2) up to O(eta^2): relative error < {REL_TOL:.0%} at the smallest eta, log-log slope of the error in [1.8, 2.2]",
            ok,
            "max |error| over i != y-: "
            + ", ".join(f"eta {r.eta:g}: {r.max_err:.2e} ({r.rel_err:.2%})" for r in err.itertuples())
            + f"; error ratios on doubling eta {', '.join(f'{x:.2f}' for x in ratios)}; slope {s:.2f}",
            "" if ok else f"slope {s:.2f} or relative error {small['rel_err']:.2%} outside the tolerance",
        )
    ]
    groups = traj.groupby(["step", "group"])["prob"].sum().unstack("group")
    first, last = groups.iloc[0], groups.iloc[-1]
    arg = groups["argmax"].to_numpy()
    low = groups[f"{LOW_BINS} least likely"].to_numpy()
    ok = bool(last["argmax"] > first["argmax"] and np.all(np.diff(arg) >= -1e-7) and last[f"{LOW_BINS} least likely"] < first[f"{LOW_BINS} least likely"])
    steps = int(groups.index[-1])
    out.append(
        Claim(
            "squeezing_multi_step",
            f"Repeated pushes down on y- (SGD, eta {MULTI_ETA:g}) concentrate mass on the argmax: its mass grows at every stored step, and the {LOW_BINS} least likely responses lose mass",
            ok,
            f"after {steps} steps: argmax {first['argmax']:.4f} -> {last['argmax']:.4f}; {LOW_BINS} least likely {first[f'{LOW_BINS} least likely']:.4f} -> {last[f'{LOW_BINS} least likely']:.4f} "
            f"(lowest along the way {low.min():.4f}); y- {first['y-']:.2e} -> {last['y-']:.2e}; other {first['other']:.4f} -> {last['other']:.4f}",
            "" if ok else "the argmax did not grow monotonically, or the least likely responses did not lose mass",
        )
    )
    return out


def _figure(check_table: pd.DataFrame, traj: pd.DataFrame, path: Path, smoke: bool) -> None:
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    ax = axes[0]
    sub = check_table[(check_table["bin"] != NEG) & (check_table["eta"] == check_table["eta"].max())]
    sns.scatterplot(data=sub, x="predicted", y="observed", hue="pi0", palette="viridis", s=18, ax=ax, legend=False)
    lim = [sub["predicted"].min(), sub["predicted"].max()]
    ax.plot(lim, lim, color="0.4", lw=0.8, ls=":")
    ax.axhline(0, color="0.7", lw=0.6)
    ax.set_title(f"one step, eta {sub['eta'].iloc[0]:g}: change of log pi_i (colour: pi_i)", fontsize=9)
    ax.set_xlabel("eta (pi_i + pi_- - sum pi^2)")
    ax.set_ylabel("engine: log pi_i after - before")
    ax = axes[1]
    err = errors(check_table)
    sns.lineplot(data=err, x="eta", y="max_err", marker="o", ax=ax, label="max |error|, i != y-")
    guide = err["max_err"].iloc[-1] * (err["eta"] / err["eta"].iloc[-1]) ** 2
    ax.plot(err["eta"], guide, color="0.5", ls="--", lw=0.8, label="slope 2")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_title(f"first-order error (slope {slope(err):.2f})", fontsize=9)
    ax.legend(fontsize=8)
    ax = axes[2]
    groups = traj.groupby(["step", "group"], as_index=False)["prob"].sum()
    sns.lineplot(data=groups, x="step", y="prob", hue="group", ax=ax)
    ax.set_ylabel("mass")
    ax.set_title(f"repeated push on y- = bin {NEG} (SGD, eta {MULTI_ETA:g})", fontsize=9)
    for a in axes:
        a.grid(alpha=0.3)
    pieces.save_figure(fig, path, title="Squeezing: pushing one response down feeds the likely ones (tabular softmax, exact)", smoke=smoke)


def make(out_dir: Path, smoke: bool) -> list[Claim]:
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    etas = SMOKE_ETAS if smoke else ETAS
    steps = SMOKE_MULTI_STEPS if smoke else MULTI_STEPS
    chk = check(etas)
    traj = trajectory(steps)
    table = pd.concat([chk.assign(kind="one_step"), traj.assign(kind="trajectory")], ignore_index=True)
    pieces.save_table(table, out_dir / "data" / "squeezing.parquet")
    _figure(chk, traj, out_dir / "squeezing.png", smoke)
    found = claims(chk, traj)
    comp = chk.attrs["compile_seconds"] + traj.attrs["compile_seconds"]
    run = chk.attrs["run_seconds"] + traj.attrs["run_seconds"]
    pieces.write_caption(
        out_dir / "squeezing.caption.md",
        "Squeezing (squeezing.png)",
        [
            f'Tabular policy from pi_ref of the "far" bandit (K = 100); y- = bin {NEG}. Loss log pi(y-) by gradient descent, built as REINFORCE offline-exact with data one-hot on y-, reward -1 there, advantage none (module docstring); optimizer SGD.',
            f"One-step check: eta in {', '.join(f'{e:g}' for e in etas)} (one program, the learning rate traced); engine's change of log pi from the stored float32 policies against eta (pi_i + pi_- - sum_j pi_j^2).",
            f"Trajectory: {steps} steps at eta {MULTI_ETA:g}; groups: argmax of pi_ref, y-, the {LOW_BINS} bins with smallest pi_ref, the rest. Deterministic (exact regime), one seed.",
            f"Compute: 2 compiled programs; compile {comp:.1f} s, run {run:.1f} s, piece {time.perf_counter() - t0:.1f} s wall.",
            "Source: Ren and Sutherland 2024 (arXiv 2407.10490). Data: data/squeezing.parquet (kind one_step: eta, bin, observed, predicted; kind trajectory: step, bin, prob, group).",
        ],
    )
    return found


PIECE = Piece(
    "squeezing",
    "Squeezing: a push-down step feeds the already likely responses",
    make,
    "One SGD step on log pi(y-) in a tabular softmax, measured in the engine against the first-order formula eta (pi_i + pi_- - sum pi^2) (error O(eta^2)), and the same push repeated.\n"
    "Look for the slope-2 error line, and the argmax's mass rising while the least likely responses' mass falls.",
)
