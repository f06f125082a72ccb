"""The feature index of a shipped SAE built on first use (tiny model standing in for SmolLM2):
built into the steer cache from the text steer ships, never into the package folder, found
there the next time, rebuilt when its recipe changes; an SAE that ships its index uses it."""

from __future__ import annotations

import json
import stat

import pytest
from support.cli_helpers import assert_one_line_error, call
from support.feature_index import build_small_index
from support.sae_factory import make_sae

from steer.errors import SteerError
from steer.features.index_db import read_meta
from steer.features.shipped_index import RECIPE_FILE, RECIPE_FORMAT, build_lock, read_recipe
from steer.sae import save_sae

NAME = "tiny-shipped"
RECIPE = {
    "format": RECIPE_FORMAT,
    "data": ["data/corpus/wikitext2-excerpt.txt"],
    "max_tokens": 2048,
    "ctx_len": 32,
    "top_k": 4,
    "context_tokens": 8,
    "samples": 4,
    "batch_windows": 8,
}


@pytest.fixture
def shipped(tmp_path, monkeypatch, tiny_everywhere):
    """A tiny SAE shipped as builtin NAME with an index recipe and no index; its folder is
    read-only, as an installed package may be. Returns ``(folder, cache index path)``."""
    from steer.sae import sources

    folder = tmp_path / "package" / NAME
    save_sae(make_sae("topk", d_in=tiny_everywhere.d_model, d_sae=48, k=6, layer=2), folder)
    (folder / RECIPE_FILE).write_text(json.dumps(RECIPE), encoding="utf-8")
    monkeypatch.setattr(sources, "builtin_saes", lambda: {NAME: folder})
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    yield folder, tmp_path / "cache" / "indexes" / NAME / "features.sqlite"
    folder.chmod(stat.S_IRWXU)


def test_first_use_builds_into_the_cache_and_the_next_use_finds_it(shipped, capsys):
    folder, cached = shipped
    code, out, err = call(["features", "show", NAME, "3", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["id"] == 3
    assert f"building the feature index of {NAME} on first use" in err
    assert "steer/data/corpus/: wikitext2-excerpt.txt" in err and "min on one CPU core" in err
    assert f"index {NAME}" in err  # the named progress bar
    assert cached.is_file() and not (folder / "features.sqlite").exists()
    built = cached.stat().st_mtime_ns

    code, out, err = call(["features", "show", NAME, "3", "--json"], capsys)
    assert code == 0, err
    assert "building" not in err and f"index {NAME}" not in err
    assert cached.stat().st_mtime_ns == built


def test_a_changed_recipe_rebuilds_the_cached_index(shipped, capsys):
    folder, cached = shipped
    assert call(["features", "show", NAME, "3", "--json"], capsys)[0] == 0
    folder.chmod(stat.S_IRWXU)
    (folder / RECIPE_FILE).write_text(json.dumps({**RECIPE, "top_k": 2}), encoding="utf-8")
    code, out, err = call(["features", "show", NAME, "3", "--json"], capsys)
    assert code == 0, err
    assert "building the feature index" in err
    assert len(json.loads(out)["contexts"]) <= 2
    assert read_meta(cached)["top_k"] == 2


def test_a_shipped_sae_that_ships_its_index_uses_it(tmp_path, monkeypatch, tiny_model, capsys):
    from steer.sae import sources

    monkeypatch.setenv("STEER_CACHE", str(tmp_path / "cache"))
    folder, *_ = build_small_index(tmp_path, tiny_model)
    (folder / RECIPE_FILE).write_text(json.dumps(RECIPE), encoding="utf-8")
    monkeypatch.setattr(sources, "builtin_saes", lambda: {NAME: folder})
    code, out, err = call(["features", "show", NAME, "3", "--json"], capsys)
    assert code == 0, err
    assert "building" not in err and not (tmp_path / "cache" / "indexes").exists()
    assert len(json.loads(out)["contexts"]) == 4  # the shipped index's top_k


def test_an_sae_not_shipped_still_says_how_to_build_its_index(tmp_path, capsys):
    folder = tmp_path / "sae"
    save_sae(make_sae("topk", d_in=64, d_sae=8, k=2, layer=2), folder)
    (folder / RECIPE_FILE).write_text(json.dumps(RECIPE), encoding="utf-8")
    code, _, err = call(["features", "show", str(folder), "1"], capsys)
    assert_one_line_error(code, err, "no feature index for", "steer features index")


@pytest.mark.parametrize(
    ("recipe", "fragment"),
    [
        ({**RECIPE, "data": ["../../etc/passwd"]}, "not a path inside the steer package"),
        ({**RECIPE, "data": []}, "'data' must be a non-empty list"),
        ({**RECIPE, "topk": 3}, "unknown keys ['topk']"),
        ({**RECIPE, "format": "x"}, "not an index recipe"),
        ({**RECIPE, "top_k": "ten"}, "top_k must be a whole number >= 1"),
        ({**RECIPE, "max_tokens": 5}, "max_tokens must be a whole number >= 128"),
    ],
)
def test_a_bad_recipe_is_one_line(tmp_path, recipe, fragment):
    (tmp_path / RECIPE_FILE).write_text(json.dumps(recipe), encoding="utf-8")
    with pytest.raises(SteerError) as info:
        read_recipe(tmp_path)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_a_second_build_waits_for_the_first(tmp_path):
    import threading
    import time

    fcntl = pytest.importorskip("fcntl")
    db = tmp_path / "features.sqlite"
    events: list[str] = []

    def second() -> None:
        with build_lock(db, lambda: events.append("waiting")):
            events.append("building")

    with open(tmp_path / "features.sqlite.lock", "w") as first:
        fcntl.flock(first, fcntl.LOCK_EX)
        thread = threading.Thread(target=second)
        thread.start()
        deadline = time.monotonic() + 10
        while not events and time.monotonic() < deadline:
            time.sleep(0.01)
        assert events == ["waiting"]
        fcntl.flock(first, fcntl.LOCK_UN)
    thread.join(10)
    assert events == ["waiting", "building"]


def test_a_cache_that_cannot_be_written_is_one_line(shipped, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x", encoding="utf-8")
    monkeypatch.setenv("STEER_CACHE", str(blocker))
    code, _, err = call(["features", "show", NAME, "3"], capsys)
    assert_one_line_error(code, err, "steer cache")


def test_search_builds_the_index_for_its_densities(shipped, capsys):
    _folder, cached = shipped
    code, out, err = call(["features", "search", NAME, "The cat sat on the mat.", "--json"], capsys)
    assert code == 0, err
    assert "building the feature index" in err and cached.is_file()
    assert any(hit["density"] is not None for hit in json.loads(out)["overall"])
