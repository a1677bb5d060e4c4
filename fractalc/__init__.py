"""fractalc: an architecture DSL and graph compiler for binary fractal networks.

Importing this package is cheap: it never imports torch or onnx.
"""
__version__ = "0.1.0"
