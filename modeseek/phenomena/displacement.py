"""Likelihood displacement: DPO, IPO and SimPO lower the chosen response's log-probability while the margin grows.

Razin et al. 2024 (arXiv 2410.08847) and Pal et al. 2024 (Smaug, arXiv 2402.13228)
observe that preference optimisation on pairs of *similar* responses can lower
log pi(y_w) (and move the mass to responses outside the pair) while the
implicit margin h = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))
keeps growing. Here the pair is two neighbouring bins of the paper's bandit
(pi_ref of "far", docs/paper.md §A.3), trained offline in the exact regime
(``exact_offline``: the data distribution puts 1/2 on each bin of the pair, the
reward labels the higher bin chosen, so the batch is that single pair with
weight 1). Two pairs: :data:`PAIRS` "tail" (bins 61 > 60, where pi_ref is
~0.003) and "mode" (bins 16 > 15, pi_ref's interior mode).

**Tabular policy: the chosen log-probability cannot fall.** With free logits z
and pi = softmax(z), every one of the three losses depends on the parameters
through u = z_w - z_l only (log pi_w - log pi_l = z_w - z_l: the normaliser
cancels), so its gradient is g (e_l - e_w) for a scalar g = -dloss/du >= 0
(for DPO g = beta sigmoid(-beta h) > 0, for SimPO beta sigmoid(-(beta u - gamma)) > 0,
for IPO 2 (tau - h), positive while the margin h is below its target tau). An SGD
step moves z_w up and z_l down by the same c, of the sign of g, and Adam does
the same: only the two coordinates have a gradient, of equal size. At first order, with d log pi_y = dz_y - sum_j pi_j dz_j,

    d log pi_w = c - (c pi_w - c pi_l) = c (1 - pi_w + pi_l) > 0,
    d log pi_l = -c (1 + pi_l - pi_w) < 0,
    d log pi_y = -c (pi_w - pi_l)   for y outside the pair,

so the chosen log-probability rises whenever pi_w < 1 and c > 0 (always for DPO
and SimPO; for IPO until the margin overshoots tau, after which its steps
pull both log-probabilities back towards the target). It holds beyond first
order too: after the step, log pi_w changes by
c - log(1 + pi_w (e^c - 1) + pi_l (e^-c - 1)) >= c - log(e^c) = 0, since
pi_w <= 1 and e^-c <= 1. So in a tabular policy a single pair can never
displace its chosen response, at any step size.

**Shared parameters: it can.** With the paper's MLP (docs/paper.md §A.4, fitted
to pi_ref first), the neighbouring bins' output rows are alike after the fit,
so the step that separates them also moves the shared hidden features, which
changes every other bin's logit. The measured result (``make``): on the tail
pair the chosen log-probability of DPO and SimPO falls by tens of nats while
the margin grows; on the mode pair it rises. The table records per loss,
policy, pair and step: log pi(y_w), log pi(y_l), the margin, and the mass
moved elsewhere, 1 - pi_w - pi_l, all on the training context (the losses'
pair statistics, :data:`modeseek.metrics.PAIR_METRICS`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

import modeseek as ms
from modeseek import pieces
from modeseek.pieces import Claim, Piece

#: (loss, policy) runs, one compiled program each. The MLP runs every loss; the tabular policy runs DPO only:
#: IPO's and SimPO's tabular steps have the same form (module docstring; tests/test_phenomena_a.py checks it),
#: and two more programs would cost ~4 s of the piece's budget.
RUNS = (("dpo", "tabular"), ("dpo", "mlp"), ("ipo", "mlp"), ("simpo", "mlp"))
SMOKE_RUNS = (("dpo", "tabular"),)
#: name -> (chosen bin, rejected bin), neighbours on the "far" bandit's 100 bins.
PAIRS = {"tail": (61, 60), "mode": (16, 15)}
#: Losses whose step always raises z_w - z_l (module docstring), so that log pi(y_w) can never fall in a tabular policy.
MONOTONE = ("dpo", "simpo")
STEPS = 200
SMOKE_STEPS = 10
#: Adam at the engine's defaults (0.05 tabular, 1e-3 MLP) and beta.
BETA = 0.1


def setup() -> tuple[ms.Problem, np.ndarray]:
    """The bandit (pi_ref of "far", reward 1 on each pair's chosen bin) and the (pairs, K) data rows, 1/2 on each bin of a pair."""
    base = ms.problems.get("far")
    k = base.num_bins
    data = np.zeros((len(PAIRS), k))
    reward = np.zeros(k)
    for g, (w, lo) in enumerate(PAIRS.values()):
        data[g, [w, lo]] = 0.5
        reward[w] = 1.0
    return ms.Problem(base.ref_probs, reward, name="far_pairs"), data


def first_order_tabular(pi_w: float, pi_l: float, c: float) -> tuple[float, float, float]:
    """First-order changes (d log pi_w, d log pi_l, d log pi_y for y outside the pair) when z_w += c and z_l -= c."""
    return c * (1.0 - pi_w + pi_l), -c * (1.0 + pi_l - pi_w), -c * (pi_w - pi_l)


def measure(steps: int, runs: tuple[tuple[str, str], ...] = RUNS) -> tuple[pd.DataFrame, float, float, int]:
    """Run every (loss, policy) of ``runs`` on both pairs; returns (table, compile seconds, run seconds, programs).

    Table columns: loss, policy, pair, chosen, rejected, step, chosen_logp, rejected_logp, margin, mass_elsewhere.
    """
    prob, data = setup()
    rows = []
    comp = run = 0.0
    for loss, policy in runs:
        tr = ms.run(prob, loss=loss, sampling="exact_offline", steps=steps, data=data, policy=policy, num_contexts=1, num_eval_contexts=10, beta=BETA, block=1, snapshot_every=steps)
        comp += tr.compile_seconds
        run += tr.run_seconds
        for g, (name, (w, lo)) in enumerate(PAIRS.items()):
            c = np.asarray(tr.metrics["chosen_logp"][g, 0], np.float64)
            r = np.asarray(tr.metrics["rejected_logp"][g, 0], np.float64)
            rows.append(
                pd.DataFrame(
                    {
                        "loss": loss,
                        "policy": policy,
                        "pair": name,
                        "chosen": w,
                        "rejected": lo,
                        "step": tr.eval_steps,
                        "chosen_logp": c,
                        "rejected_logp": r,
                        "margin": np.asarray(tr.metrics["margin"][g, 0], np.float64),
                        "mass_elsewhere": np.clip(1.0 - np.exp(c) - np.exp(r), 0.0, 1.0),
                    }
                )
            )
    return pd.concat(rows, ignore_index=True), comp, run, len(runs)


def _end(table: pd.DataFrame, loss: str, policy: str, pair: str) -> tuple[pd.Series, pd.Series]:
    d = table[(table["loss"] == loss) & (table["policy"] == policy) & (table["pair"] == pair)].sort_values("step")
    return d.iloc[0], d.iloc[-1]


def claims(table: pd.DataFrame) -> list[Claim]:
    """Displacement claims computed from the table."""
    out = []
    losses = list(dict.fromkeys(table["loss"]))
    if "mlp" in set(table["policy"]):
        for loss in losses:
            first, last = _end(table, loss, "mlp", "tail")
            d = table[(table["loss"] == loss) & (table["policy"] == "mlp") & (table["pair"] == "tail")]
            low = float(d["chosen_logp"].min())
            ok = bool(last["chosen_logp"] < first["chosen_logp"] and last["margin"] > first["margin"])
            out.append(
                Claim(
                    f"displacement_mlp_{loss}",
                    f"With the MLP policy on a pair of neighbouring bins in pi_ref's tail (61 > 60), {loss}'s chosen log-prob ends below its initial value while the margin grows",
                    ok,
                    f"log pi(y_w) {first['chosen_logp']:.2f} -> {last['chosen_logp']:.2f} (lowest {low:.2f}) after {int(last['step'])} steps; margin {first['margin']:.2f} -> {last['margin']:.2f}; "
                    f"mass outside the pair {first['mass_elsewhere']:.3f} -> {last['mass_elsewhere']:.3f}",
                    "" if ok else "the chosen log-prob did not end below its start while the margin grew",
                )
            )
    if "tabular" in set(table["policy"]):
        tab = table[table["policy"] == "tabular"].sort_values("step")
        monotone = [x for x in MONOTONE if x in set(tab["loss"])]
        step1 = []
        worst = np.inf
        for (loss, pair), d in tab.groupby(["loss", "pair"], sort=False):
            c = d["chosen_logp"].to_numpy()
            step1.append((loss, pair, c[1] - c[0]))
            if loss in monotone:
                worst = min(worst, float(np.min(np.diff(c))))
        ok = all(x > 0 for *_, x in step1)
        out.append(
            Claim(
                "displacement_tabular_first_step",
                "Tabular policy: the chosen log-prob never falls in the first step (first order: c (1 - pi_w + pi_l) > 0)",
                ok,
                "first-step change of log pi(y_w): " + ", ".join(f"{loss}/{pair} {x:+.4f}" for loss, pair, x in step1),
                "" if ok else "a first step lowered the chosen log-prob",
            )
        )
        # float32 log-probabilities: a change below 1e-5 nats is rounding, not displacement.
        ok = worst > -1e-5
        out.append(
            Claim(
                "displacement_tabular_never",
                f"Tabular policy: the chosen log-prob never falls at any step, for {' and '.join(monotone)} on every pair (the exact statement of the module docstring)",
                ok,
                f"smallest step-to-step change of log pi(y_w) over the tabular {'/'.join(monotone)} runs: {worst:+.2e} nats (tolerance -1e-5 for float32 rounding)",
                "" if ok else "some step lowered the chosen log-prob by more than rounding",
            )
        )
    return out


def _figure(table: pd.DataFrame, path: Path, smoke: bool) -> None:
    import seaborn as sns

    long = table.melt(id_vars=["loss", "policy", "pair", "step"], value_vars=["chosen_logp", "margin", "mass_elsewhere"], var_name="quantity", value_name="value")
    long["quantity"] = long["quantity"].map({"chosen_logp": "log pi(y_w)", "margin": "margin h", "mass_elsewhere": "1 - pi_w - pi_l"})
    long["pair"] = long["pair"].map({k: f"{k} pair ({w} > {lo})" for k, (w, lo) in PAIRS.items()})
    g = sns.relplot(
        data=long, x="step", y="value", hue="loss", style="policy", row="quantity", col="pair", kind="line", height=2.4, aspect=1.6, facet_kws={"sharey": False}, estimator=None, errorbar=None
    )
    g.set_titles("{row_name} | {col_name}", size=8)
    for ax in g.axes.flat:
        ax.grid(alpha=0.3)
    g.figure.suptitle("Likelihood displacement: offline preference steps on one pair of neighbouring bins" + (" [SMOKE]" if smoke else ""), y=1.02, fontsize=11)
    pieces.save_figure(g.figure, path)


def make(out_dir: Path, smoke: bool) -> list[Claim]:
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    steps = SMOKE_STEPS if smoke else STEPS
    runs = SMOKE_RUNS if smoke else RUNS
    table, comp, run, programs = measure(steps, runs)
    pieces.save_table(table, out_dir / "data" / "displacement.parquet")
    _figure(table, out_dir / "displacement.png", smoke)
    found = claims(table)
    pieces.write_caption(
        out_dir / "displacement.caption.md",
        "Likelihood displacement (displacement.png)",
        [
            f'Runs (loss/policy): {", ".join(f"{a}/{b}" for a, b in runs)}; pi_ref of the "far" bandit (K = 100); pairs {", ".join(f"{k}: bin {w} chosen over bin {lo}" for k, (w, lo) in PAIRS.items())}.',
            f"Offline exact regime (exact_offline): data 1/2 on each bin of a pair, so the batch is that pair with weight 1; {steps} Adam steps at the engine's default learning rate (tabular 0.05, MLP 1e-3), beta {BETA:g}, one seed (deterministic; the MLP is fitted to pi_ref first).",
            "Rows: log pi(y_w), margin h = log-ratio(y_w) - log-ratio(y_l), and the mass outside the pair, on the training context (DPO's and SimPO's MLP curves nearly coincide). Tabular: the module docstring proves log pi(y_w) never falls.",
            f"Compute: {programs} compiled programs; compile {comp:.1f} s, run {run:.1f} s, piece {time.perf_counter() - t0:.1f} s wall.",
            "Sources: Razin et al. 2024 (arXiv 2410.08847); Pal et al. 2024 (arXiv 2402.13228). Data: data/displacement.parquet.",
        ],
    )
    return found


PIECE = Piece(
    "displacement",
    "Likelihood displacement: the chosen response loses probability while the margin grows",
    make,
    "DPO, IPO and SimPO trained offline on one pair of neighbouring bins, with a tabular policy and with the paper's MLP: log pi(chosen), the margin and the mass leaving the pair, step by step.\n"
    "Look for the MLP's chosen log-prob falling by tens of nats on the tail pair while the margin grows, and the tabular policy, where it provably cannot fall.",
)
