"""Shared fixtures: fresh plugin managers, the tiny model (unit tests) and the real SmolLM2
(integration tests, loaded once per session)."""

from __future__ import annotations

import os

import pytest

# Tests must never reach the network (CI has none): fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def pm():
    """A fresh plugin manager with every installed plugin (built-ins included)."""
    from steer.plugins import get_plugin_manager

    return get_plugin_manager()


@pytest.fixture(scope="session")
def tiny_model():
    """A tiny random-weight Llama with a small trained tokenizer (shared; do not mutate)."""
    from tiny import tiny_loaded_model

    return tiny_loaded_model()


@pytest.fixture(scope="session")
def smollm():
    """The real bundled SmolLM2-135M-Instruct, loaded once for all integration tests."""
    from steer.model import load_model

    return load_model(device="cpu")
