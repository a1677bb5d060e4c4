"""The standalone source (`--target torch`) and state (`--target torch-state`) artifacts."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from click.testing import CliRunner  # noqa: E402

from fractalc.backends.torch import from_graph  # noqa: E402
from fractalc.backends.torch.plan import TorchBuildError, class_name, make_plan  # noqa: E402
from fractalc.cli import cli, main  # noqa: E402
from fractalc.compiler import compile_spec  # noqa: E402
from fractalc import ir  # noqa: E402
from fractalc.ir.passes import run_default  # noqa: E402

from conftest import SPECS  # noqa: E402
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def compile_cli(*args):
    r = CliRunner().invoke(cli, ["compile", *map(str, args)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CASES = [
    ("rf_c3d4.fr", ["channels=4", "size=6"]),
    # dense, with slices (reads=last) and concats; small so the sweep of modes stays cheap
    ("drf_c2d2_densenet51.fr", ["dataset=cifar10", "growth=16", "stem_width=32", "blocks=[2,2,2,2]",
                                "reads=last", "act_grad=ste"]),
    ("fractalnet_cifar.fr", ["filters=[4,4,8,8,8]"]),  # full precision: dropout + drop-path
]


@pytest.mark.parametrize("spec,sets", CASES, ids=[c[0] for c in CASES])
def test_emitted_source_matches_library_module(tmp_path, spec, sets):
    set_args = [a for s in sets for a in ("--set", s)]
    out = tmp_path / "model.py"
    compile_cli(SPECS / spec, "--target", "torch", "--seed", "7", "-o", out, *set_args)
    mod = load_module(out, f"emitted_{out.stem}_{spec[:4]}")
    c = compile_spec(SPECS / spec, dict(s.split("=", 1) for s in sets))
    if "reads=last" in sets:
        assert c.graph.count(ir.Slice) > 0  # the case covers slices
    lib = from_graph(c.graph, seed=7)
    cls = getattr(mod, class_name(c.name))
    emitted = cls(seed=7)
    assert isinstance(emitted, torch.nn.Module)
    assert (emitted.input_shape, emitted.output_shape, emitted.network_name) == \
        (lib.input_shape, lib.output_shape, lib.network_name) == \
        (c.graph.shape(c.graph.input_id), c.graph.shape(c.graph.output_id), c.name)
    assert list(emitted.state_dict()) == list(lib.state_dict())
    for k, v in lib.state_dict().items():
        assert torch.equal(v, emitted.state_dict()[k]), k
    x = torch.randn(2, *c.graph.shape(c.graph.input_id))
    for mode in ("fp", "tanh", "binary"):
        lib.set_mode(mode).eval()
        emitted.set_mode(mode).eval()
        assert torch.equal(lib(x), emitted(x)), mode
    # training (batch statistics; with drop-path and dropout where the network has them)
    lib.train()
    emitted.train()
    torch.manual_seed(11)
    a = lib(x)
    torch.manual_seed(11)
    b = emitted(x)
    assert torch.equal(a, b)
    a.square().mean().backward()
    b.square().mean().backward()
    for (n, p), (_, q) in zip(lib.named_parameters(), emitted.named_parameters()):
        assert torch.equal(p.grad, q.grad), n


# A small network with every kind of binary conv (zero and one padding, 1x1, ApproxSign and STE
# backward), a 3-input join, a residual add, a biased fp conv, BN, pools and a linear head.
EMIT = """rule branches(z) = join(z >> bconv[4] >> bn, z >> bconv[4, pad="one"] >> bn, z >> bconv[4, k=1])
rule res(z) = (z >> bconv[4, grad="ste"] >> bn) + z
network emit {
    input [3, 6, 6]
    stem = conv[4, bias=true] >> bn
    body = branches
    res = res
    head = relu >> maxpool[2] >> gap >> linear[5]
}
"""


def _ref_sign(t):
    return torch.where(t >= 0, torch.ones_like(t), -torch.ones_like(t))  # sign(0) = +1


def _ref_approxsign(t):
    """Forward sign(t); backward Bi-Real's ApproxSign: the derivative of 2t + t^2 on [-1, 0),
    2t - t^2 on [0, 1), constant outside, i.e. max(0, 2 - 2|t|)."""
    poly = torch.where(t < 0, 2 * t + t * t, 2 * t - t * t)
    poly = torch.where(t.abs() >= 1, poly.detach(), poly)
    return _ref_sign(t).detach() + poly - poly.detach()


def _ref_ste(t):
    """Forward sign(t); backward the straight-through estimator on |t| <= 1."""
    c = t.clamp(-1, 1)
    return _ref_sign(t).detach() + c - c.detach()


def _ref_net(p, x, mode, train=False):
    """The `emit` network written out by hand from the documented formulas (README, binarize.py's
    docstring): binary conv = conv(sign(x), alpha sign(W)), alpha = mean |W| per output channel
    (detached); one padding pads sign(x) with +1; tanh mode conv(tanh(x), W); fp mode conv(x, W);
    BN (x - mean) / sqrt(var + eps) * gamma + beta; join = sum / count."""
    def bn(t, k):
        if train:
            mean, var = t.mean(dim=(0, 2, 3)), t.var(dim=(0, 2, 3), unbiased=False)
        else:
            mean, var = p[k + ".running_mean"], p[k + ".running_var"]
        return (t - mean[:, None, None]) / torch.sqrt(var[:, None, None] + 1e-5) \
            * p[k + ".weight"][:, None, None] + p[k + ".bias"][:, None, None]

    def bconv(t, k, pad, one=False, act=_ref_approxsign):
        w = p[k + ".weight"]
        if mode == "fp":
            return F.conv2d(t, w, padding=pad)
        if mode == "tanh":
            return F.conv2d(torch.tanh(t), w, padding=pad)
        alpha = w.detach().abs().mean(dim=(1, 2, 3), keepdim=True)
        wb = alpha * _ref_ste(w)
        xb = act(t)
        if one:
            return F.conv2d(F.pad(xb, (pad,) * 4, value=1.0), wb)
        return F.conv2d(xb, wb, padding=pad)

    s = bn(F.conv2d(x, p["stem.conv1.weight"], p["stem.conv1.bias"], padding=1), "stem.bn1")
    a = bn(bconv(s, "body.conv1", 1), "body.bn1")
    b = bn(bconv(s, "body.conv2", 1, one=True), "body.bn2")
    c = bconv(s, "body.conv3", 0)
    j = (a + b + c) / 3
    r = bn(bconv(j, "res.conv1", 1, act=_ref_ste), "res.bn1") + j
    h = F.max_pool2d(torch.relu(r), 2).mean(dim=(2, 3))
    return h @ p["head.fc1.weight"].T + p["head.fc1.bias"]


def test_emitted_source_matches_an_independent_reference(tmp_path):
    """`compile --target torch` copies the library's binarize/drop_path/runtime code into the file,
    so comparing it with the library cannot see a wrong formula: compare it with `_ref_net`."""
    spec = tmp_path / "emit.fr"
    spec.write_text(EMIT)
    out = tmp_path / "emit_model.py"
    compile_cli(spec, "--target", "torch", "--seed", "3", "-o", out)
    net = getattr(load_module(out, "emitted_reference_case"), "Emit")(seed=3)
    gen = torch.Generator().manual_seed(0)
    sd = net.state_dict()
    for k, v in sd.items():  # BN statistics and affine parameters away from the identity init
        if ".bn" in k and v.is_floating_point():
            if k.endswith("running_var"):
                v.copy_(torch.rand(v.shape, generator=gen) + 0.5)
            else:
                v.copy_(torch.randn(v.shape, generator=gen) * 0.5 + (1.0 if k.endswith("weight") else 0.0))
    # one stem channel exactly 0 (gamma = beta = 0): sign(0) = +1 decides the binary convs there
    sd["stem.bn1.weight"][1] = 0.0
    sd["stem.bn1.bias"][1] = 0.0
    net.load_state_dict(sd)
    p = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(3, 3, 6, 6, generator=gen)
    for mode in ("binary", "tanh", "fp"):
        net.set_mode(mode).eval()
        with torch.no_grad():
            torch.testing.assert_close(net(x), _ref_net(p, x, mode), rtol=1e-5, atol=1e-5, msg=mode)
    # training mode (batch statistics), binary: outputs and the gradients of the backward rules
    net.set_mode("binary").train()
    xa = x.clone().requires_grad_(True)
    xb = x.clone().requires_grad_(True)
    q = {k: v.clone().requires_grad_(v.is_floating_point() and "running" not in k) for k, v in p.items()}
    ya, yb = net(xa), _ref_net(q, xb, "binary", train=True)
    torch.testing.assert_close(ya, yb, rtol=1e-5, atol=1e-5)
    ya.square().sum().backward()
    yb.square().sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-4, atol=1e-5)
    assert xa.grad.abs().sum() > 0
    for name, par in net.named_parameters():
        torch.testing.assert_close(par.grad, q[name].grad, rtol=1e-4, atol=1e-5, msg=name)


def test_source_needs_only_torch_and_is_deterministic(tmp_path):
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    compile_cli(SPECS / "rf_c3d4.fr", "--target", "torch", "-o", a)
    compile_cli(SPECS / "rf_c3d4.fr", "--target", "torch", "-o", b)
    compile_cli(SPECS / "rf_c3d4.fr", "--target", "torch", "--seed", "1", "-o", c)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()  # the seed is the class's default
    stdout = CliRunner().invoke(cli, ["compile", str(SPECS / "rf_c3d4.fr"), "-t", "torch"]).output
    assert stdout == a.read_text()
    text = a.read_text()
    assert "fractalc" not in "".join(l for l in text.splitlines() if l.startswith(("import", "from")))
    probe = ("import sys, importlib.util as u; s = u.spec_from_file_location('m', sys.argv[1]); "
             "m = u.module_from_spec(s); s.loader.exec_module(m); "
             "import torch; net = m.RfC3d4(); y = net(torch.zeros(1, 64, 8, 8)); "
             "assert 'fractalc' not in sys.modules, 'imports fractalc'; print(tuple(y.shape))")
    r = subprocess.run([sys.executable, "-c", probe, str(a)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(1, 64, 8, 8)"
    r = subprocess.run([sys.executable, str(a)], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr  # `python model.py` runs (defines, does nothing)


def test_torch_state_target(tmp_path):
    pt, pt2 = tmp_path / "m.pt", tmp_path / "m2.pt"
    compile_cli(SPECS / "rf_c3d4.fr", "--target", "torch-state", "--seed", "3", "-o", pt, "--set", "channels=4")
    compile_cli(SPECS / "rf_c3d4.fr", "--target", "torch-state", "--seed", "3", "-o", pt2, "--set", "channels=4")
    assert pt.read_bytes() == pt2.read_bytes()
    sd = torch.load(pt, weights_only=True)
    lib = from_graph(compile_spec(SPECS / "rf_c3d4.fr", {"channels": "4"}).graph, seed=3)
    assert list(sd) == list(lib.state_dict())
    assert all(torch.equal(v, lib.state_dict()[k]) for k, v in sd.items())
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no leftovers


def test_torch_state_column_from_full_weights(tmp_path):
    full, col = tmp_path / "full.pt", tmp_path / "col.pt"
    compile_cli(SPECS / "rf_c3d4.fr", "-t", "torch-state", "--seed", "5", "-o", full, "--set", "channels=4")
    compile_cli(SPECS / "rf_c3d4.fr", "-t", "torch-state", "--column", "2", "--weights", full,
                "-o", col, "--set", "channels=4")
    f, c = torch.load(full, weights_only=True), torch.load(col, weights_only=True)
    assert set(c) < set(f) and all(k.startswith("block.col2.") for k in c)
    assert all(torch.equal(v, f[k]) for k, v in c.items())


def test_cli_errors_are_clean(tmp_path, capsys):
    for args, needle in (
        (["-t", "torch-state"], "give -o FILE.pt"),
        (["-t", "torch", "--weights", "x.pt"], "takes no --weights"),
        (["-t", "torch", "--column", "9"], "has no column 9"),
        (["-t", "torch-state", "-o", str(tmp_path / "o.pt"), "--weights", str(tmp_path / "nope.pt")],
         "cannot read weights"),
    ):
        with pytest.raises(SystemExit) as e:
            main(["compile", str(SPECS / "rf_c3d4.fr"), *args])
        assert e.value.code == 1
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err


def test_class_names():
    assert class_name("rf_c3d4") == "RfC3d4"
    assert class_name("bireal_resnet18") == "BirealResnet18"
    assert class_name("3net") == "Net3net"
    assert class_name("none") == "NoneNet"
    for n in ("a-b_c", "x", "__", "drf_c2d2_densenet51"):
        assert class_name(n).isidentifier() and class_name(n)[0].isupper()


def _tiny_graph(ids):
    g = ir.Graph("tiny")
    prev = g.add("input", ir.Input((2, 4, 4)))
    for i in ids:
        prev = g.add(i, ir.Conv(2, 1), (prev,))
    g.add("output", ir.Output(), (prev,))
    return run_default(g)


def test_module_path_collisions_are_clear_errors():
    with pytest.raises(TorchBuildError, match="'a' would also have to contain layer 'a.b'"):
        make_plan(_tiny_graph(["a", "a.b"]))
    with pytest.raises(TorchBuildError, match="reserved"):
        make_plan(_tiny_graph(["training"]))
    with pytest.raises(TorchBuildError, match="reserved"):
        make_plan(_tiny_graph(["blk.keys"]))
    model = from_graph(_tiny_graph(["a.b", "a.c", "z"]))
    assert sorted(model.state_dict()) == ["a.b.weight", "a.c.weight", "z.weight"]
