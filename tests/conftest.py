"""Shared fixtures: fresh plugin managers, the tiny model (unit tests) and the real SmolLM2
(integration tests, loaded once per session)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Tests must never reach the network (CI has none): fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def user_data(tmp_path_factory, monkeypatch):
    """Each test writes user data (labels of shipped SAEs) into a folder of its own, never
    into the real user data folder."""
    folder = tmp_path_factory.mktemp("user-data")
    monkeypatch.setenv("STEER_DATA", str(folder))
    return folder


@pytest.fixture
def pm():
    """A fresh plugin manager with every installed plugin (built-ins included)."""
    from steer.plugins.manager import get_plugin_manager

    return get_plugin_manager()


@pytest.fixture(scope="session")
def tiny_model():
    """A tiny random-weight Llama with a small trained tokenizer (shared; do not mutate)."""
    from support.tiny import tiny_loaded_model

    return tiny_loaded_model()


@pytest.fixture
def tiny_everywhere(monkeypatch, tmp_path, tiny_model):
    """The tiny model wherever steer loads a model by name (training, the CLI: they import
    ``load_model`` when they run), with the model cache in a temporary folder."""
    import steer.model

    monkeypatch.setenv("STEER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(steer.model, "load_model", lambda *a, **k: tiny_model)
    return tiny_model


@pytest.fixture(scope="session")
def smollm():
    """The real bundled SmolLM2-135M-Instruct, loaded once for all integration tests."""
    from steer.model import load_model

    return load_model(device="cpu")


CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
NO_BROWSER = "needs Debian's chromium and chromium-driver (make browser installs them)"


@pytest.fixture(scope="session")
def browser():
    """Headless Debian chromium driven by selenium through the system chromedriver (nothing is
    downloaded); its console log is what the browser tests check. Skips without them."""
    if CHROMIUM is None or not CHROMEDRIVER.is_file():
        pytest.skip(NO_BROWSER)
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
