# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exploring how fine-tuning moves probability mass
#
# A categorical bandit has a reference policy $\pi_{ref}$ over $K$ response bins and a
# reward $r$ over the same bins. Fine-tuning moves the policy's mass; *where* it goes
# depends on the objective (mode-covering maximum likelihood, contrastive losses with a
# negative gradient, mode-seeking on-policy RL) and on the data (one offline batch from
# $\pi_{ref}$, or fresh batches from the policy). This notebook lets you
#
# 1. choose a reference and a reward,
# 2. choose an algorithm and watch the mass move,
# 3. compare two algorithms over seeds,
# 4. sweep a traced hyperparameter in one compiled call,
# 5. pick a (rarity, coverage) cell of the phase maps and compare two objectives there.
#
# Everything runs with `modeseek.run`: every run is exact (metrics are expectations, not
# Monte-Carlo estimates), and a sweep over seeds or traced hyperparameters is one compiled call.
#
# Set the environment variable `MODESEEK_SMOKE=1` to shrink every budget (the test suite
# does this); the numbers are then not meaningful.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

import modeseek as ms

SMOKE = os.environ.get("MODESEEK_SMOKE", "0") == "1"
STEPS = 40 if SMOKE else 400
SEEDS = 2 if SMOKE else 10
print(f"smoke={SMOKE}: {STEPS} steps, {SEEDS} seeds per curve")

# %% [markdown]
# ## 1. A reference and a reward
#
# The paper's reference is a squashed Cauchy over 100 bins (mode at bin 16, edge spikes at
# 0 and 99, ~0.002 per bin around bin 70). Try `ms.references.mixture(100, [20, 60], [5, 10])`
# or `ms.references.uniform(100)` instead. The reward below peaks where the reference is
# rare ("far", the paper's hard case); move `CENTER` to 20 for the easy case, or use
# `ms.rewards.multi_bump` for several peaks.

# %%
K = 100
CENTER, WIDTH = 70.0, 10.0
reference = ms.references.squashed_cauchy(K)
reward = ms.rewards.gaussian_bump(K, CENTER, WIDTH)
problem = ms.Problem(reference, reward, name=f"peak at {CENTER:g}")

bins = np.arange(K)
fig, ax = plt.subplots(figsize=(8, 3))
ax.bar(bins, np.asarray(problem.ref_probs), width=1.0, color="0.6", label="reference pi_ref")
ax.set_ylabel("probability")
ax.set_xlabel("response bin")
ax2 = ax.twinx()
ax2.plot(bins, np.asarray(problem.reward), color="C3", label="reward")
ax2.set_ylabel("reward", color="C3")
ax.set_title(f"E_ref[r] = {float(problem.ref_probs @ problem.reward):.3f}")
handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
ax.legend(handles, [h.get_label() for h in handles], loc="upper center", fontsize=8)
plt.show()

# %% [markdown]
# ## 2. An algorithm, and the mass moving
#
# `loss` is one of `ms.losses.names()`; `sampling` is `"offline"` (one fixed batch from
# $\pi_{ref}$), `"on_policy"` (a fresh batch from the policy every `reuse` steps), or their
# population versions `"exact_offline"` / `"exact"`. `snapshot_every` stores the policy's
# mass along the way.

# %%
print("losses:", ", ".join(f"{n} ({f})" for n, f in ms.losses.families().items()))

