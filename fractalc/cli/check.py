"""`fractalc check`: parse, expand and verify a spec; one line of summary."""
from __future__ import annotations

import click

from fractalc.cli.options import compile_from_options, spec_options


@click.command()
@spec_options
def check(spec, sets, network, max_nodes):
    """Parse, expand and verify SPEC; print a one-line summary."""
    from fractalc.cost import depth
    c = compile_from_options(spec, sets, network, max_nodes)
    g = c.graph
    shape = "x".join(map(str, g.shape(g.output_id)))
    click.echo(f"ok: {c.name}: {len(g)} nodes ({c.raw_nodes} before collapsing joins), "
               f"depth {depth(g)}, output {shape}")
