"""`fractalc generate`: every variant of a space file, scaled to its budget, with reports."""
from __future__ import annotations

import json
from pathlib import Path

import click

from fractalc.cli.options import allow_import_option
from fractalc.errors import FractalcError


@click.command()
@click.argument("space", type=click.Path(dir_okay=False))
@click.option("-o", "--out", "out", type=click.Path(file_okay=False), default=None,
              help="Directory for the generated specs (default: generated/<space name>).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the table as CSV ('-' for standard output).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the table, skipped points and baselines as JSON ('-' for standard output).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Draw Mbit against FLOPs for every variant, baselines marked (PNG, needs matplotlib).")
@click.option("--max-nodes", default=100_000, show_default=True, type=click.IntRange(min=1),
              help="Size guard for every variant (IR nodes before collapsing joins).")
@allow_import_option
def generate(space, out, csv_path, json_path, plot_path, max_nodes):
    """Write one width-scaled spec per point of the TOML SPACE; print their costs."""
    from fractalc import variants as V
    from fractalc.fileio import atomic_write
    out = out or str(Path("generated") / Path(space).stem)
    gen = V.generate(space, out, max_nodes=max_nodes, log=lambda m: click.echo(m, err=True))
    quiet = "-" in (csv_path, json_path)
    if not quiet:
        click.echo(V.table(gen), nl=False)
    for path, text in ((csv_path, lambda: V.csv_text(gen)),
                       (json_path, lambda: json.dumps(gen.to_json(), indent=1) + "\n")):
        if path == "-":
            click.echo(text(), nl=False)
        elif path:
            atomic_write(path, text())
    if plot_path:
        V.plot(gen, plot_path)
        click.echo(f"wrote {plot_path}", err=True)
    if not gen.variants:  # the reports above say why each point was skipped
        raise FractalcError(f"no variant written: all {len(gen.skipped)} points of {space} were skipped")
