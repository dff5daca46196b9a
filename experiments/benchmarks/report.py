"""Markdown tables of the benchmark reports (the tables of the README's Benchmarks section).

Usage: python -m experiments.benchmarks.report [--dir DIR]

Reads throughput.json, suite.json, scaling.json, naive.json and roofline.json from ``DIR``
(default: beside this script) and prints one table per report; missing
reports are skipped. ``all.py`` writes the same text to summary.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from experiments.benchmarks import common

REGIMES = ("offline", "on_policy", "exact", "exact_offline")


def _read(d: Path, name: str):
    p = d / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def _conditions(rep) -> str:
    m = rep["machine"]
    return f"{m['jax_device_count']} device(s) on {m['usable_cpus']} cores, load {m['load_average_1m_at_start']:.1f}"


def targets_table(rep) -> str:
    if any("ratio_median" in t for t in rep["targets"].values()):
        return ratio_table(rep)
    lines = [
        "| case | reference | target (2x) | measured | per CPU-second | idle estimate | met |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, t in rep["targets"].items():
        r = rep["results"][name]
        met = "yes" if t["met"] else ("no (idle estimate: yes)" if t["met_estimated_idle"] else "no")
        lines.append(
            f"| {name} | {common.rate(t['reference_seed_steps_per_s'])} | {common.rate(t['required_seed_steps_per_s'])} | "
            f"{common.rate(t['measured_seed_steps_per_s'])} | {common.rate(r['seed_steps_per_cpu_s_best'])} | "
            f"{common.rate(t['estimated_idle_seed_steps_per_s'])} | {met} |"
        )
    return "\n".join(lines)


def ratio_table(rep) -> str:
    """throughput.py's targets: engine / jit(vmap(scan)) speed, alternating calls in one process."""
    lines = [
        "| case | engine / jit(vmap(scan)), median | min-max over pairs | required | met |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for name, t in rep["targets"].items():
        lines.append(f"| {name} | x{t['ratio_median']:.2f} | {t['ratio_min']:.2f}-{t['ratio_max']:.2f} | x{t['required_ratio']:.1f} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines)


def suite_table(suite) -> str:
    res = suite["results"]
    losses = list(dict.fromkeys(r["loss"] for r in res.values()))
    lines = ["| loss (family) | " + " | ".join(REGIMES) + " | compile (s) |", "| --- |" + " ---: |" * (len(REGIMES) + 1)]
    for loss in losses:
        cells, comp = [], []
        fam = next(r["family"] for r in res.values() if r["loss"] == loss)
        for reg in REGIMES:
            r = res.get(f"{loss}/{reg}")
            if r is None:
                cells.append("-")
                continue
            cells.append(f"{common.rate(r['seed_steps_per_s_best'])} / {common.rate(r['seed_steps_per_cpu_s_best'])}")
            comp.append(r["compile_seconds"])
        lines.append(f"| {loss} ({fam}) | " + " | ".join(cells) + f" | {min(comp):.0f}-{max(comp):.0f} |")
    return "\n".join(lines)


def scaling_tables(scaling) -> list[str]:
    out = []
    for axis, key in (("seeds", "seeds"), ("bins", "bins"), ("batch", "batch")):
        res = scaling["results"].get(axis)
        if not res:
            continue
        xs = sorted({p[key] for pts in res.values() for p in pts})
        lines = [f"| {'K' if key == 'bins' else key} | " + " | ".join(res) + " |", "| ---: |" + " ---: |" * len(res)]
        for x in xs:
            cells = []
            for pts in res.values():
                p = next((p for p in pts if p[key] == x), None)
                cells.append(f"{common.rate(p['seed_steps_per_s_best'])} / {common.rate(p['seed_steps_per_cpu_s_best'])}" if p else "-")
            lines.append(f"| {x:,} | " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    return out


def _secs(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def naive_table(naive) -> str:
    lines = [
        "| case | naive (us per seed-step, CPU) | seeds | engine (s) | naive (s, extrapolated) | speed-up (wall) | speed-up (CPU) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in naive["results"].items():
        for p in r["points"]:
            lines.append(
                f"| {name} | {r['naive']['cpu_seconds_per_seed_step'] * 1e6:.0f} | {p['seeds']:,} | {_secs(p['engine_run_seconds'])} | "
                f"{_secs(p['naive_wall_seconds_extrapolated'])} | {p['speedup_wall']:.0f}x | {p['speedup_cpu']:.0f}x |"
            )
    return "\n".join(lines)


def machine_table(roof) -> str:
    m = roof["machine_limits"]
    bw = m["bandwidth_bytes_per_s"]
    rows = [
        ("streaming bandwidth, L2 (768 KiB)", f"{bw['l2']['per_s_cpu'] / 1e9:.0f} GB/s"),
        ("streaming bandwidth, L3 (8 MiB)", f"{bw['l3']['per_s_cpu'] / 1e9:.0f} GB/s"),
        ("streaming bandwidth, DRAM (256 MiB)", f"{bw['dram']['per_s_cpu'] / 1e9:.0f} GB/s"),
        ("NumPy copy, 256 MiB", f"{m['numpy_copy_bytes_per_s']['per_s_cpu'] / 1e9:.0f} GB/s"),
        ("elementwise float32 (F)", f"{m['elementwise_flops_per_s']['per_s_cpu'] / 1e9:.0f} GFLOP/s"),
        ("exp (T)", f"{m['transcendentals_per_s']['per_s_cpu'] / 1e9:.2f} G/s"),
        ("matmul 1024^3 (not a roof)", f"{m['matmul_flops_per_s']['per_s_cpu'] / 1e9:.0f} GFLOP/s"),
    ]
    return "\n".join(["| per core (from CPU time) | rate |", "| --- | ---: |"] + [f"| {a} | {b} |" for a, b in rows])


def fraction_table(roof) -> str:
    res = roof["results"]
    losses = list(dict.fromkeys(r["loss"] for r in res.values()))
    lines = ["| loss | " + " | ".join(REGIMES) + " |", "| --- |" + " ---: |" * len(REGIMES)]
    for loss in losses:
        cells = []
        for reg in REGIMES:
            r = res.get(f"{loss}/{reg}")
            cells.append(f"{r['fraction_of_limit_cpu']:.0%} ({r['limit']['bound'][0]})" if r else "-")
        lines.append(f"| {loss} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def work_table(roof, names=("reverse_kl/exact", "reinforce/on_policy", "dpo/on_policy", "dpo/exact", "best_of_n/exact")) -> str:
    lines = [
        "| case | flop | exp/log | bytes | limit per core | bound | achieved per CPU-s | fraction |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for name in names:
        r = roof["results"].get(name)
        if r is None:
            continue
        c, lim = r["per_seed_step"], r["limit"]
        lines.append(
            f"| {name} | {c['flops']:,.0f} | {c['transcendentals']:,.0f} | {c['bytes'] / 1e3:,.1f} k | {common.rate(lim['seed_steps_per_s_per_core'])} | "
            f"{lim['bound']} ({lim['memory_level']}) | {common.rate(r['seed_steps_per_cpu_s'])} | {r['fraction_of_limit_cpu']:.0%} |"
        )
    for name, pts in roof.get("bins", {}).items():
        for r in pts:
            c, lim = r["per_seed_step"], r["limit"]
            lines.append(
                f"| {name}, K = {r['bins']:,} | {c['flops']:,.0f} | {c['transcendentals']:,.0f} | {c['bytes'] / 1e3:,.1f} k | "
                f"{common.rate(lim['seed_steps_per_s_per_core'])} | {lim['bound']} ({lim['memory_level']}) | "
                f"{common.rate(r['seed_steps_per_cpu_s'])} | {r['fraction_of_limit_cpu']:.0%} |"
            )
    return "\n".join(lines)


def markdown(d: Path) -> str:
    """All tables, with a heading and the measuring conditions for each report."""
    parts = []
    suite = _read(d, "suite")
    thr = _read(d, "throughput")
    src = thr if thr and "targets" in thr else suite
    if src:
        s = src["settings"]
        what = "throughput.py" if src is thr else "suite.py"
        parts.append(f"Targets ({what}: {s['seeds']} runs x {s['steps']} steps; {_conditions(src)}):\n\n" + targets_table(src))
    if suite:
        parts.append("Suite, seed-steps/s by wall time / per CPU-second:\n\n" + suite_table(suite))
    naive = _read(d, "naive")
    if naive:
        parts.append(f"Naive NumPy baseline ({_conditions(naive)}):\n\n" + naive_table(naive))
    scaling = _read(d, "scaling")
    if scaling:
        for t in scaling_tables(scaling):
            parts.append(f"Scaling ({_conditions(scaling)}), seed-steps/s by wall time / per CPU-second:\n\n" + t)
    roof = _read(d, "roofline")
    if roof:
        parts.append(f"Machine ({_conditions(roof)}):\n\n" + machine_table(roof))
        parts.append("Work per seed-step and the limit:\n\n" + work_table(roof))
        parts.append("Achieved fraction of the limit per CPU-second (c: compute-bound, m: memory-bound):\n\n" + fraction_table(roof))
    return "\n\n".join(parts) + "\n"


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=common.HERE, help="where the JSON reports are")
    args = ap.parse_args(argv)
    text = markdown(args.dir)
    print(text)
    return text


if __name__ == "__main__":
    main()
