"""The `fractalc` command line: thin wiring from options to library calls.

Every `FractalcError` becomes ``file:line:col: message`` (with the offending line and a caret)
on stderr and exit status 1; an unexpected exception is reported as an internal error with
exit status 2 (set FRACTALC_DEBUG=1 for the traceback).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from .version import __version__
from .errors import FractalcError

def _allow_import(ctx: click.Context, param, dirs) -> None:
    # For the whole command, not one call: a command may compile more than its SPEC (train,
    # scale's baseline, generate's variants), and every compile must see the same rule.
    if dirs:
        from .resolve import allowed_imports
        ctx.with_resource(allowed_imports(dirs))


allow_import_option = click.option(
    "--allow-import", "allow_import", multiple=True, metavar="DIR", expose_value=False,
    callback=_allow_import, type=click.Path(exists=True, file_okay=False),
    help="Let specs import files under DIR too (repeatable). By default a spec imports only "
         "from its own folder and the bundled library.")

_COMMON = [
    allow_import_option,
    click.option("--set", "sets", multiple=True, metavar="NAME=VALUE",
                 help="Override a spec parameter (repeatable): --set width=41 --set dataset=cifar100."),
    click.option("--network", default=None, help="Which network of the spec file (default: the first)."),
    click.option("--max-nodes", default=100_000, show_default=True, type=click.IntRange(min=1),
                 help="Size guard: refuse specs whose expansion (before collapsing joins) has more IR nodes than this."),
]


def spec_options(f):
    for opt in reversed(_COMMON):
        f = opt(f)
    return click.argument("spec", type=click.Path(dir_okay=False))(f)


def parse_sets(sets) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in sets:
        if "=" not in s:
            raise FractalcError(f"--set expects NAME=VALUE, got {s!r}")
        k, v = s.split("=", 1)
        out[k.strip()] = v
    return out


def compile_from_options(spec, sets, network, max_nodes):
    """The compiled spec of a command's SPEC, --set, --network and --max-nodes options."""
    from .compiler import compile_spec
    return compile_spec(spec, parse_sets(sets), network=network, max_nodes=max_nodes)


def _out(text: str, output: str | None) -> None:
    if output:
        from .fileio import atomic_write
        atomic_write(output, text)
    else:
        click.echo(text, nl=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="fractalc")
def cli():
    """fractalc: compile fractal binary-network specs (.fr) to IR, costs and models."""


@cli.command()
@spec_options
def check(spec, sets, network, max_nodes):
    """Parse, expand and verify SPEC; print a one-line summary."""
    from .cost import depth
    c = compile_from_options(spec, sets, network, max_nodes)
    g = c.graph
    shape = "x".join(map(str, g.shape(g.output_id)))
    click.echo(f"ok: {c.name}: {len(g)} nodes ({c.raw_nodes} before collapsing joins), "
               f"depth {depth(g)}, output {shape}")


@cli.command()
@spec_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--layers/--no-layers", default=True, show_default=True,
              help="Include the per-layer table (or the 'layers' list in JSON).")
def stats(spec, sets, network, max_nodes, as_json, layers):
    """Cost of SPEC: parameters (bits), FLOPs (binary mults / 64) and depth, per layer and total."""
    from .cost import cost
    from .report import stats_table
    c = compile_from_options(spec, sets, network, max_nodes)
    co = cost(c.graph)
    if as_json:
        doc = {"network": c.name, "spec": str(spec), "spec_sha256": c.spec.sha256,
               "overrides": c.overrides, **co.to_json(per_layer=layers)}
        click.echo(json.dumps(doc, indent=1))
    else:
        click.echo(stats_table(c, co, layers), nl=False)


@cli.command()
@spec_options
def params(spec, sets, network, max_nodes):
    """List SPEC's parameters with their values (after --set) and allowed choices."""
    from .report import params_table
    from .resolve import load
    from .expand import eval_params
    s = load(spec)
    values = eval_params(s, parse_sets(sets))
    click.echo(params_table(s, values), nl=False)


def _target_help() -> str:
    from .targets import TARGETS
    return "; ".join(f"{k}: {v[1]}" for k, v in TARGETS.items())


@cli.command("compile")
@spec_options
@click.option("--target", "-t", default="ir", show_default=True, metavar="TARGET",
              help="What to emit. " + _target_help())
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write here (atomically) instead of standard output.")
@click.option("--seed", type=int, default=None, help="Seed for initialised weights (targets with weights).")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="Weights to use (a state_dict .pt file), for targets with weights.")
@click.option("--column", type=int, default=None,
              help="Emit only fractal column N (1 = deepest) as a plain network (extract_column).")
def compile_cmd(spec, sets, network, max_nodes, target, output, seed, weights, column):
    """Compile SPEC to a target (default: the IR listing)."""
    from .targets import emit
    # One place for every target: targets get the column's graph, with c.column == column
    # telling them it is already extracted (the option stays for metadata and weight checks).
    c = compile_from_options(spec, sets, network, max_nodes).with_column(column)
    text = emit(target, c, output, {"seed": seed, "weights": weights, "column": column})
    if text is not None:
        _out(text, output)
    if output:
        click.echo(f"wrote {output}", err=True)


# Commands of other stages live in their own modules and register themselves, so this file
# stays thin and importing it never imports a backend.
_PLUGINS = ("fractalc.cli_render", "fractalc.cli_variants", "fractalc.cli_runtime", "fractalc.cli_train")


def _register_plugins() -> None:
    import importlib
    import importlib.util
    for mod in _PLUGINS:
        if importlib.util.find_spec(mod) is not None:
            importlib.import_module(mod).register(cli)


_register_plugins()


def main(argv=None):
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
