"""The HTML report of a monitored run (steer.monitoring.report), from hand-built results: no
model. The page is parsed back with html.parser to check escaping, shading, threshold outlines,
action badges, tag balance, features named by label and linked to their dashboard pages; the
browser tests at the end check the group selector and the links in a real headless Chromium
(skipped where Debian's chromium and chromedriver are missing)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from support.browser_log import severe

from steer.errors import SteerError
from steer.html import DASHBOARD_FORMAT, DASHBOARD_MARKER, FeatureLinks
from steer.monitoring.report import report_html, write_report
from steer.sae.labels import Label, save_labels
from steer.sae.sources import dashboard_links
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


# --------------------------------------------------------------------------- labels and links

LABELS = {"s": {3: Label("harm <x>", "fires on harm"), 8: Label("pii")}}


def test_features_are_named_by_label_falling_back_to_the_id():
    page = report_html(make_results(), make_recipe(), labels=LABELS)
    cells = re.findall(r'<td class="features">(.*?)</td>', page)
    assert cells == [
        '<span title="feature 3: fires on harm">harm &lt;x&gt; (3)</span>',
        '7, <span title="feature 8">pii (8)</span>',
    ]
    assert "(feature 8: pii)" in page  # the token tooltip names the label too
    assert "harm: 2.00 (feature 3: harm &lt;x&gt;)" in page
    assert "(feature 7)" in page  # no label: the id
    actions = re.findall(r"<li>.*?</li>", page)
    assert "feature <span" in actions[0] and "pii (8)" in actions[0]


def test_features_link_to_their_dashboard_pages():
    links = {"s": FeatureLinks("../dash/features/", frozenset({3, 7}))}
    page = report_html(make_results(), make_recipe(), labels=LABELS, links=links)
    cells = re.findall(r'<td class="features">(.*?)</td>', page)
    assert cells[0] == (
        '<a class="feature" href="../dash/features/3.html" title="feature 3: fires on harm">'
        "harm &lt;x&gt; (3)</a>"
    )
    # 7 has a page, 8 has none (a dashboard written with --features N): no broken link.
    assert cells[1] == (
        '<a class="feature" href="../dash/features/7.html">7</a>, '
        '<span title="feature 8">pii (8)</span>'
    )
    parse(page)  # still balanced


def _dashboard(folder, pages, sha=None):
    folder.mkdir(parents=True)
    marker = {"format": DASHBOARD_FORMAT, "sae": "s", "sae_sha256": sha, "pages": pages}
    (folder / DASHBOARD_MARKER).write_text(json.dumps({**marker, "files": []}))


def test_write_report_reads_labels_and_links_relative_to_the_report(tmp_path):
    sae = tmp_path / "sae"
    sae.mkdir()
    save_labels(sae, {3: Label("harm")})
    recipe = make_recipe().model_copy(
        update={"saes": [make_recipe().saes[0].model_copy(update={"path": str(sae)})]}
    )
    _dashboard(tmp_path / "pub" / "dash", [3, 7, 8])
    (tmp_path / "runs").mkdir()
    report = tmp_path / "runs" / "report.html"
    links = dashboard_links(recipe.saes, [str(tmp_path / "pub" / "dash")], report.parent)
    page = write_report(make_results(), recipe, report, links=links).read_text()
    assert '<a class="feature" href="../pub/dash/features/3.html"' in page
    assert ">harm (3)</a>" in page
    assert (report.parent / "../pub/dash/features").resolve() == tmp_path / "pub/dash/features"
    links = dashboard_links(recipe.saes, ["s=https://x.org/dash/"], report.parent)
    assert links["s"].href(12345) == "https://x.org/dash/features/12345.html"


def test_a_bad_dashboard_location_is_one_line(tmp_path):
    recipe = make_recipe()
    for values, fragment in (
        ([str(tmp_path)], "not a steer feature dashboard"),
        ([str(tmp_path / "missing")], "not a steer feature dashboard"),
        (["s="], "no folder or URL given"),
        (["https://a", "https://b"], "SAE s is given two dashboards"),
    ):
        with pytest.raises(SteerError, match=fragment) as info:
            dashboard_links(recipe.saes, values, tmp_path)
        assert "\n" not in str(info.value)


def test_a_dashboard_of_other_weights_is_refused(tmp_path):
    from support.sae_factory import make_sae

    from steer.sae import save_sae

    sae = tmp_path / "sae"
    save_sae(make_sae("topk", d_in=8, d_sae=16, k=2, layer=1), sae)
    recipe = make_recipe().model_copy(
        update={"saes": [make_recipe().saes[0].model_copy(update={"path": str(sae)})]}
    )
    _dashboard(tmp_path / "dash", [1], sha="0" * 64)
    with pytest.raises(SteerError, match="dashboard of other SAE weights"):
        dashboard_links(recipe.saes, [str(tmp_path / "dash")], tmp_path)


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


def test_report_in_browser_links_features_to_the_dashboard(browser, tmp_path):
    from selenium.webdriver.common.by import By

    links = {"s": FeatureLinks("dash/features/", frozenset({3}))}
    page = tmp_path / "dash" / "features" / "3.html"
    page.parent.mkdir(parents=True)
    page.write_text("<!DOCTYPE html><title>feature 3</title><link rel='icon' href='data:,'>")
    out = tmp_path / "report.html"
    out.write_text(report_html(make_results(), make_recipe(), labels=LABELS, links=links))
    browser.get(out.as_uri())
    assert severe(browser) == []
    link = browser.find_element(By.CSS_SELECTOR, "td.features a.feature")
    assert link.is_displayed() and link.text == "harm <x> (3)"
    link.click()
    assert browser.title == "feature 3"
    assert severe(browser) == []


# --------------------------------------------------------------------------- `steer run`


def test_run_report_links_to_a_dashboard_and_bad_ones_fail_before_loading(
    tmp_path, tiny_model, capsys, monkeypatch
):
    import yaml
    from support.cli_helpers import assert_one_line_error, call
    from support.handmade import orthonormal_sae

    import steer.model
    from steer.sae import save_sae

    sae = tmp_path / "sae"
    save_sae(orthonormal_sae(d_in=tiny_model.d_model, d_sae=8, layer=1), sae)
    save_labels(sae, {2: Label("two")})
    recipe = tmp_path / "recipe.yaml"
    monitor = {"sae": "s", "name": "g", "features": [2, 5], "threshold": 0.0}
    data = {
        "model": "tiny",
        "saes": [{"id": "s", "path": str(sae)}],
        "prompts": ["The cat sat on the mat"],
        "generation": {"max_new_tokens": 3},
        "monitors": [monitor],
    }
    recipe.write_text(yaml.safe_dump(data))
    _dashboard(tmp_path / "dash", [2])
    report = tmp_path / "out" / "report.html"
    report.parent.mkdir()

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded, but the input was bad")

    monkeypatch.setattr(steer.model, "load_model", refuse)
    base = ["run", str(recipe), "--no-baseline", "--json"]
    for extra, fragment in (
        (["--dashboard", str(tmp_path / "dash")], "--dashboard needs --report"),
        (["--report", str(report), "--dashboard", str(sae)], "not a steer feature dashboard"),
    ):
        code, _, err = call([*base, *extra], capsys)
        assert_one_line_error(code, err, fragment)

    monkeypatch.setattr(steer.model, "load_model", lambda *a, **k: tiny_model)
    argv = [*base, "--report", str(report), "--dashboard", str(tmp_path / "dash")]
    code, _, err = call(argv, capsys)
    assert code == 0, err
    cell = re.search(r'<td class="features">(.*?)</td>', report.read_text()).group(1)
    assert (
        cell == '<a class="feature" href="../dash/features/2.html" title="feature 2">two (2)</a>, 5'
    )
