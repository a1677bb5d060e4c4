"""Torch eval, the reference executor and the native runtime give the same bytes (issue 14).

One float arithmetic for all three: the native engine's (docs/float-arithmetic.md), computed
in torch eval by backends/torch/floatexact.py and in `run_reference` by
backends/onnx/floatexact.py. Checked here:

- the exact fmaf emulation of both (no fma primitive in numpy or torch) against libm's own
  ``fmaf`` (ctypes) and against exact rational arithmetic, on random operands and on the cases
  where one float64 rounding followed by a float32 rounding is wrong (a product exactly halfway
  between two float32 values plus a tiny addend of either sign), cancellations, signed zeros
  and subnormal results;
- (every shipped and zoo spec, random weights and inputs: torch eval == `run_reference` ==
  `fractalc.runtime.Session` as float32 bytes: tests/test_torch_exact.py)
- the emulation is what makes them equal: with a float32 multiply then add in place of fmaf,
  torch and the reference differ from the runtime;
- the exact-sum shortcut (`sums_exact`) equals the fmaf chain where it applies and refuses a
  case where the order matters;
- on a network with every float operator the engine has (those no shipped spec uses included),
  every value torch eval computes equals the reference's value of that name, byte for byte.
"""
from __future__ import annotations

import ctypes
import ctypes.util
from fractions import Fraction

import numpy as np
import pytest
import torch

import onnx  # noqa: F401  (a dependency of `make test`: missing fails, never skips)

from conftest import SPECS, random_input, random_state
from test_torch_exact import deployed_outputs, network
from fractalc.backends.onnx import floatexact as npx
from fractalc.backends.onnx import lower, reference, testing
from fractalc.backends.torch import floatexact as tx
from fractalc.backends.xnor.engine import write_engine_file
from fractalc.compiler import compile_spec
from fractalc.runtime import Session

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F32 = np.float32


# ---- the fmaf emulation ---------------------------------------------------------------------

def _libm_fmaf():
    lib = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
    f = lib.fmaf
    f.restype = ctypes.c_float
    f.argtypes = [ctypes.c_float] * 3
    return f


def _round_f32(v: Fraction) -> np.float32:
    """The float32 nearest to the rational v, ties to an even significand (exact)."""
    r = F32(float(v))  # float(Fraction) is correctly rounded to float64: r is within an ulp
    cands = {r, np.nextafter(r, F32(np.inf)), np.nextafter(r, F32(-np.inf))}
    best = min(abs(Fraction(float(c)) - v) for c in cands if np.isfinite(c))
    near = [c for c in cands if np.isfinite(c) and abs(Fraction(float(c)) - v) == best]
    if len(near) == 2:
        near = [c for c in near if int(np.asarray(c).view(np.int32)) % 2 == 0]
    out = near[0]
    return F32(0.0) if out == 0 else out  # the sign of an exact zero is set by the caller


def _fraction_fma(a, b, c) -> np.float32:
    exact = Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c))
    if exact == 0:  # IEEE: an exact zero sum is +0 unless both addends are -0
        minus_zero_product = (a == 0 or b == 0) and bool(np.signbit(a) != np.signbit(b))
        return F32(-0.0) if minus_zero_product and c == 0 and np.signbit(c) else F32(0.0)
    return _round_f32(exact)


