"""Whole-model benchmark of the standalone native engine (issue 15): not a test.

Bi-Real ResNet18 and RF-c3d4 ResNet21(53) at 224x224, batch 1 and 8, 2 threads: the native
engine (every op in C++) against the planner/executor runtime, onnxruntime fp32 and OpenVINO
fp32 (the optional `bench` extra; skipped when not installed) on the standard ONNX export of
the same seeded weights, interleaved in one process (bench.time_interleaved). Prints medians,
ratios, the engine's per-op breakdown, its arena (planned vs unplanned bytes), the kernel shapes
used on this CPU (the binary tile and how it was chosen: table, measurement or cache file), the
float stem's rate (G MAC/s), 2 threads against 1 (the engine alone, interleaved) and cold calls
(after 200 ms idle) against steady state; writes JSON (default benchmarks/results/bench_engine.json).

    .venv/bin/python benchmarks/bench_engine.py [--repeats 10] [--batch 1 --batch 8] [--threads 2]
        [--model binary_densenet28 --json benchmarks/results/bench_engine_dense.json]

`--model NAME` (repeatable) measures shipped specs instead (specs/NAME.fr). Ratios are given
two ways: of the medians, and "paired" (the median over rounds of each round's own ratio: the
contenders' calls of one round are milliseconds apart, so a machine whose speed drifts over
minutes, e.g. a shared VM, moves both sides of a paired ratio together).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = [("bireal_resnet18", "specs/bireal_resnet18.fr"), ("rf_c3d4_resnet21", "specs/rf_c3d4_resnet21.fr")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--batch", type=int, action="append")
    ap.add_argument("--threads", type=int, action="append")
    ap.add_argument("--model", action="append", metavar="NAME", help="a shipped spec (specs/NAME.fr)")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "bench_engine.json"))
    args = ap.parse_args(argv)
    models = [(m, f"specs/{m}.fr") for m in args.model] if args.model else MODELS
    for _, spec in models:
        if not (ROOT / spec).is_file():
            ap.error(f"no shipped spec {spec}")
    from fractalc.backends.onnx import weights
    from fractalc.backends.xnor import bench
    from fractalc.backends.xnor.engine import Engine, write_engine_file
    from fractalc.compiler import compile_spec
    from fractalc.runtime import Session

    engines = ["fractalc", "executor", "onnxruntime"] + (["openvino"] if bench.openvino_available() else [])
    info = bench.cpu_info()
    tuning = bench.engine_tuning()
    print(f"# {info['cpu']} | ISAs {', '.join(info['isas'])} | {info['cpus']} CPUs | load {info['loadavg']:.2f}")
    print(f"# engine kernels: {bench.format_tuning(tuning)}")
    if "openvino" not in engines:
        print("# openvino not installed (pip install 'fractalc[bench]'): not compared")
    out = {"cpu": info, "tuning": tuning, "engines": engines, "repeats": args.repeats,
           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": []}
    for name, spec in models:
        c = compile_spec(ROOT / spec, {})
        state, _ = weights.resolve(c, {"seed": 0})
        cont = bench.Contenders(c, state, engines)
        frt = write_engine_file(cont.xnor_bytes)
        stem_macs = first_conv_macs(cont.std_bytes)
        for b in args.batch or [1, 8]:
            x = np.random.default_rng(0).standard_normal((b,) + cont.input_shape).astype(np.float32)
            for t in args.threads or [2]:
                fns = {e: cont.make(e, t) for e in engines}
                times = bench.time_interleaved(fns, x, args.repeats)
                med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
                eng = Engine(frt, threads=t)
                prof: dict[str, float] = {}
                for _ in range(5):
                    eng.run(x)
                for _ in range(5):
                    eng.run(x, profile=prof)
                planned, unplanned = eng.arena_bytes(b)
                cold = bench.cold_vs_steady(Session(cont.xnor_bytes, threads=t).run, x)
                # 2 threads against 1: the engine alone, interleaved
                scale = {}
                if t > 1:
                    st = bench.time_interleaved({"1": Engine(frt, threads=1).run, str(t): Engine(frt, threads=t).run},
                                                x, max(3, args.repeats // 2))
                    scale = {k: statistics.median(v) * 1e3 for k, v in st.items()}
                stem_ms = next((v / 5 * 1e3 for k, v in prof.items() if k.startswith("Conv")), None)
                row = {"model": name, "batch": b, "threads": t, "median_ms": med,
                       "speedup_vs": {k: med[k] / med["fractalc"] for k in med if k != "fractalc"},
                       "paired_speedup_vs": bench.paired_ratios(times),
                       "breakdown_ms": {k: v / 5 * 1e3 for k, v in sorted(prof.items(), key=lambda kv: -kv[1]) if v > 0},
                       "arena_bytes": planned, "unplanned_bytes": unplanned, "file_bytes": len(frt), "cold": cold,
                       "one_vs_n_threads_ms": scale,
                       "stem_gmacs": stem_macs * b / stem_ms / 1e6 if stem_ms and stem_macs else None}
                out["results"].append(row)
                print(f"{name} batch {b} threads {t}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in med.items())
                      + "".join(f"  {v:.1f}x vs {k}" for k, v in row["speedup_vs"].items())
                      + " (paired: " + ", ".join(f"{v:.2f}x" for v in row["paired_speedup_vs"].values()) + ")",
                      flush=True)
                print("    by op: " + ", ".join(f"{k} {v:.2f}" for k, v in row["breakdown_ms"].items()))
                print(f"    arena {planned / 2**20:.1f} MiB (unplanned {unplanned / 2**20:.1f} MiB), file "
                      f"{len(frt) / 2**20:.1f} MiB; cold call {cold['cold_ms']:.2f} ms vs steady "
                      f"{cold['steady_ms']:.2f} ms ({cold['ratio']:.2f}x)")
                if row["stem_gmacs"]:
                    print(f"    stem conv: {stem_macs * b / 1e6:.0f} M MACs at {row['stem_gmacs']:.1f} G MAC/s on {t} "
                          f"thread(s) ({row['stem_gmacs'] / t:.1f} per thread)")
                if scale:
                    print(f"    engine alone: 1 thread {scale['1']:.2f} ms, {t} threads {scale[str(t)]:.2f} ms "
                          f"({scale['1'] / scale[str(t)]:.2f}x)")
    out["loadavg_end"] = bench.cpu_info()["loadavg"]
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    print(markdown(out))
    return 0


def first_conv_macs(onnx_bytes: bytes | None) -> int | None:
    """Multiply-adds per image of the model's first Conv (the float stem), from the ONNX graph."""
    if not onnx_bytes:
        return None
    import onnx
    from onnx import numpy_helper
    m = onnx.load_from_string(onnx_bytes)
    inits = {i.name: i for i in m.graph.initializer}
    conv = next((n for n in m.graph.node if n.op_type == "Conv"), None)
    if conv is None or conv.input[1] not in inits:
        return None
    co, ci, kh, kw = numpy_helper.to_array(inits[conv.input[1]]).shape
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in conv.attribute}
    s, p = attrs.get("strides", [1, 1]), attrs.get("pads", [0, 0, 0, 0])
    h, w = (d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim[2:4])
    ho, wo = (h + p[0] + p[2] - kh) // s[0] + 1, (w + p[1] + p[3] - kw) // s[1] + 1
    return int(ho * wo * co * ci * kh * kw)


