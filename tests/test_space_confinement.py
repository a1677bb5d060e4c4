"""A space file may come from someone else: its baselines and library must not make fractalc
read (and quote in an error message) files outside the folders a spec beside it could import
from. Baselines are shipped model names or `.fr` files under the space file's folder (or an
--allow-import folder)."""
from __future__ import annotations

from pathlib import Path

import pytest
from fractalc.cli import main
from fractalc.lang.resolve import allowed_imports
from fractalc.variants import SpaceError, load_space

SPECS = Path(__file__).resolve().parent.parent / "specs"

SPACE = '[[space]]\nfamily = ["RF"]\ncolumns = [2]\nblocks = [[1, 1, 1, 1]]\nbudget = {{ baseline = "{b}" }}\n{extra}'


def _space(tmp_path, baseline, extra=""):
    f = tmp_path / "space" / "s.toml"
    f.parent.mkdir(exist_ok=True)
    f.write_text(SPACE.format(b=baseline, extra=extra))
    return f


def test_a_secret_outside_the_folder_is_never_read(tmp_path, capsys):
    secret = tmp_path / "secret.fr"
    secret.write_text("TOP-SECRET-LINE\n")
    for b in (str(secret), "../secret.fr", "/etc/passwd"):
        with pytest.raises(SpaceError) as e:
            load_space(_space(tmp_path, b))
        assert "TOP-SECRET" not in e.value.format() and "root:" not in e.value.format()
    # the same through the command: exit 1, a message, no content
    with pytest.raises(SystemExit) as e:
        main(["generate", str(_space(tmp_path, "../secret.fr")), "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert e.value.code == 1 and "outside the folders" in err and "TOP-SECRET" not in err


def test_a_symlink_inside_the_folder_is_resolved(tmp_path):
    secret = tmp_path / "secret.fr"
    secret.write_text("TOP-SECRET-LINE\n")
    space = _space(tmp_path, "link.fr")
    (space.parent / "link.fr").symlink_to(secret)
    with pytest.raises(SpaceError, match="outside the folders"):
        load_space(space)


def test_inside_the_folder_by_name_or_allowed(tmp_path):
    space = _space(tmp_path, "base.fr")
    (space.parent / "base.fr").write_bytes((SPECS / "bireal_resnet18.fr").read_bytes())
    (_, p), = load_space(space).points
    assert p.baseline == (space.parent / "base.fr").resolve()
    (_, p), = load_space(_space(tmp_path, "bireal_resnet18")).points  # a shipped model
    assert p.baseline.name == "bireal_resnet18.fr"
    outside = str(SPECS / "bireal_resnet34.fr")
    with pytest.raises(SpaceError, match="--allow-import"):
        load_space(_space(tmp_path, outside))
    with allowed_imports([SPECS]):  # what --allow-import DIR does for the command
        (_, p), = load_space(_space(tmp_path, outside)).points
    assert p.baseline == Path(outside).resolve()


def test_library_key_is_confined_too(tmp_path):
    with pytest.raises(SpaceError, match="library folder .* is outside"):
        load_space(_space(tmp_path, "bireal_resnet18", 'library = "/etc"\n'))
    (_, p), = load_space(_space(tmp_path, "bireal_resnet18", 'library = "fractalc:"\n')).points
    assert (p.library_dir / "sofar.fr").is_file()


def test_a_baseline_must_be_a_name_or_a_spec(tmp_path):
    with pytest.raises(SpaceError, match="neither a model name"):
        load_space(_space(tmp_path, "notes.txt"))
    with pytest.raises(SpaceError, match="not the first network"):
        load_space(_space(tmp_path, "quicknet_small"))
