"""The HTML report from hand-built arm records (no model): tag balance, escaping, the sweep's
points; and in headless Chromium, that it renders without console errors (skipped where
Debian's chromium and chromedriver are missing)."""

from __future__ import annotations

from html.parser import HTMLParser

from support.browser_log import severe

from steer.evaluation.report import report_html, write_outputs
from steer.evaluation.summary import summarise

EVIL = "<img src=x onerror=alert(1)> & 'sea'"
VOID = {"meta", "br", "img", "input", "link"}


def record(family, strength, score, loss):
    n = 6
    return {
        "family": family,
        "strength": strength,
        "outputs": [[f"{EVIL} {family} {i}" for i in range(n)]],
        "loss": [[loss + 0.01 * i for i in range(n)]],
        "kl": [0.1 * (strength or 0), 0.2 * (strength or 0)],
        "mc": [1.0, 0.0, 1.0],
        "new_tokens": 100,
        "seconds": 2.0 + (strength or 0),
        "scores": {"lexicon": [[score * (i % 2) for i in range(n)]], "probe": [[score] * n]},
    }


def make_result():
    records = {
        "none": record("none", None, 0.1, 1.0),
        "prompt": record("prompt", None, 0.9, 1.4),
        "recipe@0.5": record("recipe", 0.5, 0.3, 1.2),
        "recipe@1": record("recipe", 1.0, 0.6, 1.5),
        "diffmean@0.5": record("diffmean", 0.5, 0.4, 1.3),
        "diffmean@1": record("diffmean", 1.0, 0.8, 2.5),
    }
    return summarise(
        records,
        ["lexicon", "probe"],
        prompts=[f"prompt {i} {EVIL}" for i in range(6)],
        max_ppl_ratio=2.0,
        resamples=100,
        meta={"recipe": f"recipes/{EVIL}.yaml", "concept": "sea"},
    )


class Balance(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.tags = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)


def test_page_is_balanced_escaped_and_plots_every_arm():
    page = report_html(make_result())
    parser = Balance()
    parser.feed(page)
    assert parser.errors == [] and parser.stack == []
    assert "<img" not in page and "&lt;img src=x" in page
    points = [a for t, a in parser.tags if t == "circle"]
    assert len(points) == 6
    assert {a["class"].split()[1] for a in points} == {"none", "prompt", "recipe", "diffmean"}
    assert page.count('<tr class="picked">') == 2 * 2  # main table and sweep, two families


def test_page_in_browser_renders_the_sweep_and_tables(browser, tmp_path):
    from selenium.webdriver.common.by import By

    paths = write_outputs(make_result(), tmp_path)
    browser.set_window_size(1280, 900)
    browser.get(paths["html"].as_uri())
    assert severe(browser) == []
    svg = browser.find_element(By.CSS_SELECTOR, "svg.sweep")
    assert svg.is_displayed() and svg.rect["width"] > 400
    points = browser.find_elements(By.CSS_SELECTOR, "svg.sweep circle.point")
    assert len(points) == 6 and all(p.is_displayed() for p in points)
    main = browser.find_element(By.CSS_SELECTOR, "table.main")
    rows = main.find_elements(By.CSS_SELECTOR, "tr")
    assert [r.find_elements(By.CSS_SELECTOR, "td")[0].text for r in rows[1:]] == [
        "none",
        "prompt",
        "diffmean@0.5",  # diffmean@1 scores more, at a perplexity ratio of e^1.5 > 2
        "recipe@1",
    ]
    assert "<img" in browser.find_element(By.CSS_SELECTOR, "table.examples").text
    assert severe(browser) == []