def markdown(out: dict) -> str:
    engines = [e for e in out["engines"] if e != "fractalc"]
    head = "| model | batch | threads | engine ms | " + " | ".join(f"{e} ms" for e in engines) + " | " \
        + " | ".join(f"vs {e} (paired)" for e in engines) + " | cold/steady | 2 threads / 1 | stem G MAC/s |"
    lines = [head, "|" + "---|" * (7 + 2 * len(engines))]
    for r in out["results"]:
        m = r["median_ms"]
        lines.append(f"| {r['model']} | {r['batch']} | {r['threads']} | {m['fractalc']:.2f} | "
                     + " | ".join(f"{m[e]:.2f}" for e in engines) + " | "
                     + " | ".join(f"{r['speedup_vs'][e]:.1f}x" + (f" ({r['paired_speedup_vs'][e]:.1f}x)"
                                                                     if "paired_speedup_vs" in r else "")
                                  for e in engines)
                     + f" | {r['cold']['ratio']:.2f} | "
                     + (f"{r['one_vs_n_threads_ms']['1'] / r['one_vs_n_threads_ms'][str(r['threads'])]:.2f}"
                        if r.get("one_vs_n_threads_ms") else "-")
                     + (f" | {r['stem_gmacs']:.0f} |" if r.get("stem_gmacs") else " | - |"))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
