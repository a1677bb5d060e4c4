"""The per-user parser cache (fractalc/parser_cache.py) and compile_spec's three kinds of input.

References: a parser built fresh by lark from the grammar (the cached one must parse to the
same trees), and compile_spec on the path (text and Spec inputs must give the same graph)."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest
from lark import Lark

from fractalc.lang import parser_cache as pc
from fractalc.lang import syntax as S
from fractalc.compiler import compile_spec
from fractalc.errors import SpecSyntaxError
from fractalc.ir.printer import emit_json

from conftest import SPECS


def _fresh():
    return Lark(S.grammar_text(), **S._PARSER_OPTIONS)


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("FRACTALC_CACHE_DIR", str(d))
    monkeypatch.delenv("FRACTALC_NO_PARSER_CACHE", raising=False)
    return d


def _build_counted():
    calls = []

    def build():
        calls.append(1)
        return _fresh()
    return build, calls


def test_key_changes_with_the_grammar_and_lark_version():
    g = S.grammar_text()
    k = pc.cache_key(g, S._PARSER_OPTIONS, "1.3.1")
    assert k == pc.cache_key(g, dict(S._PARSER_OPTIONS), "1.3.1")  # deterministic
    assert k != pc.cache_key(g + "\n// changed\n", S._PARSER_OPTIONS, "1.3.1")
    assert k != pc.cache_key(g.replace("param", "parm", 1), S._PARSER_OPTIONS, "1.3.1")
    assert k != pc.cache_key(g, {**S._PARSER_OPTIONS, "strict": False}, "1.3.1")
    assert k != pc.cache_key(g, S._PARSER_OPTIONS, "1.3.2")


def test_second_load_comes_from_the_cache_and_parses_the_same(cache):
    text = (SPECS / "rf_c3d4.fr").read_text()
    build, calls = _build_counted()
    pc.load_or_build(S.grammar_text(), S._PARSER_OPTIONS, build)
    files = list(cache.iterdir())
    assert len(calls) == 1 and len(files) == 1
    assert oct(cache.stat().st_mode & 0o777) == oct(0o700)
    assert files[0].stat().st_mode & 0o077 == 0
    loaded = pc.load_or_build(S.grammar_text(), S._PARSER_OPTIONS, build)
    assert len(calls) == 1  # not rebuilt
    ref = _fresh()
    assert loaded.parse(text, start="start") == ref.parse(text, start="start")
    t1, t2 = loaded.parse("f[a](z) @ \"c{x}\"", start="expr"), ref.parse("f[a](z) @ \"c{x}\"", start="expr")
    assert t1 == t2 and (t1.meta.line, t1.meta.column, t1.meta.end_column) == (t2.meta.line, t2.meta.column, t2.meta.end_column)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "global", "other-key"])
def test_a_damaged_or_foreign_file_is_ignored_and_rewritten(cache, damage):
    build, calls = _build_counted()
    pc.load_or_build(S.grammar_text(), S._PARSER_OPTIONS, build)
    (f,) = cache.iterdir()
    data = f.read_bytes()
    header = data[: data.index(b"\n") + 1]
    if damage == "truncate":
        f.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        f.write_bytes(header + b"\x80\x05not a pickle")
    elif damage == "global":  # would run code if unpickled blindly
        f.write_bytes(header + pickle.dumps({"data": os.system, "memo": 1}))
    else:
        f.write_bytes(data.replace(header, pc._MAGIC + b"0" * 64 + b"\n"))
    p = pc.load_or_build(S.grammar_text(), S._PARSER_OPTIONS, build)
    assert len(calls) == 2 and p.parse("1 + 2", start="expr")
    assert f.read_bytes().startswith(header) and f.read_bytes() != data[: len(data) // 2]
    pc.load_or_build(S.grammar_text(), S._PARSER_OPTIONS, build)
    assert len(calls) == 2  # the rewritten file is whole and used


def test_an_untrusted_folder_or_file_is_not_used(cache):
    build, calls = _build_counted()
    cache.mkdir(mode=0o777)
    os.chmod(cache, 0o777)
    pc.load_or_build(S.grammar_text(), S._PARSER_OPTIONS, build)
    assert cache.stat().st_mode & 0o077 == 0  # ours: tightened, then used
    (f,) = cache.iterdir()
    os.chmod(f, 0o666)  # a file others could have written is never read
    pc.load_or_build(S.grammar_text(), S._PARSER_OPTIONS, build)
    assert len(calls) == 2
    link = cache.parent / "link"
    link.symlink_to(cache)
    os.environ["FRACTALC_CACHE_DIR"] = str(link)
    pc.load_or_build(S.grammar_text(), S._PARSER_OPTIONS, build)
    assert len(calls) == 3  # a symlinked folder is not trusted


def test_unwritable_cache_still_parses(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("FRACTALC_CACHE_DIR", str(blocker / "sub"))
    build, calls = _build_counted()
    assert pc.load_or_build(S.grammar_text(), S._PARSER_OPTIONS, build).parse("1", start="expr")
    monkeypatch.setenv("FRACTALC_NO_PARSER_CACHE", "1")
    assert pc.cache_dir() is None


def test_a_fresh_process_uses_the_cache_for_errors_and_the_formatter(tmp_path):
    """Syntax errors (which look up terminal patterns) and `fmt` (the comment-keeping lexer)
    work the same from a cached parser as from a fresh one."""
    bad = tmp_path / "bad.fr"
    bad.write_text("network n {\n    input [1, 2, 2]\n    body = conv[4] >> \n}\n")
    env = {**os.environ, "FRACTALC_CACHE_DIR": str(tmp_path / "c")}
    code = ("import sys; from fractalc.lang import syntax as S, formatter as F\n"
            "try:\n    S.parse(open(sys.argv[1]).read(), 'bad.fr')\n"
            "except Exception as e:\n    print(e.format())\n"
            "print(F.format_source(open(sys.argv[2]).read(), 'x.fr'), end='')\n")
    runs = [subprocess.run([sys.executable, "-c", code, str(bad), str(SPECS / "rf_c3d4.fr")],
                           capture_output=True, text=True, env=env, timeout=120) for _ in range(2)]
    assert runs[0].returncode == 0, runs[0].stderr
    assert runs[0].stdout == runs[1].stdout and "expected" in runs[0].stdout
    assert len(list((tmp_path / "c").iterdir())) == 1


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
        for bad in (["Lit", 1], ["os.system", 1], {"x": []}):
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
