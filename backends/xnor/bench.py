"""Whole-model timing: our runtime on ``onnx-xnor`` against onnxruntime on the standard ``onnx``
export of the same weights and torch eager fp32 (the torch backend's network in binary mode).

Used by ``fractalc bench`` and benchmarks/bench_models.py. Contenders are interleaved (one run
of each per round) so that the load of a shared machine hits all of them alike; medians and
ratios (their median / ours) are reported, with a per-operator-kind breakdown of our runtime.
Not a test: nothing here asserts a speed.
"""
from __future__ import annotations

import os
import platform
import statistics
import time

import numpy as np


def cpu_info() -> dict:
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor is enough
                k, _, v = line.partition(":")
                fields.setdefault(k.strip(), v.strip())
    except OSError:
        pass
    model = fields.get("model name") or platform.processor() or "unknown"
    if "cpu family" in fields:
        model += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    from . import kernels
    return {"cpu": model, "avx512_vpopcntdq": "avx512_vpopcntdq" in fields.get("flags", "").split(),
            "isas": kernels.available_isas(), "cpus": len(os.sched_getaffinity(0)),
            "loadavg": os.getloadavg()[0]}


class Contenders:
    """The three engines for one compiled spec and one weight set (`state`, numpy)."""

    def __init__(self, compiled, state: dict, engines=("fractalc", "onnxruntime", "torch")):
        from fractalc.backends.onnx.export import to_onnx
        from fractalc.backends.onnx.lower import to_onnx_xnor
        self.compiled = compiled
        self.engines = list(engines)
        self.xnor_bytes = to_onnx_xnor(compiled, state, "bench").SerializeToString()
        self.std_bytes = (to_onnx(compiled, state, "bench").SerializeToString()
                          if {"onnxruntime", "openvino"} & set(engines) else None)
        self.state = state
        self.input_shape = tuple(compiled.graph.shape("input"))

    def make(self, engine: str, threads: int):
        """A callable x -> output for `engine` with `threads` threads."""
        if engine == "fractalc":
            from fractalc.runtime import Session
            s = Session(self.xnor_bytes, threads=threads)
            return s.run
        if engine == "executor":  # the planner/executor fallback (numpy + onnxruntime float ops)
            from fractalc.runtime import Session
            return Session(self.xnor_bytes, threads=threads, engine="executor").run
        if engine == "openvino":
            return openvino_runner(self.std_bytes, threads)
        if engine == "onnxruntime":
            import onnxruntime as ort
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(self.std_bytes, so, providers=["CPUExecutionProvider"])
            return lambda x: sess.run(None, {"input": x})[0]
        if engine == "torch":
            import torch

            from fractalc.backends.torch import from_graph
            model = from_graph(self.compiled.graph, seed=0)
            model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in self.state.items()},
                                  strict=False)
            model = model.eval().set_mode("binary")

            def run(x, _m=model, _t=threads):
                torch.set_num_threads(_t)
                with torch.inference_mode():
                    return _m(torch.from_numpy(x)).numpy()
            return run
        raise ValueError(engine)


ENGINES = ("fractalc", "executor", "onnxruntime", "openvino", "torch")


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
        return True
    except ImportError:
        return False


def openvino_runner(onnx_bytes: bytes, threads: int):
    """OpenVINO (CPU plugin, fp32 inference precision, latency hint) on the standard ONNX export."""
    import openvino as ov
    core = ov.Core()
    model = core.read_model(model=onnx_bytes)
    cfg = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
           "NUM_STREAMS": 1}
    compiled = core.compile_model(model, "CPU", cfg)
    req = compiled.create_infer_request()

    def run(x, _r=req):
        return _r.infer({0: x})[0]
    return run


FLOAT_TILES = {"avx512": "12 pixels x 32 channels (RGB stems: up to 14 pixels of one output row)",
               "avx2": "3 pixels x 32 channels",
               "neon": "4 pixels x 16 channels", "portable": "1 pixel x 64 channels"}


