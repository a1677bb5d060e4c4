"""`fractalc params`: a spec's parameters, their values and choices."""
from __future__ import annotations

import click

from fractalc.cli.options import parse_sets, spec_options


@click.command()
@spec_options
def params(spec, sets, network, max_nodes):
    """List SPEC's parameters with their values (after --set) and allowed choices."""
    from fractalc.report import params_table
    from fractalc.lang.resolve import load
    from fractalc.lang.expand import eval_params
    s = load(spec)
    values = eval_params(s, parse_sets(sets))
    click.echo(params_table(s, values), nl=False)
