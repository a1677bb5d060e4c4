"""Weights files: safetensors with fractalc's provenance, and torch state_dict files (``.pt``).

A base module (no compiler, IR or backend import), so every layer that reads ``--weights``
uses the same reader: the ONNX backend (``compile --weights``), the torch backend
(``--target torch-state --weights``), training and ``eval``.

**Writing** (`write`): safetensors, through the ``safetensors`` package (its canonical header
and alignment), atomically (`fileio.atomic_write`). Metadata is safetensors' ``__metadata__``
(a str -> str map); `provenance` fills it from a compiled spec:

    format            "fractalc-weights"
    format_version    "1"
    fractalc_version  the version that wrote the file
    spec              the spec's file name;  spec_sha256: sha256 of its text
    network           the network's name;    column: JSON, null or the fractal column
    overrides         JSON object of the --set overrides
    parameters        JSON list of [state_dict key, shape, role] in graph order, the role
                      from the op table ("float", "binary", "bn", "buffer")

plus any extra string keys a writer adds (training adds ``mode``).

**Reading** (`read`): the file must be a regular file of at most `max_weights_bytes` (as for
every input, `fileio.read_limited`). A safetensors file is parsed here, strictly, before any
tensor is made: the 8-byte header length must be at most `MAX_HEADER_BYTES` and inside the
file; the header must be a JSON object whose entries have a known dtype (F64, F32, F16, BF16,
I64, I32), a shape of non-negative integers and data offsets whose length is exactly the
shape's bytes, the tensors tiling the data section with no gap or overlap, and ``__metadata__``
must map strings to strings. Every refusal is a `ModelError` that says what is wrong. (The
``safetensors`` package would refuse most of the same files, with less precise messages; this
parser needs only numpy, so reading ``--weights`` for an ONNX export needs no torch.)
Anything else is read as a torch file with ``torch.load(weights_only=True)``: a state_dict
(tensors and plain containers only, never arbitrary objects) or a fractalc training checkpoint
(its ``model``), whose ``spec_sha256`` and ``overrides`` become the provenance.

**Checking** (`check_fit`, `check_provenance`): weights that do not fit a network are refused
naming the missing, unexpected and mis-shaped keys; a file whose provenance differs from the
network it is loaded into (another spec text, other overrides, another network name, a
parameter whose role changed) loads with a `FractalcWarning` naming the differences. A
mismatched spec sha256 is deliberately a warning, not an error: the text changes with
``fractalc fmt``, comments and unrelated rules, while the keys, shapes and roles (which are
checked) are what the weights depend on.
"""
from __future__ import annotations

import hashlib
import io
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import FractalcWarning, ModelError
from .fileio import FileRefused, atomic_write, read_limited

FORMAT = "fractalc-weights"
FORMAT_VERSION = 1
SUFFIX = ".safetensors"
#: The format tag of a training checkpoint (fractalc.training.checkpoint writes them).
CHECKPOINT_FORMAT = "fractalc-checkpoint"
#: Largest safetensors header accepted: ~150 bytes per tensor, so about 100,000 tensors.
MAX_HEADER_BYTES = 16 << 20
#: safetensors dtype -> (numpy dtype string, bytes per element). BF16 is widened to float32.
DTYPES = {"F64": ("<f8", 8), "F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2),
          "I64": ("<i8", 8), "I32": ("<i4", 4)}
_MAX_DIMS = 8


def max_weights_bytes() -> int:
    """Largest weights file read: twice the model-size limit (weights and optimizer state of a
    checkpoint), plus 64 MiB."""
    from .limits import max_model_bytes
    return 2 * max_model_bytes() + (64 << 20)


@dataclass
class Weights:
    """A weights file as read: `tensors` (name -> numpy array, in file order), `metadata`
    (the provenance: decoded JSON values; empty for a file without it), `kind`
    ("safetensors", "state_dict" or "checkpoint") and the file's `sha256`."""

    tensors: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    kind: str = "safetensors"
    sha256: str = ""
    path: str = ""

    def torch(self) -> dict:
        """The tensors as torch tensors (a state_dict for `load_state_dict`)."""
        import torch
        return {k: torch.from_numpy(v) for k, v in self.tensors.items()}


