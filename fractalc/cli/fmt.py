"""`fractalc fmt`: canonical layout of .fr files, in place, --check or --diff (--json too)."""
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
@click.option("--diff", is_flag=True,
              help="Change nothing; print a unified diff of what would change and exit 1 if anything would.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (the files changed, or that would change, with --diff their diffs).")
def fmt(paths, check, diff, as_json):
    """Format .fr specs canonically, in place (directories: every .fr below them)."""
    import difflib
    import json

    from fractalc.fileio import atomic_write
    from fractalc.lang.formatter import check_round_trip, format_source
    from fractalc.lang.syntax import read_spec
    dry = check or diff
    changed, diffs = [], {}
    files = _spec_files(paths)
    for f in files:
        text = read_spec(f)
        new = format_source(text, str(f))
        if new == text:
            continue
        check_round_trip(text, new, str(f))
        changed.append(f)
        if diff:
            diffs[str(f)] = "".join(difflib.unified_diff(
                text.splitlines(keepends=True), new.splitlines(keepends=True),
                fromfile=f"a/{f}", tofile=f"b/{f}"))
            if not as_json:
                click.echo(diffs[str(f)], nl=False)
        elif check:
            if not as_json:
                click.echo(f"would reformat {f}")
        else:
            atomic_write(f, new)
            if not as_json:
                click.echo(f"reformatted {f}")
    left = len(files) - len(changed)
    if as_json:
        doc = {"mode": "diff" if diff else "check" if check else "write",
               "changed": [str(f) for f in changed], "unchanged": left}
        if diff:
            doc["diffs"] = diffs
        click.echo(json.dumps(doc, indent=1))
    click.echo(f"{len(changed)} file{'s' if len(changed) != 1 else ''} "
               f"{'would be ' if dry else ''}reformatted, {left} unchanged", err=True)
    if dry and changed:
        # SystemExit, not ctx.exit: fractalc.cli.main runs click with standalone_mode=False,
        # where click turns ctx.exit(1) into a return value that would be lost.
        sys.exit(1)
