"""The dashboard in a real headless browser (Debian's chromium + chromedriver; `make test`
installs them): the pages load from file:// with no console errors and show the index's data
(contexts above the fold, quantile samples, histogram, nearest features), and the filter box
and sortable columns work.

Selenium drives the system chromedriver (``/usr/bin/chromedriver``), so nothing is downloaded;
it also gives the browser's console log directly, which is what this test checks.
"""

from __future__ import annotations

import pytest
from support.browser_log import severe
from support.feature_index import D_SAE, build_small_index

from steer.features.dashboard import write_dashboard
from steer.features.store import FeatureIndex
from steer.html import shown_token
from steer.sae.labels import Label


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_model):
    tmp = tmp_path_factory.mktemp("browser")
    folder, sae, *_ = build_small_index(tmp, tiny_model)
    index = FeatureIndex.open(folder)
    alive = max(range(D_SAE), key=lambda f: index.feature(f).n_fired)
    labels = {alive: Label("cats & <dogs>", 'fires on "pets"')}
    write_dashboard(index, labels, tmp / "site", decoder=sae.W_dec, progress=False)
    yield tmp / "site", index, alive, labels[alive]
    index.close()


def test_index_page_loads_lists_filters_and_sorts(browser, site):
    from selenium.webdriver.common.by import By

    out, index, alive, label = site
    browser.get((out / "index.html").as_uri())
    assert severe(browser) == []
    assert browser.title.startswith("Features of ")
    rows = browser.find_elements(By.CSS_SELECTOR, "#features tbody tr")
    assert len(rows) == D_SAE
    assert browser.find_element(By.ID, "shown").text == str(D_SAE)
    assert label.name in browser.find_element(By.ID, "features").text

    box = browser.find_element(By.ID, "filter")
    box.send_keys("<dogs>")
    visible = [r for r in rows if r.is_displayed()]
    assert [r.get_attribute("data-id") for r in visible] == [str(alive)]
    assert browser.find_element(By.ID, "shown").text == "1"
    box.clear()
    box.send_keys(" ")  # an input event with no words shows every row again
    assert browser.find_element(By.ID, "shown").text == str(D_SAE)

    browser.find_element(By.CSS_SELECTOR, 'th[data-key="density"]').click()
    first = browser.find_element(By.CSS_SELECTOR, "#features tbody tr")
    densest = max(index.features(), key=lambda s: s.density)
    assert first.get_attribute("data-id") == str(densest.id)
    assert severe(browser) == []


def test_feature_page_shows_contexts_label_and_histogram(browser, site):
    from selenium.webdriver.common.by import By

    out, index, alive, label = site
    browser.set_window_size(1280, 900)
    browser.get((out / "index.html").as_uri())
    browser.find_element(By.LINK_TEXT, str(alive)).click()
    assert browser.current_url.endswith(f"features/{alive}.html")
    assert severe(browser) == []
    record = index.feature(alive)
    assert browser.find_element(By.ID, "label").text == label.name
    assert browser.find_element(By.ID, "description").text == label.description
    contexts = browser.find_elements(By.CSS_SELECTOR, "#contexts td.ctx")
    assert len(contexts) == len(record.contexts) > 0
    # Above the fold: the first context starts inside the window a reader first sees.
    height = browser.execute_script("return window.innerHeight")
    assert 0 < contexts[0].rect["y"] < height - contexts[0].rect["height"]
    focus = contexts[0].find_element(By.CLASS_NAME, "focus")
    assert focus.text == shown_token(record.contexts[0].tokens[record.contexts[0].focus])
    # Shading: the focus token of the top context is the most intense one.
    assert "rgba(255, 140, 0, 1)" in focus.value_of_css_property("background-color")
    # Quantile samples: every sample in a band table, strongest band first.
    samples = browser.find_elements(By.CSS_SELECTOR, "#samples table.samples td.ctx")
    assert len(samples) == len(record.samples) > 4
    assert browser.find_element(By.CSS_SELECTOR, "#samples h3").text.startswith("75\u2013100th")
    for css in ("#samples", "svg.hist", "#nearest-table", "#logits", ".stats"):
        assert browser.find_element(By.CSS_SELECTOR, css).is_displayed(), css
    fired = [i for i, c in enumerate(record.hist) if c]
    bars = browser.find_elements(By.CSS_SELECTOR, "svg.hist rect")
    assert len(bars) == min(fired[-1] + 2, len(record.hist)) - max(fired[0] - 1, 0)
    axis = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "svg.hist text.title")]
    assert axis == ["activation (log-spaced bins)", "tokens"]
    assert f"{record.n_fired:,}" in browser.find_element(By.CLASS_NAME, "stats").text
    # A nearest feature's link opens its page.
    first = browser.find_element(By.CSS_SELECTOR, "#nearest-table a")
    other = first.text
    first.click()
    assert browser.current_url.endswith(f"features/{other}.html")
    assert browser.find_element(By.ID, "feature").get_attribute("data-id") == other
    assert severe(browser) == []