# --------------------------------------------------------------------------------- writing


def provenance(compiled, parameters, **extra) -> dict[str, str]:
    """safetensors metadata (str -> str) for weights of `compiled` (a `Compiled`: its spec,
    overrides, network and column) whose graph has `parameters`, a list of (key, shape, role);
    `extra` adds keys (JSON-encoded unless they are strings)."""
    from .version import __version__
    meta = {
        "format": FORMAT, "format_version": str(FORMAT_VERSION), "fractalc_version": __version__,
        "spec": Path(compiled.spec.main).name, "spec_sha256": compiled.spec.sha256,
        "network": compiled.name,
        "column": json.dumps(getattr(compiled, "column", None)),
        "overrides": json.dumps(dict(compiled.overrides), sort_keys=True),
        "parameters": json.dumps([[k, list(s), r] for k, s, r in parameters], separators=(",", ":")),
    }
    for k, v in extra.items():
        meta[k] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    return meta


def to_bytes(tensors: dict, metadata: dict[str, str] | None = None) -> bytes:
    """The safetensors bytes of `tensors` (numpy arrays or torch tensors; floating tensors are
    stored as float32, others as they are) with `metadata`."""
    import numpy as np
    from safetensors.numpy import save

    arrays = {}
    for k, v in tensors.items():
        if not isinstance(k, str):
            raise ModelError(f"weights keys must be strings, got {k!r}")
        if hasattr(v, "detach"):  # a torch tensor
            v = v.detach().cpu()
            v = v.float().numpy() if v.is_floating_point() else v.numpy()
        a = np.asarray(v)
        if not a.flags.c_contiguous:  # (np.ascontiguousarray would make a scalar 1-d)
            a = a.copy(order="C")
        if a.dtype.kind == "f":
            a = a.astype(np.float32, copy=False)
        arrays[k] = a
    if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError("safetensors metadata maps strings to strings")
    return save(arrays, metadata=metadata)


