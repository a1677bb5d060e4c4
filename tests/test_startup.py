"""What keeps short commands short (issue 13's start-up), checked as behaviour, not as time
(speed is shown by benchmarks/bench_startup.py): the CLI imports a command's module only when
the command runs, and `fileio.sha256` (hashlib without OpenSSL's import) gives hashlib's
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


@pytest.mark.parametrize("data", [b"", b"abc", bytes(range(256)) * 1000])
def test_sha256_is_hashlibs(data):
    assert fileio.sha256(data).hexdigest() == hashlib.sha256(data).hexdigest()
    h = fileio.sha256()
    h.update(data)
    h.update(b"more")
    assert h.digest() == hashlib.sha256(data + b"more").digest()
