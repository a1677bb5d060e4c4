"""Every input is hostile (issue #12): data folders, imports, outputs and generated text.

References are independent of the code under test: the bytes a test wrote itself, marker files
that a successful attack would create, `os.stat` of the files, Python's own `compile` and `ast`
for emitted source, and the parser's import list for generated specs.
"""
from __future__ import annotations

import ast
import io
import os
import pickle
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fractalc.lang import syntax
from fractalc.cli import cli, main
from fractalc.compiler import compile_spec
from fractalc.errors import FractalcError, SpecError
from fractalc.fileio import FileRefused, atomic_write, read_limited
from fractalc.lang.resolve import load

from conftest import ROOT, SPECS

NET = "network n {\n    input [3, 8, 8]\n    body = conv[4]\n}\n"


def fail(args, capsys) -> str:
    """Run the CLI expecting exit status 1; the error text (stderr)."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    assert exc.value.code == 1, err
    assert "Traceback" not in err and "internal error" not in err
    return err


def spec(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- 1. data folders


def cifar_dict(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"training batch 1 of 1",
            b"labels": [int(v) for v in rng.integers(0, 10, n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"filenames": [f"img{i}.png".encode() for i in range(n)]}


def write_cifar(root: Path, train: dict, test: dict, protocol: int, numpy_core: bool = False):
    root.mkdir(parents=True, exist_ok=True)
    for name, d in (("data_batch_1", train), ("test_batch", test)):
        raw = pickle.dumps(d, protocol=protocol)
        if numpy_core:  # as numpy 1.x (and the real CIFAR files) name the module
            assert protocol == 2  # GLOBAL opcodes are plain text lines
            raw = raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
        (root / name).write_bytes(raw)


@pytest.mark.parametrize("protocol,numpy_core", [(2, False), (2, True), (4, False), (5, False)])
def test_genuine_cifar_batches_still_load(tmp_path, protocol, numpy_core):
    from fractalc.training.data import read_cifar_batch, load_data
    train, test = cifar_dict(6, 1), cifar_dict(3, 2)
    write_cifar(tmp_path / "c", train, test, protocol, numpy_core)
    got = read_cifar_batch(tmp_path / "c" / "data_batch_1")
    assert set(got) == set(train)
    assert np.array_equal(got[b"data"], train[b"data"]) and got[b"labels"] == train[b"labels"]
    assert got[b"filenames"] == train[b"filenames"]
    ds = load_data(str(tmp_path / "c"), (3, 32, 32))
    assert ds.train_x.shape == (6, 3, 32, 32) and ds.test_x.shape == (3, 3, 32, 32)
    assert ds.train_y.tolist() == train[b"labels"] and ds.test_y.tolist() == test[b"labels"]


class _RunsCode:
    """Unpickling this calls `fn(*args)`: what a crafted data_batch_1 does."""

    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("how", ["os.system", "builtins.open", "numpy.save"])
def test_crafted_cifar_pickle_runs_nothing(tmp_path, protocol, how):
    from fractalc.training.data import load_data
    marker = tmp_path / "PWNED"
    payload = {"os.system": _RunsCode(os.system, (f"touch {marker}",)),
               "builtins.open": _RunsCode(open, (str(marker), "w")),
               "numpy.save": _RunsCode(np.save, (str(marker), np.zeros(1)))}[how]
    d = cifar_dict()
    d[b"labels"] = payload
    write_cifar(tmp_path / "c", d, cifar_dict(), protocol)
    with pytest.raises(FractalcError) as exc:
        load_data(str(tmp_path / "c"), (3, 32, 32))
    msg = exc.value.format()
    assert not marker.exists() and not (tmp_path / "PWNED.npy").exists()
    assert str(tmp_path / "c" / "data_batch_1") in msg
    module = {"os.system": "posix.system", "builtins.open": "io.open", "numpy.save": "numpy.save"}[how]
    assert "refusing CIFAR batch" in msg and module in msg


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_object_arrays_are_refused(tmp_path, protocol):
    from fractalc.training.data import read_cifar_batch
    d = cifar_dict()
    d[b"data"] = np.array([1, "x", None], dtype=object)
    (tmp_path / "b").write_bytes(pickle.dumps(d, protocol=protocol))
    with pytest.raises(FractalcError, match="object dtype"):
        read_cifar_batch(tmp_path / "b")


def test_bytes_codec_other_than_latin1_is_refused(tmp_path):
    from fractalc.training.data import read_cifar_batch
    # protocol 2's bytes idiom with another codec: an allowed global with arguments it refuses
    raw = b"\x80\x02c_codecs\nencode\nq\x00X\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R."
    (tmp_path / "b").write_bytes(raw)
    with pytest.raises(FractalcError, match="rot13"):
        read_cifar_batch(tmp_path / "b")


def test_cifar_batch_that_is_a_fifo_is_refused(tmp_path):
    from fractalc.training.data import read_cifar_batch
    os.mkfifo(tmp_path / "data_batch_1")
    with pytest.raises(FractalcError, match="FIFO"):
        read_cifar_batch(tmp_path / "data_batch_1")  # never opened for a blocking read


def image_folder(root: Path, n=2):
    from PIL import Image
    for split in ("train", "test"):
        for cls in ("a", "b"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (i * 40, 10, 200)).save(d / f"{i}.png")


def test_image_folder_symlink_outside_is_refused(tmp_path):
    from PIL import Image

    from fractalc.training.data import load_data
    image_folder(tmp_path / "d")
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")
    (tmp_path / "d" / "train" / "a" / "evil.png").symlink_to(tmp_path / "outside.png")
    with pytest.raises(FractalcError, match="outside the data folder") as exc:
        load_data(str(tmp_path / "d"), (3, 32, 32))
    assert "evil.png" in exc.value.message
    (tmp_path / "d" / "train" / "a" / "evil.png").unlink()
    (tmp_path / "d" / "train" / "a" / "fine.png").symlink_to(tmp_path / "d" / "test" / "a" / "0.png")
    assert load_data(str(tmp_path / "d"), (3, 32, 32)).train_x.shape[0] == 5  # inside: fine


@pytest.mark.parametrize("side", [12, 20])  # 144 px: pillow warns; 400 px: pillow raises
def test_decompression_bomb_is_an_error(tmp_path, monkeypatch, side):
    from PIL import Image

    from fractalc.training.data import load_data
    image_folder(tmp_path / "d")
    Image.new("RGB", (side, side)).save(tmp_path / "d" / "train" / "b" / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # the 8x8 images stay below it
    with pytest.raises(FractalcError, match="refusing image .*bomb.png"):
        load_data(str(tmp_path / "d"), (3, 32, 32))


def test_corrupt_and_fifo_images_give_clean_errors(tmp_path):
    from fractalc.training.data import load_data
    image_folder(tmp_path / "d")
    bad = tmp_path / "d" / "train" / "a" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(FractalcError, match="cannot read image .*broken.png"):
        load_data(str(tmp_path / "d"), (3, 32, 32))
    bad.unlink()
    os.mkfifo(tmp_path / "d" / "train" / "a" / "pipe.png")
    with pytest.raises(FractalcError, match="pipe.png.*FIFO"):
        load_data(str(tmp_path / "d"), (3, 32, 32))


# ----------------------------------------------------------------------------- 2. imports


def passwd_lines() -> list[str]:
    return [l for l in Path("/etc/passwd").read_text().splitlines() if l.strip()]


@pytest.mark.parametrize("target", ["/etc/passwd", "../../../../../../../../etc/passwd",
                                    "fractalc:../../../../../../../../etc/passwd",
                                    "fractalc:/etc/passwd"])
def test_imports_cannot_read_system_files(tmp_path, capsys, target):
    p = spec(tmp_path / "a" / "b.fr", f'import "{target}"\n' + NET)
    err = fail(["check", p], capsys)
    assert err.startswith(f"{p}:1:1: cannot import {target!r}")
    for line in passwd_lines():
        assert line not in err
    assert "root:" not in err


def test_proc_environ_is_never_read(tmp_path):
    p = spec(tmp_path / "s.fr", 'import "/proc/self/environ"\n' + NET)
    q = spec(tmp_path / "t.fr", 'import "env"\n' + NET)
    (tmp_path / "env").symlink_to("/proc/self/environ")
    env = {**os.environ, "FRACTALC_SECRET_MARKER": "hunter2-7f3a"}
    for args in (["check", p], ["check", q], ["check", "--allow-import", "/proc", p], ["check", "/proc/self/environ"]):
        r = subprocess.run([sys.executable, "-m", "fractalc", *map(str, args)], env=env,
                           capture_output=True, text=True)
        assert r.returncode == 1, r.stderr
        assert "hunter2-7f3a" not in r.stderr + r.stdout and "Traceback" not in r.stderr
    assert "/proc file" in r.stderr


def test_symlink_inside_the_folder_pointing_outside_is_refused(tmp_path, capsys):
    outside = spec(tmp_path / "elsewhere" / "lib.fr", "rule r(z) = relu(z)\n")
    p = spec(tmp_path / "proj" / "main.fr", 'import "link.fr"\n' + NET)
    (tmp_path / "proj" / "link.fr").symlink_to(outside)
    err = fail(["check", p], capsys)
    assert "outside the folders this spec may import from" in err and "--allow-import" in err
    # allowed explicitly: the CLI option and the library keyword
    r = CliRunner().invoke(cli, ["check", "--allow-import", str(tmp_path / "elsewhere"), str(p)],
                           catch_exceptions=False)
    assert r.exit_code == 0 and r.output.startswith("ok: n")
    assert compile_spec(p, allow_import=[tmp_path / "elsewhere"]).name == "n"
    assert str(outside) in [str(Path(f).resolve()) for f in load(p, allow_import=[outside.parent]).files]


def test_relative_and_absolute_imports_inside_the_folder_work(tmp_path):
    spec(tmp_path / "p" / "sub" / "rules.fr", 'rule r(z) = relu(z)\n')
    spec(tmp_path / "p" / "sub" / "more.fr", 'import "rules.fr"\nrule s(z) = r(z)\n')
    p = spec(tmp_path / "p" / "main.fr",
             f'import "sub/more.fr"\nimport "{tmp_path / "p" / "sub" / "rules.fr"}"\n'
             "network n {\n    input [3, 8, 8]\n    body = s\n}\n")
    assert compile_spec(p).name == "n"


def test_allow_import_is_per_call_not_global(tmp_path):
    spec(tmp_path / "lib" / "r.fr", 'rule r(z) = relu(z)\n')
    p = spec(tmp_path / "proj" / "main.fr", 'import "../lib/r.fr"\nnetwork n {\n    input [3, 8, 8]\n    body = r\n}\n')
    assert compile_spec(p, allow_import=[tmp_path / "lib"]).name == "n"
    with pytest.raises(SpecError, match="outside the folders"):
        compile_spec(p)  # nothing carried over from the call before
    r = CliRunner().invoke(cli, ["stats", "--allow-import", str(tmp_path / "lib"), str(p)], catch_exceptions=False)
    assert r.exit_code == 0
    with pytest.raises(SpecError, match="outside the folders"):
        compile_spec(p)  # nor from a CLI command


def test_shipped_workflows_keep_working(tmp_path):
    # examples/ imports ../specs/lib: the bundled library of this tree
    assert compile_spec(ROOT / "examples" / "rf_digits.fr").name
    # an absolute import of the bundled library from anywhere
    p = spec(tmp_path / "x.fr", f'import "{SPECS / "lib" / "sofar.fr"}"\n'
             "network x {\n    input [64, 8, 8]\n    b = RF[2, 64]\n}\n")
    assert compile_spec(p).name == "x"


def test_non_spec_file_content_is_never_echoed(tmp_path, capsys):
    secret = "SECRETTOKEN alpha beta = gamma"
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "notes.txt").write_text("# fine\n" + secret + "\n")
    p = spec(tmp_path / "proj" / "main.fr", f'import "{tmp_path / "keys" / "notes.txt"}"\n' + NET)
    err = fail(["check", "--allow-import", tmp_path / "keys", p], capsys)
    assert "SECRETTOKEN" not in err and "gamma" not in err
    assert "notes.txt" in err and "is not a fractalc spec" in err and ":2:" in err  # position only
    # the same text in a .fr file is a spec: its line is shown
    (tmp_path / "keys" / "notes.fr").write_text("# fine\n" + secret + "\n")
    p.write_text(f'import "{tmp_path / "keys" / "notes.fr"}"\n' + NET)
    err = fail(["check", "--allow-import", tmp_path / "keys", p], capsys)
    assert "    " + secret in err.splitlines()


def test_binary_file_is_refused_without_echo(tmp_path, capsys):
    (tmp_path / "blob.fr").write_bytes(b"rule \xff\xfe SECRET\n")
    p = spec(tmp_path / "main.fr", 'import "blob.fr"\n' + NET)
    err = fail(["check", p], capsys)
    assert "not UTF-8" in err and "SECRET" not in err


def test_import_of_a_directory_fifo_or_device(tmp_path, capsys):
    (tmp_path / "dir.fr").mkdir()
    p = spec(tmp_path / "main.fr", 'import "dir.fr"\n' + NET)
    err = fail(["check", p], capsys)
    assert f"cannot import {str(tmp_path / 'dir.fr')!r}: it is a directory" in err
    os.mkfifo(tmp_path / "pipe.fr")
    p.write_text('import "pipe.fr"\n' + NET)
    assert "FIFO" in fail(["check", p], capsys)  # and returns: never waits for a writer
    p.write_text('import "/dev/zero"\n' + NET)
    assert "it is a device" in fail(["check", "--allow-import", "/dev", p], capsys)
    with pytest.raises(FractalcError, match="it is a directory"):
        load(tmp_path / "dir.fr")  # (the CLI's argument check refuses it before, exit 2)


def test_spec_size_cap(tmp_path, capsys):
    big = tmp_path / "big.fr"
    with open(big, "wb") as f:  # sparse: the size is refused from stat, nothing is read
        f.truncate(syntax.MAX_SPEC_BYTES + 1)
    p = spec(tmp_path / "main.fr", 'import "big.fr"\n' + NET)
    err = fail(["check", p], capsys)
    assert f"{syntax.MAX_SPEC_BYTES + 1:,} bytes, more than the {syntax.MAX_SPEC_BYTES:,} allowed" in err
    assert "more than" in fail(["check", big], capsys)


@pytest.mark.parametrize("sep", ["\f", "\v", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"])
def test_error_shows_the_line_its_position_names(tmp_path, capsys, sep):
    # str.splitlines splits at each of these; the parser counts only \n. They may stand in a
    # comment, and \f also between tokens (whitespace for the grammar).
    second = "param b = 2 \f param c = 3" if sep == "\f" else "param b = 2"
    text = f"param a = 1  # c{sep}d\n{second}\nnetwork n {{\n    input [3, 8, 8]\n    body = conv[nope]\n}}\n"
    p = tmp_path / "ff.fr"
    p.write_bytes(text.encode())
    err = fail(["check", p], capsys).splitlines()
    assert err[0].startswith(f"{p}:5:17: unknown name 'nope'")
    assert err[1] == "    " + text.split("\n")[4]
    assert err[2] == "    " + " " * 16 + "^"


def test_control_characters_in_a_shown_line_are_neutralised(tmp_path, capsys):
    p = tmp_path / "esc.fr"
    p.write_bytes(b'network n {\n    input [3, 8, 8]\n    body = conv[nope]  # \x1b[2J\x07\x08x\n}\n')
    err = fail(["check", p], capsys)
    assert not set(err) & {"\x1b", "\x07", "\x08"}
    lines = err.splitlines()
    assert lines[1] == '        body = conv[nope]  # ?[2J??x'
    assert lines[2].index("^") == lines[1].index("nope")


# ----------------------------------------------------------------------------- 3. outputs


def test_fmt_keeps_mode_and_symlink(tmp_path):
    real = tmp_path / "real.fr"
    real.write_text("network n {\ninput [3, 8, 8]\n  body=conv[4]\n}\n")
    os.chmod(real, 0o600)
    link = tmp_path / "link.fr"
    link.symlink_to(real)
    r = CliRunner().invoke(cli, ["fmt", str(link)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o600
    assert real.read_text() == "network n {\n    input [3, 8, 8]\n    body = conv[4]\n}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.fr", "real.fr"]


def test_compile_output_keeps_mode_and_new_files_follow_umask(tmp_path):
    p = spec(tmp_path / "s.fr", NET)
    out = tmp_path / "out.txt"
    out.write_text("old")
    os.chmod(out, 0o640)
    r = CliRunner().invoke(cli, ["compile", str(p), "-o", str(out)], catch_exceptions=False)
    assert r.exit_code == 0
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o640 and out.read_text() != "old"
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "new.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "new.txt").st_mode) == 0o640  # 0o666 & ~0o027


def test_write_through_a_symlink_to_another_folder(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "t.txt").write_text("old")
    (tmp_path / "a" / "l.txt").symlink_to("../b/t.txt")  # relative, resolved from a/
    atomic_write(tmp_path / "a" / "l.txt", "new")
    assert (tmp_path / "a" / "l.txt").is_symlink() and (tmp_path / "b" / "t.txt").read_text() == "new"
    atomic_write(tmp_path / "a" / "dangling", "x")  # plain new file
    (tmp_path / "a" / "d2").symlink_to(tmp_path / "b" / "created.txt")
    atomic_write(tmp_path / "a" / "d2", "made")  # a dangling link: its target is created
    assert (tmp_path / "b" / "created.txt").read_text() == "made" and (tmp_path / "a" / "d2").is_symlink()


@pytest.mark.parametrize("exc", [KeyboardInterrupt, OSError(28, "No space left on device")])
def test_failed_write_leaves_no_temp_file(tmp_path, monkeypatch, exc):
    target = tmp_path / "t.bin"
    target.write_bytes(b"before")

    def boom(*a):
        raise exc

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt if exc is KeyboardInterrupt else FractalcError):
        atomic_write(target, b"after" * 1000)
    assert target.read_bytes() == b"before"
    assert [p.name for p in tmp_path.iterdir()] == ["t.bin"]


def test_sigterm_during_a_write_removes_the_temp_file(tmp_path):
    # The fsync of the write sends SIGTERM to its own process: the handler must remove the
    # temporary file and end the process as SIGTERM does.
    script = textwrap.dedent(f"""
        import os, signal
        from fractalc import fileio
        real_fsync = os.fsync
        def fsync(fd):
            os.kill(os.getpid(), signal.SIGTERM)
            real_fsync(fd)
        os.fsync = fsync
        fileio.atomic_write({str(tmp_path / "out.bin")!r}, b"x" * 1000)
        print("survived")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == -15, (r.returncode, r.stdout, r.stderr)
    assert "survived" not in r.stdout
    assert list(tmp_path.iterdir()) == []


