"""Regenerate fractalc/lang/_parser_generated.py, the spec parser, from grammars/fractal.lark.

    .venv/bin/python scripts/gen_parser.py            # write the module
    .venv/bin/python scripts/gen_parser.py --check    # exit 1 when the module is out of date

The module is lark's standalone LALR parser (``lark.tools.standalone``): lark's parsing runtime
and the built tables in one file, so parsing a spec imports neither lark nor its grammar
loader (~30 ms a process). The parser is built here with `PARSER_OPTIONS`, strict mode
included (a shift/reduce conflict or a regex collision fails the build); the options that shape
trees and errors (lexer, start symbols, positions, placeholders) are stored in the tables.

Edits to lark's runtime text keep its imports off the start-up path without changing what it
does: the ``lark`` logger (level CRITICAL, so silent for anything a parse logs) and ``pickle,
zlib, base64`` (used only by ``Lark.save``/``load`` and lark's cache) are created on first use;
lark's one frozen dataclass (``TextSlice``) is a `fractalc.records` record (the same
semantics without importing dataclasses and exec-compiling its methods); the module starts with
``from __future__ import annotations`` (lark's typing annotations are not evaluated at import,
and nothing reads them); and the lexers get an
``re`` whose patterns are compiled ahead of time (`_LEXER_RE`: Python compiles regular
expressions in pure Python, ~10 ms of a first parse; the table is checked against `re` by the
tests and used only by the Python version that wrote it). Each edit must match lark's text
exactly once, so a lark whose runtime reads differently fails here rather than producing a
half-edited module.

The module records the grammar's sha256: tests/test_parser_generated.py fails when the grammar
changed and this script was not run, and runs ``--check`` against the installed lark.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRAMMAR = ROOT / "grammars" / "fractal.lark"
OUT = ROOT / "fractalc" / "lang" / "_parser_generated.py"

# What `fractalc.lang.syntax` parses with (the options the former lark.Lark parser was built with).
PARSER_OPTIONS = dict(parser="lalr", lexer="contextual", strict=True, propagate_positions=True,
                      start=["start", "expr"], maybe_placeholders=True, keep_all_tokens=False)

_LAZY = '''
class _OnFirstUse:
    """Stands for a module-level object that costs an import: made by `make` on first use."""

    def __init__(self, make):
        object.__setattr__(self, "_make", make)
        object.__setattr__(self, "_made", None)

    def _get(self):
        if self._made is None:
            object.__setattr__(self, "_made", self._make())
        return self._made

    def __getattr__(self, name):
        return getattr(self._get(), name)


def _lark_logger():
    import logging
    made = logging.getLogger("lark")
    made.addHandler(logging.StreamHandler())
    made.setLevel(logging.CRITICAL)
    return made


'''

# (lark's text, its replacement): each must occur exactly once.
_EDITS = [
    ("import logging\n", ""),
    ('logger: logging.Logger = logging.getLogger("lark")\nlogger.addHandler(logging.StreamHandler())\n',
     _LAZY + "logger = _OnFirstUse(_lark_logger)\n"),
    ("\nlogger.setLevel(logging.CRITICAL)\n", "\n"),
    ("from dataclasses import dataclass\n",
     "from fractalc.records import record as dataclass  # the same class, without exec (one use)\n"),
    ("lexer_conf.re_module = regex if options.regex else re\n",
     "lexer_conf.re_module = regex if options.regex else _lexer_re  # see the end of the file\n"),
    ("\nimport pickle, zlib, base64\n",
     "\nimport importlib as _importlib\n"
     "pickle, zlib, base64 = (_OnFirstUse(lambda m=m: _importlib.import_module(m))\n"
     "                        for m in ('pickle', 'zlib', 'base64'))\n"),
]


# Appended to lark's text: the `re` the lexers use (see the module doc).
_LEXER_RE = '''

# --- added by scripts/gen_parser.py ---------------------------------------------------------
# The lexers' regular expressions, compiled ahead of time. Python compiles a pattern in pure
# Python (re._parser, re._compiler), and the contextual lexer builds a scanner per set of
# terminals a parser state accepts: ~10 ms of a short command's first parse. _RE_CODE holds, per
# (pattern, flags), what re._compiler.compile hands to _sre.compile, valid for the interpreter
# named by _RE_KEY; any other pattern, or any other interpreter, is compiled by `re` as usual.
import _sre


class _LexerRe:
    """`re`, as the lexers call it (compile, match), with _RE_CODE's patterns precompiled."""

    error = re.error

    def __init__(self):
        self._compiled = {}
        here = (sys.implementation.name, *sys.version_info[:2], _sre.MAGIC, _sre.CODESIZE)
        self._precompiled = _RE_CODE if _RE_KEY == here else {}

    def compile(self, pattern, flags=0):
        key = (pattern, flags)
        got = self._compiled.get(key)
        if got is None:
            entry = self._precompiled.get(key)
            if entry is None:
                got = re.compile(pattern, flags)
            else:
                final_flags, code, groups, groupindex, indexgroup = entry
                got = _sre.compile(pattern, final_flags, list(code), groups, dict(groupindex), indexgroup)
            self._compiled[key] = got
        return got

    def match(self, pattern, string, flags=0):
        return self.compile(pattern, flags).match(string)

    def __getattr__(self, name):
        return getattr(re, name)


