"""Models by name: the specs shipped with fractalc, addressable by their network names.

Every ``.fr`` file under the shipped spec folder (``fractalc/specs`` in an installed package,
``specs/`` in the source tree; subfolders such as ``specs/zoo/`` included, the imported library
``lib/`` excluded) registers each network it defines under the network's name:
``rf_c3d4_resnet21`` is network ``rf_c3d4_resnet21`` of ``specs/rf_c3d4_resnet21.fr``. Names are
unique across the shipped specs (a name defined twice is refused as ambiguous, naming both
files; the test suite keeps the shipped set free of that).

Resolving a name reads the shipped files' network names only (a scan of their text for the
``network NAME`` keyword, outside strings and comments: a few milliseconds, no parsing, no
cache to go stale); `describe` / `models` compile the specs to report their costs.

`resolve_spec` is what the CLI's SPEC argument and `fractalc.build_torch` use: an existing path
wins, else a registered name, else an error with the closest names. `compile_spec` itself takes
paths, spec text and `Spec` objects only (never names), so a library call never turns a
misspelt path into a shipped model.

This module never imports torch (nor lark, until `describe` compiles a spec).
"""
from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path

from fractalc.errors import FractalcError
from fractalc.records import record


class ModelNameError(FractalcError):
    """A name that is neither an existing spec file nor a registered model name."""


@record
class Entry:
    """One registered model: network `network` of the spec file `path` (`relpath` below the
    shipped spec folder)."""

    name: str
    path: Path
    relpath: str
    network: str


def specs_dir() -> Path:
    """The shipped spec folder: fractalc/specs of an installed package (the editable install
    maps it to the source tree's specs/), else specs/ beside the package."""
    try:
        from importlib import resources
        d = Path(str(resources.files("fractalc").joinpath("specs")))
        if d.is_dir():
            return d
    except (ModuleNotFoundError, TypeError, NotADirectoryError):
        pass
    return Path(__file__).resolve().parent.parent / "specs"


#: The imported spec library; its files define rules, not models.
_SKIP_DIRS = {"lib"}

_TOKENS = re.compile(r'"[^"\n]*"|#[^\n]*|\bnetwork\s+([A-Za-z_][A-Za-z0-9_]*)')


def network_names(text: str) -> list[str]:
    """The names of the networks `text` defines, in order, without parsing: ``network`` is a
    keyword (grammars/fractal.lark), so outside strings and comments every ``network NAME`` is
    a definition in a valid spec. Compiling the spec checks the rest."""
    return [m.group(1) for m in _TOKENS.finditer(text) if m.group(1)]


def spec_files(root: Path | None = None) -> list[Path]:
    """Every shipped spec file, sorted by its path below `root` (default `specs_dir()`)."""
    root = specs_dir() if root is None else root
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        out += [Path(dirpath) / f for f in filenames if f.endswith(".fr") and not f.startswith(".")]
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def entries(root: Path | None = None) -> dict[str, Entry]:
    """Registered name -> `Entry`, in file order. Read fresh on every call (no cache: an
    edited spec is seen at once). A name defined by two files raises `ModelNameError`."""
    root = specs_dir() if root is None else root
    out: dict[str, Entry] = {}
    for p in spec_files(root):
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # compiling it would report the problem; it registers nothing
        rel = p.relative_to(root).as_posix()
        for net in network_names(text):
            if net in out and out[net].relpath != rel:
                raise ModelNameError(f"model name {net!r} is defined by two shipped specs: "
                                     f"{out[net].relpath} and {rel}")
            out.setdefault(net, Entry(net, p, rel, net))
    return out


def list_models(pattern: str | None = None) -> list[str]:
    """The registered model names, sorted; `pattern` filters them with shell wildcards
    (``"rf_*"``, ``"*densenet*"``), as timm's `list_models` does."""
    names = sorted(entries())
    return [n for n in names if pattern is None or fnmatch.fnmatchcase(n, pattern)]


def _close(name: str, names) -> list[str]:
    names = list(names)
    import difflib  # only for an unknown name
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    if not close:  # a prefix or a part of a name: "resnet21" -> rf_c3d4_resnet21, f_c3d4_resnet21
        close = [n for n in names if name and name in n][:3]
    return close


def get(name: str) -> Entry:
    """The `Entry` of registered `name`; `ModelNameError` with the closest names if none."""
    table = entries()
    if name in table:
        return table[name]
    close = _close(name, table)
    raise ModelNameError(
        f"no model named {name!r}" + (f"; did you mean {', '.join(close)}?" if close else ""),
        hint="`fractalc list` shows the model names; a spec file path works too")


def _looks_like_path(s: str) -> bool:
    return s.endswith(".fr") or "/" in s or os.sep in s


