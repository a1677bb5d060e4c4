"""Python API of the XNOR/popcount kernels: numpy in, numpy out, no torch.

Layout (pinned in docs/packing.md): 64-bit words, bit ``j`` of word ``w`` is channel ``64*w + j``;
bit 1 means -1 (``x < 0``), bit 0 means +1 (``x >= 0``, so sign(0) = +1); unused high bits of the
last word are 0. Activations are packed NHWC: ``(N, H, W, ceil(C/64))`` uint64; weights
``(C_out, kh, kw, ceil(C_in/64))`` uint64. Over ``n`` real channels, ``dot = n - 2*popcount(a ^ b)``.

ISA: every call takes ``isa=None|"portable"|"avx2"|"avx512"|"neon"`` (neon: AArch64 builds);
``None`` means the environment variable ``FRACTALC_ISA`` if set, else the best path this CPU runs.
All paths give identical results. Threads: ``threads=None`` means ``FRACTALC_THREADS`` if set, else
the CPUs this process may use; results are identical for any thread count. Worker threads are
persistent; after a call they spin ``$FRACTALC_SPIN_US`` microseconds (default 200) before
sleeping, so back-to-back layers do not pay a wake-up. ``$FRACTALC_XNOR_LIB`` loads another build
of the extension (the sanitizer build of ``sanitize.sh``).
"""
from __future__ import annotations

import os
from typing import Literal

import numpy as np

from fractalc.errors import BackendUnavailable, ModelError


def _load_extension():
    # FRACTALC_XNOR_LIB points at another build of the extension (the sanitizer build of
    # backends/xnor/sanitize.sh); normally the installed one is used.
    path = os.environ.get("FRACTALC_XNOR_LIB")
    if path:
        import importlib.util

        spec = importlib.util.spec_from_file_location("_xnor", path)
        if spec is None or spec.loader is None:
            raise BackendUnavailable(f"FRACTALC_XNOR_LIB={path!r} is not a loadable extension")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    try:
        from . import _xnor as mod
    except ImportError as e:  # pragma: no cover - only without a built extension
        raise BackendUnavailable(
            f"the native XNOR runtime is not built ({e})",
            hint='reinstall the package: pip install --no-build-isolation -e ".[all]"',
        ) from e
    return mod


_xnor = _load_extension()

# neon is a known name only where the extension was built for AArch64 (elsewhere: unknown)
ISAS = ("portable", "avx2", "avx512") + (("neon",) if "neon" in _xnor.available_isas() else ())
OutputKind = Literal["int32", "float", "bits"]


def available_isas() -> list[str]:
    """The kernel paths this CPU can run, slowest first (``portable`` is always there)."""
    return list(_xnor.available_isas())


def resolve_isa(isa: str | None = None) -> str:
    """The path a call will use: ``isa``, else ``$FRACTALC_ISA``, else the best available.

    Raises BackendUnavailable for an unknown name or a path this CPU lacks.
    """
    name = isa if isa is not None else os.environ.get("FRACTALC_ISA") or _xnor.best_isa()
    if name not in ISAS:
        raise BackendUnavailable(f"unknown ISA {name!r}: expected one of {', '.join(ISAS)}")
    if name not in available_isas():
        raise BackendUnavailable(
            f"this CPU cannot run the {name} kernels (it supports {', '.join(available_isas())})")
    return name