'''


def _regex_table(module_text: str) -> str:
    """The text of _RE_KEY and _RE_CODE for the module `module_text` (whose own table is empty):
    every pattern its lexers compile, found by building every lexer's scanner, with the
    arguments re._compiler.compile passes to _sre.compile for it."""
    import re
    import re._compiler
    import re._parser
    import types
    import _sre

    mod = types.ModuleType("_parser_generated_draft")
    sys.modules[mod.__name__] = mod  # lark's one dataclass looks its module up there
    try:
        exec(compile(module_text, str(OUT), "exec"), mod.__dict__)
    finally:
        del sys.modules[mod.__name__]
    seen: set[tuple[str, int]] = set()
    real = mod._lexer_re.compile
    mod._lexer_re.compile = lambda pattern, flags=0: seen.add((pattern, flags)) or real(pattern, flags)
    lexer = mod.Lark_StandAlone().parser.lexer
    for each in {id(x): x for x in [*lexer.lexers.values(), lexer.root_lexer]}.values():
        each.scanner  # builds it: its union pattern and the keyword (unless) patterns
    key = (sys.implementation.name, *sys.version_info[:2], _sre.MAGIC, _sre.CODESIZE)
    lines = [f"_RE_KEY = {key!r}", "_RE_CODE = {"]
    for pattern, flags in sorted(seen):
        p = re._parser.parse(pattern, flags)
        code = re._compiler._code(p, flags)
        groupindex = dict(p.state.groupdict)
        indexgroup = [None] * p.state.groups
        for name, i in groupindex.items():
            indexgroup[i] = name
        # (the opcodes are named int constants: written as the plain ints _sre reads)
        entry = (int(flags | p.state.flags), tuple(int(c) for c in code), p.state.groups - 1,
                 groupindex, tuple(indexgroup))
        lines.append(f"    {(pattern, flags)!r}: {entry!r},")
    lines.append("}")
    lines.append("_lexer_re = _LexerRe()")
    return "\n".join(lines) + "\n"


def _canonical_tables(data: dict, memo: dict) -> tuple[dict, dict]:
    """`data` with the LALR table renumbered in a fixed order (lark numbers states by the
    order of a set of item sets hashed by identity, which differs from run to run): tokens by
    name, states breadth-first from the start states, following tokens by name. The same
    grammar then gives the same text; the parser is the same either way."""
    table = data["parser"]["parser"]
    tokens, states = table["tokens"], table["states"]
    tok_new = {old: new for new, (old, _) in enumerate(sorted(tokens.items(), key=lambda kv: kv[1]))}
    order: dict[int, int] = {}
    queue = [table["start_states"][s] for s in sorted(table["start_states"])]
    queue += [table["end_states"][s] for s in sorted(table["end_states"])]
    while queue:
        st = queue.pop(0)
        if st in order:
            continue
        order[st] = len(order)
        for tok, (action, arg) in sorted(states[st].items(), key=lambda kv: tokens[kv[0]]):
            if action == 0:  # shift: arg is the next state
                queue.append(arg)
    for st in states:  # unreachable states (none in an LALR table), kept all the same
        order.setdefault(st, len(order))
    new_states = {}
    for st, new in sorted(order.items(), key=lambda kv: kv[1]):
        acts = sorted(states[st].items(), key=lambda kv: tok_new[kv[0]])
        new_states[new] = {tok_new[t]: ((0, order[arg]) if action == 0 else (action, arg))
                           for t, (action, arg) in acts}
    table.update(tokens={tok_new[k]: v for k, v in sorted(tokens.items(), key=lambda kv: tok_new[kv[0]])},
                 states=new_states,
                 start_states={k: order[v] for k, v in sorted(table["start_states"].items())},
                 end_states={k: order[v] for k, v in sorted(table["end_states"].items())})
    return data, memo


def generate() -> str:
    """The module's text, from the grammar file and the installed lark."""
    import lark
    from lark.tools.standalone import gen_standalone

    text = GRAMMAR.read_text()
    parser = lark.Lark(text, **PARSER_OPTIONS)
    serialize = parser.memo_serialize  # what gen_standalone writes out, made canonical
    parser.memo_serialize = lambda types: _canonical_tables(*serialize(types))
    buf = io.StringIO()
    gen_standalone(parser, out=buf)
    body = buf.getvalue()
    for old, new in _EDITS:
        if body.count(old) != 1:
            raise SystemExit(f"lark {lark.__version__}'s standalone text has {body.count(old)} copies "
                             f"of {old!r} (expected 1): update _EDITS in {Path(__file__).name}")
        body = body.replace(old, new)
    sha = hashlib.sha256(text.encode()).hexdigest()
    head = (
        '"""The spec parser: lark\'s standalone LALR parser for grammars/fractal.lark.\n\n'
        "GENERATED by scripts/gen_parser.py from the grammar and lark's runtime: do not edit; run\n"
        "the script after changing the grammar (tests/test_parser_generated.py checks it). The\n"
        "generated code is under the Mozilla Public License 2.0 (see lark's note below).\n"
        '"""\n'
        # lark's runtime annotates its functions with typing constructs (Optional[...],
        # Callable[...]) that would be evaluated at import, ~0.7 ms a process; nothing reads them
        "from __future__ import annotations\n"
        f"GRAMMAR_SHA256 = {sha!r}\n"
        f"LARK_VERSION = {lark.__version__!r}\n"
        f"OPTIONS = {PARSER_OPTIONS!r}\n\n"
    )
    draft = head + body + _LEXER_RE + "_RE_KEY = None\n_RE_CODE = {}\n_lexer_re = _LexerRe()\n"
    final = head + body + _LEXER_RE + _regex_table(draft)
    compile(final, str(OUT), "exec")  # a syntax error here, not at the next import
    return final


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when the module differs")
    args = ap.parse_args(argv)
    if os.environ.get("PYTHONHASHSEED") != "0":
        # lark numbers the LALR states in set order, which follows string hashes: one fixed
        # seed makes the module the same text on every run (any seed gives an equal parser).
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        return subprocess.run([sys.executable, __file__, *(argv if argv is not None else sys.argv[1:])],
                              env=env).returncode
    text = generate()
    if args.check:
        current = OUT.read_text() if OUT.exists() else ""
        if current != text:
            print(f"{OUT.relative_to(ROOT)} is out of date: run scripts/gen_parser.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)} ({len(text):,} characters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