def _cases(seed=0):
    """(a, b, c) float32 arrays: random, double-rounding traps, cancellations, zeros, subnormals."""
    rng = np.random.default_rng(seed)
    n = 4000
    a = rng.standard_normal(n).astype(F32) * F32(2.0) ** rng.integers(-8, 9, n).astype(F32)
    b = rng.standard_normal(n).astype(F32)
    c = rng.standard_normal(n).astype(F32)
    # (2^12 + i)(2^12 + j) 2^-24 with i, j odd is 25 significant bits ending in 1: exactly
    # halfway between two float32 values; a tiny c of either sign decides the rounding (a
    # float64 sum drops it, then the float32 rounding ties to even: wrong for one sign)
    i = rng.integers(0, 2000, 1000) * 2 + 1
    j = rng.integers(0, 2000, 1000) * 2 + 1
    ta = ((2 ** 12 + i) * 2.0 ** -12).astype(F32)
    tb = ((2 ** 12 + j) * 2.0 ** -12).astype(F32)
    tc = (rng.choice([-1.0, 1.0, 0.0], 1000) * 2.0 ** rng.integers(-90, -40, 1000)).astype(F32)
    # cancellation: c = -float32(a * b), the result is the product's rounding error
    ca = rng.standard_normal(500).astype(F32)
    cb = rng.standard_normal(500).astype(F32)
    cc = -(ca * cb)
    # subnormal results and signed zeros
    sa = (rng.standard_normal(500) * 2.0 ** -70).astype(F32)
    sb = (rng.standard_normal(500) * 2.0 ** -70).astype(F32)
    sc = (rng.integers(-50, 50, 500) * 2.0 ** -149).astype(F32)
    za = np.array([0.0, -0.0, 0.0, -0.0, 1.0, -1.0, 2.0], F32)
    zb = np.array([1.0, 1.0, -1.0, -1.0, 0.0, 0.0, -0.0], F32)
    zc = np.array([-0.0, -0.0, 0.0, -0.0, -0.0, -0.0, -0.0], F32)
    cat = lambda *xs: np.concatenate(xs).astype(F32)
    return cat(a, ta, ca, sa, za), cat(b, tb, cb, sb, zb), cat(c, tc, cc, sc, zc)


def _bits(v) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(v, F32)).view(np.int32)


def test_fma_emulation_equals_libm_fmaf():
    a, b, c = _cases()
    fmaf = _libm_fmaf()
    want = np.array([fmaf(float(x), float(y), float(z)) for x, y, z in zip(a, b, c)], F32)
    got_np = npx.fma(a, b, c)
    got_t = tx.fma(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)).numpy()
    assert np.array_equal(_bits(got_np), _bits(want)), int((_bits(got_np) != _bits(want)).sum())
    assert np.array_equal(_bits(got_t), _bits(want)), int((_bits(got_t) != _bits(want)).sum())
    # the chains' fast step (float64 sum, exact rounding only where it can go wrong)
    for grain in (None, npx.grain(a, b)):
        chain = npx.FmaChain(a.shape, grain)
        chain.acc[...] = c
        chain.step(a.astype(np.float64), b.astype(np.float64))
        tchain = tx.FmaChain(a.shape, grain)
        tchain.acc = torch.from_numpy(c.copy())
        tchain.step(torch.from_numpy(a).double(), torch.from_numpy(b).double())
        assert np.array_equal(_bits(chain.acc), _bits(want)) and np.array_equal(_bits(tchain.acc.numpy()), _bits(want))
    # the traps are traps: one float64 rounding, then float32, is wrong on some of them
    double = (a.astype(np.float64) * b + c).astype(F32)
    assert (_bits(double) != _bits(want)).sum() > 100


def test_fma_emulation_equals_exact_rationals():
    a, b, c = _cases(seed=1)
    keep = np.random.default_rng(2).permutation(a.size)[:1500]  # Fractions are slow
    a, b, c = a[keep], b[keep], c[keep]
    want = np.array([_fraction_fma(x, y, z) for x, y, z in zip(a, b, c)], F32)
    got = npx.fma(a, b, c)
    assert np.array_equal(_bits(got), _bits(want)), int((_bits(got) != _bits(want)).sum())
    got_t = tx.fma(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)).numpy()
    assert np.array_equal(_bits(got_t), _bits(want))


def test_sums_exact_shortcut():
    rng = np.random.default_rng(3)
    # dyadic data: the shortcut applies, and equals the fmaf chain
    x = (rng.integers(-8, 9, (2, 5, 6, 6)) / 8).astype(F32)
    w = (rng.integers(-4, 5, (7, 5, 3, 3)) / 4).astype(F32)
    b = (rng.integers(-4, 5, 7) / 16).astype(F32)
    assert npx.sums_exact(x, w.reshape(7, -1))
    assert tx.sums_exact(torch.from_numpy(x), torch.from_numpy(w).reshape(7, -1))
    fast = npx.conv(x, w, b, 1, 1)
    tfast = tx.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), 1, 1).numpy()
    chain = _chain(x, w, b)
    assert np.array_equal(_bits(fast), _bits(chain)) and np.array_equal(_bits(tfast), _bits(chain))
    # 1 + 2^-30 - 1: the order matters (the chain gives 0, the exact sum 2^-30): refused
    x2 = np.array([[1.0, 2.0 ** -30, -1.0]], F32)
    w2 = np.ones((1, 3), F32)
    assert not npx.sums_exact(x2, w2) and not tx.sums_exact(torch.from_numpy(x2), torch.from_numpy(w2))
    assert npx.gemm(x2, w2, None)[0, 0] == 0 and tx.linear(torch.from_numpy(x2), torch.from_numpy(w2), None)[0, 0] == 0


