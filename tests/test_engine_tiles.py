"""The binary kernel's per-CPU register tile (conv_tile in backends/xnor/src/conv.cpp).

Every tile candidate of every ISA path must give the same bytes (int32, float with residual and
sign bits, bit outputs; 1 and 2 threads) as the portable path, which test_xnor_kernels.py checks
against torch; the whole engine too. The choice is reported with how it was made, can be forced
with $FRACTALC_TILE, and is cached in a per-user file written atomically. No timing is asserted.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

import fractalc.backends.xnor as xnor
from fractalc.backends.xnor import bench

ISAS = xnor.available_isas()
TILES = [(isa, t) for isa in ISAS for t in bench.tile_candidates(isa)]

# (batch, C_in, C_out, H, W, k, stride, padding, mode): channel counts off multiples of 32 and
# 64 (odd channel-tile counts for the 64-channel tiles), pixel counts off every pixel tile.
CASES = [
    (1, 3, 8, 7, 7, 3, 1, 1, "zero"),
    (2, 63, 65, 6, 5, 3, 1, 1, "one"),
    (3, 65, 33, 9, 8, 3, 2, 1, "zero"),
    (1, 130, 96, 5, 6, 3, 1, 0, "zero"),
    (2, 65, 130, 5, 5, 1, 1, 0, "one"),
    (1, 200, 40, 7, 6, 5, 1, 2, "zero"),
    (5, 128, 160, 3, 3, 3, 1, 1, "zero"),
    (1, 64, 64, 11, 13, 3, 1, 1, "zero"),
    # last tiles of 21, 10 and 20 channels (RF-c3d4's 53, 106, 212): 3 and 2 of 4 vectors
    (2, 53, 53, 6, 7, 3, 1, 1, "zero"),
    (1, 106, 106, 5, 5, 3, 1, 1, "one"),
    (1, 64, 212, 4, 4, 3, 2, 1, "zero"),
]


@pytest.fixture
def tile_reset():
    yield
    for isa in ISAS:
        bench.set_tile(None, isa)


def _outputs(case, isa, tile, threads):
    n, ci, co, h, w, k, s, p, mode = case
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    x = xnor.pack_activations(rng.standard_normal((n, ci, h, w)).astype(np.float32))
    wp = xnor.pack_weights(rng.standard_normal((co, ci, k, k)))
    mul = rng.standard_normal(co).astype(np.float32)
    bias = (rng.standard_normal(co) * 10).astype(np.float32)
    thr, flip = xnor.thresholds_from_affine(mul, bias, k * k * ci)
    bench.set_tile(tile, isa)
    kw = dict(stride=s, padding=p, padding_mode=mode, isa=isa, threads=threads)
    out = [xnor.BinaryConv2d(wp, ci, **kw)(x)]
    conv = xnor.BinaryConv2d(wp, ci, output="float", mul=mul, bias=bias, **kw)
    y = conv(x)
    r = (rng.standard_normal(y.shape) * 20).astype(np.float32)
    out += [y, *conv(x, residual=r, sign_bits=True)]
    out.append(xnor.BinaryConv2d(wp, ci, output="bits", threshold=thr, flip=flip, **kw)(x))
    return [a.tobytes() for a in out]


@pytest.mark.parametrize("isa,tile", TILES, ids=[f"{i}-{t}" for i, t in TILES])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "n{}-ci{}-co{}-{}x{}-k{}-s{}-p{}-{}".format(*c))
def test_every_tile_gives_the_portable_bytes(case, isa, tile, tile_reset):
    want = _outputs(case, "portable", None, 1)
    for threads in (1, 2):
        assert _outputs(case, isa, tile, threads) == want


def test_the_choice_is_reported():
    for isa in ISAS:
        t = bench.engine_tuning(isa)
        assert t["binary_tile_name"] in t["binary_tile_candidates"] == bench.tile_candidates(isa)
        assert t["binary_tile_how"] in ("override", "environment", "table", "calibrated") \
            or t["binary_tile_how"].startswith("cache file ")
        assert t["cpu"] and t["isa"] in bench.format_tuning(t)


def test_set_tile_refuses_a_tile_the_kernel_lacks(tile_reset):
    with pytest.raises(ValueError, match="no 7x32 tile"):
        bench.set_tile("7x32", "portable")
    bench.set_tile(bench.tile_candidates("portable")[0], "portable")
    assert bench.engine_tuning("portable")["binary_tile_how"] == "override"


def _choice_in_child(env: dict, isa: str) -> dict:
    code = ("import json\nfrom fractalc.backends.xnor import bench\n"
            f"print(json.dumps(bench.engine_tuning({isa!r})))")
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_environment_calibration_and_cache_file(tmp_path):
    isa = ISAS[-1]
    cands = bench.tile_candidates(isa)
    cache = str(tmp_path / "cache")
    forced = _choice_in_child({"FRACTALC_TILE": cands[-1], "FRACTALC_TILE_CACHE": cache}, isa)
    assert (forced["binary_tile_name"], forced["binary_tile_how"]) == (cands[-1], "environment")
    table = _choice_in_child({"FRACTALC_TILE": "table", "FRACTALC_TILE_CACHE": cache}, isa)
    assert (table["binary_tile_name"], table["binary_tile_how"]) == (cands[0], "table")
    assert not os.path.exists(cache)  # neither measured: nothing cached
    first = _choice_in_child({"FRACTALC_TILE": "", "FRACTALC_TILE_CACHE": cache}, isa)
    assert first["binary_tile_how"] == "calibrated" and first["binary_tile_name"] in cands
    files = os.listdir(cache)
    assert len(files) == 1 and files[0].startswith(f"xnor-tile-v1-{isa}-")  # no temporary left behind
    again = _choice_in_child({"FRACTALC_TILE": "", "FRACTALC_TILE_CACHE": cache}, isa)
    assert again["binary_tile_how"] == "cache file " + os.path.join(cache, files[0])
    assert again["binary_tile_name"] == first["binary_tile_name"]
    # a corrupted or foreign cache file is ignored (measured again and rewritten)
    path = os.path.join(cache, files[0])
    with open(path, "w") as f:
        f.write("garbage\n99x99\n")
    assert _choice_in_child({"FRACTALC_TILE": "", "FRACTALC_TILE_CACHE": cache}, isa)["binary_tile_how"] \
        == "calibrated"
    # an unsupported forced tile is ignored, and said so
    bad = _choice_in_child({"FRACTALC_TILE": "9x9", "FRACTALC_TILE_CACHE": "off"}, isa)
    assert bad["binary_tile_name"] in cands and "ignored" in bad["binary_tile_detail"]


def test_every_tile_gives_the_same_engine_output(tile_reset):
    from fractalc.backends.onnx import lower, testing
    from fractalc.backends.xnor.engine import Engine, write_engine_file
    from fractalc.compiler import compile_spec
    from conftest import SPECS

    c = compile_spec(SPECS / "bireal_resnet18.fr", {"dataset": '"cifar10"'})
    state = testing.dyadic_state(c.graph, seed=1, grain=8)
    x = testing.dyadic_input((3,) + c.graph.shape("input"), seed=2)
    frt = write_engine_file(lower.to_onnx_xnor(c, state, "test").SerializeToString())
    outs = set()
    for isa, tile in TILES:
        bench.set_tile(tile, isa)
        for t in (1, 2):
            outs.add(Engine(frt, threads=t, isa=isa).run(x).tobytes())
    assert len(outs) == 1
