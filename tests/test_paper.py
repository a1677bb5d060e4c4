"""The paper's DRF networks: the reading that gives back the published growths, checked against
closed-form counts and the published numbers, and the earlier reading still available."""
from __future__ import annotations

import pytest

from fractalc import ir
from fractalc.compiler import compile_spec
from fractalc.cost import cost
from fractalc.variants import budget_of, solve

from conftest import SPECS

DRF51, DRF69, DF51 = (SPECS / f"{n}.fr" for n in ("drf_c2d2_densenet51", "drf_c2d2_densenet69",
                                                   "df_c2d2_densenet51"))
BDN28, BDN37, BDN51, BDN69 = (SPECS / f"binary_densenet{d}.fr" for d in (28, 37, 51, 69))
# The reading fractalc used before: a BN per column head, transitions round(C / r / 32) * 32, and
# BinaryDenseNet51/69(32) built as chained layers of growth 32 with round-to-nearest transitions.
OLD_DRF = {"stack_bn": "own", "transitions": "[0, 0, 0]"}
OLD_BDN = {"layers": "chained", "trans_round": "nearest"}


def growth(spec, baseline, metric, overrides=None, budget_overrides=None):
    return solve(spec, budget_of(baseline, budget_overrides), metric=metric, overrides=overrides).value


@pytest.mark.parametrize("spec,baseline,published", [(DRF51, BDN51, 53), (DRF69, BDN69, 48),
                                                     (DF51, BDN51, 53)])
def test_scaler_gives_back_the_published_growths_by_parameter_bits(spec, baseline, published):
    assert growth(spec, baseline, "params") == published
    at = cost(compile_spec(spec, {"growth": str(published)}).graph).bits
    above = cost(compile_spec(spec, {"growth": str(published + 1)}).graph).bits
    assert at <= cost(compile_spec(baseline).graph).bits < above


def test_the_earlier_reading_stays_available_and_gives_its_earlier_numbers():
    # README before this reading: parameter bits allow 56 and 56, FLOPs 52 and 50.
    assert [growth(s, b, m, OLD_DRF, OLD_BDN) for m in ("params", "flops")
            for s, b in ((DRF51, BDN51), (DRF69, BDN69))] == [56, 56, 52, 50]
    # ... and the earlier graphs, to the parameter (README's spec table before the change).
    old = cost(compile_spec(DRF51, OLD_DRF).graph)
    assert (old.total("float_params"), old.total("binary_params")) == (757_480, 6_445_701)
    old = cost(compile_spec(BDN51, OLD_BDN).graph)
    assert (old.total("float_params"), old.total("binary_params"), old.depth) == (945_064, 4_414_464, 51)


def test_budgets_are_binary_densenet28_and_37_with_transitions_rounded_down():
    b28, b51 = cost(compile_spec(BDN28).graph), cost(compile_spec(BDN51).graph)
    assert (b51.bits, b51.flops) == (b28.bits, b28.flops)  # 160/192/256 either way
    b37, b69 = cost(compile_spec(BDN37).graph), cost(compile_spec(BDN69).graph)
    # Only BinaryDenseNet37's last transition changes: 960 channels -> 224 instead of 256 (7.5
    # rounds to 8, floors to 7). 32 fewer channels: the 1x1 conv (960 x 32 weights), in stage 4
    # six BN (2 x 32) and six binary 3x3 convs (9 x 32 x 64), the head BN (2 x 32), the FC
    # (32 x 1000).
    fp = 960 * 32 + 6 * 2 * 32 + 2 * 32 + 32 * 1000
    binary = 6 * 9 * 32 * 64
    assert b37.bits - b69.bits == 32 * fp + binary == 2_131_968
    g = compile_spec(BDN69).graph
    assert [g.op(f"trans{t}.conv1").out_channels for t in (1, 2, 3)] == [128, 192, 224]
    # The authors' BinaryDenseNet37 keeps round-to-nearest and its published 5.13 MB.
    assert compile_spec(BDN37).graph.op("trans3.conv1").out_channels == 256
    assert round(b37.bits / 8 / 2**20, 2) == 5.13