def resolve_spec(name_or_path: "str | os.PathLike", network: str | None = None
                 ) -> tuple[str | Path, str | None]:
    """(spec path, network) for a SPEC given as a path or a model name.

    - an existing path wins: it is returned unchanged with `network`;
    - else a registered name: its file and network (a `network` that names another network
      is an error: a model name is one network);
    - else a string that looks like a path (``.fr``, a ``/``) is returned unchanged, so reading
      it reports the missing file as before;
    - else `ModelNameError`, with the closest names."""
    s = os.fspath(name_or_path)
    if os.path.exists(s):
        return name_or_path, network
    table = None
    if not _looks_like_path(s):
        table = entries()
        if s in table:
            e = table[s]
            if network is not None and network != e.network:
                raise ModelNameError(f"model {s!r} is network {e.network!r} of {e.relpath}; "
                                     f"--network {network!r} names another",
                                     hint=f"give the file instead: {e.path}")
            return e.path, e.network
    if table is None:
        return name_or_path, network
    close = _close(s, table)
    raise ModelNameError(
        f"no spec file or model named {s!r}" + (f"; did you mean {', '.join(close)}?" if close else ""),
        hint="`fractalc list` shows the model names")


# --------------------------------------------------------------------------- descriptions

_SOFAR = re.compile(r"^([a-z]+)_c\d+d\d+(?:_|$)")
_DATASET_TAG = re.compile(r"_(?:cifar10|cifar100|cifar|imagenet)$")
# size and variant tags of the zoo's names (quicknet_large, binary_densenet37_dilated)
_VARIANT_TAG = re.compile(r"_(?:small|medium|large|dilated)$")


def family(name: str) -> str:
    """A model's family from its name: SoFAr's ``<family>_c<C>d<D>...`` names give the family
    in capitals (``rf_c3d4_resnet21`` -> RF, ``drf_c2d2_densenet51`` -> DRF); other names
    lose their size digits, dataset and variant tags (``bireal_resnet18`` -> bireal_resnet,
    ``fractalnet_cifar`` -> fractalnet, ``quicknet_large`` -> quicknet,
    ``binary_densenet37_dilated`` -> binary_densenet)."""
    m = _SOFAR.match(name)
    if m:
        return m.group(1).upper()
    base = _VARIANT_TAG.sub("", _DATASET_TAG.sub("", name))
    return re.sub(r"\d+$", "", base).rstrip("_") or name


#: The width-like parameter reported as a model's width, first present wins (`fractalc scale`
#: scales width, else growth, by default).
WIDTH_PARAMS = ("width", "growth", "channels")


@record
class ModelInfo:
    """One row of `fractalc list`: the cost of a model at its spec's default parameters.

    `dataset` is the default of the spec's ``dataset`` parameter (None without one);
    `width_param` / `width` the first of `WIDTH_PARAMS` the spec has (None without any);
    `bits`, `mbit`, `flops`, `depth` as `fractalc stats` computes them (fractalc.cost)."""

    name: str
    family: str
    spec: str  # the file, relative to the shipped spec folder
    network: str
    dataset: str | None
    width_param: str | None
    width: int | None
    depth: int
    bits: int
    float_params: int
    binary_params: int
    flops: float

    @property
    def mbit(self) -> float:
        return self.bits / 1e6

    def to_json(self) -> dict:
        return {"name": self.name, "family": self.family, "spec": self.spec,
                "network": self.network, "dataset": self.dataset, "width_param": self.width_param,
                "width": self.width, "depth": self.depth, "bits": self.bits, "mbit": self.mbit,
                "float_params": self.float_params, "binary_params": self.binary_params,
                "flops": self.flops}


def _describe(e: Entry, spec) -> ModelInfo:
    from fractalc.compiler import compile_spec
    from fractalc.cost import cost

    c = compile_spec(spec, network=e.network)
    co = cost(c.graph)
    wp = next((k for k in WIDTH_PARAMS if k in c.params), None)
    ds = c.params.get("dataset")
    return ModelInfo(e.name, family(e.name), e.relpath, e.network,
                     ds if isinstance(ds, str) else None, wp, c.params[wp] if wp else None,
                     co.depth, co.bits, co.total("float_params"), co.total("binary_params"),
                     co.flops)


def describe(name: str) -> ModelInfo:
    """The `ModelInfo` of registered `name` (compiles its spec)."""
    from fractalc.lang.resolve import load

    e = get(name)
    return _describe(e, load(e.path))


def models(pattern: str | None = None) -> list[ModelInfo]:
    """`ModelInfo` of every registered name matching `pattern` (see `list_models`), sorted by
    name; each spec file is parsed once for all its networks."""
    from fractalc.lang.resolve import load

    table = entries()
    loaded: dict[Path, object] = {}
    out = []
    for n in list_models(pattern):
        e = table[n]
        if e.path not in loaded:
            loaded[e.path] = load(e.path)
        out.append(_describe(e, loaded[e.path]))
    return out
