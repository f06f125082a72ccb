"""Fixtures of the training tests: the tiny random Llama and a small corpus (module-scoped,
so each test module builds its own)."""

from __future__ import annotations

import pytest
import torch
from support.tiny import tiny_loaded_model
from support.train_runs import write_corpus


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return tiny_loaded_model()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))