def default_threads() -> int:
    """``$FRACTALC_THREADS`` if set, else the number of CPUs this process may run on."""
    env = os.environ.get("FRACTALC_THREADS")
    if env:
        return _threads(int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _threads(threads: int | None) -> int:
    if threads is None:
        return default_threads()
    if not isinstance(threads, (int, np.integer)) or not 1 <= threads <= 1024:
        raise ModelError(f"threads must be an integer in 1..1024, got {threads!r}")
    return int(threads)


def _words(c: int) -> int:
    return (c + 63) // 64


def _sign_float32(x: np.ndarray) -> np.ndarray:
    # Converting float64 to float32 could turn a tiny negative into -0.0 (which packs as +1):
    # take the sign in the input's own precision first.
    if x.dtype == np.float32:
        return np.ascontiguousarray(x)
    if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
        raise ModelError(f"cannot pack an array of dtype {x.dtype}: expected a real number type")
    return np.where(x < 0, np.float32(-1), np.float32(1))


def pack_activations(x: np.ndarray, layout: Literal["nchw", "nhwc"] = "nchw",
                     threads: int | None = None, isa: str | None = None) -> np.ndarray:
    """Pack a 4-D activation tensor into NHWC words ``(N, H, W, ceil(C/64))`` uint64.

    ``x`` is ``(N, C, H, W)`` (``layout="nchw"``) or ``(N, H, W, C)`` (``"nhwc"``), any real
    dtype (float32 is packed without a copy when contiguous). Bit 1 where ``x < 0``.
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ModelError(f"pack_activations needs a 4-D array, got shape {x.shape}")
    if layout not in ("nchw", "nhwc"):
        raise ModelError(f"layout must be 'nchw' or 'nhwc', got {layout!r}")
    if min(x.shape) <= 0:
        raise ModelError(f"cannot pack an empty array of shape {x.shape}")
    xs = _sign_float32(x)
    t = _threads(threads)
    if layout == "nhwc":
        n, h, w, c = xs.shape
        out = np.empty((n, h, w, _words(c)), np.uint64)
        _xnor.pack_nhwc(xs.reshape(n * h * w, c), out.reshape(n * h * w, _words(c)), t, resolve_isa(isa))
    else:
        n, c, h, w = xs.shape
        out = np.empty((n, h, w, _words(c)), np.uint64)
        _xnor.pack_nchw(xs.reshape(n, c, h * w), out.reshape(n, h * w, _words(c)), t, resolve_isa(isa))
    return out


def pack_thresholded(x: np.ndarray, threshold: np.ndarray, flip: np.ndarray,
                     threads: int | None = None, isa: str | None = None) -> np.ndarray:
    """Pack NHWC float32 ``x`` ``(N, H, W, C)`` with a per-channel threshold (a BatchNorm folded
    into ``PackBits``): bit 1 (-1) where ``x < threshold[c]``, or ``x > threshold[c]`` where
    ``flip[c]``; NaN packs +1. Same bytes on every ISA."""
    if not (isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim == 4 and min(x.shape) > 0):
        raise ModelError("pack_thresholded needs a non-empty 4-D float32 NHWC array")
    n, h, w, c = x.shape
    t = np.ascontiguousarray(threshold, np.float32)
    f = np.ascontiguousarray(np.asarray(flip) != 0, np.uint8)
    if t.shape != (c,) or f.shape != (c,):
        raise ModelError(f"threshold and flip need shape ({c},), got {t.shape} and {f.shape}")
    out = np.empty((n, h, w, _words(c)), np.uint64)
    _xnor.pack_nhwc_threshold(_channel_rows(x), c, t, f, out.reshape(n * h * w, _words(c)),
                              _threads(threads), resolve_isa(isa))
    return out


def _channel_rows(x: np.ndarray) -> np.ndarray:
    """(pixels, stride) float32 rows whose first C entries are the pixels of NHWC `x`: `x`
    itself when contiguous, its base when `x` is a channel prefix ``base[..., :C]`` of a
    contiguous array (a growing dense-block buffer: no copy), else a contiguous copy."""
    n, h, w, c = x.shape
    if x.flags.c_contiguous:
        return x.reshape(n * h * w, c)
    b = x.base
    if (isinstance(b, np.ndarray) and b.flags.c_contiguous and b.dtype == x.dtype and b.ndim == 4
            and b.shape[:3] == x.shape[:3] and b.strides == x.strides
            and b.__array_interface__["data"][0] == x.__array_interface__["data"][0]):
        return b.reshape(n * h * w, b.shape[3])
    return np.ascontiguousarray(x).reshape(n * h * w, c)


def unpack_activations(packed: np.ndarray, channels: int,
                       layout: Literal["nchw", "nhwc"] = "nchw") -> np.ndarray:
    """Inverse of :func:`pack_activations` up to sign: float32 +1/-1 in the requested layout."""
    packed = _check_packed(packed, channels, "packed activations")
    n, h, w, cw = packed.shape
    bits = np.unpackbits(packed.astype("<u8").view(np.uint8).reshape(n, h, w, cw * 8),
                         axis=-1, bitorder="little")[..., :channels]
    vals = (1 - 2 * bits.astype(np.int8)).astype(np.float32)
    return np.ascontiguousarray(vals.transpose(0, 3, 1, 2)) if layout == "nchw" else vals


def pack_weights(w: np.ndarray) -> np.ndarray:
    """Pack float weights ``(C_out, C_in, kh, kw)`` into ``(C_out, kh, kw, ceil(C_in/64))`` uint64.

    Bit 1 where ``w < 0`` (sign(0) = +1, as for activations).
    """
    w = np.asarray(w)
    if w.ndim != 4 or min(w.shape) <= 0:
        raise ModelError(f"pack_weights needs a non-empty (C_out, C_in, kh, kw) array, got {w.shape}")
    co, ci, kh, kw = w.shape
    neg = np.zeros((co, kh, kw, _words(ci) * 64), np.uint8)
    neg[..., :ci] = (w < 0).transpose(0, 2, 3, 1)
    by = np.packbits(neg, axis=-1, bitorder="little")
    return np.ascontiguousarray(by).view("<u8").astype(np.uint64).reshape(co, kh, kw, _words(ci))


def _check_packed(a: np.ndarray, channels: int, what: str) -> np.ndarray:
    if not isinstance(a, np.ndarray) or a.dtype != np.uint64 or a.ndim != 4:
        raise ModelError(f"{what} must be a 4-D uint64 array, got "
                         f"{getattr(a, 'dtype', type(a).__name__)} {getattr(a, 'shape', '')}")
    if channels <= 0 or a.shape[-1] != _words(channels):
        raise ModelError(f"{what} have {a.shape[-1]} words per pixel; {channels} channels need "
                         f"{_words(channels)}")
    if min(a.shape) <= 0:
        raise ModelError(f"{what} are empty: shape {a.shape}")
    if channels % 64 and (a[..., -1] >> np.uint64(channels % 64)).any():
        raise ModelError(f"{what} have bits set above channel {channels - 1} in the last word "
                         "(unused bits must be 0, see docs/packing.md)")
    return np.ascontiguousarray(a)


def _float_buffer(a, shape, what: str) -> np.ndarray:
    """`a` if it is a C-contiguous float32 array of `shape` (an ``out=`` or ``residual=``
    argument), a new one when `a` is None; ModelError otherwise."""
    if a is None:
        return np.empty(shape, np.float32)
    if not (isinstance(a, np.ndarray) and a.dtype == np.float32 and a.shape == tuple(shape)
            and a.flags.c_contiguous):
        raise ModelError(f"{what} must be a C-contiguous float32 array of shape {tuple(shape)}")
    return a


def thresholds_from_affine(mul: np.ndarray, bias: np.ndarray,
                           max_abs_dot: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer ``(threshold, flip)`` equal to the float32 sign of ``fmaf(dot, mul, bias)``.

    For every integer ``|dot| <= max_abs_dot`` and channel ``c``, with ``y`` the float output of
    the kernels (``dot * mul[c] + bias[c]`` rounded once to float32): ``(dot < threshold[c]) !=
    flip[c]`` is exactly ``y < 0`` (output bit 1, i.e. -1; ``y == 0`` gives +1). ``flip[c] = 1``
    where ``mul[c] < 0``.

    Exact, not approximate: the real value ``dot * mul + bias`` is a multiple of 2^-149 (the
    float32 subnormal step), so when it is nonzero it cannot round to zero, and ``y < 0`` is
    ``dot * mul + bias < 0``; that test is evaluated for every dot in float64, where the product
    is exact (24-bit by < 25-bit) and the sum's rounding keeps its sign.
    """
    mul = np.asarray(mul, np.float32).reshape(-1)
    bias = np.asarray(bias, np.float32).reshape(-1)
    if mul.shape != bias.shape:
        raise ModelError(f"mul and bias differ in length: {mul.size} vs {bias.size}")
    if not (np.isfinite(mul).all() and np.isfinite(bias).all()):
        raise ModelError("mul and bias must be finite to derive integer thresholds")
    k = int(max_abs_dot)
    if not 0 <= k < 2 ** 24:
        raise ModelError(f"max_abs_dot must be in [0, 2^24), got {max_abs_dot}")
    d = np.arange(-k, k + 1, dtype=np.float64)
    count = np.empty(mul.size, np.int64)
    step = max(1, (1 << 22) // d.size)
    for s in range(0, mul.size, step):
        y = d[None, :] * mul[s:s + step, None].astype(np.float64) + bias[s:s + step, None].astype(np.float64)
        count[s:s + step] = (y < 0).sum(axis=1)
    # y is monotonic in dot, so the negative set is a prefix (mul >= 0) or a suffix (mul < 0)
    # of the dot range: counting it is enough.
    flip = (mul < 0).astype(np.int32)
    thr = np.where(flip == 1, k + 1 - count, -k + count).astype(np.int32)
    return thr, flip


class BinaryConv2d:
    """A binary convolution with its weights prepared once (re-laid out for the kernels).

    Computes, for packed input ``x`` ``(N, H, W, ceil(C_in/64))``, the integer
    ``dot = conv(sign(x), sign(w))`` with stride ``stride`` and ``padding`` pixels per side:
    ``padding_mode="zero"`` pads sign(x) with 0 (exactly torch's ``F.conv2d`` of ``sign(x)``),
    ``"one"`` pads it with +1. Output (NHWC, ``Ho = (H + 2p - kh)//stride + 1``):

    - ``"int32"``: ``dot`` as int32 ``(N, Ho, Wo, C_out)``;
    - ``"float"``: float32 ``fmaf(dot, mul[c], bias[c])`` (one rounding) ``(N, Ho, Wo, C_out)``,
      for ``kh * kw * C_in <= 2^24``;
    - ``"bits"``: packed ``(N, Ho, Wo, ceil(C_out/64))`` uint64 with bit 1 (-1) where
      ``(dot < threshold[c]) != flip[c]`` (see :func:`thresholds_from_affine`).

    ``groups > 1`` (weights ``(C_out, kh, kw, ceil(C_in/groups/64))``; output channel o reads
    input channels ``[g*C_in/groups, (g+1)*C_in/groups)``, g = o // (C_out/groups)) or
    ``dilation > 1`` (``Ho = (H + 2p - dilation*(kh-1) - 1)//stride + 1``) run the grouped plan
    (src/conv_grouped.cpp): per group on this ISA's dense kernel when dilation is 1, a direct
    popcount loop otherwise; the same bytes either way.
    """

    def __init__(self, weights: np.ndarray, in_channels: int, *, stride: int = 1, padding: int = 0,
                 padding_mode: Literal["zero", "one"] = "zero", output: OutputKind = "int32",
                 mul=None, bias=None, threshold=None, flip=None,
                 threads: int | None = None, isa: str | None = None, groups: int = 1, dilation: int = 1):
        for name, v in (("groups", groups), ("dilation", dilation)):
            if not isinstance(v, (int, np.integer)) or not 1 <= v <= 1 << 16:
                raise ModelError(f"{name} must be an integer in 1..65536, got {v!r}")
        if in_channels % groups:
            raise ModelError(f"groups={groups} must divide in_channels={in_channels}")
        weights = _check_packed(weights, in_channels // groups, "packed weights")
        if weights.shape[0] % groups:
            raise ModelError(f"groups={groups} must divide the {weights.shape[0]} output channels")
        self.groups, self.dilation = int(groups), int(dilation)
        for name, v in (("stride", stride), ("padding", padding)):
            if not isinstance(v, (int, np.integer)) or v < (1 if name == "stride" else 0) or v > 4096:
                raise ModelError(f"{name} must be an integer in {'1' if name == 'stride' else '0'}..4096, "
                                 f"got {v!r}")
        if padding_mode not in ("zero", "one"):
            raise ModelError(f"padding_mode must be 'zero' or 'one', got {padding_mode!r}")
        self.out_channels, self.kh, self.kw, _ = weights.shape
        self.in_channels, self.stride, self.padding = int(in_channels), int(stride), int(padding)
        self.padding_mode, self.output = padding_mode, output
        self.threads = _threads(threads)
        self.isa = resolve_isa(isa)
        if output == "float":
            if mul is None or bias is None:
                raise ModelError("output='float' needs mul and bias")
            self._mul = self._per_channel(mul, np.float32, "mul")
            self._bias = self._per_channel(bias, np.float32, "bias")
        elif output == "bits":
            if threshold is None or flip is None:
                raise ModelError("output='bits' needs threshold and flip (see thresholds_from_affine)")
            self._thr = self._per_channel(threshold, np.int32, "threshold")
            self._flip = (self._per_channel(flip, np.int32, "flip") != 0).astype(np.int32)
        elif output != "int32":
            raise ModelError(f"output must be 'int32', 'float' or 'bits', got {output!r}")
        try:
            if self.groups == 1 and self.dilation == 1:
                self._plan = _xnor.ConvPlan(weights, self.in_channels, self.stride, self.padding,
                                            padding_mode == "zero")
            else:
                self._plan = _xnor.GroupedConvPlan(weights, self.in_channels, self.groups, self.stride,
                                                   self.padding, self.dilation, padding_mode == "zero")
        except ValueError as e:  # the native layer's own guards (sizes beyond int32 counts)
            raise ModelError(str(e)) from e

    def _per_channel(self, v, dtype, name) -> np.ndarray:
        a = np.asarray(v)
        if a.shape != (self.out_channels,):
            raise ModelError(f"{name} needs shape ({self.out_channels},), got {a.shape}")
        if np.issubdtype(dtype, np.integer):
            if not np.issubdtype(a.dtype, np.integer):
                raise ModelError(f"{name} must be integers, got {a.dtype}")
            if a.size and (a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max):
                raise ModelError(f"{name} values must fit in int32")
        return np.ascontiguousarray(a, dtype=dtype)

    def out_shape(self, n: int, h: int, w: int) -> tuple[int, int, int, int]:
        """Shape of the result for an input of ``n`` images of ``h x w`` pixels."""
        p, d = self.padding, self.dilation
        kh, kw = d * (self.kh - 1) + 1, d * (self.kw - 1) + 1  # the dilated extent
        if h + 2 * p < kh or w + 2 * p < kw:
            raise ModelError(f"input {h}x{w} is smaller than the {kh}x{kw} (dilated) kernel "
                             f"after padding {p}")
        ho, wo = (h + 2 * p - kh) // self.stride + 1, (w + 2 * p - kw) // self.stride + 1
        c = _words(self.out_channels) if self.output == "bits" else self.out_channels
        return n, ho, wo, c

    def __call__(self, x: np.ndarray, *, check: bool = True, residual: np.ndarray | None = None,
                 sign_bits: bool = False, out: np.ndarray | None = None, out_offset: int | None = None):
        """Run on packed input ``x``; ``check=False`` skips the unused-bit scan (trusted input).

        Fused epilogues of the float output (each exactly the separate op it replaces):
        ``residual`` (float32, the output's shape) is added after the affine map, rounded on its
        own as a graph's ``Add`` would; ``sign_bits=True`` also returns the packed sign of the
        final value (``pack_activations(y, layout="nhwc")``), as ``(y, bits)``. ``out`` is a
        float32 C-contiguous array of the output's shape to write into; it may be ``residual``
        itself (each element is read before it is written). With ``out_offset``, ``out`` may be
        wider, ``(N, Ho, Wo, C)``: the result goes to its channels ``[out_offset, out_offset +
        C_out)`` (a slice of a dense block's buffer) and ``out`` is returned whole.
        """
        if check:
            x = _check_packed(x, self.in_channels, "packed input")
        elif not (isinstance(x, np.ndarray) and x.dtype == np.uint64 and x.ndim == 4
                  and x.shape[-1] == _words(self.in_channels) and min(x.shape) > 0):
            raise ModelError(f"packed input must be (N, H, W, {_words(self.in_channels)}) uint64")
        x = np.ascontiguousarray(x)
        shape = self.out_shape(*x.shape[:3])
        if (residual is not None or sign_bits or out is not None) and self.output != "float":
            raise ModelError("residual, sign_bits and out need output='float'")
        if residual is not None:
            _float_buffer(residual, shape, "residual")
        try:
            if self.output == "int32":
                y = np.empty(shape, np.int32)
                self._plan.run_int32(x, y, self.threads, self.isa)
            elif self.output == "float":
                offset = 0
                if out_offset is None:
                    y = _float_buffer(out, shape, "out")
                else:
                    offset = int(out_offset)
                    if not (isinstance(out, np.ndarray) and out.dtype == np.float32 and out.flags.c_contiguous
                            and out.shape[:3] == shape[:3] and 0 <= offset <= out.shape[3] - shape[3]):
                        raise ModelError(f"out with out_offset={out_offset} must be a C-contiguous float32 "
                                         f"array {shape[:3]} + (C,) with C >= {offset + shape[3]}")
                    y = out
                bits = np.zeros(shape[:3] + (_words(self.out_channels),), np.uint64) if sign_bits else None
                self._plan.run_affine(x, y, offset, self._mul, self._bias, residual, bits, self.threads, self.isa)
                if sign_bits:
                    return y, bits
            else:
                y = np.zeros(shape, np.uint64)
                self._plan.run_bits(x, y, self._thr, self._flip, self.threads, self.isa)
        except ValueError as e:
            raise ModelError(str(e)) from e
        return y


def pointwise_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, *, pool: bool | str = False,
                   scale: np.ndarray | None = None, shift: np.ndarray | None = None, relu: bool = False,
                   threads: int | None = None, isa: str | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Float 1x1 convolution of channels-last ``x`` ``(N, H, W, C)``: ``p @ w + b`` per pixel
    (``w`` ``(C, C_out)``, ``b`` ``(C_out,)``, float32), where ``p`` is ``x`` after an optional
    prologue, in this order: ``x * scale[c] + shift[c]`` (a BatchNorm), a 2x2 stride-2 pool
    (``pool=True`` or ``"avg"``, or ``"max"``; output ``(N, H//2, W//2, C_out)``), ReLU. Covers
    Bi-Real's downsampling shortcut (avgpool, conv, its BN folded into ``w`` and ``b``) and
    DenseNet's transition (BN, max pool, ReLU, conv).

    Every ISA path gives the same bytes: the BN multiplies then adds (two roundings), the average
    pool adds row by row (torch's order) then multiplies by 0.25, and each output accumulates
    ``fma`` over ascending input channels from 0, adding the bias last.
    """
    for name, a, nd in (("x", x, 4), ("w", w, 2), ("b", b, 1)):
        if not (isinstance(a, np.ndarray) and a.dtype == np.float32 and a.ndim == nd):
            raise ModelError(f"pointwise_conv: {name} must be a {nd}-D float32 array")
    n, h, wd, c = x.shape
    if w.shape[0] != c or b.shape != (w.shape[1],) or min(x.shape) < 1 or w.shape[1] < 1:
        raise ModelError(f"pointwise_conv: x {x.shape}, w {w.shape} and b {b.shape} do not fit "
                         "(w must be (C_in, C_out), b (C_out,))")
    kinds = {False: 0, None: 0, True: 1, "avg": 1, "max": 2}
    if not isinstance(pool, (bool, str, type(None))) or pool not in kinds:
        raise ModelError(f"pointwise_conv: pool must be False, True, 'avg' or 'max', got {pool!r}")
    if kinds[pool] and (h < 2 or wd < 2):
        raise ModelError(f"pointwise_conv: a 2x2 pool needs at least 2x2 pixels, got {h}x{wd}")
    if (scale is None) != (shift is None):
        raise ModelError("pointwise_conv: scale and shift go together")
    if scale is not None:
        scale, shift = (np.ascontiguousarray(v, np.float32) for v in (scale, shift))
        if scale.shape != (c,) or shift.shape != (c,):
            raise ModelError(f"pointwise_conv: scale and shift need shape ({c},)")
    shape = (n, h // 2, wd // 2, w.shape[1]) if kinds[pool] else (n, h, wd, w.shape[1])
    out = _float_buffer(out, shape, "pointwise_conv: out")
    try:
        _xnor.pointwise_conv(np.ascontiguousarray(x), kinds[pool], scale, shift, bool(relu),
                             np.ascontiguousarray(w), np.ascontiguousarray(b), out, _threads(threads),
                             resolve_isa(isa))
    except ValueError as e:
        raise ModelError(str(e)) from e
    return out


def mean_join(xs, divisor, *, sign_bits: bool = False, out: np.ndarray | None = None,
              threads: int | None = None, isa: str | None = None):
    """A fractal join: ``((xs[0] + xs[1]) + ...) / divisor`` on equally shaped float32 arrays
    (channels last), each operation rounded once in that order (the lowered graph's Sum, then
    Div: a true division). ``sign_bits=True`` also returns the packed sign of the result
    (``pack_activations(y, layout="nhwc")``) as ``(y, bits)``. ``out`` (float32, C-contiguous,
    the inputs' shape) may be ``xs[0]``. Same bytes on every ISA."""
    xs = list(xs)
    if not xs or not all(isinstance(x, np.ndarray) and x.dtype == np.float32 and x.ndim >= 2 for x in xs):
        raise ModelError("mean_join: needs one or more float32 arrays of rank >= 2")
    shape = xs[0].shape
    if any(x.shape != shape for x in xs) or min(shape) < 1:
        raise ModelError(f"mean_join: inputs must share one non-empty shape, got {[x.shape for x in xs]}")
    out = _float_buffer(out, shape, "mean_join: out")
    c = shape[-1]
    flat = [np.ascontiguousarray(x).reshape(-1, c) for x in xs]
    bits = np.empty(shape[:-1] + (_words(c),), np.uint64) if sign_bits else None
    try:
        _xnor.mean_join(flat, float(np.float32(divisor)), out.reshape(-1, c),
                        None if bits is None else bits.reshape(-1, _words(c)), _threads(threads), resolve_isa(isa))
    except ValueError as e:
        raise ModelError(str(e)) from e
    return (out, bits) if sign_bits else out


def binary_conv2d(x: np.ndarray, weights: np.ndarray, in_channels: int, **kwargs) -> np.ndarray:
    """One-shot :class:`BinaryConv2d` (prepares the weights on every call); same arguments."""
    return BinaryConv2d(weights, in_channels, **kwargs)(x)