def engine_tuning(isa: str | None = None) -> dict:
    """The kernel shapes the native engine uses on this CPU, and how the binary tile was chosen.

    The binary kernel's register tile is chosen per CPU at first use (backends/xnor/src/conv.cpp,
    ``conv_tile``): ``$FRACTALC_TILE`` (a tile such as ``6x32``, ``table`` or ``calibrate``), else
    a per-user cache file, else a ~2 ms measurement of the candidates; the float tile is fixed per
    ISA."""
    from . import kernels
    isa = kernels.resolve_isa(isa)
    cpu, tile, how, detail = kernels._xnor.tile_choice(isa)
    p, c = tile.split("x")
    return {"isa": isa, "cpu": cpu, "binary_tile": f"{p} pixels x {c} channels", "binary_tile_name": tile,
            "binary_tile_how": how, "binary_tile_detail": detail,
            "binary_tile_candidates": list(kernels._xnor.tile_candidates(isa)),
            "float_tile": FLOAT_TILES.get(isa, "1 pixel x 64 channels"),
            "split": "8 work items per thread (pixel tiles x channel groups)",
            "batch_budget": kernels._xnor.batch_budget()[1]}


def format_tuning(t: dict) -> str:
    """One line: the CPU, the binary tile and how it was chosen, the float tile."""
    detail = f"; {t['binary_tile_detail']}" if t.get("binary_tile_detail") else ""
    return (f"{t['cpu']} | {t['isa']} kernels, binary tile {t['binary_tile_name']} ({t['binary_tile_how']}{detail}), "
            f"float tile {t['float_tile']}, {t['split']}"
            + (f"; batches run in passes whose arena fits in {t['batch_budget']}" if t.get("batch_budget") else ""))


def tile_candidates(isa: str | None = None) -> list[str]:
    """The binary kernel tiles ``isa``'s path supports (``"6x32"``, ...), its table default first."""
    from . import kernels
    return list(kernels._xnor.tile_candidates(kernels.resolve_isa(isa)))


def set_tile(tile: str | None, isa: str | None = None) -> None:
    """Forces the binary kernel tile of ``isa`` in this process (benchmarks, tests); None clears."""
    from . import kernels
    kernels._xnor.set_tile(kernels.resolve_isa(isa), tile or "")


def cold_vs_steady(run, x, rounds: int = 7, idle_s: float = 0.2) -> dict:
    """Median wall time of a call after `idle_s` of idling vs of back-to-back calls."""
    for _ in range(3):
        run(x)
    steady, cold = [], []
    for _ in range(rounds):
        time.sleep(idle_s)
        t0 = time.perf_counter()
        run(x)
        cold.append(time.perf_counter() - t0)
        for _ in range(3):
            t0 = time.perf_counter()
            run(x)
            steady.append(time.perf_counter() - t0)
    c, s = statistics.median(cold) * 1e3, statistics.median(steady) * 1e3
    return {"cold_ms": c, "steady_ms": s, "ratio": c / s}


class FileContender:
    """An onnx-xnor file: only our runtime can run it."""

    def __init__(self, path: str):
        from fractalc.runtime import Session
        with open(path, "rb") as f:
            self.xnor_bytes = f.read()
        self.engines = ["fractalc"]
        self.input_shape = Session(self.xnor_bytes, threads=1).input_shape

    def make(self, engine: str, threads: int):
        from fractalc.runtime import Session
        return Session(self.xnor_bytes, threads=threads).run


def time_interleaved(fns: dict, x: np.ndarray, repeats: int, warmup: int = 2,
                     gap_s: float = 0.02, warm_s: float = 0.01, per_turn: int = 2) -> dict[str, list[float]]:
    """Per contender, `repeats` * `per_turn` wall times of one call, in rounds of one turn each.

    `gap_s` of sleep before each engine's turn lets the previous engine's worker threads stop
    spinning (onnxruntime's and OpenMP's pools busy-wait after a call), so no engine is timed
    while another one's idle threads still hold the cores; then untimed calls for at least
    `warm_s` bring the engine back to its steady state (after an idle gap every engine's first
    calls are slower: a worker thread woken from sleep on this VM can take a millisecond to get
    its core back), and `per_turn` calls are timed."""
    for f in fns.values():
        for _ in range(warmup):
            f(x)
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            time.sleep(gap_s)
            f(x)
            until = time.perf_counter() + warm_s
            while time.perf_counter() < until:
                f(x)
            for _ in range(per_turn):
                t0 = time.perf_counter()
                f(x)
                times[k].append(time.perf_counter() - t0)
    return times


