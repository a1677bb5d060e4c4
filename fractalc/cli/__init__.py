"""The `fractalc` command line: thin wiring from options to library calls.

One module per command (`fractalc.cli.check`, ...), each importing only click and the shared
options at import time; libraries, backends, torch and onnx are imported inside the command,
so `fractalc --help` and `fractalc check` never load a backend.

Every `FractalcError` becomes ``file:line:col: message`` (with the offending line and a caret)
on stderr and exit status 1; an unexpected exception is reported as an internal error with
exit status 2 (set FRACTALC_DEBUG=1 for the traceback).
"""
from __future__ import annotations

import os
import sys
import warnings

import click

from fractalc.cli import bench, check, fmt, generate, params, render, run, scale, stats, train
from fractalc.cli import compile as compile_, eval as eval_
from fractalc.cli import compare, models
from fractalc.errors import FractalcError, FractalcWarning
from fractalc.version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="fractalc")
def cli():
    """fractalc: compile fractal binary-network specs (.fr) to IR, costs and models.

    SPEC is a .fr file or the name of a shipped model (`fractalc list`).
    """


# In the order `fractalc --help` lists them (click sorts by name).
for _command in (check.check, stats.stats, params.params, compile_.compile_cmd, render.render,
                 scale.scale, generate.generate, fmt.fmt, train.train, eval_.eval_cmd, run.run_cmd,
                 bench.bench_cmd, models.list_cmd, compare.compare):
    cli.add_command(_command)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """fractalc's own warnings as ``warning: message`` on stderr; others as Python shows them."""
    if issubclass(category, FractalcWarning):
        click.echo(f"warning: {message}", err=True)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def main(argv=None):
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
