"""Pinpoint's HTML page (steer.pinpoint.report.curve_html) from a hand-built result: no model.
The ranked tables sit beside the curve, features are named by label and linked to their
dashboard pages when a dashboard is given, the axes have titles and ticks with values and the
50 % line is labelled; every text is escaped. The browser test checks the page renders
without console errors (skipped where Debian's chromium and chromedriver are missing)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest
from support.browser_log import severe

from steer.errors import SteerError
from steer.html import DASHBOARD_FORMAT, DASHBOARD_MARKER, FeatureLinks
from steer.pinpoint.report import curve_html, curve_svg, nice_ticks, write_outputs

EVIL = "<b>he</b> & 'she'"


def make_result() -> dict:
    """One SAE site with features (two labelled, one with markup in its label) and neurons."""

    def part(kind, nodes, curve, n_half, labels=None):
        return {
            "n_nodes": 100,
            "error_attribution": 0.01 if kind == "features" else None,
            "attribution_sum": -1.0,
            "ranked": [
                {
                    "rank": r + 1,
                    "node": node,
                    "label": (labels or {}).get(node),
                    "attribution": -0.5 / (r + 1),
                    "verified_effect": -0.4 / (r + 1),
                }
                for r, node in enumerate(nodes)
            ],
            "order": nodes,
            "correlation": {"n": len(nodes), "pearson": 0.9, "spearman": 0.8},
            "curve": [{"n": n, "metric": m} for n, m in curve],
            "n_for_half": n_half,
        }

    features = part(
        "features",
        [831, 12, 4087, 7],
        [(0, 1.2), (1, 0.9), (2, 0.7), (3, 0.5), (4, 0.45)],
        3,
        {831: "sea", 12: EVIL},
    )
    neurons = part(
        "neurons", [5, 9, 2, 40], [(0, 1.2), (1, 1.1), (2, 1.0), (3, 0.95), (4, 0.9)], None
    )
    return {
        "model": "tiny <model>",
        "metric": "logit(' he') - logit(' she') <mean>",
        "method": "attribution_patching",
        "ablation": "zero",
        "rank": "decrease",
        "n_prompts": 3,
        "clean_metric": 1.2,
        "clean_metric_per_prompt": [1.0, 1.2, 1.4],
        "sites": [{"sae": "res <12>", "layer": 2, "features": features, "neurons": neurons}],
        "timing": {},
    }


class Texts(HTMLParser):
    """The text of every element by class, and the tags seen (to check the page's balance)."""

    VOID = frozenset({"meta", "link", "line", "rect", "polyline", "circle", "br"})

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, str]] = []
        self.by_class: dict[str, list[str]] = {}
        self.links: list[tuple[str, str]] = []
        self.href = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a":
            self.href = a.get("href")
            self.links.append((self.href, ""))
        if tag in self.VOID:
            return
        self.stack.append((tag, a.get("class") or ""))
        for cls in (a.get("class") or "").split():
            self.by_class.setdefault(cls, []).append("")

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag == "a":
            self.href = None
        if tag in self.VOID:
            return
        assert self.stack and self.stack[-1][0] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        for _tag, cls in self.stack:
            for c in cls.split():
                self.by_class[c][-1] += data
        if self.href is not None and self.links:
            self.links[-1] = (self.links[-1][0], self.links[-1][1] + data)


def parse(page: str) -> Texts:
    parser = Texts()
    parser.feed(page)
    parser.close()
    assert parser.stack == []
    return parser


