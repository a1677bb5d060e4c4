"""`generate` on the zoo: F/RF fractals built into QuickNet and ReActNet-18 (space key `base`),
scaled to their baseline's budget, equal to the hand-written specs in specs/zoo/."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from fractalc.cli import main
from fractalc.variants import SpaceError, generate, load_space

ROOT = Path(__file__).resolve().parent.parent
SPACE = ROOT / "examples" / "spaces" / "zoo_fractals.toml"


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    return generate(SPACE, out)


def _stats(path, capsys, *args) -> dict:
    main(["stats", str(path), *args, "--json", "--no-layers"])
    return json.loads(capsys.readouterr().out)


def test_every_point_is_written_within_its_budget(generated, capsys):
    assert not generated.skipped and len(generated.variants) == 12
    for v in generated.variants:
        budget = _stats(v.point.baseline, capsys)["params"]["bits"]
        bits = _stats(v.file, capsys)["params"]["bits"]
        bigger = _stats(v.file, capsys, "--set", f"width={v.result.value + 1}")["params"]["bits"]
        assert bits <= budget < bigger, v.name
        assert _stats(v.file, capsys)["depth"] == v.point.depth


@pytest.mark.parametrize("variant, hand", [("rf_c3d4_quicknet23", "specs/zoo/rf_c3d4_quicknet.fr"),
                                           ("rf_c3d4_reactnet21", "specs/zoo/rf_c3d4_reactnet21.fr")])
def test_generated_variant_equals_the_hand_written_spec(generated, capsys, variant, hand):
    v = next(v for v in generated.variants if v.name == variant)
    a, b = _stats(v.file, capsys), _stats(ROOT / hand, capsys)
    for key in ("params", "flops", "depth"):
        assert a[key] == b[key]
    text = v.file.read_text()
    assert "QuickNet23" in text if "quick" in variant else "ReActNet21" in text


def test_base_is_checked(tmp_path):
    bad = tmp_path / "s.toml"
    bad.write_text(f'[[space]]\nbase = "mobilenet"\nlibrary = "{ROOT / "specs/lib"}"\nfamily = ["RF"]\n'
                   f'columns = [2]\nblocks = [[1, 1, 1, 1]]\nbudget = {{ baseline = "quicknet" }}\n')
    with pytest.raises(SpaceError, match="unknown base 'mobilenet'"):
        load_space(bad)
    bad.write_text(bad.read_text().replace('"mobilenet"', '"quicknet"').replace('["RF"]', '["DRF"]'))
    with pytest.raises(SpaceError, match="F and RF families only"):
        load_space(bad)
    bad.write_text(bad.read_text().replace('["DRF"]', '["RF"]').replace(str(ROOT / "specs/lib"), "nowhere"))
    with pytest.raises(SpaceError, match="library folder 'nowhere' not found"):
        load_space(bad)