def paired_ratios(times: dict[str, list[float]]) -> dict[str, float]:
    """Per contender, the median over calls of its time / fractalc's time in the same position:
    time_interleaved's lists are aligned (the i-th call of every contender is in the same round,
    milliseconds apart), so a machine whose speed drifts over minutes moves both sides together."""
    base = times["fractalc"]
    return {k: statistics.median(a / b for a, b in zip(v, base)) for k, v in times.items() if k != "fractalc"}


def bench_model(contenders: Contenders, batch: int, threads_list=(2, 1), repeats: int = 10,
                seed: int = 0) -> dict:
    """Medians (ms), ratios against fractalc and our per-op-kind breakdown, per thread count."""
    x = np.random.default_rng(seed).standard_normal((batch,) + contenders.input_shape).astype(np.float32)
    out = {"batch": batch, "threads": {}}
    for t in threads_list:
        fns = {e: contenders.make(e, t) for e in contenders.engines}
        times = time_interleaved(fns, x, repeats)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        row = {"median_ms": med, "min_ms": {k: min(v) * 1e3 for k, v in times.items()}}
        if "fractalc" in med:
            row["speedup_vs"] = {k: med[k] / med["fractalc"] for k in med if k != "fractalc"}
            row["paired_speedup_vs"] = paired_ratios(times)
            from fractalc.runtime import Session
            s = Session(contenders.xnor_bytes, threads=t)
            prof: dict[str, float] = {}
            until = time.perf_counter() + 0.05  # steady state, as for the timed runs
            while time.perf_counter() < until:
                s.run(x)
            n = max(3, repeats // 2)
            for _ in range(n):
                s.run(x, profile=prof)
            row["fractalc_breakdown_ms"] = {k: v / n * 1e3 for k, v in sorted(prof.items(), key=lambda kv: -kv[1])
                                            if v > 0}  # (a pool fused into the conv before it: 0)
        out["threads"][str(t)] = row
    return out


def format_result(name: str, res: dict) -> str:
    lines = []
    for t, row in res["threads"].items():
        med = row["median_ms"]
        parts = [f"{k} {v:8.2f} ms" for k, v in med.items()]
        paired = row.get("paired_speedup_vs", {})
        ratios = "".join(f"  {v:5.1f}x vs {k}" + (f" (paired {paired[k]:.1f}x)" if k in paired else "")
                         for k, v in row.get("speedup_vs", {}).items())
        lines.append(f"{name} batch {res['batch']} threads {t}: " + ", ".join(parts) + ratios)
        if "fractalc_breakdown_ms" in row:
            lines.append("    fractalc by op: " + ", ".join(
                f"{k} {v:.2f}" for k, v in row["fractalc_breakdown_ms"].items()))
    return "\n".join(lines)


TARGET_VS_ORT = 5.0  # issue 5: at least 5x faster than onnxruntime end to end


def summarize(results: list[dict]) -> dict:
    """The issue's target against onnxruntime, and whether 2 threads beat 1 everywhere."""
    vs_ort = [row["speedup_vs"]["onnxruntime"] for r in results for row in r["threads"].values()
              if "onnxruntime" in row.get("speedup_vs", {})]
    scaling = {f"{r['model']} batch {r['batch']}": r["threads"]["1"]["median_ms"]["fractalc"]
               / r["threads"]["2"]["median_ms"]["fractalc"]
               for r in results if {"1", "2"} <= set(r["threads"])}
    return {"vs_onnxruntime_min": min(vs_ort, default=None), "target_vs_onnxruntime": TARGET_VS_ORT,
            "two_threads_speedup": scaling,
            "two_threads_beat_one_everywhere": all(v > 1 for v in scaling.values()) if scaling else None}


def format_summary(s: dict) -> str:
    lines = []
    if s["vs_onnxruntime_min"] is not None:
        met = "met" if s["vs_onnxruntime_min"] >= s["target_vs_onnxruntime"] else "NOT met"
        lines.append(f"target: at least {s['target_vs_onnxruntime']:g}x faster than onnxruntime: "
                     f"min {s['vs_onnxruntime_min']:.1f}x, {met}")
    if s["two_threads_speedup"]:
        lines.append("2 threads vs 1 (fractalc): " + ", ".join(
            f"{k} {v:.2f}x" for k, v in s["two_threads_speedup"].items())
            + f"; 2 threads beat 1 everywhere: {s['two_threads_beat_one_everywhere']}")
    return "\n".join(lines)
