"""A batch runs in passes of a few images (src/engine_plan.cpp, Engine::batch_images): the most
images whose arena fits in the batch budget (half the last-level cache from sysfs, at most
16 MiB), at least one, unless forced. Checked: the outputs are byte-identical whatever the pass
size (and equal to the images run one by one), the default follows its rule computed here from
the engine's own per-image arena, the arena reported is the pass's, and bad settings are errors.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, SPECS, random_input, random_state, small_overrides
from fractalc.backends.onnx import lower
from fractalc.backends.xnor import bench, kernels
from fractalc.backends.xnor.engine import Engine, write_engine_file
from fractalc.compiler import compile_spec
from fractalc.errors import ModelError


def _engine_file(name, overrides):
    c = compile_spec(SPECS / f"{name}.fr", overrides)
    return c, write_engine_file(lower.to_onnx_xnor(c, random_state(c), name))


@pytest.mark.parametrize("name", ["binary_densenet28", "rf_c3d4_resnet21"])
def test_pass_size_never_changes_the_bytes(name):
    c, data = _engine_file(name, small_overrides(SPECS / f"{name}.fr"))
    x = random_input(c, batch=5)
    e = Engine(data, threads=2)
    one_by_one = np.concatenate([e.run(x[i:i + 1]) for i in range(5)])
    for k in (0, 1, 2, 3, 5, 9):
        e.set_batch_images(k)
        if k:
            assert e.batch_images(5) == min(k, 5)
        y = e.run(x)
        assert np.array_equal(y.view(np.uint32), one_by_one.view(np.uint32)), f"{k} images per pass"


def test_default_pass_follows_the_budget():
    """BinaryDenseNet28 at 224 x 224 (7 MiB of arena per image): a batch of 8 runs in passes of
    budget // arena(1) images, and the arena reported for it is that pass's."""
    budget, how = kernels._xnor.batch_budget()
    assert 0 < budget <= 16 << 20 and ("MiB" in how or "KiB" in how)
    tuning = bench.engine_tuning()  # what `fractalc bench` and bench_engine.py print
    assert tuning["batch_budget"] == how and how in bench.format_tuning(tuning)
    _, data = _engine_file("binary_densenet28", {})
    e = Engine(data, threads=1)
    per_image = e.arena_bytes(1)[0]
    want = max(1, min(8, budget // per_image))
    assert e.batch_images(8) == want
    planned, unplanned = e.arena_bytes(8)
    assert planned == e.arena_bytes(want)[0]
    assert want == 1 or planned <= budget
    assert unplanned > 8 * per_image  # all values of 8 images, unplanned


def test_environment_forces_the_pass(tmp_path):
    _, data = _engine_file("bireal_resnet18", {"dataset": '"cifar10"', "size": "16"})
    path = tmp_path / "m.frt"
    path.write_bytes(data)
    code = ("import sys; from fractalc.backends.xnor.engine import Engine; "
            "print(Engine(sys.argv[1], threads=1).batch_images(8))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, FRACTALC_BATCH_IMAGES="3"), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "3"


def test_bad_settings_are_errors():
    _, data = _engine_file("bireal_resnet18", {"dataset": '"cifar10"', "size": "16"})
    e = Engine(data, threads=1)
    for bad in (-1, 1 << 17):
        with pytest.raises(ModelError, match="images per pass"):
            e.set_batch_images(bad)
    with pytest.raises(ValueError, match="batch"):
        e._e.batch_images(0)
