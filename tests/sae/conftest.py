"""Fixtures for the SAE tests."""

from __future__ import annotations

import pytest
from support.sae_factory import make_sae as _make_sae


@pytest.fixture
def make_sae():
    """The :func:`sae_factory.make_sae` factory: ``make_sae("topk", d_in=16, k=4, ...)``."""
    return _make_sae
