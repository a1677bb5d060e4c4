"""The layering of the package (docs/architecture.md), checked by reading every import.

Layers, lowest first; a module may import its own layer and lower ones only:

  base      errors, limits, fileio, version, records, weights_file
  ir        fractalc.ir: the node kinds, the op table, shapes, the printer and the passes
  lang      fractalc.lang: syntax, parser_cache, resolve, formatter, expand
  compile   compiler, cost, report, registry (models by name), model_summary (fractalc.summary)
  backends  fractalc.backends.*, runtime (the Session facade of the native runtime)
  apps      fractalc.variants, fractalc.training
  commands  fractalc.cli (one module per command), __main__, and the package facade

Backends do not import each other, except through the ONNX op contract (`backends/onnx`'s
ops, packing, loader, reference and lowering), which the native runtime executes: `SHARED`
below. No module imports itself back through a cycle, and only public names cross a package.
"""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent

LAYERS = {
    "base": ["errors", "limits", "fileio", "version", "records", "weights_file"],
    "ir": ["ir"],
    "lang": ["lang"],
    "compile": ["compiler", "cost", "report", "registry", "model_summary"],
    "backends": ["backends", "runtime"],
    "apps": ["variants", "training"],
    "commands": ["cli", "__main__", ""],
}
RANK = {m: i for i, ms in enumerate(LAYERS.values()) for m in ms}

#: Backend modules other backends may use: the ai.fractalc op contract and its reference.
SHARED = {"fractalc.backends.onnx.ops", "fractalc.backends.onnx.packing",
          "fractalc.backends.onnx.loader", "fractalc.backends.onnx.reference",
          "fractalc.backends.onnx.lower", "fractalc.backends.onnx.weights",
          "fractalc.backends.onnx.export", "fractalc.backends.onnx.emit", "fractalc.backends.onnx"}
#: Backend-to-backend imports that remain (each a known debt, see docs/architecture.md).
SIDEWAYS_DEBT = {
    # seeded ONNX weights are the torch model's initial weights (one initialisation for both)
    ("fractalc.backends.onnx.weights", "fractalc.backends.torch"),
    ("fractalc.backends.onnx.testing", "fractalc.backends.torch"),
    ("fractalc.backends.onnx.testing", "fractalc.backends.torch.build"),
    ("fractalc.backends.onnx.testing", "fractalc.backends.torch.plan"),
    ("fractalc.backends.xnor.bench", "fractalc.backends.torch"),
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in [*(ROOT / "fractalc").rglob("*.py"), *(ROOT / "backends").rglob("*.py")]:
        parts = list(p.relative_to(ROOT).with_suffix("").parts)
        if parts[0] == "backends":
            parts = ["fractalc", *parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


#: Compiled extension modules (built by CMake, not in the source tree).
EXTENSIONS = {"fractalc.backends.xnor._xnor"}


def _extension(mods: dict[str, Path], package: str, name: str) -> bool:
    return f"{package}.{name}" in EXTENSIONS


def _imports(mods: dict[str, Path]) -> nx.DiGraph:
    """Module -> module for every import in the source, function-level (lazy) ones included."""
    g = nx.DiGraph()
    for m, path in mods.items():
        g.add_node(m)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    pkg = m.split(".") if path.name == "__init__.py" else m.split(".")[:-1]
                    pkg = pkg[:len(pkg) - node.level + 1]
                    base = ".".join(pkg + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names
                           if not _extension(mods, base, a.name)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != m:
                    g.add_edge(m, t)
    return g


def _rank(m: str) -> int:
    parts = m.split(".")
    key = "" if len(parts) == 1 else parts[1]
    return RANK[key]


GRAPH = _imports(_modules())


def test_every_module_has_a_layer():
    assert all(_rank(m) is not None for m in GRAPH)  # KeyError names a module without one


def test_imports_point_down_only():
    bad = [(a, b) for a, b in GRAPH.edges if _rank(b) > _rank(a)]
    assert not bad, "imports from a higher layer: " + ", ".join(f"{a} -> {b}" for a, b in bad)


def test_backends_share_only_through_the_op_contract():
    def backend(m):
        parts = m.split(".")
        return parts[2] if len(parts) > 2 and parts[1] == "backends" else None
    bad = [(a, b) for a, b in GRAPH.edges
           if backend(a) and backend(b) and backend(a) != backend(b)
           and b not in SHARED and (a, b) not in SIDEWAYS_DEBT]
    assert not bad, "backend imports another backend: " + ", ".join(f"{a} -> {b}" for a, b in bad)
    stale = [e for e in SIDEWAYS_DEBT if not GRAPH.has_edge(*e)]
    assert not stale, f"paid debts still listed: {stale}"


def test_no_import_cycles():
    # A package's __init__ importing its own submodules (re-exports) is not a cycle of concern
    # when the submodule does not import the package back.
    cycles = [sorted(c) for c in nx.strongly_connected_components(GRAPH) if len(c) > 1]
    assert not cycles, f"import cycles: {cycles}"


def test_the_reader_sees_real_edges():
    """The check can fail: the edges it must find are there."""
    assert GRAPH.has_edge("fractalc.lang.expand", "fractalc.lang.syntax")
    assert GRAPH.has_edge("fractalc.cost", "fractalc.ir.ops")
    assert GRAPH.has_edge("fractalc.backends.xnor.plan", "fractalc.backends.onnx.ops")


def _unit(m: str) -> str:
    """The package a module belongs to for the privacy rule: fractalc.lang, fractalc.ir,
    fractalc.backends.onnx, ...; each top-level module (fractalc.cost) is its own unit."""
    parts = m.split(".")
    return ".".join(parts[:3] if len(parts) > 2 and parts[1] == "backends" else parts[:2])


def _private_imports(mods: dict[str, Path]) -> list[str]:
    """`from X import _name` and `X._name` where X is a module of another unit."""
    bad = []
    for m, path in mods.items():
        tree = ast.parse(path.read_text())
        module_aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    pkg = m.split(".") if path.name == "__init__.py" else m.split(".")[:-1]
                    pkg = pkg[:len(pkg) - node.level + 1]
                    base = ".".join(pkg + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                if not base.startswith("fractalc"):
                    continue
                for a in node.names:
                    full = f"{base}.{a.name}"
                    if full in mods:
                        module_aliases[a.asname or a.name] = full
                    elif (a.name.startswith("_") and not a.name.startswith("__")
                          and full not in EXTENSIONS and _unit(base) != _unit(m)):
                        bad.append(f"{m}: {a.name} from {base}")
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in mods and a.asname:
                        module_aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in module_aliases and node.attr.startswith("_")
                    and not node.attr.startswith("__")
                    and _unit(module_aliases[node.value.id]) != _unit(m)):
                bad.append(f"{m}: {node.value.id}.{node.attr}")
    return bad


def test_private_names_stay_in_their_package():
    """No `resolve._suggest`-style reach into another package's internals."""
    bad = _private_imports(_modules())
    assert not bad, "private names used across packages: " + "; ".join(sorted(set(bad)))


def test_the_privacy_check_can_fail(tmp_path):
    """A planted cross-package private import is found."""
    mods = _modules()
    planted = tmp_path / "planted.py"
    planted.write_text("from fractalc.lang.expand import _secret\nfrom fractalc.lang import syntax as S\nS._parser\n")
    found = _private_imports({"fractalc.cli.planted": planted, **mods})
    assert "fractalc.cli.planted: _secret from fractalc.lang.expand" in found
    assert "fractalc.cli.planted: S._parser" in found
