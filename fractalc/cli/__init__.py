"""The `fractalc` command line: thin wiring from options to library calls.

One module per command (`fractalc.cli.check`, ...), each importing only click and the shared
options at import time; libraries, backends, torch and onnx are imported inside the command,
so `fractalc --help` and `fractalc check` never load a backend. A command's module is itself
imported only when that command runs (or `--help` lists them all): `fractalc check` does not
build the other thirteen commands' options.

Every `FractalcError` becomes ``file:line:col: message`` (with the offending line and a caret)
on stderr and exit status 1; an unexpected exception is reported as an internal error with
exit status 2 (set FRACTALC_DEBUG=1 for the traceback).
"""
from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import MutableMapping

import click

from fractalc.errors import FractalcError, FractalcWarning
from fractalc.version import __version__

#: Each command's name -> (its module in fractalc.cli, the click command's name there).
COMMANDS = {
    "check": ("check", "check"), "stats": ("stats", "stats"), "params": ("params", "params"),
    "compile": ("compile", "compile_cmd"), "render": ("render", "render"),
    "scale": ("scale", "scale"), "generate": ("generate", "generate"), "fmt": ("fmt", "fmt"),
    "train": ("train", "train"), "eval": ("eval", "eval_cmd"), "run": ("run", "run_cmd"),
    "bench": ("bench", "bench_cmd"), "list": ("models", "list_cmd"), "compare": ("compare", "compare"),
}


class _Commands(MutableMapping):
    """The group's commands by name (click reads them through this mapping); a command's
    module is imported the first time the command is looked up. Iterating lists the names
    without importing anything."""

    def __init__(self, where: dict[str, tuple[str, str]]):
        self._where: dict[str, tuple[str, str] | None] = dict(where)
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            module, attr = self._where[name] or ("", "")  # KeyError: no such command
            self._loaded[name] = getattr(importlib.import_module(f"fractalc.cli.{module}"), attr)
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._where.setdefault(name, None)
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        del self._where[name]
        self._loaded.pop(name, None)

    def __iter__(self):
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


# `fractalc --help` lists the commands by name (click sorts them).
@click.group(commands=_Commands(COMMANDS), context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="fractalc")
def cli():
    """fractalc: compile fractal binary-network specs (.fr) to IR, costs and models.

    SPEC is a .fr file or the name of a shipped model (`fractalc list`).
    """


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """fractalc's own warnings as ``warning: message`` on stderr; others as Python shows them."""
    if issubclass(category, FractalcWarning):
        click.echo(f"warning: {message}", err=True)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def main(argv=None):
    """Run the command line: `argv` (the process's own arguments when None).

    Without `argv`, as the console script and ``python -m fractalc`` call it, fractalc is the
    program and the process ends when this returns: see `options.own_process`."""
    if argv is None:
        from fractalc.cli.options import own_process
        own_process()
    warnings.showwarning = _show_warning
    try:
        # Without standalone mode click returns ctx.exit(n) codes instead of exiting.
        rc = cli.main(args=argv, prog_name="fractalc", standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except FractalcError as exc:
        click.echo(exc.format(), err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (BrokenPipeError, KeyboardInterrupt):
        sys.exit(130)
    except Exception as exc:  # a bug: say so plainly, keep the traceback behind a switch
        if os.environ.get("FRACTALC_DEBUG"):
            raise
        click.echo(f"internal error (a fractalc bug, please report): {type(exc).__name__}: {exc}\n"
                   "set FRACTALC_DEBUG=1 to see the traceback", err=True)
        sys.exit(2)
