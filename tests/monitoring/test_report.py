"""The HTML report of a monitored run (steer.monitoring.report), from hand-built results: no
model. The page is parsed back with html.parser to check escaping, shading, threshold outlines,
action badges and tag balance; the browser test at the end checks the group selector in a real
headless Chromium (skipped where Debian's chromium and chromedriver are missing)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from support.browser_log import severe

from steer.errors import SteerError
from steer.monitoring.report import report_html, write_report
from steer.steering.recipe import parse_recipe
from steer.steering.results import PromptResult, RunResults

EVIL = "<script>alert('x')</script>"
VOID = {"meta", "link", "br", "input"}


def make_recipe(monitors=None):
    if monitors is None:
        monitors = [
            {"sae": "s", "name": "harm", "features": [3], "threshold": 1.0, "action": "stop"},
            {
                "sae": "s",
                "name": "pii & <co>",
                "features": [7, 8],
                "threshold": 0.5,
                "action": {"plugin": "ablate"},
            },
        ]
    return parse_recipe(
        {
            "model": "tiny-model",
            "saes": [{"id": "s", "path": "/nonexistent"}],
            "prompts": ["first", "second"],
            "monitors": monitors,
        }
    )


def event(prompt, group, phase, index, token, feature, act, action, first):
    return {
        "prompt": prompt,
        "group": group,
        "monitor": "threshold",
        "phase": phase,
        "token_index": index,
        "token": token,
        "feature": feature,
        "activation": act,
        "action": action,
        "first": first,
    }


def make_results() -> RunResults:
    """Prompt 0: `harm` (generated tokens only) stops at generated token 1; `pii` fires on
    prompt token 1 (the one holding a script tag) and ablates from there. Prompt 1: nothing
    fires and there is no baseline."""
    stop = event(0, "harm", "generated", 1, " b&", 3, 2.0, "stop", True)
    ablate = event(0, "pii & <co>", "prompt", 1, EVIL, 8, 0.9, "ablate", True)
    keys = ("group", "action", "phase", "token_index", "token", "feature", "activation")
    first = PromptResult(
        prompt=f"Say {EVIL} & more",
        baseline='plain "baseline" <u>',
        steered=' a b&\n"c"',
        events=[ablate, stop],
        actions=[{k: ablate[k] for k in keys}, {k: stop[k] for k in keys}],
        trace={
            "prompt_tokens": ["Say", EVIL, "\n"],
            "generated_tokens": [" a", " b&", '\n"c"'],
            "groups": {
                "harm": {
                    "prompt": [None, None, None],
                    "generated": [0.3, 2.0, None],
                    "prompt_features": [None, None, None],
                    "generated_features": [3, 3, None],
                },
                "pii & <co>": {
                    "prompt": [0.1, 0.9, 0.0],
                    "generated": [0.0, 0.2, None],
                    "prompt_features": [7, 8, 7],
                    "generated_features": [7, 8, None],
                },
            },
        },
    )
    second = PromptResult(
        prompt="second",
        baseline=None,
        steered=" ok",
        trace={
            "prompt_tokens": ["second"],
            "generated_tokens": [" ok"],
            "groups": {
                "harm": {
                    "prompt": [None],
                    "generated": [None],
                    "prompt_features": [None],
                    "generated_features": [None],
                },
                "pii & <co>": {
                    "prompt": [0.05],
                    "generated": [None],
                    "prompt_features": [7],
                    "generated_features": [None],
                },
            },
        },
    )
    return RunResults(results=[first, second], timing={})


class Page(HTMLParser):
    """Parses a report: checks tags balance; collects token spans with their block and the
    badge placed right before each."""

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.section = None
        self.group = None
        self.badge = None
        self.tokens: list[dict] = []
        self.in_token = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "section":
            self.section = a.get("id")
        if tag == "div" and "data-group" in a:
            self.group = int(a["data-group"])
        if tag == "span" and "badge" in (a.get("class") or "").split():
            self.badge = a.get("data-action")
        elif tag == "span" and "data-pos" in a:
            cls = set((a.get("class") or "").split())
            self.tokens.append(
                {
                    "section": self.section,
                    "group": self.group,
                    "pos": a["data-pos"],
                    "cls": cls,
                    "style": a.get("style"),
                    "title": a.get("title"),
                    "badge": self.badge,
                    "text": "",
                }
            )
            self.badge = None
            self.in_token = True

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1:]}>"
        self.stack.pop()
        self.in_token = False

    def handle_data(self, data):
        if self.in_token:
            self.tokens[-1]["text"] += data


def parse(page: str) -> Page:
    parser = Page()
    parser.feed(page)
    parser.close()
    assert parser.stack == []
    return parser


def token(parsed: Page, section: str, group: int, pos: str) -> dict:
    found = [
        t
        for t in parsed.tokens
        if t["section"] == section and t["group"] == group and t["pos"] == pos
    ]
    assert len(found) == 1
    return found[0]


def test_data_is_escaped_everywhere():
    page = report_html(make_results(), make_recipe(), title="T <i>itle</i>")
    # The only script element is the report's own.
    assert page.count("<script") == 1
    assert "<i>itle" not in page and "T &lt;i&gt;itle&lt;/i&gt;" in page
    assert "<co>" not in page and "<u>" not in page
    parsed = parse(page)
    tok = token(parsed, "prompt-0", 0, "p1")
    assert tok["text"] == EVIL  # read back unescaped: it was escaped on the page
    newline = token(parsed, "prompt-0", 0, "g2")
    assert newline["text"] == '⏎"c"'
    assert "\n" not in "".join(t["text"] for t in parsed.tokens)


def test_scores_shade_outline_and_tooltip():
    parsed = parse(report_html(make_results(), make_recipe()))
    hot = token(parsed, "prompt-0", 0, "g1")  # harm 2.0 > 1.0: the run's top score
    assert "over" in hot["cls"]
    assert hot["title"] == "harm: 2.00 (feature 3)"
    assert hot["style"].endswith(",1.00)")
    cool = token(parsed, "prompt-0", 0, "g0")  # 0.3 of top 2.0
    assert "over" not in cool["cls"]
    assert cool["style"].endswith(",0.15)")
    # pii's scale tops out at 0.9 (over its 0.5 threshold): 0.2 / 0.9.
    assert token(parsed, "prompt-0", 1, "g1")["style"].endswith(",0.22)")
    assert "over" in token(parsed, "prompt-0", 1, "p1")["cls"]
    over = {(t["section"], t["group"], t["pos"]) for t in parsed.tokens if "over" in t["cls"]}
    assert over == {("prompt-0", 0, "g1"), ("prompt-0", 1, "p1")}


def test_tokens_the_monitor_did_not_read_are_unshaded():
    parsed = parse(report_html(make_results(), make_recipe()))
    unread = [t for t in parsed.tokens if "na" in t["cls"]]
    # harm: 3 prompt tokens + last generated of prompt 0, both tokens of prompt 1; pii: the
    # last generated token of each prompt.
    assert len(unread) == 8
    for t in unread:
        assert t["style"] is None and "over" not in t["cls"]
        assert t["title"].endswith(": not read")
    assert all(t["style"] for t in parsed.tokens if "na" not in t["cls"])


def test_action_badges_sit_on_the_token_where_the_action_started():
    parsed = parse(report_html(make_results(), make_recipe()))
    badged = {(t["section"], t["group"], t["pos"], t["badge"]) for t in parsed.tokens if t["badge"]}
    assert badged == {("prompt-0", 0, "g1", "stop"), ("prompt-0", 1, "p1", "ablate")}
    page = report_html(make_results(), make_recipe())
    assert ">ablate from here</span>" in page and ">stop</span>" in page


def test_header_counts_each_groups_prompts_and_events():
    page = report_html(make_results(), make_recipe())
    rows = re.findall(r"<tr><td>(.*?)</td>.*?</tr>", page)
    assert rows == ["harm", "pii &amp; &lt;co&gt;"]
    harm_row = re.search(r"<tr><td>harm</td>(.*?)</tr>", page).group(1)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", harm_row)
    # features, monitor (its threshold), action, prompts, events
    assert cells == ["3", "threshold 1", "stop", "1", "1"]
    assert "model tiny-model · 2 prompts" in page
    # Both groups get a block per prompt; only the first is shown by default.
    assert page.count('data-group="0">') == 2 and page.count('data-group="1" hidden>') == 2
    assert '<option value="1">pii &amp; &lt;co&gt;</option>' in page


def test_baseline_shown_plain_and_missing_baseline_said():
    page = report_html(make_results(), make_recipe())
    assert "plain &quot;baseline&quot; &lt;u&gt;" in page
    assert "<i>not run</i>" in page


def test_run_without_monitors_shows_plain_completions():
    recipe = make_recipe(monitors=[])
    results = RunResults([PromptResult(prompt="p", baseline="b <x>", steered="s <y>")], {})
    page = report_html(results, recipe)
    parsed = parse(page)
    assert parsed.tokens == []
    assert "s &lt;y&gt;" in page and "b &lt;x&gt;" in page
    assert "<select" not in page and "No monitors" in page


def test_write_report_writes_one_self_contained_file(tmp_path):
    out = write_report(make_results(), make_recipe(), tmp_path / "report.html")
    assert out == tmp_path / "report.html"
    page = out.read_text(encoding="utf-8")
    parse(page)
    assert "<style>" in page and "--hot" in page  # stylesheet inlined
    assert not re.search(r"(src|href)=\"(?!data:)", page)  # nothing to fetch
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary left


def test_write_report_into_a_missing_folder_is_a_one_line_error(tmp_path):
    target = tmp_path / "nope" / "report.html"
    with pytest.raises(SteerError) as err:
        write_report(make_results(), make_recipe(), target)
    assert str(target) in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "nope").exists()


# --------------------------------------------------------------------------- in a browser


def test_report_in_browser_switches_the_shading_group(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    out = write_report(make_results(), make_recipe(), tmp_path / "report.html")
    browser.get(out.as_uri())
    assert severe(browser) == []

    def shown_over():
        spans = browser.find_elements(By.CSS_SELECTOR, "#prompt-0 .t.over")
        return [s.get_attribute("data-pos") for s in spans if s.is_displayed()]

    def shown_badges():
        return [
            b.text for b in browser.find_elements(By.CSS_SELECTOR, ".badge") if b.is_displayed()
        ]

    assert shown_over() == ["g1"] and shown_badges() == ["stop"]
    hot = browser.find_element(By.CSS_SELECTOR, '#prompt-0 [data-group="0"] [data-pos="g1"]')
    assert hot.value_of_css_property("background-color") == "rgba(255, 140, 0, 1)"
    Select(browser.find_element(By.ID, "group")).select_by_visible_text("pii & <co>")
    assert shown_over() == ["p1"] and shown_badges() == ["ablate from here"]
    Select(browser.find_element(By.ID, "group")).select_by_index(0)
    assert shown_over() == ["g1"]
    assert severe(browser) == []
