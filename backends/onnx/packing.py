"""Bit packing of +-1 tensors into uint64 words: the one place that defines the layout.

Layout (docs/onnx-ops.md, section "Packing"; shared with the native runtime):

- a word is a uint64; bit j (LSB = bit 0) of word w holds channel ``64 * w + j``;
- bit value 1 means -1 (x < 0), 0 means +1 (x >= 0, so sign(0) = +1 and an all-zero word is
  +1 padding); NaN packs as 0 (+1), like the torch backend's ``where(x < 0, -1, 1)``;
- unused high bits of the last word are 0;
- activations are NHWC-packed: (N, H, W, ceil(C / 64));
- weights (C_out, C_in, kh, kw) are packed canonically as (C_out, kh, kw, ceil(C_in / 64)), or
  tightly as one bit stream (see `pack_weights_tight`), which is what ONNX files store.

Pure numpy; the words are built with ``np.packbits(bitorder="little")`` and read as little-endian
uint64, so the result does not depend on the host's byte order.
"""
from __future__ import annotations

import numpy as np

WORD = 64
_U64 = np.dtype("<u8")


_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def popcount(a: np.ndarray) -> np.ndarray:
    """Per-element popcount of a uint64 array (np.bitwise_count on numpy 2, a table before)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(a)
    a = np.ascontiguousarray(a, dtype=_U64)
    return _POP8[a.view(np.uint8)].reshape(a.shape + (8,)).sum(axis=-1, dtype=np.uint8)


def words(channels: int) -> int:
    """Number of uint64 words that hold `channels` bits."""
    return (channels + WORD - 1) // WORD


def _pack_last_axis(neg: np.ndarray) -> np.ndarray:
    """Pack a boolean array (True = -1) along its last axis into uint64 words."""
    c = neg.shape[-1]
    nw = words(c)
    padded = np.zeros(neg.shape[:-1] + (nw * WORD,), dtype=bool)
    padded[..., :c] = neg
    b = np.packbits(padded, axis=-1, bitorder="little")  # 8 bytes per word, LSB first
    return np.ascontiguousarray(b).view(_U64).astype(np.uint64).reshape(neg.shape[:-1] + (nw,))


def _unpack_last_axis(w: np.ndarray, channels: int) -> np.ndarray:
    """Inverse of `_pack_last_axis`: boolean (True = -1) with `channels` entries on the last axis."""
    w = np.ascontiguousarray(w, dtype=_U64)
    b = w.view(np.uint8).reshape(w.shape[:-1] + (w.shape[-1] * 8,))
    return np.unpackbits(b, axis=-1, bitorder="little")[..., :channels].astype(bool)


def pack_activations(x: np.ndarray) -> np.ndarray:
    """Float NCHW -> packed NHWC uint64 (N, H, W, ceil(C / 64)); bit 1 where x < 0."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"pack_activations needs an NCHW tensor, got shape {x.shape}")
    return _pack_last_axis(np.transpose(x < 0, (0, 2, 3, 1)))


def unpack_activations(p: np.ndarray, channels: int) -> np.ndarray:
    """Packed NHWC uint64 -> float32 NCHW of +-1 values with `channels` channels."""
    neg = _unpack_last_axis(p, channels)
    return np.transpose(np.where(neg, np.float32(-1), np.float32(1)), (0, 3, 1, 2))


def pack_weights(w: np.ndarray) -> np.ndarray:
    """Float (C_out, C_in, kh, kw) -> canonical packed (C_out, kh, kw, ceil(C_in / 64)) uint64."""
    w = np.asarray(w)
    if w.ndim != 4:
        raise ValueError(f"pack_weights needs a (C_out, C_in, kh, kw) tensor, got shape {w.shape}")
    return _pack_last_axis(np.transpose(w < 0, (0, 2, 3, 1)))


def pack_weights_tight(w: np.ndarray) -> np.ndarray:
    """Float (C_out, C_in, kh, kw) -> the tight bit stream stored in ONNX files.

    Bit t of the stream (bit t % 64 of word t // 64) is the weight (o, c, y, x) with
    ``t = ((o * kh + y) * kw + x) * C_in + c``: the canonical order with no padding between
    (o, y, x) runs; only the last word is zero-filled. Length ceil(C_out*kh*kw*C_in / 64).
    When C_in is a multiple of 64 the stream equals the canonical layout flattened.
    """
    w = np.asarray(w)
    flat = np.transpose(w < 0, (0, 2, 3, 1)).reshape(-1)
    return _pack_last_axis(flat)


def tight_to_canonical(stream: np.ndarray, c_out: int, c_in: int, kh: int, kw: int) -> np.ndarray:
    """Re-lay a tight weight stream out as (C_out, kh, kw, ceil(C_in / 64)) words."""
    n = c_out * kh * kw * c_in
    stream = np.asarray(stream).reshape(-1)
    if stream.shape[0] != words(n):
        raise ValueError(f"a tight stream of {n} weights has {words(n)} words, got {stream.shape[0]}")
    bits = _unpack_last_axis(stream, n).reshape(c_out, kh, kw, c_in)
    return _pack_last_axis(bits)


def unpack_weights(p: np.ndarray, c_in: int) -> np.ndarray:
    """Canonical packed weights -> float32 (C_out, C_in, kh, kw) of +-1 values."""
    neg = _unpack_last_axis(p, c_in)
    return np.transpose(np.where(neg, np.float32(-1), np.float32(1)), (0, 3, 1, 2))
