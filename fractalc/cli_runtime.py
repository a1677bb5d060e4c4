"""`fractalc run` and `fractalc bench`: the native runtime on the command line (thin wiring)."""
from __future__ import annotations

import json

import click

from .cli import allow_import_option
from .errors import FractalcError


MAX_INPUT_BYTES = 4 << 30


def _load_npy(path: str):
    import io

    import numpy as np

    from .fileio import FileRefused, read_limited
    try:  # a regular file only: a FIFO or a device would block or never end
        raw = read_limited(path, MAX_INPUT_BYTES)
    except FileRefused as exc:
        if exc.reason == "no such file":
            raise FractalcError(f"input file {path!r} does not exist") from None
        raise FractalcError(f"cannot read input file {path!r}: {exc.reason}") from None
    try:
        return np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise FractalcError(f"input file {path!r} is not a .npy array: {exc}") from None


@click.command("run")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--input", "input_path", required=True, type=click.Path(dir_okay=False),
              help="A .npy float32 array (N, C, H, W).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Output .npy file.")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="Kernel threads (default: all CPUs, or $FRACTALC_THREADS).")
@click.option("--isa", type=click.Choice(["portable", "avx2", "avx512"]), default=None,
              help="Force a kernel path (default: $FRACTALC_ISA or the best this CPU runs).")
def run_cmd(model, input_path, output, threads, isa):
    """Run an onnx-xnor MODEL on a .npy input with the native XNOR runtime."""
    import io

    import numpy as np

    from .fileio import atomic_write
    from .runtime import Session
    x = _load_npy(input_path)
    sess = Session(model, threads=threads, isa=isa)
    y = sess.run(x)
    buf = io.BytesIO()
    np.save(buf, y, allow_pickle=False)
    atomic_write(output, buf.getvalue())
    click.echo(f"wrote {output}: {y.dtype} {tuple(y.shape)}", err=True)


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

    TARGET is a spec (.fr: compiled here, random weights from --seed, all engines) or an
    onnx-xnor file (our runtime only). Contenders run interleaved; medians and ratios.
    """
    from fractalc.backends.xnor import bench
    batches = batch or (1,)
    threads_list = threads or (2, 1)
    info = bench.cpu_info()
    click.echo(f"# {info['cpu']} | VPOPCNTDQ {info['avx512_vpopcntdq']} | ISAs {', '.join(info['isas'])} | "
               f"{info['cpus']} CPUs | load {info['loadavg']:.2f}")
    tuning = bench.engine_tuning()
    click.echo(f"# native engine: {tuning['isa']} kernels, binary tile {tuning['binary_tile']}, float tile "
               f"{tuning['float_tile']}, {tuning['split']}")
    results = {"cpu": info, "tuning": tuning, "target": target, "results": []}
    if target.endswith(".fr"):
        from fractalc.backends.onnx import weights

        from .cli import parse_sets
        from .compiler import compile_spec
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
        from .fileio import atomic_write
        atomic_write(json_path, json.dumps(results, indent=2) + "\n")


def register(cli: click.Group) -> None:
    cli.add_command(run_cmd)
    cli.add_command(bench_cmd)