def _chain(x, w, b):
    """The fmaf chain of a stride-1, pad-1 conv, one output at a time with libm's fmaf."""
    fmaf = _libm_fmaf()
    n, c, h, wd = x.shape
    co, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, co, h, wd), F32)
    for i in range(n):
        for o in range(co):
            for y in range(h):
                for z in range(wd):
                    acc = 0.0
                    for ky in range(kh):
                        for kx in range(kw):
                            for ci in range(c):
                                acc = fmaf(float(xp[i, ci, y + ky, z + kx]), float(w[o, ci, ky, kx]), acc)
                    out[i, o, y, z] = F32(acc) + b[o]
    return out


# ---- whole networks (every spec and zoo spec: test_torch_exact.test_every_spec_deploys_bit_for_bit)

# Every float operator the engine has, those no shipped spec uses included: a depthwise and a
# dilated conv under a maxjoin, fixed and learned weighted joins (Mul by a constant: x * w + 0),
# a scale node after a ReLU (its exact zeros times negative weights: -0 in torch's plain product,
# +0 in the engine's affine map), padded average and max pools, a sigmoid gate (gap, 1x1 convs)
# and the gating product, PReLU, RPReLU, the blur pool, a binary_input=false conv, BNs folded
# and not, a binary conv, a global max pool and the classifier.
ALL_FLOAT_OPS = """\
rule gate[c](z) = z >> gap >> conv[c / 4, k=1] >> relu >> conv[c, k=1] >> sigmoid
rule mj(z) = maxjoin(z >> conv[16, k=3, groups=16, bias=true], z >> conv[16, k=3, dilation=2])
rule wj(z) = join[weights=[0.375, -1.25]](z >> conv[16, k=1], z >> relu >> scale)
rule lj(z) = join[learn=true](z >> avgpool[3, s=1, p=1], z >> maxpool[3, s=1, p=1])
rule gated(z) = mul(z, z >> gate[16])
network allfloat {
  input [3, 12, 12]
  body = conv[16, bias=true] >> bn >> relu >> mj >> bn >> wj >> lj >> gated >> prelu >> rprelu >> blurpool >> bconv[16, binary_input=false] >> bn >> scale >> shift >> bconv[32] >> bn >> relu >> avgpool[2] >> gmp
  head = linear[10, bias=true]
}
"""


def test_every_float_operator_node_by_node(tmp_path):
    """Every value torch eval computes equals the reference's value of the same name byte for
    byte (but a conv's own output whose BN is folded: the engine never computes it), and the
    output equals the runtime's."""
    path = tmp_path / "allfloat.fr"
    path.write_text(ALL_FLOAT_OPS)
    c = compile_spec(path)
    state = random_state(c)
    rng = np.random.default_rng(9)
    for k, v in state.items():  # weights of both signs for the scale nodes and the learned join
        if k.endswith(".weight") and v.ndim == 1 and ("scale" in k or "join" in k):
            state[k] = rng.normal(0.0, 1.0, v.shape).astype(F32)
    x = random_input(c)
    model = testing.torch_model(c.graph, state)
    tv = testing.torch_values(c.graph, model, x)
    lowered = lower.to_onnx_xnor(c, state, "test")
    folded = {n for n, r in zip(c.graph.order(), model._fc_exact) if r and r[0] == "float" and r[1] is not None}
    names = {o for nd in lowered.graph.node for o in nd.output}
    common = [n for n in c.graph.order() if n in names and n in tv and n not in folded]
    ref = reference.run_reference(lowered, x, outputs=common)
    kinds = {type(c.graph.op(n)).__name__ for n in common}
    assert {"MaxJoin", "WeightedJoin", "Scale", "Pool", "BlurPool", "PReLU", "Mul", "Linear"} <= kinds
    for n in common:
        assert tv[n].tobytes() == ref[n].tobytes(), f"{n} ({type(c.graph.op(n)).__name__}) differs"
    # the scale after the ReLU meets the -0 case: torch's own product would give -0 there
    sc = "body.scale1"
    plain = tv[c.graph.inputs(sc)[0]] * state[f"{sc}.weight"][None, :, None, None]
    assert (np.signbit(plain) != np.signbit(tv[sc])).any()
    want = Session(write_engine_file(lowered), threads=1).run(x)
    assert want.tobytes() == tv["output"].tobytes()


