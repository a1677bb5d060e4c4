"""The `render` command: block diagrams of a spec (backends/graphviz)."""
from __future__ import annotations

import click

from fractalc.cli.options import compile_from_options, spec_options


def _title(c) -> str:
    sets = "".join(f", {k}={v}" for k, v in sorted(c.overrides.items()))
    return c.name + (f" ({sets[2:]})" if sets else "")


@click.command()
@spec_options
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write here; the extension picks the format: .svg .png .pdf (need "
                   "Graphviz's dot) or .dot. Default: DOT text on standard output.")
@click.option("--level", type=click.Choice(["auto", "block", "network"]), default="auto",
              show_default=True,
              help="block: every layer, columns side by side (Figure 1); network: one "
                   "cluster per stage, repeated blocks once with 'x N' (Figure 2); auto: "
                   "network when the spec has several top-level scopes.")
@click.option("--depth", type=click.IntRange(min=1), default=None,
              help="Expand scopes down to N id segments, draw deeper ones as one box "
                   "(default: full at block level, 2 at network level).")
@click.option("--rankdir", type=click.Choice(["TB", "LR"]), default="TB", show_default=True,
              help="Data flows top to bottom or left to right.")
@click.option("--annotate", type=click.Choice(["cost"]), multiple=True,
              help="cost: parameters (Mbit) and FLOPs per block and in total.")
@click.option("--fold/--no-fold", default=None,
              help="Draw identical repeated blocks once with 'x N' (default: at network level).")
@click.option("--legend/--no-legend", default=True, show_default=True, help="Draw the legend.")
def render(spec, sets, network, max_nodes, output, level, depth, rankdir, annotate, fold, legend):
    """Draw SPEC as a block diagram (DOT, SVG, PNG or PDF)."""
    from fractalc.backends.graphviz import Options, to_dot, write
    from fractalc.backends.graphviz.output import format_of
    if output:
        format_of(output)  # refuse a bad extension before compiling
    opts = Options(level=level, depth=depth, rankdir=rankdir, annotate=tuple(annotate),
                   fold=fold, legend=legend)
    c = compile_from_options(spec, sets, network, max_nodes)
    text = to_dot(c.graph, opts, title=_title(c))
    if output:
        write(text, output)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)