def test_ticks_are_round_numbers_covering_the_range():
    assert nice_ticks(0, 100, integer=True) == [0, 20, 40, 60, 80, 100]
    assert nice_ticks(-0.3, 2.1) == [-0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    assert nice_ticks(0, 7, integer=True) == [0, 2, 4, 6, 8]


def test_axes_have_titles_ticks_and_a_labelled_half_line():
    result = make_result()
    parsed = parse(curve_svg(result, result["sites"][0]))
    assert parsed.by_class["axis-title"] == [
        "number of nodes ablated together (top-ranked first)",
        "metric, mean over prompts",
    ]
    assert parsed.by_class["x"] == ["0", "1", "2", "3", "4"]
    assert parsed.by_class["y"] == ["0.00", "0.25", "0.50", "0.75", "1.00", "1.25"]
    assert parsed.by_class["half-label"] == ["50 % of clean (0.6)"]
    assert parsed.by_class["legend"] == ["features (half removed at 3)", "neurons"]


def test_ranked_tables_sit_beside_the_curve_with_labels_escaped():
    page = curve_html(make_result())
    assert "<b>he" not in page and "<model>" not in page and "<mean>" not in page
    parsed = parse(page)
    assert parsed.by_class["label"] == ["sea", EVIL, "", ""]
    features, neurons = parsed.by_class["ranked"]
    assert features.startswith("#featurelabelattributionverified effect1831sea-0.5000-0.4000")
    assert neurons.startswith("#neuronattributionverified effect15-0.5000-0.4000")
    assert page.index("<svg") < page.index('class="tables"')  # the curve, then the tables
    assert parsed.links == []  # no dashboard given: no links
    assert not re.search(r"(src|href)=\"(?!data:)", page)  # nothing to fetch


def test_features_link_to_their_dashboard_pages():
    links = {"res <12>": FeatureLinks("../dash/features/", frozenset({831, 4087}))}
    parsed = parse(curve_html(make_result(), links=links))
    # Only features with a page are linked, and never neurons.
    assert parsed.links == [
        ("../dash/features/831.html", "831"),
        ("../dash/features/4087.html", "4087"),
    ]
    url = {"res <12>": FeatureLinks("https://example.org/d/features/")}
    parsed = parse(curve_html(make_result(), links=url))
    assert [h for h, _ in parsed.links] == [
        f"https://example.org/d/features/{f}.html" for f in (831, 12, 4087, 7)
    ]


def _dashboard(folder, pages):
    folder.mkdir(parents=True)
    marker = {"format": DASHBOARD_FORMAT, "sae": "s", "pages": pages, "files": []}
    (folder / DASHBOARD_MARKER).write_text(json.dumps(marker))


def test_write_outputs_links_relative_to_the_output_folder(tmp_path):
    from steer.pinpoint.recipe import parse_pinpoint_recipe
    from steer.sae.sources import dashboard_links

    _dashboard(tmp_path / "site" / "dash", [831])
    recipe = parse_pinpoint_recipe(
        {
            "saes": [{"id": "res <12>", "path": str(tmp_path / "nosae")}],
            "prompts": ["The cat"],
            "metric": {"logprob": {"target": " sat"}},
        }
    )
    out = tmp_path / "runs" / "one"
    links = dashboard_links(recipe.saes, [str(tmp_path / "site" / "dash")], out)
    write_outputs(make_result(), out, links=links)
    parsed = parse((out / "curve.html").read_text(encoding="utf-8"))
    assert parsed.links == [("../../site/dash/features/831.html", "831")]
    assert (out / "../../site/dash/features").resolve() == (tmp_path / "site/dash/features")
    with pytest.raises(SteerError, match="not a steer feature dashboard"):
        dashboard_links(recipe.saes, [str(tmp_path)], out)
    with pytest.raises(SteerError, match="say which dashboard is whose"):
        two = recipe.model_copy(
            update={"saes": [*recipe.saes, recipe.saes[0].model_copy(update={"id": "b"})]}
        )
        dashboard_links(two.saes, [str(tmp_path / "site" / "dash")], out)


def test_page_in_browser_renders_curve_and_tables(browser, tmp_path):
    from selenium.webdriver.common.by import By

    links = {"res <12>": FeatureLinks("../dash/features/", frozenset({831}))}
    write_outputs(make_result(), tmp_path, links=links)
    browser.set_window_size(1280, 900)
    browser.get((tmp_path / "curve.html").as_uri())
    assert severe(browser) == []
    svg = browser.find_element(By.CSS_SELECTOR, "svg.curve")
    tables = browser.find_elements(By.CSS_SELECTOR, "table.ranked")
    assert svg.is_displayed() and [t.is_displayed() for t in tables] == [True, True]
    # Beside the curve: the first table starts to the right of the plot, at about its top.
    assert tables[0].rect["x"] >= svg.rect["x"] + svg.rect["width"]
    assert tables[0].rect["y"] < svg.rect["y"] + svg.rect["height"] / 2
    half = browser.find_element(By.CSS_SELECTOR, "text.half-label")
    assert half.is_displayed() and half.text == "50 % of clean (0.6)"
    link = browser.find_element(By.CSS_SELECTOR, "table.ranked a")
    assert link.text == "831" and link.get_attribute("href").endswith("/dash/features/831.html")
    assert severe(browser) == []


# ---------------------------------------------------------------- `steer pinpoint --dashboard`


def test_pinpoint_command_links_curve_html_to_a_dashboard(tmp_path, tiny_everywhere, capsys):
    import yaml
    from support.cli_helpers import assert_one_line_error, call
    from support.sae_factory import make_sae

    from steer.io import file_sha256
    from steer.sae import save_sae

    sae = tmp_path / "sae"
    save_sae(make_sae(d_in=64, d_sae=48, layer=1, seed=0), sae)
    recipe = tmp_path / "pinpoint.yaml"
    data = {
        "model": "tiny",
        "saes": [{"id": "s", "path": str(sae)}],
        "prompts": ["The cat sat on the", "A dog ran in the"],
        "metric": {"logit_diff": {"target": " cat", "foil": " dog"}},
        "top_k": 4,
        "neuron_baseline": False,
    }
    recipe.write_text(yaml.safe_dump(data))
    dash = tmp_path / "dash"
    dash.mkdir()
    marker = {"format": DASHBOARD_FORMAT, "sae": "sae", "pages": list(range(48)), "files": []}
    marker["sae_sha256"] = file_sha256(sae / "sae_weights.safetensors")
    (dash / DASHBOARD_MARKER).write_text(json.dumps(marker))
    out = tmp_path / "out"
    code, _, err = call(
        ["pinpoint", str(recipe), "--out", str(out), "--dashboard", str(dash)], capsys
    )
    assert code == 0, err
    result = json.loads((out / "pinpoint.json").read_text())
    parsed = parse((out / "curve.html").read_text(encoding="utf-8"))
    nodes = [r["node"] for r in result["sites"][0]["features"]["ranked"]]
    assert parsed.links == [(f"../dash/features/{n}.html", str(n)) for n in nodes]

    code, _, err = call(["pinpoint", str(recipe), "--dashboard", str(dash)], capsys)
    assert_one_line_error(code, err, "--dashboard needs --out")
    argv = ["pinpoint", str(recipe), "--out", str(out), "--dashboard", str(tmp_path)]
    code, _, err = call(argv, capsys)
    assert_one_line_error(code, err, "not a steer feature dashboard", "--out DIR")
