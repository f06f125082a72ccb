"""Fixtures for the family readers' tests."""

from __future__ import annotations

import pytest
from support.hf_cache import offline_cache_env


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache folder that huggingface_hub uses, offline, for this test."""
    folder = tmp_path / "cache"
    offline_cache_env(monkeypatch, folder)
    return folder