def test_stale_temp_files_of_the_target_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = os.getppid()
    names = {f".out.bin.{dead.pid}.abc12345.tmp": False,  # writer gone: removed
             f".out.bin.{live}.old00000.tmp": False,  # writer alive, but an hour old: removed
             f".out.bin.{live}.fresh000.tmp": True,  # a write in progress: kept
             f".other.bin.{dead.pid}.abc12345.tmp": True,  # another target's: kept
             ".out.bin.notapid.tmp": True}  # not of our making: kept
    for n in names:
        (tmp_path / n).write_bytes(b"x")
    hour_ago = os.stat(tmp_path / f".out.bin.{live}.old00000.tmp").st_mtime - 3600
    os.utime(tmp_path / f".out.bin.{live}.old00000.tmp", (hour_ago, hour_ago))
    atomic_write(tmp_path / "out.bin", b"data")
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {"out.bin"} | {n for n, keep in names.items() if keep}


def test_output_onto_a_directory_or_device_is_a_clear_error(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(FractalcError, match="it is a directory"):
        atomic_write(tmp_path / "out", "x")
    with pytest.raises(FractalcError, match="not a regular file"):
        atomic_write("/dev/null", "x")
    assert os.path.exists("/dev/null") and not stat.S_ISREG(os.stat("/dev/null").st_mode)


def test_read_limited_contract(tmp_path):
    (tmp_path / "f").write_bytes(b"12345")
    assert read_limited(tmp_path / "f", 5) == b"12345"
    with pytest.raises(FileRefused, match="more than the 4 allowed"):
        read_limited(tmp_path / "f", 4)
    with pytest.raises(FileRefused, match="no such file"):
        read_limited(tmp_path / "nope", 4)


# ----------------------------------------------------------------------------- 4. generated text

TINY = "param channels = 4\nparam size = 6\nparam a = 1\nnetwork n {\n    input [3, size, size]\n    body = conv[channels]\n}\n"

HOSTILE_SETS = ['channels=4 # """; import os; os.system("touch PWNED") \\',
                "a=1 #\\\x1b\u2028\\x00 '''\n",
                'size=6 # " \\N{BULLET} \\u0041 \\']


@pytest.mark.parametrize("dirname", ["plain", 'we"""ird\\dir'])
def test_torch_source_compiles_with_hostile_sets_and_paths(tmp_path, dirname):
    import torch  # noqa: F401  (a hard dependency of the test environment: fail, do not skip)
    p = spec(tmp_path / dirname / 'a"""b\\c\'d.fr', TINY)
    out = tmp_path / "net.py"
    args = ["compile", str(p), "--target", "torch", "-o", str(out)]
    for s in HOSTILE_SETS:
        args += ["--set", s]
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    text = out.read_text()
    tree = ast.parse(text)  # raises on broken or injected code
    compile(text, str(out), "exec")
    doc = ast.get_docstring(tree)
    assert 'a"""b\\c\'d.fr' in doc  # the docstring reads back as the original text
    for s in HOSTILE_SETS:
        k, v = s.split("=", 1)
        assert f"--set {k}={v}" in doc
    names = {n.names[0].name for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))}
    assert "os" not in names and not (tmp_path / "PWNED").exists()