def write(path: str | Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Write `tensors` with `metadata` as a safetensors file, atomically."""
    atomic_write(path, to_bytes(tensors, metadata))


# --------------------------------------------------------------------------------- reading


def _refuse(path: str, why: str) -> ModelError:
    return ModelError(f"weights file {path!r} is not a valid safetensors file: {why}",
                      hint="write weights with fractalc (train, compile -t torch-state -o X.safetensors) "
                           "or safetensors.torch.save_file")


def _parse_safetensors(data: bytes, shown: str) -> tuple[dict, dict]:
    import numpy as np

    if len(data) < 8:
        raise _refuse(shown, f"it is {len(data)} bytes, shorter than the 8-byte header length (truncated?)")
    n = int.from_bytes(data[:8], "little")
    if n > MAX_HEADER_BYTES:
        raise _refuse(shown, f"its header length field says {n:,} bytes, more than the {MAX_HEADER_BYTES:,} allowed")
    if 8 + n > len(data):
        raise _refuse(shown, f"its header needs {n:,} bytes but the file has only {len(data) - 8:,} after "
                             "the length field (truncated?)")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise _refuse(shown, f"its header is not JSON ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise _refuse(shown, "its header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise _refuse(shown, "its __metadata__ is not a map of strings to strings")
    body = memoryview(data)[8 + n:]
    spans = []
    for name, e in header.items():
        where = f"tensor {name[:80]!r}"
        if not isinstance(e, dict) or set(e) != {"dtype", "shape", "data_offsets"}:
            raise _refuse(shown, f"{where}: an entry needs exactly dtype, shape and data_offsets")
        dtype, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
        if dtype not in DTYPES:
            raise _refuse(shown, f"{where} has dtype {str(dtype)[:20]!r}; fractalc reads "
                                 f"{', '.join(DTYPES)}")
        if (not isinstance(shape, list) or len(shape) > _MAX_DIMS
                or not all(type(d) is int and 0 <= d < 2**40 for d in shape)):
            raise _refuse(shown, f"{where} has a bad shape (a list of at most {_MAX_DIMS} non-negative integers)")
        if (not isinstance(offs, list) or len(offs) != 2 or not all(type(o) is int for o in offs)
                or not 0 <= offs[0] <= offs[1] <= len(body)):
            raise _refuse(shown, f"{where}: data_offsets {str(offs)[:60]} lie outside the "
                                 f"{len(body):,}-byte data section (truncated?)")
        numel = 1
        for d in shape:
            numel *= d
        size = DTYPES[dtype][1]
        if numel * size != offs[1] - offs[0]:
            raise _refuse(shown, f"{where}: {dtype} x {shape} is {numel * size:,} bytes, its data "
                                 f"offsets span {offs[1] - offs[0]:,}")
        spans.append((offs[0], offs[1], name))
    spans.sort()
    pos = 0
    for b, e, name in spans:
        if b != pos:
            raise _refuse(shown, f"tensor {name[:80]!r} {'overlaps another' if b < pos else 'leaves a gap before it'}")
        pos = e
    if pos != len(body):
        raise _refuse(shown, f"{len(body) - pos:,} bytes after the last tensor belong to none")
    buf = bytearray(body)  # one writable copy; the arrays are views of it
    tensors = {}
    for name, e in header.items():
        (b, end), (np_dtype, _) = e["data_offsets"], DTYPES[e["dtype"]]
        a = np.frombuffer(buf, dtype=np_dtype, count=(end - b) // DTYPES[e["dtype"]][1], offset=b)
        if e["dtype"] == "BF16":
            a = (a.astype("<u4") << 16).view("<f4")
        tensors[name] = a.reshape(e["shape"])
    return tensors, meta


def _decode_meta(meta: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in meta.items():
        if k in ("column", "overrides", "parameters", "format_version"):
            try:
                out[k] = json.loads(v)
            except ValueError:
                out[k] = v
        else:
            out[k] = v
    return out


def _load_torch(data: bytes, shown: str) -> tuple[dict, dict, str]:
    try:
        import torch
    except ImportError:
        from .errors import BackendUnavailable
        raise BackendUnavailable(f"reading the torch file {shown!r} needs torch "
                                 f"(a .safetensors file does not)", hint="pip install 'fractalc[torch]'") from None
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, garbage, a pickle of something else
        raise ModelError(f"weights file {shown!r} is corrupt, not a torch state_dict, or holds objects "
                         f"other than tensors (torch.load(weights_only=True) raised {type(exc).__name__})",
                         hint="save it with torch.save(model.state_dict(), path), or as .safetensors") from None
    kind, meta = "state_dict", {}
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        kind = "checkpoint"
        meta = {"spec_sha256": obj.get("spec_sha256"), "overrides": obj.get("overrides")}
        meta = {k: v for k, v in meta.items() if v is not None}
        obj = obj.get("model")
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise ModelError(f"weights file {shown!r} holds a {type(obj).__name__}, not a state_dict "
                         "(a dict of tensors)", hint="save model.state_dict(), not the model")
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelError(f"weights file {shown!r}: the values of {_listing(bad)} are not tensors",
                         hint="save model.state_dict() itself")
    tensors = {}
    for k, v in obj.items():
        v = v.detach()
        if v.is_floating_point() and v.dtype != torch.float64:
            v = v.float()
        tensors[k] = v.contiguous().numpy()
    return tensors, meta, kind


def read(path: str | Path) -> Weights:
    """Read a weights file (safetensors, a torch state_dict or a fractalc checkpoint); every
    refusal is a `ModelError` (see the module doc)."""
    shown = str(path)
    try:
        data = read_limited(path, max_weights_bytes())
    except FileRefused as exc:
        raise ModelError(f"cannot read weights file {shown!r}: {exc.reason}") from None
    digest = hashlib.sha256(data).hexdigest()
    # torch files are zip archives ("PK") or, from old torch versions, raw pickles (0x80)
    if data[:2] == b"PK" or data[:1] == b"\x80":
        tensors, meta, kind = _load_torch(data, shown)
        return Weights(tensors, meta, kind, digest, shown)
    tensors, raw = _parse_safetensors(data, shown)
    return Weights(tensors, _decode_meta(raw), "safetensors", digest, shown)


# -------------------------------------------------------------------------------- checking


def _listing(keys, limit: int = 5) -> str:
    keys = list(keys)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_fit(want: dict[str, tuple], got: dict[str, tuple], source: str, network: str | None = None, *,
              allow_extra: bool = False, optional=()) -> None:
    """Raise `ModelError` naming the missing, unexpected and mis-shaped keys when the shapes
    `got` (key -> shape, from a weights file `source`) do not fit `want` (the network's). Keys
    ending in a name in `optional` may be absent or extra (BN's num_batches_tracked)."""
    def opt(k):
        return k.rsplit(".", 1)[-1] in optional

    def dims(s):
        return "x".join(map(str, s)) or "a scalar"
    missing = [k for k in want if k not in got and not opt(k)]
    extra = [k for k in got if k not in want and not opt(k)]
    shaped = [f"{k} ({dims(got[k])}, the network has {dims(want[k])})"
              for k in want if k in got and tuple(got[k]) != tuple(want[k])]
    parts = [f"{len(keys)} {what}: {_listing(keys, 4)}" for what, keys in
             (("missing", missing), ("unexpected", [] if allow_extra else extra), ("mis-shaped", shaped)) if keys]
    if parts:
        where = f"network {network!r}" if network else "this network"
        raise ModelError(f"weights {source} do not fit {where}: " + "; ".join(parts),
                         hint="the keys are the IR ids + .weight/.bias/... (`fractalc compile SPEC` lists the ids)")


def provenance_differences(meta: dict, compiled, parameters=None) -> list[str]:
    """How the provenance `meta` (as `read` decodes it) differs from `compiled` (and from its
    graph's `parameters`, (key, shape, role) tuples); empty when it does not, or when the file
    carries no provenance."""
    diffs = []
    sha = meta.get("spec_sha256")
    if sha and sha != compiled.spec.sha256:
        name = meta.get("spec")
        diffs.append(f"spec text differs (sha256 {sha[:12]}...{f' of {name}' if name else ''}, "
                     f"this spec {compiled.spec.sha256[:12]}...)")
    over = meta.get("overrides")
    if isinstance(over, dict) and over != dict(compiled.overrides):
        diffs.append(f"overrides differ (saved {json.dumps(over, sort_keys=True)}, "
                     f"now {json.dumps(dict(compiled.overrides), sort_keys=True)})")
    net = meta.get("network")
    if net and net != compiled.name:
        diffs.append(f"network differs (saved {net!r}, now {compiled.name!r})")
    saved = meta.get("parameters")
    if parameters is not None and isinstance(saved, list):
        roles = {p[0]: p[2] for p in saved if isinstance(p, list) and len(p) == 3 and isinstance(p[0], str)}
        changed = [f"{k} ({roles[k]} -> {r})" for k, _, r in parameters if k in roles and roles[k] != r]
        if changed:
            diffs.append(f"parameter roles differ: {_listing(changed, 3)}")
    return diffs


def check_provenance(weights: Weights, compiled, parameters=None) -> list[str]:
    """Warn (`FractalcWarning`) when `weights` were saved from another spec text, other
    overrides, another network or with other parameter roles than `compiled`; returns the
    differences. The keys and shapes are `check_fit`'s business."""
    diffs = provenance_differences(weights.metadata, compiled, parameters)
    if diffs:
        warnings.warn(f"weights {weights.path!r} were saved from another configuration: " + "; ".join(diffs)
                      + " (they fit this network's keys and shapes, so they are used)",
                      FractalcWarning, stacklevel=2)
    return diffs
