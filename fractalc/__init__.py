"""fractalc: an architecture DSL and graph compiler for binary fractal networks.

Importing this package is cheap: it never imports torch or onnx.
"""
from fractalc.version import __version__

__all__ = ["__version__", "build_torch", "list_models", "summary"]


def build_torch(spec, network=None, column=None, *, seed: int = 0, max_nodes: int | None = None,
                allow_import=None, **params):
    """Build a torch ``nn.Module`` (imports torch on first use) from `spec`: a model name
    (`list_models`, ``"rf_c3d4_resnet21"``), a ``.fr`` path (an existing path wins over a name),
    a resolved `Spec`, or a `Compiled` (built as it is).

    The options are the CLI's: ``params`` override spec parameters with Python values (``--set``:
    ``width=41``, ``dataset="cifar100"``), `network` picks a network of the file (``--network``),
    `column` builds fractal column N alone (``--column``, 1 = deepest), `seed` seeds the initial
    weights (``--seed``), `max_nodes` is the size guard (``--max-nodes``) and `allow_import`
    lists further folders the spec may import from (``--allow-import``).

    The network keeps its compiled spec as ``model.fractalc_compiled`` (`fractalc.summary`
    reads it).
    """
    from fractalc.backends.torch import build_torch as _build
    from fractalc.compiler import Compiled, compile_spec, value_overrides

    if isinstance(spec, Compiled):
        if params or network is not None or max_nodes is not None or allow_import:
            raise TypeError("build_torch: parameters apply to a spec; this one is compiled already")
        compiled = spec
    else:
        from fractalc.lang.resolve import Spec
        from fractalc.registry import resolve_spec

        source = spec
        if not isinstance(spec, Spec):
            source, network = resolve_spec(spec, network)
        kw = {} if max_nodes is None else {"max_nodes": max_nodes}
        compiled = compile_spec(source, value_overrides(params), network=network,
                                allow_import=allow_import, **kw)
    compiled = compiled.with_column(column)
    model = _build(compiled, seed=seed)
    model.fractalc_compiled = compiled
    return model


def list_models(pattern: str | None = None) -> list[str]:
    """The names of the shipped models, sorted (`fractalc list` shows their costs); `pattern`
    filters with shell wildcards: ``list_models("rf_*")``. See `fractalc.registry`."""
    from fractalc.registry import list_models as _list

    return _list(pattern)


def summary(model, **options):
    """Print a network's per-layer table (bits, memory, binary and float MACs) and totals, and
    return them as a `fractalc.model_summary.Summary`; `model` is a name, a spec path, a `Compiled`
    or a network from `build_torch`. See `fractalc.model_summary.summary` for the options."""
    from fractalc.model_summary import summary as _summary

    return _summary(model, **options)
