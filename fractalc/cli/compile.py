"""`fractalc compile`: a spec to one of the targets (fractalc.cli.targets)."""
from __future__ import annotations

import click

from fractalc.cli.options import compile_from_options, spec_options, write_output
from fractalc.errors import FractalcError

#: `compiler.STAGES`, spelt here so that `--help` does not import the compiler.
STAGES = ("expanded", "collapsed", "shaped")
#: The targets that print any stage's graph (the others read the verified, shaped one).
IR_TARGETS = ("ir", "json")


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
              help="Weights to use (.safetensors, or a torch state_dict .pt), for targets with weights.")
@click.option("--column", type=int, default=None,
              help="Emit only fractal column N (1 = deepest) as a plain network (extract_column).")
@click.option("--stage", type=click.Choice(STAGES), default="shaped", show_default=True,
              help="Emit the IR after this step of the pipeline (targets ir and json): expanded "
                   "(as expand builds it), collapsed (after collapse_joins), shaped (after shape "
                   "inference and verification: what every target reads).")
def compile_cmd(spec, sets, network, max_nodes, target, output, seed, weights, column, stage):
    """Compile SPEC to a target (default: the IR listing)."""
    from fractalc.cli.targets import emit
    if stage != "shaped":
        if target not in IR_TARGETS:
            raise FractalcError(f"--stage {stage} applies to the IR targets ({', '.join(IR_TARGETS)}); "
                                f"target {target!r} reads the shaped graph")
        if column is not None:
            raise FractalcError(f"--column takes a column of the shaped graph, not the {stage} one")
    # One place for every target: targets get the column's graph, with c.column == column
    # telling them it is already extracted (the option stays for metadata and weight checks).
    c = compile_from_options(spec, sets, network, max_nodes, stage).with_column(column)
    text = emit(target, c, output, {"seed": seed, "weights": weights, "column": column})
    if text is not None:
        write_output(text, output)
    if output:
        click.echo(f"wrote {output}", err=True)