@pytest.mark.parametrize("spec", [DRF51, DRF69, DF51])
@pytest.mark.parametrize("k", [20, 53, 64])
def test_drf_transitions_are_fixed_whatever_the_growth(spec, k):
    g = compile_spec(spec, {"growth": str(k)}).graph
    assert [g.op(f"trans{t}.conv1").out_channels for t in (1, 2, 3)] == [160, 192, 256]
    g = compile_spec(spec, {"growth": str(k), "transitions": "[0, 0, 0]"}).graph
    assert g.op("trans1.conv1").out_channels == round((64 + 6 * k) / (2.7 if spec != DRF69 else 3.3) / 32) * 32


@pytest.mark.parametrize("reading,float_params", [("shared", 2 * 64 + 4 * 2 * 32),
                                                   ("own", 3 * 2 * 64 + 4 * 2 * 32)])
def test_shared_bn_closed_form_on_the_figure1_block(reading, float_params):
    # DRF-c3d4 on 64 channels, growth 32: 3 column heads (64 -> 32) and 4 k -> k convs with a
    # BN each; the shared reading has one BN on the stack instead of one per column head.
    g = compile_spec(SPECS / "drf_c3d4.fr", {"stack_bn": reading}).graph
    c = cost(g)
    assert c.total("float_params") == float_params
    assert c.total("binary_params") == 3 * 9 * 64 * 32 + 4 * 9 * 32 * 32
    heads = [n for n in g.nodes(ir.BinaryConv) if n.endswith("conv1")]
    assert len(heads) == 3
    feeding = {g.inputs(n)[0] for n in heads}
    assert len(feeding) == (1 if reading == "shared" else 3)
    assert all(isinstance(g.op(f), ir.BatchNorm) for f in feeding)


def test_shared_bn_needs_a_bn_before_the_conv():
    # With BN after the conv there is nothing to share: both readings build the same graph.
    a = compile_spec(SPECS / "drf_c3d4.fr", {"order": '"conv-bn"', "stack_bn": "shared"}).graph
    b = compile_spec(SPECS / "drf_c3d4.fr", {"order": '"conv-bn"', "stack_bn": "own"}).graph
    assert list(a.nodes()) == list(b.nodes())
    assert cost(a).total("float_params") == cost(b).total("float_params") == 7 * 2 * 32


def test_halves_count_two_convs_per_binary_densenet_layer():
    g = compile_spec(BDN51).graph
    convs = list(g.nodes(ir.BinaryConv))
    assert len(convs) == 46 and {g.op(n).out_channels for n in convs} == {32}
    # the two convs of a layer read the same BN'd stack
    assert g.inputs("stage1.block1.conv1") == g.inputs("stage1.block1.conv2")


@pytest.mark.parametrize("name,baseline", [("drf_c3d4_densenet97", BDN51), ("drf_c3d4_densenet133", BDN69)])
def test_unpublished_growths_are_the_scalers_answer(name, baseline):
    spec = SPECS / f"{name}.fr"
    assert growth(spec, baseline, "params") == compile_spec(spec).params["growth"]


# ---- the shipped ImageNet space and its Pareto plot ------------------------------------------

SPACE = SPECS.parent / "examples" / "spaces" / "sofar_imagenet.toml"


@pytest.fixture(scope="module")
def sofar_space(tmp_path_factory):
    from fractalc.variants import generate
    return generate(SPACE, tmp_path_factory.mktemp("sofar"))


def test_space_budgets_each_layout_against_its_papers_baseline(sofar_space):
    got = {v.name: (v.baseline_name, v.result.value) for v in sofar_space.variants}
    assert not sofar_space.skipped
    for v in sofar_space.variants:  # the 34-layout against Bi-Real ResNet34, as the paper does
        if v.point.blocks == (2, 2, 3, 2):
            assert v.baseline_name == "bireal_resnet34.fr"
    # the published widths, each from its own budget (reference section 5)
    for fam in ("f", "rf"):
        assert got[f"{fam}_c3d4_resnet21"] == ("bireal_resnet18.fr", 53)
        assert got[f"{fam}_c4d8_resnet37"] == ("bireal_resnet18.fr", 41)
        assert got[f"{fam}_c5d16_resnet69"] == ("bireal_resnet18.fr", 31)
        assert got[f"{fam}_c3d4_resnet41"] == ("bireal_resnet34.fr", 48)
        assert got[f"{fam}_c4d8_resnet77"] == ("bireal_resnet34.fr", 35)
    for fam in ("df", "drf"):
        assert got[f"{fam}_c2d2_densenet51"] == ("binary_densenet51.fr", 53)
        assert got[f"{fam}_c2d2_densenet69"] == ("binary_densenet69.fr", 48)


