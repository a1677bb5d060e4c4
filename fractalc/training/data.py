"""Datasets as in-memory float tensors, adapted to a model's input shape.

Sources (`--data`):
- ``digits``: scikit-learn's bundled 8x8 digits (offline), split 80/20 with a fixed seed;
- a CIFAR-10 / CIFAR-100 directory in the standard Python-pickle layout (``data_batch_1..5`` +
  ``test_batch``, or ``train`` + ``test`` with ``fine_labels``);
- an ImageFolder-style directory: ``train/<class>/*`` and ``test/<class>/*`` (or ``val/``).

Images are resized to the model's (H, W) and to its channel count (grayscale repeated to 3, RGB
averaged to 1), then normalised with the training set's per-channel mean and std. CIFAR and
image folders get the standard augmentation (random crop with 4-pixel padding, horizontal
flip), drawn from a generator seeded per epoch so a resumed run sees the same batches.
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import FractalcError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".webp"}


@dataclass
class Dataset:
    name: str
    train_x: torch.Tensor  # N x C x H x W float32, normalised
    train_y: torch.Tensor  # N int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: int
    augment: bool


def _adapt(x: np.ndarray, shape: tuple[int, int, int]) -> torch.Tensor:
    """N x c x h x w uint8/float in [0, 1] -> N x C x H x W at the model's shape."""
    t = torch.as_tensor(x, dtype=torch.float32)
    c, h, w = shape
    if t.shape[1] != c:
        if t.shape[1] == 1:
            t = t.repeat(1, c, 1, 1)
        elif c == 1:
            t = t.mean(1, keepdim=True)
        else:
            raise FractalcError(f"cannot adapt {t.shape[1]}-channel images to a {c}-channel input")
    if tuple(t.shape[2:]) != (h, w):
        t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
    return t.contiguous()


def _digits():
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise FractalcError("the digits data set needs scikit-learn: pip install scikit-learn") from exc
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(y))
    cut = int(0.8 * len(y))
    return x[perm[:cut]], y[perm[:cut]], x[perm[cut:]], y[perm[cut:]], 10, False


# ----------------------------------------------------------------------------- CIFAR pickles
#
# A CIFAR batch is a pickle, and unpickling runs whatever callable the file names: a crafted
# data_batch_1 would run code under `train` and `eval`. `_CifarUnpickler` resolves only the
# globals the CIFAR format needs (numpy arrays and dtypes, as numpy 1.x and 2.x pickle them, and
# `_codecs.encode`, which protocol-2 pickles use for bytes) and every callable it hands out checks
# its arguments; any other global is refused before anything is called. Arrays of object dtype
# (which would hold arbitrary objects) are refused, and the result is checked to hold only
# dicts, lists, tuples, strings, bytes, numbers and numpy arrays of plain dtypes.

MAX_BATCH_BYTES = 1 << 30  # CIFAR-100's train file, the largest, is about 160 MB
MAX_IMAGE_BYTES = 64 << 20  # one image file of an image folder


class _Refused(Exception):
    """Something a CIFAR batch never holds (the message says what)."""


def _plain_dtype(dt) -> np.dtype:
    dt = np.dtype(dt)
    if dt.hasobject:
        raise _Refused("an array of Python objects (object dtype)")
    return dt


