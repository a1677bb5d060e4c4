"""The built wheel ships grammars/, backends/ and the spec library, and works outside the
source tree."""
from __future__ import annotations

import shutil
import subprocess
import sys
import venv
import zipfile

import pytest

from conftest import ROOT, SPECS


@pytest.mark.slow
def test_wheel_installs_and_checks_a_spec_outside_the_tree(tmp_path):
    dist = tmp_path / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(dist), str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = dist.glob("fractalc-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "fractalc/grammars/fractal.lark" in names
    assert "fractalc/backends/__init__.py" in names
    assert {"fractalc/lib/sofar.fr", "fractalc/lib/common.fr"} <= set(names)

    env_dir = tmp_path / "fresh"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]

    work = tmp_path / "elsewhere"
    shutil.copytree(SPECS, work / "specs")
    r = subprocess.run([str(env_dir / "bin" / "fractalc"), "check", "specs/rf_c3d4_resnet21.fr"],
                       cwd=work, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok: rf_c3d4_resnet21") and "depth 21" in r.stdout
    # a spec with no library beside it: `import "fractalc:..."` reads the one in the wheel
    (work / "mine.fr").write_text('import "fractalc:sofar.fr"\n\nnetwork mine {\n'
                                  '    input [64, 8, 8]\n    b = RF[3, 64]\n}\n')
    r = subprocess.run([str(env_dir / "bin" / "fractalc"), "check", "mine.fr"], cwd=work,
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("ok: mine"), r.stderr
    r = subprocess.run([str(py), "-c", "import fractalc, fractalc.backends; print(fractalc.__file__)"],
                       cwd=work, capture_output=True, text=True)
    assert r.returncode == 0 and str(env_dir) in r.stdout
