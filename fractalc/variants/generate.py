"""Generating (`generate`): each point of a space becomes a plain, formatted `.fr` spec importing
the shared library (specs/lib, found beside the baseline) by a path relative to the output
directory, its width scaled to the budget, its header recording the space (name and sha256),
the point, the budget, the hashes of the baseline and the library, and the fractalc version.
Points that fail (shape clash, size guard, budget too small) are reported and skipped.
Everything is deterministic: same space and library, same bytes.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fractalc.version import __version__
from fractalc.errors import FractalcError
from fractalc.variants.solver import Measure, ScaleResult, budget_of, relabel, solve
from fractalc.variants.space import BASES, Point, Space, SpaceError, load_space
from fractalc.variants.write import import_path, one_line


def _sha(paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).name.encode() + b"\0" + Path(p).read_bytes() + b"\0")
    return h.hexdigest()


def _floats(xs) -> str:
    return "[" + ", ".join(repr(x) for x in xs) + "]"


def spec_text(name: str, p: Point, value: int, lib: str, header: list[str]) -> str:
    """The unformatted text of one variant (imports `lib`common.fr, `lib`sofar.fr and the base
    network's file: `lib` is ``fractalc:`` for the bundled library, else a directory path ending
    in ``/``)."""
    lines = [*header, *(f'import "{lib}{f}"' for f in ("common.fr", "sofar.fr", *BASES[p.base])), "",
             f'param dataset = "{p.dataset}"']
    n = len(p.blocks)
    if p.kind == "resnet" and p.base != "bireal":
        return "\n".join(lines + _based_resnet(name, p, value)) + "\n"
    if p.kind == "resnet":
        lines += [f"param width = {value}", f"param columns = {p.columns}",
                  f"param blocks = {list(p.blocks)}", "", f"network {name} {{",
                  "    input [3, size, size]", "    stem = stem[width]"]
        for s in range(n):
            w = "width" if s == 0 else f"{2 ** s} * width"
            if s:
                lines.append(f"    trans{s} = down[{w}]")
            lines.append(f"    stage{s + 1} = {p.family}[columns, {w}] * blocks[{s}]")
        lines += ["    head = head[classes]", "}"]
    else:
        lines += [f"param growth = {value}", f"param columns = {p.columns}",
                  f"param blocks = {list(p.blocks)}", f"param reductions = {_floats(p.reductions)}",
                  f"param stem_width = {p.stem_width}", 'param order = "bn-conv"']
        if p.transitions:
            lines.append(f"param transitions = {list(p.transitions)}")
        lines += ["",
                  f"network {name} {{", "    input [3, size, size]", "    stem = stem[stem_width]"]
        for s in range(n):
            if s:
                w = f", w=transitions[{s - 1}]" if p.transitions else ""
                lines.append(f"    trans{s} = transition[reductions[{s - 1}]{w}]")
            lines.append(f"    stage{s + 1} = dense[{p.family}[columns, growth], growth] * blocks[{s}]")
        lines += ["    head = bn >> relu >> head[classes]", "}"]
    return "\n".join(lines) + "\n"


def _based_resnet(name: str, p: Point, value: int) -> list[str]:
    """The network of an F / RF point built into QuickNet or ReActNet (specs/lib/quicknet.fr,
    reactnet.fr): the base's stem, transitions and head, a fractal of its unit per stage."""
    fam = f"{p.family}_{'quick' if p.base == 'quicknet' else 'react'}"
    lines = [f"param width = {value}", f"param columns = {p.columns}", f"param blocks = {list(p.blocks)}",
             "", f"network {name} {{", "    input [3, size, size]",
             "    stem = qn_stem[width]" if p.base == "quicknet" else "    stem = stem[width]"]
    for s in range(len(p.blocks)):
        w = "width" if s == 0 else f"{2 ** s} * width"
        if p.base == "quicknet":  # qn_stage puts the transition in front when the width changes
            lines.append(f"    stage{s + 1} = qn_stage[{w}, blocks[{s}], {fam}[columns, {w}]]")
        else:
            if s:
                lines.append(f"    trans{s} = down[{w}]")
            lines.append(f"    stage{s + 1} = {fam}[columns, {w}] * blocks[{s}]")
    lines += ["    head = qn_head[classes]" if p.base == "quicknet" else "    head = head[classes]", "}"]
    return lines


@dataclass
class Variant:
    name: str
    point: Point
    file: Path
    result: ScaleResult
    baseline_name: str

    def row(self) -> dict:
        m = self.result.cost
        return {"name": self.name, "family": self.point.family, "columns": self.point.columns,
                "blocks": "-".join(map(str, self.point.blocks)), "join": self.point.join,
                "dataset": self.point.dataset, "depth": m.depth, "param": self.result.param,
                "width": self.result.value, "float_params": m.float_params,
                "binary_params": m.binary_params, "bits": m.bits, "mbit": round(m.mbit, 6),
                "flops": m.flops, "binary_mac_share": round(m.binary_mac_share, 6),
                "metric": self.point.metric, "baseline": self.baseline_name,
                "budget_bits": self.result.budget.bits, "budget_flops": self.result.budget.flops,
                "file": self.file.name}


@dataclass
class Generated:
    space: Space
    out: Path
    variants: list[Variant]
    skipped: list[tuple[str, str, str]]  # (name, point, reason)
    baselines: dict[str, Measure]  # "spec.fr (dataset)" -> cost

    def to_json(self) -> dict:
        return {"space": self.space.file.name, "space_sha256": self.space.sha256,
                "fractalc": __version__, "variants": [v.row() for v in self.variants],
                "skipped": [{"name": n, "point": p, "reason": r} for n, p, r in self.skipped],
                "baselines": [{"name": k, **m.to_json()} for k, m in self.baselines.items()]}