def test_generated_drf_equals_the_shipped_spec(sofar_space):
    from fractalc.ir.printer import format_ir
    for name in ("drf_c2d2_densenet51", "drf_c2d2_densenet69"):
        gen = format_ir(compile_spec(sofar_space.out / f"{name}.fr").graph).split("\n", 1)[1]
        ship = format_ir(compile_spec(SPECS / f"{name}.fr").graph).split("\n", 1)[1]
        assert gen == ship


def test_pareto_plot_labels_do_not_overlap_and_every_family_shows(sofar_space, tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.collections import PathCollection

    from fractalc.variants import pareto_figure, plot
    fig, ax, texts = pareto_figure(sofar_space)
    try:
        r = fig.canvas.get_renderer()
        boxes = [t.get_window_extent(r) for t in texts]
        # one label per distinct cost: F and RF (and DF, DRF) share theirs
        assert len(texts) == len({(v.result.cost.mbit, v.result.cost.flops) for v in sofar_space.variants})
        assert len(texts) == len(sofar_space.variants) // 2
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert not a.overlaps(b), (a, b)
        # no label covers a marker's centre
        points = ax.transData.transform([(v.result.cost.mbit, v.result.cost.flops) for v in sofar_space.variants]
                                        + [(m.mbit, m.flops) for m in sofar_space.baselines.values()])
        for a in boxes:
            assert not any(a.contains(x, y) for x, y in points)
        # F (large hollow) and RF (small filled) on the same points: both visible
        coll = {c.get_label(): c for c in ax.collections if isinstance(c, PathCollection)}
        for hollow, filled in (("F", "RF"), ("DF", "DRF")):
            h, f = coll[hollow], coll[filled]
            assert sorted(map(tuple, h.get_offsets().tolist())) == sorted(map(tuple, f.get_offsets().tolist()))
            assert h.get_facecolors().size == 0 or h.get_facecolors()[0][3] == 0
            assert min(h.get_sizes()) > 3 * max(f.get_sizes())
        # each baseline's parameter budget as a vertical line at its Mbit
        vertical = {round(l.get_xdata()[0], 6) for l in ax.lines if l.get_xdata()[0] == l.get_xdata()[1]}
        assert vertical == {round(m.mbit, 6) for m in sofar_space.baselines.values()}
    finally:
        plt.close(fig)
    plot(sofar_space, tmp_path / "a.png")
    plot(sofar_space, tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_paper_tables_report_gives_back_every_published_imagenet_width():
    import importlib.util
    spec = importlib.util.spec_from_file_location("paper_tables", SPECS.parent / "scripts" / "paper_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = [r.split(" | ") for r in mod.model_table("imagenet") if r.startswith("| ") and "---" not in r][1:]
    assert len(rows) == len(mod.MODELS) == 13
    for r, (name, spec_name, base, published, _) in zip(rows, mod.MODELS):
        assert r[0] == f"| {name}"
        assert r[2] == str(published)  # the shipped width is the published one
        if base is not None:
            assert r[5] == str(published)  # the scaler gives it back by parameter bits
    # the README keeps the report's output
    readme = (SPECS.parent / "README.md").read_text()
    assert "\n".join(mod.model_table("imagenet")) in readme


def test_space_transitions_key_is_checked(tmp_path):
    from fractalc.errors import FractalcError
    from fractalc.variants import load_space
    base = "binary_densenet51"  # a shipped model by name
    text = (f'name = "t"\n[[space]]\nfamily = ["DRF"]\ncolumns = [2]\nblocks = [[6, 6, 6, 5]]\n'
            f'transitions = TRANS\nbudget = {{ baseline = "{base}" }}\n')
    ok = tmp_path / "ok.toml"
    ok.write_text(text.replace("TRANS", "[160, 192, 256]"))
    (_, p), = load_space(ok).points
    assert p.transitions == (160, 192, 256)
    for bad in ("[160, 192]", "[160, 0, 256]", '"160"'):
        f = tmp_path / "bad.toml"
        f.write_text(text.replace("TRANS", bad))
        with pytest.raises(FractalcError, match="transitions"):
            load_space(f)
