"""`fractalc list`: the shipped models by name, with their costs (like timm's list_models)."""
from __future__ import annotations

import json

import click


@click.command("list")
@click.argument("pattern", required=False)
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON array (one object per model) instead of a table.")
def list_cmd(pattern, as_json):
    """The shipped models (names any SPEC argument takes), with family, default dataset, depth,
    width, size (Mbit) and FLOPs at their default parameters. PATTERN filters the names with
    shell wildcards ('rf_*', '*densenet*')."""
    from fractalc.registry import models
    infos = models(pattern)
    if as_json:
        click.echo(json.dumps([i.to_json() for i in infos], indent=1))
        return
    if not infos:
        click.echo(f"no model name matches {pattern!r}", err=True)
        return
    w = max(len(i.name) for i in infos)
    fw = max([len(i.family) for i in infos] + [6])
    head = f"{'name':<{w}}  {'family':<{fw}}  {'dataset':<8} {'depth':>5} {'width':>6} {'Mbit':>9} {'FLOPs':>11}"
    lines = [head, "-" * len(head)]
    for i in infos:
        width = "-" if i.width is None else str(i.width)
        lines.append(f"{i.name:<{w}}  {i.family:<{fw}}  {i.dataset or '-':<8} {i.depth:>5} {width:>6} "
                     f"{i.mbit:>9.3f} {i.flops:>11.4e}")
    click.echo("\n".join(lines))
