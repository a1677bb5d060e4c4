"""The per-user cache of the bundled library's parse (fractalc/lang/parser_cache.py) and
compile_spec's three kinds of input.

References: a fresh parse of the same text (a cached AST must equal it), and compile_spec on
the path (text and Spec inputs must give the same graph)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fractalc.lang import parser_cache as pc
from fractalc.lang import syntax as S
from fractalc.compiler import compile_spec
from fractalc.errors import SpecSyntaxError
from fractalc.ir.printer import emit_json

from conftest import SPECS


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("FRACTALC_CACHE_DIR", str(d))
    monkeypatch.delenv("FRACTALC_NO_PARSER_CACHE", raising=False)
    return d


@pytest.fixture()
def lib(tmp_path):
    """A library file and its fresh parse."""
    f = tmp_path / "lib.fr"
    text = (SPECS / "lib" / "sofar.fr").read_text()
    f.write_text(text)
    return f, S.parse(text, str(f))


@pytest.fixture()
def parses(monkeypatch):
    """Counts the parses that did not come from the cache."""
    calls = []
    real = S.parse
    monkeypatch.setattr(S, "parse", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


@pytest.mark.parametrize("damage", ["truncate", "garbage", "other-key", "not-an-ast"])
def test_a_damaged_or_foreign_entry_is_ignored_and_rewritten(cache, lib, parses, damage):
    f, fresh = lib
    assert S.parse_file(f, cache=True) == fresh
    (entry,) = cache.glob("ast-*.json")
    assert oct(cache.stat().st_mode & 0o777) == oct(0o700) and entry.stat().st_mode & 0o077 == 0
    data = entry.read_bytes()
    header = data[: data.index(b"\n") + 1]
    entry.write_bytes({"truncate": data[: len(data) // 2],
                       "garbage": header + b"\x80\x05not json",
                       "other-key": data.replace(header, pc._MAGIC + b"0" * 64 + b"\n"),
                       "not-an-ast": header + b'["os.system", "echo hi"]'}[damage])
    assert S.parse_file(f, cache=True) == fresh and parses == [1, 1]
    assert entry.read_bytes() == data  # rewritten whole
    assert S.parse_file(f, cache=True) == fresh and parses == [1, 1]  # and used


def test_an_untrusted_folder_or_entry_is_not_used(cache, lib, parses):
    f, fresh = lib
    cache.mkdir(mode=0o777)
    os.chmod(cache, 0o777)
    S.parse_file(f, cache=True)
    assert cache.stat().st_mode & 0o077 == 0  # ours: tightened, then used
    (entry,) = cache.glob("ast-*.json")
    os.chmod(entry, 0o666)  # an entry others could have written is never read
    assert S.parse_file(f, cache=True) == fresh and parses == [1, 1]
    link = cache.parent / "link"
    link.symlink_to(cache)
    os.environ["FRACTALC_CACHE_DIR"] = str(link)
    assert S.parse_file(f, cache=True) == fresh and parses == [1, 1, 1]  # a symlinked folder: not trusted


def test_unwritable_or_disabled_cache_still_parses(tmp_path, monkeypatch, lib, parses):
    f, fresh = lib
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("FRACTALC_CACHE_DIR", str(blocker / "sub"))
    assert S.parse_file(f, cache=True) == fresh
    monkeypatch.setenv("FRACTALC_NO_PARSER_CACHE", "1")
    assert pc.cache_dir() is None
    assert S.parse_file(f, cache=True) == fresh and parses == [1, 1]


def test_a_fresh_process_reports_errors_and_formats_without_lark(tmp_path):
    """Syntax errors (which look up terminal patterns) and `fmt` (the comment-keeping lexer)
    work from the generated parser alone: lark is never imported."""
    bad = tmp_path / "bad.fr"
    bad.write_text("network n {\n    input [1, 2, 2]\n    body = conv[4] >> \n}\n")
    env = {**os.environ, "FRACTALC_CACHE_DIR": str(tmp_path / "c")}
    code = ("import sys; from fractalc.lang import syntax as S, formatter as F\n"
            "try:\n    S.parse(open(sys.argv[1]).read(), 'bad.fr')\n"
            "except Exception as e:\n    print(e.format())\n"
            "print(F.format_source(open(sys.argv[2]).read(), 'x.fr'), end='')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lark', 'interegular')))\n")
    r = subprocess.run([sys.executable, "-c", code, str(bad), str(SPECS / "rf_c3d4.fr")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "bad.fr:4:1: unexpected '}'; expected" in r.stdout and "network rf_c3d4" in r.stdout
    assert r.stdout.rstrip().endswith("[]")


# ----------------------------------------------------------------------------- compile_spec


def test_compile_spec_takes_a_path_text_or_a_spec(tmp_path):
    from fractalc.lang.resolve import load
    path = SPECS / "rf_c3d4_resnet21.fr"
    ref = emit_json(compile_spec(path, {"width": "16"}), None, {})
    by_text = compile_spec(path.read_text(), {"width": "16"}, file=path)
    assert emit_json(by_text, None, {}) == ref
    assert by_text.spec.sha256 == compile_spec(path).spec.sha256
    spec = load(path)
    assert emit_json(compile_spec(spec, {"width": "16"}), None, {}) == ref
    with pytest.raises(SpecSyntaxError) as e:
        compile_spec("network n {\n  input [1, 2, 2]\n  body = conv[\n}\n", file="inline.fr")
    assert str(e.value.loc).startswith("inline.fr:4:")
    with pytest.raises(TypeError):
        compile_spec(42)


def test_run_default_keeps_expand_shapes_and_verify_still_checks():
    from fractalc.ir import passes
    from fractalc.ir.passes.verify import IRError
    c = compile_spec(SPECS / "drf_c3d4.fr")
    g = c.graph.copy()
    n = next(n for n in g.order() if g.inputs(n))
    g.set_shape(n, (1, 2, 3))
    with pytest.raises(IRError, match="shape"):
        passes.verify(g)
    g.set_shape(n, None)  # a graph without shapes still gets them
    assert passes.run_default(g).shape(n) == c.graph.shape(n)


# ----------------------------------------------------------------------------- library ASTs


def test_ast_data_round_trips_every_shipped_file():
    import json
    for f in sorted(SPECS.rglob("*.fr")):
        m = S.parse(f.read_text(), str(f))
        data = json.loads(json.dumps(S.ast_to_data(m)))
        back = S.ast_from_data(data, str(f))
        assert back == m and hash(back) == hash(m), f
        for bad in (["Lit", 1], ["os.system", 1], {"x": []}, [], ["Loc", 1], ["Loc", 1, "2"],
                    {"t": [], "x": []}, {"t": "abc"}, [["Lit"], 1], b"bytes"):
            with pytest.raises((TypeError, KeyError, ValueError)):
                S.ast_from_data(["Module", "f", {"t": []}, {"t": []}, {"t": [bad]}, {"t": []}], "f")


def test_library_parse_is_cached_per_file_and_text(cache, tmp_path):
    lib = tmp_path / "lib.fr"
    text = (SPECS / "lib" / "sofar.fr").read_text()
    lib.write_text(text)
    fresh = S.parse(text, str(lib))
    assert S.parse_file(lib, cache=True) == fresh
    (entry,) = cache.glob("ast-*.json")
    calls = []
    real = S.parse
    S.parse = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        assert S.parse_file(lib, cache=True) == fresh and calls == []  # from the cache
        entry.write_bytes(entry.read_bytes()[:-20])  # corrupt: parsed again, rewritten
        assert S.parse_file(lib, cache=True) == fresh and calls == [1]
        lib.write_text(text + "\nparam extra_one = 1\n")  # a new text: a new entry, the old one gone
        m = S.parse_file(lib, cache=True)
        assert calls == [1, 1] and m.params[-1].name == "extra_one"
        assert len(list(cache.glob("ast-*.json"))) == 1 and not entry.exists()
    finally:
        S.parse = real


def test_errors_in_a_cached_library_file_still_show_its_line(cache, tmp_path, capsys):
    """A spec error located in the library (found after parsing) quotes the library's line,
    whether its AST was parsed or came from the cache."""
    from fractalc.cli import main
    spec = tmp_path / "s.fr"
    spec.write_text('import "fractalc:sofar.fr"\nnetwork n {\n    input [3, 8, 8]\n'
                    '    body = RF[2, 4]\n}\n')  # the residual add inside the library mismatches
    outs = []
    for _ in range(2):
        with pytest.raises(SystemExit):
            main(["check", str(spec)])
        outs.append(capsys.readouterr().err)
    assert len(list(cache.glob("ast-*.json"))) == 1  # the second run read the library from it
    assert outs[0] == outs[1]
    assert "sofar.fr:" in outs[0] and "f(z) + z" in outs[0] and "^" in outs[0]
