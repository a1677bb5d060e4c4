"""`fractalc stats`: the cost model's per-layer table or JSON."""
from __future__ import annotations

import json

import click

from fractalc.cli.options import compile_from_options, spec_options


@click.command()
@spec_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--layers/--no-layers", default=True, show_default=True,
              help="Include the per-layer table (or the 'layers' list in JSON).")
def stats(spec, sets, network, max_nodes, as_json, layers):
    """Cost of SPEC: parameters (bits), FLOPs (binary mults / 64) and depth, per layer and total."""
    from fractalc.cost import cost
    from fractalc.report import stats_table
    c = compile_from_options(spec, sets, network, max_nodes)
    co = cost(c.graph)
    if as_json:
        doc = {"network": c.name, "spec": str(spec), "spec_sha256": c.spec.sha256,
               "overrides": c.overrides, **co.to_json(per_layer=layers)}
        click.echo(json.dumps(doc, indent=1))
    else:
        click.echo(stats_table(c, co, layers), nl=False)
