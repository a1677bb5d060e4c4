"""`fractalc params`: a spec's parameters, their values and choices (a table or --json)."""
from __future__ import annotations

import json

import click

from fractalc.cli.options import parse_sets, spec_options


def _json_value(v):
    """A parameter value as JSON: numbers, strings, booleans, lists; a function value
    (a partially bound rule) as its description."""
    from fractalc.lang.expand import describe
    if isinstance(v, (str, bool, int, float)):
        return v
    if isinstance(v, (tuple, list)):
        return [_json_value(x) for x in v]
    return describe(v)


@click.command()
@spec_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def params(spec, sets, network, max_nodes, as_json):
    """List SPEC's parameters with their values (after --set) and allowed choices."""
    from fractalc.report import params_table
    from fractalc.lang.resolve import load
    from fractalc.lang.expand import eval_params
    s = load(spec)
    overrides = parse_sets(sets)
    values = eval_params(s, overrides)
    if not as_json:
        click.echo(params_table(s, values), nl=False)
        return
    rows = [{"name": name, "value": _json_value(values[name]), "set": name in overrides,
             "declared": str(prm.loc),
             "choices": [c.value if hasattr(c, "value") else None for c in prm.choices] if prm.choices else None}
            for name, prm in s.params.items()]
    click.echo(json.dumps({"spec": str(spec), "spec_sha256": s.sha256, "overrides": overrides,
                           "params": rows}, indent=1))