def generated_imports(text: str) -> list[str]:
    return [i.path for i in syntax.parse(text, "<generated>").imports]


SPACE = """name = {name}
[space]
family = "RF"
columns = [2]
blocks = [[1, 1, 1, 1]]
dataset = "cifar10"
budget = {{ baseline = "{baseline}" }}
"""


def test_generated_spec_header_cannot_plant_imports(tmp_path):
    name = '"x\\nimport \\"/etc/passwd\\"\\rimport \\"evil.fr\\"\\u2028import \\"e2.fr\\"\\fimport \\"e3.fr\\""'
    space = tmp_path / "s.toml"
    space.write_text(SPACE.format(name=name, baseline="bireal_resnet18"))
    r = CliRunner().invoke(cli, ["generate", str(space), "-o", str(tmp_path / "out")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    (f,) = (tmp_path / "out").glob("*.fr")
    text = syntax.read_spec(f)  # as every reader of the file sees it (\r read as a line end)
    assert generated_imports(text) == ["fractalc:common.fr", "fractalc:sofar.fr"]
    assert generated_imports(f.read_text()) == ["fractalc:common.fr", "fractalc:sofar.fr"]
    head = [l for l in text.split("\n") if "space:" in l]
    assert len(head) == 1 and "\\n" in head[0] and "\\u2028" in head[0]
    assert compile_spec(f).name == f.stem


def test_generated_variant_with_its_own_library(tmp_path, capsys):
    # baselines beside a library that is not the bundled one: the variants import it by a
    # relative path, generate admits it, later compiles need --allow-import for it
    import shutil
    shutil.copytree(SPECS / "lib", tmp_path / "mine" / "lib")
    shutil.copy(SPECS / "bireal_resnet18.fr", tmp_path / "mine" / "base.fr")
    space = tmp_path / "s.toml"
    space.write_text(SPACE.format(name='"own"', baseline=tmp_path / "mine" / "base.fr"))
    r = CliRunner().invoke(cli, ["generate", str(space), "-o", str(tmp_path / "out")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    (f,) = (tmp_path / "out").glob("*.fr")
    assert generated_imports(f.read_text()) == ["../mine/lib/common.fr", "../mine/lib/sofar.fr"]
    err = fail(["check", f], capsys)
    assert "--allow-import" in err
    r = CliRunner().invoke(cli, ["check", "--allow-import", str(tmp_path / "mine" / "lib"), str(f)],
                           catch_exceptions=False)
    assert r.exit_code == 0 and r.output.startswith(f"ok: {f.stem}")


def test_generate_exits_1_when_every_point_is_skipped(tmp_path, capsys):
    base = spec(tmp_path / "tiny.fr", TINY)  # no spec library beside it: every point skipped
    space = tmp_path / "s.toml"
    space.write_text(SPACE.format(name='"none"', baseline=base))
    err = fail(["generate", space, "-o", tmp_path / "out"], capsys)
    assert "no variant written: all 1 points" in err and "skipped" in err
    assert list((tmp_path / "out").iterdir()) == []


def test_import_paths_that_a_spec_string_cannot_hold_are_refused(tmp_path):
    from fractalc.variants import import_path
    assert import_path("../lib/") == "../lib/"
    for bad in ['a"b/', "a\nb/", "a\x1bb/"]:
        with pytest.raises(FractalcError, match="cannot write an import"):
            import_path(bad)


# ----------------------------------------------------------------------------- 5. model files


@pytest.mark.parametrize("path,reason", [("/dev/zero", "it is a device"), ("/tmp", "it is a directory")])
def test_session_refuses_non_regular_files(path, reason):
    from fractalc.errors import ModelError
    from fractalc.runtime import Session
    with pytest.raises(ModelError, match=reason):
        Session(path)


def test_session_refuses_a_fifo(tmp_path):
    from fractalc.errors import ModelError
    from fractalc.runtime import Session
    os.mkfifo(tmp_path / "m.onnx")
    with pytest.raises(ModelError, match="FIFO"):
        Session(tmp_path / "m.onnx")


def test_importing_fractalc_imports_no_backend():
    r = subprocess.run([sys.executable, "-c", "import sys, fractalc, fractalc.cli, fractalc.fileio, "
                        "fractalc.lang.resolve; print(sorted(m for m in ('torch', 'onnx', 'PIL') if m in sys.modules))"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr


def test_run_input_that_is_a_fifo_or_device_is_refused(tmp_path, capsys):
    os.mkfifo(tmp_path / "x.npy")
    err = fail(["run", tmp_path / "m.onnx", "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy"], capsys)
    assert "FIFO" in err
    err = fail(["run", tmp_path / "m.onnx", "--input", "/dev/zero", "-o", tmp_path / "y.npy"], capsys)
    assert "it is a device" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]
