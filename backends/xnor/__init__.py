"""Native XNOR/popcount runtime: bit-packing and binary convolution kernels (numpy in and out).

Importing this package loads the C++ extension ``_xnor`` (never torch). The packing layout is
pinned in docs/packing.md; the API is in :mod:`fractalc.backends.xnor.kernels`.
"""
from .kernels import (
    BinaryConv2d,
    available_isas,
    binary_conv2d,
    default_threads,
    mean_join,
    pack_activations,
    pack_thresholded,
    pack_weights,
    pointwise_conv,
    resolve_isa,
    thresholds_from_affine,
    unpack_activations,
)

__all__ = [
    "BinaryConv2d",
    "available_isas",
    "binary_conv2d",
    "default_threads",
    "mean_join",
    "pack_activations",
    "pack_thresholded",
    "pack_weights",
    "pointwise_conv",
    "resolve_isa",
    "thresholds_from_affine",
    "unpack_activations",
]
