"""Resolve a spec: follow imports, collect definitions, and check names, arity and recursion.

Everything here is static (no evaluation): unknown names, duplicate definitions, wrong number
of parameters or tensors where the callee is known, unknown keyword parameters, wrong argument counts of defs, and
recursive rules and defs without a base case (rules and defs share one namespace and one call
graph). Errors carry the spec position. Parameter values and shapes are
checked during expansion (`expand.py`).
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterable

from fractalc import limits
from fractalc.lang import syntax as S
from fractalc.errors import SpecError
from fractalc.fileio import FileRefused, read_limited, sha256
from fractalc.records import field, record
from fractalc.ir.prims import BUILTINS, PRIMS



@record(frozen=False)
class Spec:
    """A resolved spec: every definition visible from the main file."""

    main: str
    params: dict[str, S.Param] = field(default_factory=dict)
    rules: dict[str, S.Rule] = field(default_factory=dict)
    defs: dict[str, S.Def] = field(default_factory=dict)
    networks: dict[str, S.Network] = field(default_factory=dict)  # main file only
    files: list[str] = field(default_factory=list)
    sha256: str = ""

    @property
    def network(self) -> S.Network:
        return next(iter(self.networks.values()))

    def select(self, name: str | None) -> S.Network:
        if name is None:
            return self.network
        if name not in self.networks:
            raise SpecError(f"no network named {name!r} in {self.main}; it defines: "
                            + ", ".join(self.networks))
        return self.networks[name]


def suggest(name: str, options) -> str:
    import difflib  # only for a misspelt name
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


# `import "fractalc:sofar.fr"` reads the spec library shipped inside the package (specs/lib in
# the source tree): specs written anywhere, and generated variants moved anywhere, can use it.
LIBRARY = "fractalc:"


def library_dir() -> Path:
    """The bundled spec library: fractalc/specs/lib in an installed package (the shipped specs'
    own lib/, which they import relatively), else specs/lib of the source tree."""
    here = Path(__file__).resolve().parents[1] / "specs" / "lib"  # an installed wheel
    if (here / "sofar.fr").is_file():
        return here
    tree = Path(__file__).resolve().parents[2] / "specs" / "lib"  # the source tree
    if (tree / "sofar.fr").is_file():
        return tree
    try:  # another install layout: ask the import system
        from importlib import resources
        d = Path(str(resources.files("fractalc").joinpath("specs/lib")))
        if (d / "sofar.fr").is_file():
            return d
    except (ModuleNotFoundError, TypeError, NotADirectoryError):
        pass
    return tree


# Folders every `load` in this context may also import from: what the CLI's --allow-import
# adds for the whole command, so the compiles a command makes internally (training, scaling,
# generating) follow the same rule as its first one.
_ALLOWED: ContextVar[tuple[Path, ...]] = ContextVar("fractalc_allow_import", default=())


@contextmanager
def allowed_imports(dirs: Iterable[str | Path]):
    """Within the block, every `load` also admits imports of files under `dirs`."""
    token = _ALLOWED.set(_ALLOWED.get() + tuple(Path(d).resolve() for d in dirs))
    try:
        yield
    finally:
        _ALLOWED.reset(token)


def import_roots(main: str | Path, allow_import: Iterable[str | Path] | None = None) -> tuple[Path, ...]:
    """The folders (symlinks resolved) whose files a spec loaded from `main` may import: the
    folder of `main` itself, the bundled library, `allow_import`, and the folders of any
    enclosing `allowed_imports` block."""
    extra = tuple(Path(d).resolve() for d in (allow_import or ()))
    return (Path(main).parent.resolve(), library_dir().resolve(), *extra, *_ALLOWED.get())


def _real(target: Path, path: str) -> Path:
    try:
        return target.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise SpecError(f"cannot import {path!r}: {getattr(exc, 'strerror', None) or exc}") from None


def import_target(importer: Path, path: str, roots: Iterable[Path] | None = None) -> Path:
    """The file an `import "path"` in `importer` reads: relative to the importing file (or
    absolute), or in the bundled library for a ``fractalc:`` path.

    A ``fractalc:`` path must stay inside the library, and with `roots` (see `import_roots`)
    any other path must lead, symlinks resolved, to a file under one of them; else `SpecError`
    (without a location: the caller knows the import's)."""
    if path.startswith(LIBRARY):
        lib = library_dir().resolve()
        target = lib / path[len(LIBRARY):]
        if not _real(target, path).is_relative_to(lib):
            raise SpecError(f"cannot import {path!r}: it leads outside the bundled library")
        return target
    target = importer.parent / path
    if roots is not None:
        roots = list(roots)
        real = _real(target, path)
        if not any(real.is_relative_to(r) for r in roots):
            shown = ", ".join(repr(str(r)) for r in roots)
            raise SpecError(f"cannot import {path!r}: it is outside the folders this spec may import "
                            f"from ({shown})",
                            hint="a spec imports files from its own folder (and below) and the "
                                 "bundled library; allow another folder with --allow-import DIR")
    return target


def load(path: str | Path, *, allow_import: Iterable[str | Path] | None = None,
         text: str | None = None) -> Spec:
    """Parse `path` and everything it imports, then check the whole spec.

    With `text`, that is the main file's text and nothing is read from `path`: it only names
    the spec (in errors and `Spec.main`) and places it (relative imports start from its folder).

    Imports may only read files under `import_roots(path, allow_import)` (the spec's folder,
    the bundled library and the allowed folders): a spec cannot read arbitrary files. Every
    file read must be a regular UTF-8 file of at most `syntax.MAX_SPEC_BYTES`.
    """
    main = str(path)
    spec = Spec(main=main)
    digest = sha256()
    seen: set[Path] = set()
    below: dict[str, set[str]] = {}  # file -> the files it imports, transitively
    roots = import_roots(main, allow_import)

    def visit(p: Path, is_main: bool, loc=None) -> set[str]:
        rp = _real(p, str(p))
        if rp in seen:
            return {str(p)} | below.get(str(p), set())
        if is_main:
            data = S.read_spec_bytes(p) if text is None else text.encode("utf-8")
        else:
            try:
                # the resolved path: the file whose location import_target checked
                data = read_limited(rp, S.MAX_SPEC_BYTES)
            except FileRefused as exc:
                if exc.reason == "no such file" and p.parent.resolve() == library_dir().resolve():
                    have = ", ".join(sorted(f"{LIBRARY}{f.name}" for f in library_dir().glob("*.fr")))
                    raise SpecError(f"no library file {LIBRARY}{p.name} (the library has: {have})", loc) from None
                raise SpecError(f"cannot import {str(p)!r}: {exc.reason}", loc) from None
        seen.add(rp)
        if is_main and text is not None:  # given text is shown in errors whatever its name
            module = S.parse(S.decode_spec(data, p), main)
        else:  # the bundled library's parse is cached: nearly every spec imports it
            module = S.parse_file(p, data, cache=rp.is_relative_to(library_dir().resolve()))
        digest.update(p.name.encode() + b"\0" + data + b"\0")
        spec.files.append(str(p))
        mine: set[str] = set()
        for imp in module.imports:
            try:
                target = import_target(p, imp.path, roots)
            except SpecError as exc:
                raise SpecError(exc.message, imp.loc, exc.hint) from None
            mine |= visit(target, False, imp.loc)
        below[str(p)] = mine
        for prm in module.params:
            prev = spec.params.get(prm.name)
            if prev is not None and prev.loc.file in mine:
                # A file may re-declare a parameter of a library it imports: its default wins,
                # the library's choices still apply.
                spec.params[prm.name] = S.Param(prm.name, prm.default, prm.choices or prev.choices, prm.loc)
                continue
            _define(spec.params, prm, "parameter")
        for rule in module.rules:
            if rule.name in PRIMS or rule.name in BUILTINS:
                raise SpecError(f"rule name '{rule.name}' is a builtin primitive; choose another name", rule.loc)
            _define(spec.rules, rule, "rule")
        for d in module.defs:
            # A def may hide a scalar builtin (`def width(c, r)`, as a parameter may), not a
            # primitive: `conv` must keep meaning the primitive everywhere.
            if d.name in PRIMS:
                raise SpecError(f"def name '{d.name}' is a builtin primitive; choose another name", d.loc)
            if d.name in spec.rules:
                raise SpecError(f"def '{d.name}' has the name of the rule defined at "
                                f"{spec.rules[d.name].loc}; choose another name", d.loc)
            _define(spec.defs, d, "def")
        if is_main:
            for net in module.networks:
                _define(spec.networks, net, "network")
        return {str(p)} | mine

    visit(Path(main), True)
    spec.sha256 = digest.hexdigest()
    if not spec.networks:
        raise SpecError(f"{main} defines no network; add `network mynet {{ input [3, 32, 32]  body = ... }}`")
    check(spec)
    return spec


def _define(table: dict, item, what: str) -> None:
    if item.name in table:
        prev = table[item.name].loc
        raise SpecError(f"{what} '{item.name}' is defined twice (first at {prev})", item.loc)
    table[item.name] = item


# ----------------------------------------------------------------------------- static checks


def check(spec: Spec) -> None:
    """The static checks: names, arity, parameter names, rule cycles without a base case."""
    with limits.recursion_room():  # the walks below recurse once per expression level
        _check(spec)


def _check(spec: Spec) -> None:
    glob = set(spec.params) | set(spec.rules) | set(spec.defs) | set(PRIMS) | set(BUILTINS)
    for name, d in spec.defs.items():
        if name in spec.rules:
            raise SpecError(f"def '{name}' has the name of the rule defined at "
                            f"{spec.rules[name].loc}; choose another name", d.loc)
    for prm in spec.params.values():
        # A parameter is looked up before rules and primitives: it would silently hide them.
        # (Hiding a scalar builtin is allowed: `param width = 64` is the usual name, and calling
        # it then says which parameter hides `width(z)`.)
        if prm.name in PRIMS:
            raise SpecError(f"parameter '{prm.name}' has the name of the primitive '{prm.name}', "
                            "which it would hide; choose another name", prm.loc)
        if prm.name in spec.rules:
            raise SpecError(f"parameter '{prm.name}' has the name of the rule defined at "
                            f"{spec.rules[prm.name].loc}; choose another name", prm.loc)
        if prm.name in spec.defs:
            raise SpecError(f"parameter '{prm.name}' has the name of the def at "
                            f"{spec.defs[prm.name].loc}; choose another name", prm.loc)
        _check_expr(spec, prm.default, glob, set())
        for c in prm.choices or ():
            _check_expr(spec, c, glob, set())
    for rule in spec.rules.values():
        names = [p.name for p in rule.params] + list(rule.tensors)
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise SpecError(f"rule '{rule.name}' declares '{sorted(dup)[0]}' twice", rule.loc)
        seen_default = False
        for p in rule.params:
            if p.default is not None:
                seen_default = True
                _check_expr(spec, p.default, glob, set())
            elif seen_default:
                raise SpecError(f"parameter '{p.name}' of rule '{rule.name}' needs a default, "
                                "since an earlier parameter has one", p.loc)
        _check_expr(spec, rule.body, glob, set(names))
    for d in spec.defs.values():
        dup = {n for n in d.params if d.params.count(n) > 1}
        if dup:
            raise SpecError(f"def '{d.name}' declares '{sorted(dup)[0]}' twice", d.loc)
        _check_expr(spec, d.body, glob, set(d.params))
    for net in spec.networks.values():
        for e in net.input:
            _check_expr(spec, e, glob, set())
        names = [s.name for s in net.sections]
        for s in net.sections:
            if names.count(s.name) > 1:
                raise SpecError(f"section '{s.name}' appears twice in network '{net.name}'", s.loc)
            if s.name in ("input", "output"):
                raise SpecError(f"'{s.name}' is reserved and cannot name a section", s.loc)
            _check_expr(spec, s.expr, glob, set())
    _check_base_cases(spec)


def _callee(spec: Spec, e, local: set[str]):
    """The rule or primitive a (possibly indexed) expression names, if statically known."""
    if isinstance(e, S.Var) and e.name not in local:
        if e.name in spec.rules:
            return spec.rules[e.name]
        if e.name in PRIMS:
            return PRIMS[e.name]
    return None


def _check_expr(spec: Spec, e, glob: set[str], local: set[str]) -> None:
    if isinstance(e, S.Let):
        _check_expr(spec, e.value, glob, local)
        _check_expr(spec, e.body, glob, local | {e.name})
        return
    if isinstance(e, S.Var):
        if e.name not in local and e.name not in glob:
            raise SpecError(f"unknown name '{e.name}'" + suggest(e.name, local | glob), e.loc)
    if isinstance(e, S.Index):
        d = _def_named(spec, e.target, local)
        if d is not None:
            raise SpecError(f"def '{d.name}' is called with parentheses, as in {d.name}(...); "
                            "square brackets bind a rule's or primitive's parameters", e.loc)
        callee = _callee(spec, e.target, local)
        if callee is not None:
            _check_binding(callee, e.args, e.loc)
    if isinstance(e, S.Call) and _def_named(spec, e.target, local) is not None:
        _check_def_call(_def_named(spec, e.target, local), e)
    elif isinstance(e, S.Call):
        callee = _callee(spec, e.target, local)
        if isinstance(e.target, S.Index):
            callee = _callee(spec, e.target.target, local)
        if callee is not None:
            for a in e.args:
                if a.name is not None:
                    raise SpecError(f"tensor arguments of '{callee.name}' cannot be named; bind "
                                    f"parameters with '{callee.name}[{a.name}=...]'", a.loc)
            want = callee.tensors if isinstance(callee, S.Rule) else callee.tensors
            n = len(e.args)
            if isinstance(callee, S.Rule):
                if n != len(want):
                    raise SpecError(f"rule '{callee.name}' takes {len(want)} tensor argument"
                                    f"{'s' if len(want) != 1 else ''} ({', '.join(want)}), got {n}", e.loc)
            elif want == -1 and n < 2:
                raise SpecError(f"'{callee.name}' needs at least 2 tensors, got {n}", e.loc)
            elif want >= 0 and n != want:
                raise SpecError(f"'{callee.name}' takes {want} tensor argument{'s' if want != 1 else ''}, got {n}", e.loc)
    for c in S.children(e):
        _check_expr(spec, c, glob, local)


def _def_named(spec: Spec, e, local: set[str]) -> S.Def | None:
    """The def an expression names, if it is a global name not hidden by a local one."""
    if isinstance(e, S.Var) and e.name not in local:
        return spec.defs.get(e.name)
    return None


def _check_def_call(d: S.Def, e: S.Call) -> None:
    for a in e.args:
        if a.name is not None:
            raise SpecError(f"arguments of def '{d.name}' are positional: write {d.name}("
                            + ", ".join(d.params) + ")", a.loc)
    if len(e.args) != len(d.params):
        raise SpecError(f"def '{d.name}' takes {len(d.params)} argument{'s' if len(d.params) != 1 else ''}"
                        f" ({', '.join(d.params) or 'none'}), got {len(e.args)}", e.loc)


def param_names(callee) -> list[str]:
    if isinstance(callee, S.Rule):
        return [p.name for p in callee.params]
    return [p[0] for p in callee.params]


def _check_binding(callee, args, loc) -> None:
    names = param_names(callee)
    kind = "rule" if isinstance(callee, S.Rule) else "primitive"
    positional = [a for a in args if a.name is None]
    if len(positional) > len(names):
        raise SpecError(f"{kind} '{callee.name}' takes at most {len(names)} parameter"
                        f"{'s' if len(names) != 1 else ''} ({', '.join(names) or 'none'}), got {len(positional)}", loc)
    for a in args:
        if a.name is not None and a.name not in names:
            raise SpecError(f"{kind} '{callee.name}' has no parameter '{a.name}'"
                            + suggest(a.name, names) + f"; its parameters: {', '.join(names) or 'none'}", a.loc)


def _locals(item) -> set[str]:
    """The names a rule or def binds for its body."""
    if isinstance(item, S.Def):
        return set(item.params)
    return {p.name for p in item.params} | set(item.tensors)


def _rule_refs(spec: Spec, rule) -> set[str]:
    """The rules and defs the body of `rule` (a rule or a def) names."""
    out: set[str] = set()

    def walk(e, local):
        if isinstance(e, S.Let):
            walk(e.value, local)
            walk(e.body, local | {e.name})
            return
        if isinstance(e, S.Var) and e.name not in local and (e.name in spec.rules or e.name in spec.defs):
            out.add(e.name)
        for c in S.children(e):
            walk(c, local)

    walk(rule.body, _locals(rule))
    return out


def _can_finish(e, scc: set[str], finishing: set[str], local: set[str]) -> bool:
    """True if some choice of `if` branches evaluates `e` referring, among the rules of `scc`,
    only to rules in `finishing` (rules already known to have a way to finish)."""
    if isinstance(e, S.Var):
        return e.name in local or e.name not in scc or e.name in finishing
    if isinstance(e, S.Let):
        return (_can_finish(e.value, scc, finishing, local)
                and _can_finish(e.body, scc, finishing, local | {e.name}))
    if isinstance(e, S.If):
        return _can_finish(e.cond, scc, finishing, local) and (
            _can_finish(e.then, scc, finishing, local) or _can_finish(e.other, scc, finishing, local))
    return all(_can_finish(c, scc, finishing, local) for c in S.children(e))


def rule_cycles(calls: dict[str, list[str]]) -> list[set[str]]:
    """The strongly connected components of the rule call graph that contain a cycle (a
    component of several rules, or one rule calling itself), in definition order.

    Tarjan's algorithm, iterative (a hostile spec may define thousands of rules); written out
    here rather than taken from networkx, whose import would cost every command more time than
    parsing and compiling a spec (see `fractalc.ir.graph`)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    comps: list[set[str]] = []
    for root in calls:
        if root in index:
            continue
        work = [(root, iter(calls[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(calls[w])))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = set()
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.add(w)
                        if w == v:
                            break
                    if len(comp) > 1 or v in calls[v]:
                        comps.append(comp)
    order = {name: i for i, name in enumerate(calls)}
    return sorted(comps, key=lambda c: min(order[n] for n in c))


def _check_base_cases(spec: Spec) -> None:
    items = {**spec.rules, **spec.defs}  # one namespace: load refuses a def named like a rule
    calls = {name: sorted(_rule_refs(spec, item)) for name, item in items.items()}
    for comp in rule_cycles(calls):
        # The rules that can finish, to a fixed point: one with a branch free of the cycle's
        # rules, then one whose branch only calls those (f calls g[n - 1], g has a base case).
        finishing: set[str] = set()
        grew = True
        while grew:
            grew = False
            for name in sorted(comp - finishing):
                rule = items[name]
                if _can_finish(rule.body, comp, finishing, _locals(rule)):
                    finishing.add(name)
                    grew = True
        for name in sorted(comp - finishing):
            rule = items[name]
            kind = "def" if isinstance(rule, S.Def) else "rule"
            others = sorted(comp - {name})
            via = f" (through {', '.join(others)})" if others else ""
            raise SpecError(f"{kind} '{name}' recurses without a base case: every branch calls "
                            f"'{name}' again{via}; add `if ... then <base case> else ...`", rule.loc)