def _numpy_globals() -> dict[tuple[str, str], object]:
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric

    def reconstruct(cls, shape, dtype):
        if cls is not np.ndarray:
            raise _Refused(f"an array of class {getattr(cls, '__name__', cls)!r}")
        return multiarray._reconstruct(cls, shape, dtype)

    def make_dtype(*args):
        return _plain_dtype(np.dtype(*args))

    def scalar(dtype, *args):
        return multiarray.scalar(_plain_dtype(dtype), *args)

    def frombuffer(buf, dtype, shape, order):
        return numeric._frombuffer(buf, _plain_dtype(dtype), shape, order)

    def encode(text, encoding="utf-8"):
        # protocol 2 writes bytes as _codecs.encode(str, "latin1"); nothing else
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise _Refused(f"_codecs.encode with encoding {encoding!r}")
        return text.encode("latin1")

    table: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): make_dtype,
                                            ("_codecs", "encode"): encode}
    # real CIFAR files (numpy 1.x) name numpy.core; numpy 2 writes numpy._core
    for core in ("numpy.core", "numpy._core"):
        table[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        table[(f"{core}.multiarray", "scalar")] = scalar
        table[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return table


class _CifarUnpickler(pickle.Unpickler):
    _globals: dict | None = None

    def find_class(self, module, name):
        if _CifarUnpickler._globals is None:
            _CifarUnpickler._globals = _numpy_globals()
        found = _CifarUnpickler._globals.get((module, name))
        if found is None:
            raise _Refused(f"the global {module}.{name}")
        return found

    def persistent_load(self, pid):
        raise _Refused("a persistent reference")


def _check_plain(obj) -> None:
    """Refuse anything but the containers, scalars and plain arrays a CIFAR batch holds."""
    stack, seen = [obj], 0
    while stack:
        o = stack.pop()
        seen += 1
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, (list, tuple)):
            stack.extend(o)
        elif isinstance(o, np.ndarray) or isinstance(o, np.generic):
            _plain_dtype(o.dtype)
        elif not isinstance(o, (str, bytes, bytearray, int, float, complex, bool, type(None))):
            raise _Refused(f"an object of type {type(o).__name__}")


def read_cifar_batch(path: Path) -> dict:
    """A CIFAR batch file, loaded without running anything it names (see above)."""
    import io

    from ..fileio import FileRefused, read_limited
    try:
        raw = read_limited(path, MAX_BATCH_BYTES)
    except FileRefused as exc:
        raise FractalcError(f"cannot read CIFAR batch {path}: {exc.reason}") from None
    try:
        d = _CifarUnpickler(io.BytesIO(raw), encoding="bytes").load()
        _check_plain(d)
    except _Refused as exc:
        raise FractalcError(f"refusing CIFAR batch {path}: {exc} is not allowed in a CIFAR batch "
                            "(only dicts, lists, strings, numbers and numeric numpy arrays are "
                            "loaded from a data folder; nothing a pickle names is run)") from None
    except Exception as exc:  # a broken download: say which file
        raise FractalcError(f"cannot read CIFAR batch {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(d, dict):
        raise FractalcError(f"{path} is not a CIFAR batch (not a dict)")
    return d


def _cifar(root: Path):
    def batch(p: Path):
        d = read_cifar_batch(p)
        data = d.get(b"data")
        labels = d.get(b"labels", d.get(b"fine_labels"))
        if data is None or labels is None:
            raise FractalcError(f"{p} is not a CIFAR batch (no data/labels)")
        return np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)

    if (root / "data_batch_1").exists():
        parts = [batch(root / f"data_batch_{i}") for i in range(1, 6) if (root / f"data_batch_{i}").exists()]
        test = batch(root / "test_batch")
    else:
        parts = [batch(root / "train")]
        test = batch(root / "test")
    x = np.concatenate([p[0] for p in parts]).astype(np.float32) / 255
    y = np.concatenate([p[1] for p in parts])
    classes = int(max(y.max(), test[1].max()) + 1)
    return x, y, test[0].astype(np.float32) / 255, test[1], classes, True


def _image(f: Path, root: Path):
    """One image of an image folder as a 3 x 32 x 32 float array in [0, 1]. Refuses a file that
    leads (through symlinks) outside the data folder, that is not a regular file, that is over
    `MAX_IMAGE_BYTES`, or whose pixel count trips pillow's decompression-bomb limit."""
    import io
    import warnings

    from PIL import Image

    from ..fileio import FileRefused, read_limited
    if not f.resolve().is_relative_to(root.resolve()):
        raise FractalcError(f"refusing image {f}: it is a symlink to a file outside the data folder {root}")
    try:
        raw = read_limited(f, MAX_IMAGE_BYTES)
    except FileRefused as exc:
        raise FractalcError(f"cannot read image {f}: {exc.reason}") from None
    try:
        with warnings.catch_warnings():
            # pillow only warns between MAX_IMAGE_PIXELS and twice that: refuse those too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(raw)).convert("RGB").resize((32, 32))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise FractalcError(f"refusing image {f}: {exc}") from None
    except Exception as exc:
        raise FractalcError(f"cannot read image {f}: {exc}") from None
    return np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255


def _folder(root: Path):

    split_test = next((root / s for s in ("test", "val") if (root / s).is_dir()), None)
    if not (root / "train").is_dir() or split_test is None:
        raise FractalcError(f"{root}: an image folder needs train/<class>/ and test/<class>/ (or val/)")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not classes:
        raise FractalcError(f"{root / 'train'} has no class folders")

    def load(split: Path):
        xs, ys = [], []
        for k, cls in enumerate(classes):
            for f in sorted((split / cls).glob("*")) if (split / cls).is_dir() else []:
                if f.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                xs.append(_image(f, root))
                ys.append(k)
        if not xs:
            raise FractalcError(f"{split} holds no images")
        return np.stack(xs), np.asarray(ys, dtype=np.int64)

    x, y = load(root / "train")
    tx, ty = load(split_test)
    return x, y, tx, ty, len(classes), True


def load_data(spec: str, input_shape: tuple[int, int, int]) -> Dataset:
    """Load `spec` (``digits`` or a directory) at the model's input shape (C, H, W)."""
    if spec == "digits":
        raw, name = _digits(), "digits"
    else:
        root = Path(spec)
        if not root.is_dir():
            raise FractalcError(f"--data {spec!r}: not 'digits' and not a directory")
        if (root / "data_batch_1").exists() or (root / "train").is_file():
            raw, name = _cifar(root), f"cifar:{root}"
        else:
            raw, name = _folder(root), f"folder:{root}"
    x, y, tx, ty, classes, augment = raw
    x, tx = _adapt(x, input_shape), _adapt(tx, input_shape)
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    std = x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-3)
    return Dataset(name, (x - mean) / std, torch.as_tensor(y), (tx - mean) / std, torch.as_tensor(ty),
                   classes, augment)


def augment_batch(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, per image."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    out = torch.empty_like(x)
    for i in range(n):
        img = padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out[i] = img.flip(-1) if flip[i] else img
    return out
