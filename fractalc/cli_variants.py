"""`fractalc scale`, `fractalc generate` and `fractalc fmt`: thin wiring to variants.py and
formatter.py (registered by cli.py)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .cli import allow_import_option, parse_sets, spec_options
from .errors import FractalcError


@click.command()
@spec_options
@click.option("--budget-of", "baseline", required=True, type=click.Path(dir_okay=False),
              help="Baseline spec whose cost is the budget.")
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
    from .variants import budget_of, scale_table, solve, write_scaled
    overrides = parse_sets(sets)
    budget = budget_of(baseline, parse_sets(budget_sets), max_nodes=max_nodes)
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
    from . import variants as V
    from .fileio import atomic_write
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


def _spec_files(paths) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.rglob("*.fr"))
        elif p.is_file():
            files.append(p)
        else:
            raise FractalcError(f"no such file or directory: {str(p)!r}")
    return files


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--check", is_flag=True,
              help="Change nothing; list the files that would change and exit 1 if there are any.")
def fmt(paths, check):
    """Format .fr specs canonically, in place (directories: every .fr below them)."""
    from .fileio import atomic_write
    from .formatter import check_round_trip, format_source
    changed = []
    files = _spec_files(paths)
    from .syntax import read_spec
    for f in files:
        text = read_spec(f)
        new = format_source(text, str(f))
        if new == text:
            continue
        check_round_trip(text, new, str(f))
        changed.append(f)
        if check:
            click.echo(f"would reformat {f}")
        else:
            atomic_write(f, new)
            click.echo(f"reformatted {f}")
    left = len(files) - len(changed)
    click.echo(f"{len(changed)} file{'s' if len(changed) != 1 else ''} "
               f"{'would be ' if check else ''}reformatted, {left} unchanged", err=True)
    if check and changed:
        # SystemExit, not ctx.exit: fractalc.cli.main runs click with standalone_mode=False,
        # where click turns ctx.exit(1) into a return value that would be lost.
        sys.exit(1)


def register(cli: click.Group) -> None:
    cli.add_command(scale)
    cli.add_command(generate)
    cli.add_command(fmt)
