"""Markdown tables of the latest benchmark results, for the README: not a benchmark itself.

Reads the JSON that bench_kernels.py and bench_models.py wrote (defaults: build/) and prints the
tables the README shows, so every number there can be traced to a run:

    .venv/bin/python benchmarks/tables.py [--kernels benchmarks/results/bench_kernels.json] [--models benchmarks/results/bench_models.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAMES = {"bireal_resnet18": "Bi-Real ResNet18", "rf_c3d4_resnet21": "RF-c3d4 ResNet21(53)"}


def kernel_table(d: dict) -> str:
    rows = ["| layer | batch | xnor bits ms | +pack ms | xnor 1 thread ms | torch ms | onnxruntime ms "
            "| vs torch | vs torch, with pack | vs onnxruntime | T binary MACs/s | of 2.3 T peak | 2 threads / 1 |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["results"]:
        m = r["median_ms"]
        rows.append(f"| {r['H']}x{r['W']}x{r['C']} | {r['batch']} | {m['xnor_bits']:.3f} | {m['xnor_pack']:.3f} "
                    f"| {m['xnor_1t']:.3f} | {m['torch']:.2f} | {m['ort']:.2f} "
                    f"| {r['speedup_vs_torch']['xnor_bits']:.1f}x | {r['speedup_vs_torch']['xnor_pack']:.1f}x "
                    f"| {r['speedup_vs_ort']['xnor_bits']:.1f}x | {r['binary_macs_per_s'] / 1e12:.2f} "
                    f"| {100 * r['fraction_of_peak']:.0f} % | {r['threads_speedup']:.2f} |")
    s, t = d["summary"], d["targets"]
    rows.append("")
    rows.append(f"Targets: min vs torch {s['vs_torch_min']:.1f}x (>= {t['vs_torch_min']:g}), geomean "
                f"{s['vs_torch_geomean']:.1f}x (>= {t['vs_torch_geomean']:g}), min with packing "
                f"{s['with_pack_min']:.1f}x (>= {t['with_pack_min']:g}), min rate batch 1 "
                f"{s['macs_batch1'] / 1e12:.2f} T (>= {t['macs_batch1'] / 1e12:g}), batch 8 "
                f"{s['macs_batch8'] / 1e12:.2f} T (>= {t['macs_batch8'] / 1e12:g}); 2 threads beat 1 everywhere: "
                f"{s['two_threads_beat_one_everywhere']}. CPU: {d['cpu']}, ISA path {d['isa']}, load average "
                f"{' '.join(d['loadavg'])}" + (f", finished {d['finished']}." if "finished" in d else "."))
    return "\n".join(rows)


def model_table(d: dict) -> str:
    rows = ["| model | batch | threads | fractalc ms | onnxruntime ms | torch ms | vs onnxruntime | vs torch |",
            "|---|---|---|---|---|---|---|---|"]
    for r in d["results"]:
        for t, row in r["threads"].items():
            m, sp = row["median_ms"], row["speedup_vs"]
            rows.append(f"| {NAMES.get(r['model'], r['model'])} | {r['batch']} | {t} | {m['fractalc']:.2f} "
                        f"| {m['onnxruntime']:.1f} | {m['torch']:.1f} | {sp['onnxruntime']:.1f}x | {sp['torch']:.1f}x |")
    rows.append("")
    rows.append("Where our time goes (ms per run, steady state, by step kind; `+` marks fused steps):")
    rows.append("")
    for r in d["results"]:
        for t, row in r["threads"].items():
            parts = ", ".join(f"{k} {v:.2f}" for k, v in row["fractalc_breakdown_ms"].items() if v >= 0.005)
            rows.append(f"- {NAMES.get(r['model'], r['model'])}, batch {r['batch']}, {t} thread(s): {parts}")
    from fractalc.backends.xnor.bench import format_summary, summarize
    rows.append("")
    rows.append(format_summary(d.get("summary") or summarize(d["results"])).replace("\n", ". ") + ".")
    rows.append("")
    rows.append(f"CPU: {d['cpu']['cpu']}, {d['cpu']['cpus']} CPUs, load average {d['cpu']['loadavg']:.2f} at the "
                f"start, {d['loadavg_end']:.2f} at the end; {d['repeats']} rounds; started {d['started']}.")
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernels", default=str(ROOT / "benchmarks" / "results" / "bench_kernels.json"))
    ap.add_argument("--models", default=str(ROOT / "benchmarks" / "results" / "bench_models.json"))
    args = ap.parse_args(argv)
    for title, path, fn in (("Kernel benchmark", args.kernels, kernel_table),
                            ("Model benchmark", args.models, model_table)):
        p = Path(path)
        if not p.exists():
            print(f"{title}: {p} not found (run the benchmark first)", file=sys.stderr)
            continue
        print(f"### {title} ({p.name})\n")
        print(fn(json.loads(p.read_text())))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