ALGORITHM = dict(loss="reinforce", sampling="on_policy", num_samples=10)
run = ms.run(problem, steps=STEPS, seeds=SEEDS, key=0, snapshot_every=STEPS // 4, **ALGORITHM)
print(f"compiled in {run.compile_seconds:.1f} s, ran {SEEDS} seeds x {STEPS} steps in {run.run_seconds:.2f} s")


def film_strip(traj, title):
    """The mean policy over seeds at each snapshot, with the reference and the reward."""
    steps = traj.snapshot_steps
    fig, axes = plt.subplots(1, len(steps), figsize=(2.6 * len(steps), 2.4), sharey=True)
    for ax, s, p in zip(axes, steps, traj.snapshots.mean(axis=0)):
        ax.bar(bins, p, width=1.0, color="C0")
        ax.plot(bins, np.asarray(problem.ref_probs), color="0.5", ls="--", lw=0.8)
        ax.plot(bins, np.asarray(problem.reward) * p.max(), color="C3", lw=0.8)
        ax.set_title(f"step {s}: E[r] = {float(p @ np.asarray(problem.reward)):.2f}", fontsize=9)
    axes[0].set_ylabel("probability")
    fig.suptitle(title + " (dashed: pi_ref; red: reward, rescaled)", fontsize=10)
    fig.tight_layout()
    plt.show()


film_strip(run, f"{ALGORITHM['loss']}, {ALGORITHM['sampling']}")

# %% [markdown]
# ## 3. Two algorithms, compared over seeds
#
# Offline best-of-N (maximum likelihood on the best of N samples from $\pi_{ref}$:
# mode-covering) against on-policy REINFORCE (mode-seeking). The band is the mean
# $\pm 1.96$ standard errors over seeds. Change `A` and `B` to compare others, e.g.
# `dict(loss="dpo", sampling="offline", beta=0.1)` or
# `dict(loss="best_of_n", sampling="on_policy", negative="worst", negative_coef=0.1)`.

# %%
A = ("offline best-of-N", dict(loss="best_of_n", sampling="offline"))
B = ("on-policy REINFORCE", dict(loss="reinforce", sampling="on_policy"))

runs = {name: ms.run(problem, steps=STEPS, seeds=SEEDS, key=1, snapshot_every=STEPS // 4, **kw) for name, kw in (A, B)}

fig, axes = plt.subplots(1, 3, figsize=(14, 3.4))
for c, (name, traj) in enumerate(runs.items()):
    for ax, metric in zip(axes[:2], ("expected_reward", "kl_pi_ref")):
        x = traj.metrics[metric]
        m = x.mean(axis=0)
        se = x.std(axis=0, ddof=1) / np.sqrt(x.shape[0])
        ax.plot(traj.steps, m, color=f"C{c}", label=name)
        ax.fill_between(traj.steps, m - 1.96 * se, m + 1.96 * se, color=f"C{c}", alpha=0.2, lw=0)
        ax.set_xlabel("gradient steps")
        ax.set_ylabel(metric)
    axes[2].bar(bins, traj.final_probs.mean(axis=0), width=1.0, color=f"C{c}", alpha=0.6, label=name)
axes[2].plot(bins, np.asarray(problem.ref_probs), color="0.4", ls="--", lw=0.8, label="pi_ref")
axes[2].set_xlabel("response bin")
axes[2].set_ylabel("final mass (mean over seeds)")
for ax in axes:
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

for name, traj in runs.items():
    final = traj.metrics["expected_reward"][:, -1]
    print(f"{name:22s} final E[r] = {final.mean():.3f} +- {1.96 * final.std(ddof=1) / np.sqrt(final.size):.3f}; mass on the high-reward bins = {traj.metrics['mass_high_reward'][:, -1].mean():.3f}")

# %% [markdown]
# ## 4. A traced sweep costs no recompilation
#
# Traced hyperparameters (learning rate, beta, coefficients, ...) can be passed as arrays:
# the grid runs in the same compiled program. Here DPO's beta on the offline batch.

# %%
betas = np.array([0.03, 0.1, 0.3, 1.0])
dpo = ms.run(problem, loss="dpo", sampling="offline", steps=STEPS, seeds=SEEDS, key=2, beta=betas)
final = dpo.metrics["expected_reward"][..., -1]  # (betas, seeds)
for beta, f in zip(betas, final):
    print(f"DPO beta {beta:<5g} final E[r] = {f.mean():.3f}")
print(f"grid shape {dpo.grid_shape}; compile {dpo.compile_seconds:.1f} s")

# %% [markdown]
# ## 5. The atlas at one cell: two objectives, side by side
#
# The phase maps (`figures/phase_*.png`) place a problem by two numbers: the **rarity**
# $\pi_{ref}(H)$ of the high-reward set $H$, and the **coverage** $\mu(H)/\pi_{ref}(H)$ of the
# offline data $\mu$ (`ms.geometry.coverage_data`). Pick a cell and two objectives and see
# where each puts its mass after the same number of steps. `ms.losses.families()` groups every
# registered objective by family (`figures/atlas.png` places them all on the mode-seeking
# scale). Offline objectives train on data drawn from $\mu$; on-policy ones sample the policy.
# Try `RARITY = 1e-3` with `COVERAGE = 0.0` (the good responses are rare and absent from
# the data), then `COVERAGE = 1.0`.

# %%
RARITY, COVERAGE = 3e-3, 0.1
OBJECTIVES = {
    "offline best-of-N": dict(loss="best_of_n", sampling="offline"),
    "on-policy REINFORCE, entropy bonus": dict(loss="reinforce", sampling="on_policy", num_samples=8, entropy_coef=0.01),
}

length_ref = ms.tasks.length_reference()
bump = ms.geometry.bump_for_rarity(length_ref, RARITY)
cell = ms.Problem(length_ref, bump.reward, name=f"rarity {bump.rarity:.2g}")
mu = ms.geometry.coverage_data(length_ref, bump.reward, COVERAGE)
print(f"rarity {ms.geometry.rarity(length_ref, bump.reward):.2g}, coverage {ms.geometry.coverage(mu, length_ref, bump.reward):.2g}")

cell_runs = {name: ms.run(cell, steps=STEPS, seeds=SEEDS, key=3, data=mu, **kw) for name, kw in OBJECTIVES.items()}
lengths = np.arange(cell.num_bins)
fig, axes = plt.subplots(1, len(cell_runs), figsize=(6.5 * len(cell_runs), 3), sharey=True)
for ax, (name, traj) in zip(axes, cell_runs.items()):
    ax.bar(lengths, traj.final_probs.mean(axis=0), width=1.0, color="C0", label="final policy (mean over seeds)")
    ax.plot(lengths, np.asarray(cell.ref_probs), color="0.4", ls="--", lw=0.8, label="pi_ref")
    ax.plot(lengths, np.asarray(mu), color="C2", ls=":", lw=1.0, label="offline data mu")
    ax.plot(lengths, np.asarray(cell.reward) * traj.final_probs.mean(axis=0).max(), color="C3", lw=0.8, label="reward (rescaled)")
    final = traj.metrics["expected_reward"][:, -1]
    ax.set_title(f"{name}: E[r] = {final.mean():.2f}, mass on H = {traj.metrics['mass_high_reward'][:, -1].mean():.2f}", fontsize=9)
    ax.set_xlabel("response (length)")
axes[0].set_ylabel("probability")
axes[0].legend(fontsize=7)
fig.tight_layout()
plt.show()
