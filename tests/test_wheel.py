"""The built wheel ships grammars/, backends/ and the spec library, and works outside the
source tree."""
from __future__ import annotations

import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

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
    # every shipped spec, with the library its specs import, as models by name
    assert {"fractalc/specs/rf_c3d4_resnet21.fr", "fractalc/specs/lib/sofar.fr"} <= set(names)

    env_dir = tmp_path / "fresh"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    # lark is not a run-time dependency (the parser is generated): the CLI below runs without it
    r = subprocess.run([str(py), "-c", "import importlib.util as u; print(u.find_spec('lark'))"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "None", (r.stdout, r.stderr)

    work = tmp_path / "elsewhere"
    shutil.copytree(SPECS, work / "specs")
    r = subprocess.run([str(env_dir / "bin" / "fractalc"), "check", "specs/rf_c3d4_resnet21.fr"],
                       cwd=work, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok: rf_c3d4_resnet21") and "depth 21" in r.stdout
    # a model by name, where no such file exists: the spec shipped in the wheel
    r = subprocess.run([str(env_dir / "bin" / "fractalc"), "check", "bireal_resnet18"],
                       cwd=work, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("ok: bireal_resnet18") and "depth 18" in r.stdout, r.stderr
    # a spec with no library beside it: `import "fractalc:..."` reads the one in the wheel
    (work / "mine.fr").write_text('import "fractalc:sofar.fr"\n\nnetwork mine {\n'
                                  '    input [64, 8, 8]\n    b = RF[3, 64]\n}\n')
    r = subprocess.run([str(env_dir / "bin" / "fractalc"), "check", "mine.fr"], cwd=work,
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("ok: mine"), r.stderr
    r = subprocess.run([str(py), "-c", "import fractalc, fractalc.backends; print(fractalc.__file__)"],
                       cwd=work, capture_output=True, text=True)
    assert r.returncode == 0 and str(env_dir) in r.stdout
    _run_lowered_model_with_the_wheel(py, env_dir, work)


RUNNER = """import sys, numpy as np
from pathlib import Path
import fractalc.backends.xnor.kernels as k
from fractalc.runtime import Session
ext = Path(k._xnor.__file__).resolve()
assert ext.is_relative_to(Path(sys.argv[1]).resolve()), f"native extension not from the wheel: {ext}"
s = Session(sys.argv[2], threads=2)
np.save(sys.argv[4], s.run(np.load(sys.argv[3])))
print(ext.name, s.isa)
"""


def _run_lowered_model_with_the_wheel(py, env_dir, work):
    """The wheel's native extension, imported from the installed package outside the tree, runs
    a model lowered by the installed CLI (`compile --target onnx-xnor`); on exactly computable
    weights and inputs it equals the reference executor of the ai.fractalc ops."""
    import numpy as np
    import onnx
    import torch

    from fractalc.backends.onnx import reference, testing
    from fractalc.compiler import compile_spec
    # onnx, onnxruntime and torch (for the CLI's weight loading) come from the project venv,
    # after the wheel's own site-packages: fractalc and its extension are the wheel's
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    (site / "zz_project_deps.pth").write_text(str(Path(onnx.__file__).resolve().parent.parent) + "\n")
    spec = work / "small.fr"
    spec.write_text('import "fractalc:sofar.fr"\n\nnetwork small {\n    input [16, 8, 8]\n'
                    '    b = RF[2, 16]\n    c = bireal_down[32]\n}\n')
    g = compile_spec(spec).graph
    state = testing.dyadic_state(g, seed=1)
    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, work / "w.pt")
    r = subprocess.run([str(env_dir / "bin" / "fractalc"), "compile", "small.fr", "-t", "onnx-xnor",
                        "--weights", "w.pt", "-o", "small.onnx"], cwd=work, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    x = testing.dyadic_input((2, 16, 8, 8), seed=2)
    np.save(work / "x.npy", x)
    r = subprocess.run([str(py), "-c", RUNNER, str(env_dir), "small.onnx", "x.npy", "y.npy"], cwd=work,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("_xnor")
    model = onnx.load(str(work / "small.onnx"))
    assert sum(nd.op_type == "XnorConv" for nd in model.graph.node) >= 3
    want = reference.run_reference(model, x)
    got = np.load(work / "y.npy")
    assert got.shape == want.shape == (2, 32, 4, 4) and np.ptp(want) > 0
    assert np.array_equal(got, want)
