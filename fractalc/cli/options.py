"""Options and helpers shared by the commands: the spec options (SPEC, a path or a model name,
--set, --network, --max-nodes, --allow-import), parsing --set, compiling a command's spec once,
writing output."""
from __future__ import annotations

import contextlib
import functools
import gc
import os

import click

from fractalc.errors import FractalcError


def _allow_import(ctx: click.Context, param, dirs) -> None:
    # For the whole command, not one call: a command may compile more than its SPEC (train,
    # scale's baseline, generate's variants), and every compile must see the same rule.
    if dirs:
        from fractalc.lang.resolve import allowed_imports
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
    """SPEC and the common spec options. SPEC is a path or a registered model name
    (fractalc.registry: `fractalc list`); the command receives the resolved path and, for a
    name, its network as `network`."""
    @functools.wraps(f)
    def resolved(*args, spec, network, **kwargs):
        with _collector_paused():
            spec, network = resolve_spec_argument(spec, network)
        return f(*args, spec=spec, network=network, **kwargs)

    for opt in reversed(_COMMON):
        resolved = opt(resolved)
    return click.argument("spec", type=click.Path(dir_okay=False), metavar="SPEC")(resolved)


def resolve_spec_argument(spec, network=None):
    """(path, network) of a SPEC given as a path or a model name (`registry.resolve_spec`: an
    existing path wins; an unknown name is an error with the closest names)."""
    if os.path.exists(spec):  # resolve_spec's first rule, without importing the registry
        return str(spec), network
    from fractalc.registry import resolve_spec
    path, network = resolve_spec(spec, network)
    return str(path), network


def parse_sets(sets) -> dict[str, str]:
    out: dict[str, str] = {}
    for s in sets:
        if "=" not in s:
            raise FractalcError(f"--set expects NAME=VALUE, got {s!r}")
        k, v = s.split("=", 1)
        out[k.strip()] = v
    return out


def compile_from_options(spec, sets, network, max_nodes, stage="shaped"):
    """The compiled spec of a command's SPEC, --set, --network and --max-nodes options (at
    pipeline `stage`, see `compiler.STAGES`)."""
    with _collector_paused():
        from fractalc.compiler import compile_spec
        return compile_spec(spec, parse_sets(sets), network=network, max_nodes=max_nodes, stage=stage)


_OWN_PROCESS = False


def own_process() -> None:
    """Called by `fractalc.cli.main` when fractalc is the program (the console script,
    ``python -m fractalc``): the process ends when the command does, so what exists by now
    (Python's and click's modules, this package's) and what a command's compile makes live
    until then. The cyclic garbage collector would rescan them all at every older-generation
    collection, after the compile (~3 ms of a `check` of a 500-node spec) and once more when
    the interpreter exits (~9 ms), collecting next to nothing. So they are frozen
    (`gc.freeze`: kept in a generation the collector never scans) now, after a compile
    (`_collector_paused`) and at exit (an `atexit` handler, which runs before the
    interpreter's last collection; objects alive at exit need not be finalized, as Python's
    own documentation allows). Not done when a caller passes `argv` (tests, a program that
    goes on): its garbage stays collectable."""
    global _OWN_PROCESS
    if _OWN_PROCESS:
        return
    _OWN_PROCESS = True
    import atexit
    gc.freeze()
    atexit.register(gc.freeze)


@contextlib.contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off while a command finds its spec, imports the
    compiler and compiles; on again after, if it was on.

    Compiling allocates objects that live until the command ends (modules, the AST, the
    graph) and next to no reference cycles, yet every 700 allocations the collector rescans
    the young ones: ~60 collections, ~10 ms of a `check` of a 500-node spec, collecting a few
    hundred objects. After the pause one collection scans what the compile made (~3 ms);
    cycles made meanwhile are collected then. Memory stays bounded (the size guard bounds
    the compile). When fractalc is the program (`own_process`), what the compile made is
    frozen instead of scanned."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        if _OWN_PROCESS:
            gc.freeze()
        gc.enable()


def write_output(text: str, output: str | None) -> None:
    """`text` to OUTPUT atomically, or to standard output when there is no -o."""
    if output:
        from fractalc.fileio import atomic_write
        atomic_write(output, text)
    else:
        click.echo(text, nl=False)


#: --column for commands that use one fractal column as a plain network.
column_option = click.option(
    "--column", type=int, default=None,
    help="Use only fractal column N (1 = deepest) as a plain network (extract_column).")
