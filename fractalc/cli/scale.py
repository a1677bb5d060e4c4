"""`fractalc scale`: solve a width (or growth) for a baseline's parameter or FLOP budget."""
from __future__ import annotations

import json

import click

from fractalc.cli.options import parse_sets, resolve_spec_argument, spec_options


@click.command()
@spec_options
@click.option("--budget-of", "baseline", required=True, type=click.Path(dir_okay=False),
              help="Baseline spec (a path or a model name) whose cost is the budget.")
@click.option("--budget-set", "budget_sets", multiple=True, metavar="NAME=VALUE",
              help="Override a parameter of the baseline (repeatable); --set applies to SPEC only.")
@click.option("--metric", type=click.Choice(["params", "flops", "both"]), default="params", show_default=True,
              help="params: parameter bits; flops: FLOPs; both: both must fit.")
@click.option("--param", default=None, help="Integer parameter to scale (default: width, else growth).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--write", "write", type=click.Path(dir_okay=False), default=None,
              help="Write SPEC, formatted, with the found value (and every --set) as parameter defaults.")
def scale(spec, sets, network, max_nodes, baseline, budget_sets, metric, param, as_json, write):
    """Largest value of a parameter (width/growth) whose cost fits BASELINE's on the metric."""
    from fractalc.variants import budget_of, scale_table, solve, write_scaled
    overrides = parse_sets(sets)
    base, base_network = resolve_spec_argument(baseline)
    budget = budget_of(base, parse_sets(budget_sets), network=base_network, max_nodes=max_nodes)
    res = solve(spec, budget, metric=metric, param=param, overrides=overrides, network=network,
                max_nodes=max_nodes, baseline=str(baseline))
    if write:
        write_scaled(res, write, overrides)
    if as_json:
        doc = res.to_json()
        if write:
            doc["written"] = str(write)
        click.echo(json.dumps(doc, indent=1))
    else:
        click.echo(scale_table(res), nl=False)
    if write:
        click.echo(f"wrote {write}", err=True)
