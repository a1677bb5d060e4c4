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
@click.option("--quiet", "-q", is_flag=True,
              help="No progress bar and no line per variant written (skipped points are still reported).")
@allow_import_option
def generate(space, out, csv_path, json_path, plot_path, max_nodes, quiet):
    """Write one width-scaled spec per point of the TOML SPACE; print their costs.

    Standard output carries the table, or the one report given as '-'; progress (a bar when
    standard error is a terminal) and one line per point go to standard error."""
    from fractalc import variants as V
    from fractalc.fileio import atomic_write
    if csv_path == "-" and json_path == "-":
        raise FractalcError("only one of --csv and --json can be '-' (standard output)")
    out = out or str(Path("generated") / Path(space).stem)
    with _Progress(enabled=not quiet) as bar:
        def log(message):
            if not quiet or message.startswith("skipped"):
                bar.write(message)
        gen = V.generate(space, out, max_nodes=max_nodes, log=log, progress=bar.update)
    to_stdout = "-" in (csv_path, json_path)
    if not to_stdout:
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


class _Progress:
    """tqdm's bar on standard error, shown only when standard error is a terminal (off one,
    e.g. in CI logs, a bar would be carriage-return noise: the per-point lines remain); lines
    written through it (`write`) do not break the bar."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()

    def update(self, done: int, total: int, name: str) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            import sys

            from tqdm import tqdm
            # disable=None: tqdm draws only on a terminal
            self.bar = tqdm(total=total, file=sys.stderr, unit="variant", disable=None,
                            dynamic_ncols=True, leave=False)
        self.bar.n = done
        self.bar.set_postfix_str(name, refresh=False)
        self.bar.refresh()

    def write(self, message: str) -> None:
        if self.bar is not None and not self.bar.disable:
            self.bar.write(message, file=self.bar.fp)
        else:
            click.echo(message, err=True)
