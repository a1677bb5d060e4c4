"""`fractalc bench`: the native engine against onnxruntime, OpenVINO and torch, interleaved."""
from __future__ import annotations

import json
import os

import click

from fractalc.cli.options import allow_import_option, parse_sets
from fractalc.errors import FractalcError


@click.command("bench")
@click.argument("target", type=click.Path(dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE", help="Spec parameter override (specs only).")
@click.option("--network", default=None, help="Which network of the spec file.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights (specs).")
@click.option("--batch", type=click.IntRange(1, 4096), multiple=True, help="Batch size(s) (default 1).")
@click.option("--threads", type=click.IntRange(1, 1024), multiple=True,
              help="Thread count(s) to compare (default 2 and 1).")
@click.option("--repeats", type=click.IntRange(1, 10000), default=10, show_default=True)
@click.option("--engines", default="fractalc,onnxruntime,torch", show_default=True,
              help="Comma-separated contenders (specs): fractalc (the native engine), executor (the planner "
                   "fallback), onnxruntime, openvino (the bench extra), torch.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write results as JSON.")
@allow_import_option
def bench_cmd(target, sets, network, seed, batch, threads, repeats, engines, json_path):
    """Time a model on random input: our runtime vs onnxruntime and torch eager fp32.

    TARGET is a spec (.fr, or a shipped model's name: compiled here, random weights from
    --seed, all engines) or an onnx-xnor file (our runtime only). Contenders run interleaved;
    medians and ratios.
    """
    from fractalc.backends.xnor import bench
    batches = batch or (1,)
    threads_list = threads or (2, 1)
    info = bench.cpu_info()
    click.echo(f"# {info['cpu']} | VPOPCNTDQ {info['avx512_vpopcntdq']} | ISAs {', '.join(info['isas'])} | "
               f"{info['cpus']} CPUs | load {info['loadavg']:.2f}")
    tuning = bench.engine_tuning()
    click.echo(f"# native engine: {bench.format_tuning(tuning)}")
    results = {"cpu": info, "tuning": tuning, "target": target, "results": []}
    if not target.endswith((".fr", ".onnx")) and not os.path.exists(target):
        from fractalc.registry import resolve_spec
        target, network = resolve_spec(target, network)  # a model by name
        target = str(target)
    if target.endswith(".fr"):
        from fractalc.backends.onnx import weights

        from fractalc.compiler import compile_spec
        c = compile_spec(target, parse_sets(sets), network=network)
        state, _ = weights.resolve(c, {"seed": seed})
        names = [e.strip() for e in engines.split(",") if e.strip()]
        bad = [e for e in names if e not in bench.ENGINES]
        if bad or not names:
            raise FractalcError(f"unknown engine(s) {', '.join(bad) or '(none)'}: use {', '.join(bench.ENGINES)}")
        cont = bench.Contenders(c, state, names)
        label = c.name
    else:
        if sets or network:
            raise FractalcError("--set/--network apply to specs, not to ONNX files")
        cont = bench.FileContender(target)
        label = target
    for b in batches:
        res = bench.bench_model(cont, b, threads_list, repeats, seed)
        results["results"].append({"model": label, **res})
        click.echo(bench.format_result(label, res))
    results["summary"] = bench.summarize(results["results"])
    summary = bench.format_summary(results["summary"])
    if summary:
        click.echo(summary)
    if json_path:
        from fractalc.fileio import atomic_write
        atomic_write(json_path, json.dumps(results, indent=2) + "\n")
