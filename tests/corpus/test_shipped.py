"""Text shipped inside steer (steer/data/corpus/): every file is licensed and small, recipes name
the shipped texts by ``builtin:NAME``, and an unknown name is one line listing the known ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from steer.corpus.shipped import (
    resolve_text_path,
    shipped_corpus_dir,
    shipped_text,
    shipped_texts,
)
from steer.errors import SteerError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "steer" / "data" / "corpus"
# What recipes and the README's examples rely on.
NEEDED = {"wikitext2-excerpt", "requests-harmful", "requests-benign"}


def _files() -> list[Path]:
    return sorted(p for p in SHIPPED.rglob("*") if p.is_file() and p.name != "LICENSES.md")


def test_the_shipped_folder_is_the_package_data_folder():
    assert shipped_corpus_dir() == SHIPPED
    assert set(shipped_texts()) >= NEEDED


def test_every_shipped_file_is_named_in_the_licences_with_its_licence():
    licences = (SHIPPED / "LICENSES.md").read_text(encoding="utf-8")
    missing = [str(p.relative_to(SHIPPED)) for p in _files() if p.name not in licences]
    assert missing == []
    for licence in ("CC BY-SA 3.0", "CDLA-Sharing-1.0", "Public domain", "MIT License"):
        assert licence in licences


def test_the_shipped_text_is_small_and_utf8():
    total = 0
    for path in _files():
        path.read_text(encoding="utf-8")  # raises on anything that is not UTF-8 text
        total += path.stat().st_size
    assert total < 400_000, total  # a few hundred KB: samples, not corpora


def test_a_shipped_text_is_found_by_name():
    path = shipped_text("wikitext2-excerpt")
    assert path == SHIPPED / "wikitext2-excerpt.txt" and path.is_file()
    assert resolve_text_path("builtin:wikitext2-excerpt") == path
    assert resolve_text_path("builtin: requests-harmful", base="/elsewhere").name == (
        "requests-harmful.txt"
    )


def test_an_unknown_name_is_one_line_listing_the_shipped_ones():
    with pytest.raises(SteerError) as info:
        shipped_text("wikitext")
    message = str(info.value)
    assert "\n" not in message
    assert "'wikitext'" in message and "wikitext2-excerpt" in message
    assert "requests-benign" in message


def test_other_paths_are_taken_from_the_base_folder(tmp_path):
    assert resolve_text_path("text.txt", tmp_path) == (tmp_path / "text.txt").resolve()
    assert resolve_text_path(str(tmp_path / "a.txt"), "/elsewhere") == tmp_path / "a.txt"
    assert resolve_text_path("text.txt") == Path("text.txt")  # no base: as given
    assert resolve_text_path("~/t.txt") == Path.home() / "t.txt"


# ---------------------------------------------------------------- in pinpoint recipes


def _pinpoint_recipe(tmp_path: Path, side_effect_data: str) -> Path:
    path = tmp_path / "pin.yaml"
    data = {
        "saes": [{"id": "res12", "builtin": "smollm2-135m-res12-topk"}],
        "prompts": ["The cat sat on the"],
        "metric": {"logit_diff": {"target": " cat", "foil": " dog"}},
        "side_effect_data": side_effect_data,
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_a_pinpoint_recipe_names_a_shipped_text(tmp_path):
    from steer.pinpoint.recipe import load_pinpoint_recipe

    recipe = load_pinpoint_recipe(_pinpoint_recipe(tmp_path, "builtin:wikitext2-excerpt"))
    assert recipe.side_effect_data == str(SHIPPED / "wikitext2-excerpt.txt")


def test_an_unknown_shipped_text_in_a_recipe_is_one_line_naming_the_field(tmp_path):
    from steer.pinpoint.recipe import load_pinpoint_recipe

    path = _pinpoint_recipe(tmp_path, "builtin:wikitext3")
    with pytest.raises(SteerError) as info:
        load_pinpoint_recipe(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: side_effect_data")
    assert "'wikitext3'" in message and "wikitext2-excerpt" in message


def test_side_effect_windows_read_a_shipped_text_by_name(tiny_model):
    from steer.pinpoint.side_effects import load_windows

    windows = load_windows(tiny_model, "builtin:wikitext2-excerpt", 512)
    assert windows.shape == (4, 128)
