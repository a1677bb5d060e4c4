"""`fractalc fmt`: canonical layout of .fr files, in place or --check."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from fractalc.errors import FractalcError


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
    from fractalc.fileio import atomic_write
    from fractalc.lang.formatter import check_round_trip, format_source
    changed = []
    files = _spec_files(paths)
    from fractalc.lang.syntax import read_spec
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
