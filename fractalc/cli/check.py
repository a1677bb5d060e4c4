"""`fractalc check`: parse, expand and verify a spec; one line of summary (or --json)."""
from __future__ import annotations

import json

import click

from fractalc.cli.options import compile_from_options, spec_options


@click.command()
@spec_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the summary line.")
def check(spec, sets, network, max_nodes, as_json):
    """Parse, expand and verify SPEC; print a one-line summary."""
    from fractalc.cost import depth
    c = compile_from_options(spec, sets, network, max_nodes)
    g = c.graph
    out = list(g.shape(g.output_id))
    if as_json:
        click.echo(json.dumps({"ok": True, "network": c.name, "spec": str(spec), "spec_sha256": c.spec.sha256,
                               "overrides": c.overrides, "nodes": len(g), "raw_nodes": c.raw_nodes,
                               "depth": depth(g), "input": list(g.shape(g.input_id)), "output": out},
                              indent=1))
        return
    click.echo(f"ok: {c.name}: {len(g)} nodes ({c.raw_nodes} before collapsing joins), "
               f"depth {depth(g)}, output {'x'.join(map(str, out))}")
