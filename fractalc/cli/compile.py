"""`fractalc compile`: a spec to one of the targets (fractalc.cli.targets)."""
from __future__ import annotations

import click

from fractalc.cli.options import compile_from_options, spec_options, write_output


def _target_help() -> str:
    from fractalc.cli.targets import TARGETS
    return "; ".join(f"{k}: {v[1]}" for k, v in TARGETS.items())


@click.command("compile")
@spec_options
@click.option("--target", "-t", default="ir", show_default=True, metavar="TARGET",
              help="What to emit. " + _target_help())
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write here (atomically) instead of standard output.")
@click.option("--seed", type=int, default=None, help="Seed for initialised weights (targets with weights).")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="Weights to use (a state_dict .pt file), for targets with weights.")
@click.option("--column", type=int, default=None,
              help="Emit only fractal column N (1 = deepest) as a plain network (extract_column).")
def compile_cmd(spec, sets, network, max_nodes, target, output, seed, weights, column):
    """Compile SPEC to a target (default: the IR listing)."""
    from fractalc.cli.targets import emit
    # One place for every target: targets get the column's graph, with c.column == column
    # telling them it is already extracted (the option stays for metadata and weight checks).
    c = compile_from_options(spec, sets, network, max_nodes).with_column(column)
    text = emit(target, c, output, {"seed": seed, "weights": weights, "column": column})
    if text is not None:
        write_output(text, output)
    if output:
        click.echo(f"wrote {output}", err=True)
