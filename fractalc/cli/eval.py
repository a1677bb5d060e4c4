"""`fractalc eval`: top-1/top-5 of trained weights with torch, onnxruntime or the native runtime."""
from __future__ import annotations

import json

import click

from fractalc.cli.options import column_option, compile_from_options, spec_options


@click.command("eval")
@spec_options
@click.option("--weights", required=True, type=click.Path(dir_okay=False, exists=True),
              help="Weights: .safetensors (as train writes them), a checkpoint or a state_dict (.pt).")
@click.option("--data", required=True, help="digits, a CIFAR pickle directory, or an image folder.")
@click.option("--engine", type=click.Choice(["torch", "onnxruntime", "xnor"]), default="torch", show_default=True)
@click.option("--mode", type=click.Choice(["fp", "tanh", "binary"]), default="binary", show_default=True,
              help="Torch engine's mode (ONNX engines are binary).")
@click.option("--json", "as_json", is_flag=True)
@column_option
def eval_cmd(spec, sets, network, max_nodes, weights, data, engine, mode, as_json, column):
    """Top-1 / top-5 of SPEC with WEIGHTS on DATA's test split (with --column: the full
    network's weights on one column, FractalNet's column evaluation)."""
    from fractalc.training.evaluate import evaluate_engine
    c = compile_from_options(spec, sets, network, max_nodes).with_column(column)
    r = evaluate_engine(c, weights, data, engine, mode)
    if as_json:
        click.echo(json.dumps(r, sort_keys=True))
    else:
        click.echo(f"{engine}: top-1 {100 * r['top1']:.2f} %  top-5 {100 * r['top5']:.2f} %  ({r['n']} images)")
