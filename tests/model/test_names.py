"""Model names checked without loading: the bundled model, files and folders, Hub ids in a
real Hugging Face cache layout, misspellings, and no network: each answer is one line, at once."""

from __future__ import annotations

import time

import pytest
import yaml
from support.cli_helpers import assert_one_line_error, call

from steer.errors import SteerError
from steer.model import names


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, in its real layout, that steer reads (tests are offline)."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def cache_model(cache, repo_id: str) -> None:
    """Put ``repo_id``'s config.json in ``cache`` as huggingface_hub would after a download."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    revision = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")


def test_the_bundled_model_and_cached_hub_ids_are_fine(hub_cache):
    cache_model(hub_cache, "owner/tiny-model")
    assert names.model_problem("smollm2-135m-instruct") is None
    assert names.model_problem("owner/tiny-model") is None
    assert names.in_hub_cache("owner/tiny-model") and not names.in_hub_cache("owner/other")


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("smollm2-135m-instrct", "did you mean 'smollm2-135m-instruct'"),
        ("SmolLM2-135M-Instruct", "did you mean 'smollm2-135m-instruct'"),
        ("owner/not-cached", "not in the Hugging Face cache, and HF_HUB_OFFLINE is set"),
        ("two words", "is not the bundled model, a .gguf file, a local folder or a Hub id"),
        ("missing.gguf", "model file not found"),
    ],
)
def test_names_that_cannot_load_say_why(hub_cache, name, fragment):
    assert fragment in names.model_problem(name)


def test_a_folder_without_a_config_is_not_a_model(tmp_path):
    assert "no config.json" in names.model_problem(str(tmp_path))


def test_an_unreachable_hub_is_one_line_without_retries(hub_cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(names, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(SteerError, match=r"huggingface\.co cannot be reached"):
        names.require_downloadable("owner/not-cached")


@pytest.mark.parametrize("command", ["check", "run"])
def test_a_misspelled_model_fails_at_once_through_the_cli(tmp_path, capsys, command):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"model": "smollm2-135m-instrct", "prompts": ["hi"]}))
    start = time.perf_counter()
    code, _, err = call([command, str(path)], capsys)
    assert_one_line_error(code, err, "did you mean 'smollm2-135m-instruct'")
    assert time.perf_counter() - start < 10
