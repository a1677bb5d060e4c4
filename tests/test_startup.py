"""What keeps short commands short (issue 13's start-up), checked as behaviour, not as time
(speed is shown by benchmarks/bench_startup.py): the CLI imports a command's module only when
the command runs, freezes what lives until exit (garbage collection) only when it is the
program, and `fileio.sha256` (hashlib without OpenSSL's import) gives hashlib's
digests."""
from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from fractalc import fileio
from fractalc.cli import COMMANDS, cli

from conftest import SPECS


def test_every_listed_command_loads_under_its_name():
    assert set(cli.commands) == set(COMMANDS)
    for name in COMMANDS:
        assert cli.commands[name].name == name
    with pytest.raises(KeyError):
        cli.commands["no-such-command"]
    assert cli.commands.get("no-such-command") is None


@pytest.mark.parametrize("argv, own", [(["check", str(SPECS / "rf_c3d4.fr")], "check"),
                                       (["stats", str(SPECS / "rf_c3d4.fr"), "--no-layers"], "stats")])
def test_a_command_imports_only_its_own_module(argv, own, tmp_path):
    code = ("import sys\nfrom fractalc.cli import main\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "print(sorted(m for m in sys.modules if m.startswith('fractalc.cli.')))\n")
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == repr(sorted(["fractalc.cli.options", f"fractalc.cli.{own}"]))


def test_the_program_freezes_what_lives_until_exit_and_keeps_collecting(tmp_path):
    # main() without argv is the program (console script, python -m fractalc): what exists
    # after the compile is frozen, the collector is on again, and the exit freeze is queued.
    code = ("import atexit, gc, sys\nfrom fractalc.cli import main\n"
            "before = atexit._ncallbacks()\ntry:\n    main()\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "print(gc.isenabled(), gc.get_freeze_count() > 0, atexit._ncallbacks() - before)\n")
    r = subprocess.run([sys.executable, "-c", code, "check", str(SPECS / "rf_c3d4.fr")],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith("ok: ")
    assert r.stdout.splitlines()[-1] == "True True 1"


def test_a_caller_with_argv_keeps_its_garbage_collectable(tmp_path):
    # main(argv) may be one call of a longer program (the tests): nothing of it is frozen.
    code = ("import atexit, gc, sys\nfrom fractalc.cli import main\n"
            "before = atexit._ncallbacks()\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "print(gc.isenabled(), gc.get_freeze_count(), atexit._ncallbacks() - before)\n")
    r = subprocess.run([sys.executable, "-c", code, "stats", str(SPECS / "rf_c3d4.fr")],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "True 0 0"


@pytest.mark.parametrize("data", [b"", b"abc", bytes(range(256)) * 1000])
def test_sha256_is_hashlibs(data):
    assert fileio.sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
    h = fileio.sha256()
    h.update(data)
    h.update(b"more")
    assert h.digest() == hashlib.sha256(data + b"more").digest()