COLUMNS = ["name", "family", "columns", "blocks", "join", "dataset", "depth", "param", "width",
           "float_params", "binary_params", "bits", "mbit", "flops", "binary_mac_share", "metric",
           "baseline", "budget_bits", "budget_flops", "file"]


def generate(space_path: str | Path, out: str | Path, *, max_nodes: int = 100_000,
             log=None, progress=None) -> Generated:
    """Write one scaled spec per valid point of the space into `out` (created if needed).

    `log(message)` hears of every point written or skipped; `progress(done, total, name)` is
    called before each point (done = points finished so far) and once at the end."""
    from fractalc.fileio import atomic_write, unlink_on_sigterm
    from fractalc.lang.formatter import check_round_trip, format_source
    space = load_space(space_path)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FractalcError(f"cannot create output directory {str(out)!r}: {exc.strerror}") from None
    budgets: dict[tuple[Path, str], Measure] = {}
    baselines: dict[str, Measure] = {}
    variants: list[Variant] = []
    skipped: list[tuple[str, str, str]] = []
    total = len(space.points)
    for i, (name, p) in enumerate(space.points):
        if progress:
            progress(i, total, name)
        lib_dir = p.library_dir
        lib_files = p.library_files
        final = out / f"{name}.fr"
        try:
            missing = [str(f) for f in lib_files if not f.is_file()]
            if missing:
                raise SpaceError(f"the spec library is not {'in ' + str(lib_dir) if p.library else 'beside the baseline'}: "
                                 f"{', '.join(missing)} missing")
            key = (p.baseline, p.dataset)
            if key not in budgets:
                from fractalc.lang.resolve import load
                has_ds = "dataset" in load(p.baseline).params
                budgets[key] = budget_of(p.baseline, {"dataset": p.dataset} if has_ds else {},
                                         max_nodes=max_nodes)
                baselines[f"{p.baseline.stem} ({p.dataset})"] = budgets[key]
            budget = budgets[key]
            # the bundled library by name (the variant works wherever it is moved), another
            # library beside the baseline by a path relative to the output directory
            from fractalc.lang.resolve import LIBRARY, allowed_imports, library_dir
            lib = (LIBRARY if lib_dir.resolve() == library_dir().resolve()
                   else import_path(Path(os.path.relpath(lib_dir, out.resolve())).as_posix() + "/", SpaceError))
            header = _header(space, name, p, budget, lib_files)
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".fr", dir=out)
            os.close(fd)
            try:
                with unlink_on_sigterm(tmp):  # a killed generate leaves no hidden spec behind
                    Path(tmp).write_text(spec_text(name, p, p.start, lib, []))
                    try:
                        # the variant imports the library beside the baseline, wherever that is
                        with allowed_imports([lib_dir]):
                            res = solve(tmp, budget, metric=p.metric, param=p.param,
                                        max_nodes=max_nodes, baseline=p.baseline.name)
                    except FractalcError as exc:
                        raise relabel(exc, "", {tmp: final.name, str(Path(tmp)): final.name}) from None
            finally:
                os.unlink(tmp)
            raw = spec_text(name, p, res.value, lib, header)
            text = format_source(raw, str(final))
            check_round_trip(raw, text, str(final))
            atomic_write(final, text)
            res.spec = str(final)
        except FractalcError as exc:  # shape clash, size guard, budget: skip the point
            if final.exists():  # a stale variant from an earlier run would mislead
                final.unlink()
            reason = _short_reason(exc, lib_dir)
            skipped.append((name, p.describe(), reason))
            if log:
                log(f"skipped {name}: {reason}")
            continue
        variants.append(Variant(name, p, final, res, p.baseline.name))
        if log:
            log(f"wrote {final} ({res.param} = {res.value})")
    if progress:
        progress(total, total, "")
    return Generated(space, out, variants, skipped, baselines)


def _short_reason(exc: FractalcError, lib_dir: Path) -> str:
    """The first line of the error, a library file named `lib/x.fr` (not by a path that
    depends on the output directory), so reports are the same wherever they are made."""
    if exc.loc is not None:
        f = Path(os.path.normpath(os.path.abspath(exc.loc.file)))
        try:
            short = (Path("lib") / f.relative_to(lib_dir.resolve())).as_posix()
        except ValueError:
            short = f.name
        exc = relabel(exc, "", {exc.loc.file: short})
    return exc.format().splitlines()[0]


def _header(space: Space, name: str, p: Point, budget: Measure, lib_files) -> list[str]:
    metric = {"params": "parameter bits", "flops": "FLOPs", "both": "parameter bits and FLOPs"}[p.metric]
    # one_line: file names and the space's name are user text inside comments
    return [
        f"# {name}: {p.family}-c{p.columns}d{2 ** (p.columns - 1)} "
        f"{ {'bireal': 'ResNet', 'quicknet': 'QuickNet', 'reactnet': 'ReActNet'}[p.base] if p.kind == 'resnet' else 'DenseNet'}"
        f"{p.depth}, generated by fractalc {__version__}.",
        f"# Its {p.param} is the largest whose {metric} fit the budget of {one_line(p.baseline.name)}.",
        "# Do not edit: change the space and run `fractalc generate` again.",
        f"# space: {one_line(space.file.name)} ({one_line(space.name)}), sha256 {space.sha256}",
        f"# point: {p.describe()}",
        f"# budget: {one_line(p.baseline.name)} with dataset={p.dataset}: {budget.bits:,} bits, "
        f"{budget.flops:,.0f} FLOPs; metric {p.metric}",
        f"# baseline sha256 {_sha([p.baseline])}",
        f"# library: {', '.join(f.name for f in lib_files)}, sha256 {_sha(lib_files)}",
        "",
    ]
