"""Every benchmark at full size, one after the other, and a summary of the issue's targets.

Usage: python -m experiments.benchmarks.all [--quick --out-dir DIR] [--device cpu|gpu] [--only throughput suite scaling naive paper_mlp roofline memory sequences]

Runs throughput.py, suite.py, scaling.py, naive.py and paper_mlp.py (the
paper's MLP protocol for 1, 10 and 100 seeds), then roofline.py (which
reads the suite and scaling reports for its measured rates), memory.py and
sequences.py (the transformer's 10-seeds-vs-1-seed ratio), each writing its
JSON beside this script (or into ``--out-dir``), and finally summary.json (and
summary.md, the Markdown tables of report.py for the README): the
targets (engine / jit(vmap(scan)) >= 1.5 on throughput.py's three compared
cases, timed side by side in one process, and the same ratio in the suite;
1000x the naive NumPy loop at 1024 seeds), the achieved fractions of the
roofline limit, the largest speed-up over the naive loop that the limit
allows on this machine, and the peak memory per stored seed-step.

``--device gpu`` runs every script on the GPU (each records the device in its
JSON; roofline.py, which measures the CPU, is skipped) and exits with one line
when JAX sees no GPU; ``--device cpu`` (the default) keeps JAX on the CPU. On an idle 2-core machine the full run takes roughly
half an hour, most of it compiling (about 80 programs) and the seeds sweep, plus
about 8 minutes for paper_mlp.py (100 MLP runs of 1500 steps in each implementation).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Annotated

import tyro

from experiments.benchmarks import common

SCRIPTS = ("throughput", "suite", "scaling", "naive", "paper_mlp", "roofline", "memory", "sequences")
#: Scripts that measure the CPU itself and are skipped with --device gpu.
CPU_ONLY = ("roofline",)


@dataclasses.dataclass(frozen=True)
class Args:
    """Run every benchmark and summarise the targets."""

    quick: bool = False
    """Every script in its --quick mode (needs --out-dir)."""
    out_dir: Annotated[Path | None, tyro.conf.arg(metavar="DIR")] = None
    """Where the JSON reports go (default: beside the scripts)."""
    only: tuple[str, ...] = SCRIPTS
    """Which scripts to run (the summary uses whatever reports exist)."""
    host_devices: int | None = None
    """XLA CPU devices to shard runs over (default: one per usable core)."""
    device: str = "cpu"
    """Platform to run on: "cpu", or "gpu" (exits with one line when JAX sees no GPU); recorded in the JSON."""


def _read(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def summarise(out_dir: Path) -> dict:
    """The targets and fractions from the reports in ``out_dir``."""
    suite = _read(out_dir / "suite.json")
    thr = _read(out_dir / "throughput.json")
    naive = _read(out_dir / "naive.json")
    roof = _read(out_dir / "roofline.json")
    mem = _read(out_dir / "memory.json")
    seqs = _read(out_dir / "sequences.json")
    mlp = _read(out_dir / "paper_mlp.json")
    s: dict = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    # The engine / jit(vmap(scan)) ratios of throughput.py and of the suite (each measured side by side).
    if thr and "targets" in thr:
        s["target_vs_baseline"] = thr["targets"]
    if suite:
        s["suite_target_vs_baseline"] = suite["targets"]
    if naive:
        s["target_1000x_naive"] = naive["target"]
    if seqs:
        s["sequences_ten_seed_over_one_seed_wall"] = seqs["summary"]["ten_seed_over_one_seed_wall"]
    if mem:
        s["memory"] = {"issue_run": mem["issue_run"], "fit": mem["fit"]}
    if mlp:
        case = mlp["results"]["paper_mlp_on_policy_bon"]
        s["paper_mlp_on_policy_bon"] = {
            "seconds": {str(r["seeds"]): r["seconds_median"]["map"] for r in case["rows"]},
            "speedup_over_vmap": {str(r["seeds"]): r["speedup_over_vmap"] for r in case["rows"]},
            "target": case.get("target"),
        }
    if roof:
        s["fraction_of_limit"] = {name: {"cpu": r["fraction_of_limit_cpu"], "wall": r["fraction_of_limit_wall"], "bound": r["limit"]["bound"]} for name, r in roof["results"].items()}
    if roof and naive:
        # The best any program could do per core (the roofline limit) against the
        # naive loop's CPU seconds per seed-step, times the cores of the machine.
        cores = roof["machine"]["usable_cpus"]
        names = {"reinforce_b64": "reinforce/on_policy", "dpo_64pairs": "dpo/on_policy"}
        s["largest_possible_speedup_over_naive"] = {
            name: naive["results"][name]["naive"]["cpu_seconds_per_seed_step"] / roof["results"][rc]["limit"]["seconds"] * cores
            for name, rc in names.items()
            if rc in roof["results"] and name in naive["results"]
        }
    return s


def main(argv=None) -> dict:
    args = tyro.cli(Args, args=argv, description=__doc__.splitlines()[0])
    bad = sorted(set(args.only) - set(SCRIPTS))
    if bad:
        raise SystemExit(f"unknown script(s) {bad}; valid names are {', '.join(SCRIPTS)}")
    if args.quick and args.out_dir is None:
        raise SystemExit("--quick needs --out-dir (quick reports must not replace the full ones beside the scripts)")
    common.configure_device(args.device, args.host_devices)
    import importlib

    out_dir = args.out_dir or common.HERE
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    quick = ["--quick"] if args.quick else []
    for name in SCRIPTS:
        if name not in args.only:
            continue
        if args.device != "cpu" and name in CPU_ONLY:
            print(f"\n=== {name} === skipped: it measures the CPU's limits, not the {args.device}'s", flush=True)
            continue
        mod = importlib.import_module(f"experiments.benchmarks.{name}")
        extra = ["--device", args.device]
        if name == "roofline":
            paths = ["--suite", str(out_dir / "suite.json"), "--scaling", str(out_dir / "scaling.json")]
            extra += [e for pair in zip(paths[::2], paths[1::2]) if Path(pair[1]).exists() for e in pair]
        print(f"\n=== {name} ===", flush=True)
        mod.main([*quick, "--out", str(out_dir / f"{name}.json"), *extra])
    summary = summarise(out_dir)
    summary["total_seconds"] = time.perf_counter() - t0
    common.write_json(out_dir / "summary.json", summary)
    from experiments.benchmarks import report
    from modeseek.pieces import atomic_write_text

    atomic_write_text(out_dir / "summary.md", report.markdown(out_dir))
    print("\n=== summary ===")
    for name, t in summary.get("target_vs_baseline", {}).items():
        print(f"{name:22s} engine / jit(vmap(scan)): x{t['ratio_median']:.2f} ({t['ratio_min']:.2f}-{t['ratio_max']:.2f}), need x{t['required_ratio']:.1f} -> {'met' if t['met'] else 'NOT met'}")
    for name, t in summary.get("suite_target_vs_baseline", {}).items():
        if "ratio_median" not in t:
            print(f"{name:22s} (suite) no engine / jit(vmap(scan)) ratio: suite.json predates the same-process baseline; rerun --only suite")
            continue
        print(f"{name:22s} (suite) engine / jit(vmap(scan)): x{t['ratio_median']:.2f} ({t['ratio_min']:.2f}-{t['ratio_max']:.2f}) -> {'met' if t['met'] else 'NOT met'}")
    tgt = summary.get("target_1000x_naive", {})
    for name, t in tgt.items():
        if isinstance(t, dict):
            print(f"{name:22s} vs naive at {tgt['at_seeds']} seeds: x{t['speedup_wall']:.0f} wall, x{t['speedup_cpu']:.0f} CPU -> {'met' if t['met'] else 'NOT met'}")
    mlp = summary.get("paper_mlp_on_policy_bon")
    if mlp:
        per = ", ".join(f"{n} seeds {t:.1f} s (x{mlp['speedup_over_vmap'][n]:.2f} over vmap)" for n, t in mlp["seconds"].items())
        tgt = mlp["target"]
        print(f"paper MLP protocol, batching=map: {per}" + (f"; 100 seeds <= {tgt['seconds_100_seeds']:.0f} s -> {'met' if tgt['met'] else 'NOT met'}" if tgt else ""))
    for name, v in summary.get("largest_possible_speedup_over_naive", {}).items():
        print(f"{name:22s} largest speed-up over naive the roofline allows: x{v:.0f}")
    for name, f in summary.get("fraction_of_limit", {}).items():
        print(f"{name:26s} {f['cpu']:.0%} of the limit per CPU-second ({f['bound']}-bound), {f['wall']:.0%} by wall time")
    if "memory" in summary:
        m, fit = summary["memory"]["issue_run"], summary["memory"]["fit"]
        print(
            f"memory: {m['seeds']} seeds x {m['steps']} steps peak {m['peak_rss_bytes_every'] / 1e6:.0f} MB (store='final': {m['peak_rss_bytes_final'] / 1e6:.0f} MB); "
            f"{fit['bytes_per_stored_seed_step']:.0f} B per stored seed-step + {fit['fixed_bytes'] / 1e6:.0f} MB"
        )
    print(f"total {summary['total_seconds']:.0f} s; reports in {out_dir} (summary.md: the README's tables)")
    return summary


if __name__ == "__main__":
    main()