@pytest.mark.parametrize("name", ["real_to_binary", "bireal_resnet18"])
def test_plain_multiply_add_differs(name, monkeypatch):
    """Without the exact fmaf (a float32 multiply, then an add) torch eval and the reference
    no longer equal the runtime: the byte comparison of test_torch_exact can fail."""
    c, state, x = network(next(SPECS.rglob(f"{name}.fr")))
    t, ref, data = deployed_outputs(c, state, x)
    want = Session(data, threads=1).run(x)
    assert t.tobytes() == want.tobytes() == ref.tobytes()

    def np_step(self, a, b):
        self.acc = (np.asarray(a, F32) * np.asarray(b, F32) + self.acc).astype(F32)

    def torch_step(self, a, b):
        self.acc = a.to(torch.float32) * b.to(torch.float32) + self.acc
    monkeypatch.setattr(npx.FmaChain, "step", np_step)
    monkeypatch.setattr(tx.FmaChain, "step", torch_step)
    t2, ref2, _ = deployed_outputs(c, state, x)
    assert t2.tobytes() != want.tobytes() and ref2.tobytes() != want.tobytes()
    assert np.abs(t2 - want).max() < 1e-4  # within rounding, not a different network


def test_binary_only_setting_and_bad_values():
    """``deployed_arithmetic="binary"``: binary layers as deployed, float layers in torch's
    order (within rounding of the runtime, not equal here); a bad value is refused clearly."""
    c, state, x = network(SPECS / "zoo" / "real_to_binary.fr")
    model = testing.torch_model(c.graph, state)
    want = Session(write_engine_file(lower.to_onnx_xnor(c, state, "test")), threads=1).run(x)
    with torch.no_grad():
        model.deployed_arithmetic = "binary"
        fast = model(torch.from_numpy(x)).numpy()
        model.deployed_arithmetic = "yes"
        with pytest.raises(ValueError, match="deployed_arithmetic"):
            model(torch.from_numpy(x))
    assert fast.tobytes() != want.tobytes() and np.abs(fast - want).max() < 1e-4


def test_eval_gradients_are_the_float_paths():
    """Eval values are the engine's; the gradients those of the float path (train's functions
    with eval statistics), so every parameter of a float network keeps a gradient."""
    c, state, x = network(SPECS / "fractalnet_cifar.fr")
    grads = []
    for da in (True, False):
        model = testing.torch_model(c.graph, state)
        model.deployed_arithmetic = da
        model(torch.from_numpy(x)).sum().backward()
        grads.append({k: p.grad for k, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], rtol=1e-3, atol=1e-5, msg=k)


def test_reference_refuses_float_ops_outside_the_contract():
    """A Conv with auto_pad (never written by fractalc) is refused by name, not run in some
    other arithmetic."""
    from onnx import TensorProto, helper, numpy_helper

    from fractalc.errors import ModelError
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 1, 4, 4]) for n in ("input", "output")]
    w = numpy_helper.from_array(np.ones((1, 1, 3, 3), F32), "w")
    node = helper.make_node("Conv", ["input", "w"], ["output"], name="c", auto_pad="SAME_UPPER")
    model = helper.make_model(helper.make_graph([node], "g", io[:1], io[1:], [w]),
                              opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(ModelError, match="Conv node 'c': auto_pad is not part of the float contract"):
        reference.run_reference(model, np.ones((1, 1, 4, 4), F32))
