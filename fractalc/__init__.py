"""fractalc: an architecture DSL and graph compiler for binary fractal networks.

Importing this package is cheap: it never imports torch or onnx.
"""
from fractalc.version import __version__

__all__ = ["__version__", "build_torch"]


def build_torch(spec, **params):
    """Build a torch ``nn.Module`` from a spec path (imports torch on first use).

    ``params`` override spec parameters (``width=41``, ``dataset="cifar100"``); the special
    keywords ``seed`` and ``max_nodes`` are passed to the backend.
    """
    from fractalc.backends.torch import build_torch as _build

    return _build(spec, **params)
