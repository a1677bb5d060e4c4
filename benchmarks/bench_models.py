"""Whole-model benchmark of the native runtime (issue 5): not a test.

Bi-Real ResNet18 and RF-c3d4 ResNet21(53) at 224x224, batch 1 and 8, 2 threads and 1: our
runtime on the `onnx-xnor` lowering against onnxruntime on the standard `onnx` export of the same
(seeded) weights and torch eager fp32 (the torch backend's network in binary mode), interleaved
in one process. Prints medians, ratios (their median / ours) and where our time goes per op
kind; writes JSON (default benchmarks/results/bench_models.json).

    .venv/bin/python benchmarks/bench_models.py [--repeats 10] [--json out.json] [--quick]

The machine may be shared: medians of interleaved runs, with the load average recorded.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MODELS = [("bireal_resnet18", "specs/bireal_resnet18.fr", {}),
          ("rf_c3d4_resnet21", "specs/rf_c3d4_resnet21.fr", {})]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--batch", type=int, action="append", help="batch sizes (default 1 and 8)")
    ap.add_argument("--threads", type=int, action="append", help="thread counts (default 2 and 1)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "bench_models.json"), help="where to write results")
    ap.add_argument("--quick", action="store_true", help="3 repeats, batch 1 only (a smoke run)")
    args = ap.parse_args(argv)
    from fractalc.backends.onnx import weights
    from fractalc.backends.xnor import bench
    from fractalc.compiler import compile_spec

    batches = args.batch or ([1] if args.quick else [1, 8])
    threads = args.threads or [2, 1]
    repeats = 3 if args.quick else args.repeats
    info = bench.cpu_info()
    print(f"# {info['cpu']} | AVX-512 VPOPCNTDQ: {info['avx512_vpopcntdq']} | kernel ISAs: "
          f"{', '.join(info['isas'])} | {info['cpus']} CPUs | load average {info['loadavg']:.2f}")
    import onnxruntime
    import torch
    out = {"cpu": info, "versions": {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__},
           "repeats": repeats, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": []}
    for name, spec, overrides in MODELS:
        c = compile_spec(ROOT / spec, overrides)
        state, _ = weights.resolve(c, {"seed": 0})
        cont = bench.Contenders(c, state)
        for b in batches:
            res = bench.bench_model(cont, b, threads, repeats)
            print(bench.format_result(name, res), flush=True)
            out["results"].append({"model": name, **res})
    out["loadavg_end"] = bench.cpu_info()["loadavg"]
    out["summary"] = bench.summarize(out["results"])
    print(bench.format_summary(out["summary"]))
    p = Path(args.json)
    p.parent.mkdir(parents=True, exist_ok=True)
    from fractalc.fileio import atomic_write
    atomic_write(p, json.dumps(out, indent=2) + "\n")
    print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
