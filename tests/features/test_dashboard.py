"""The static dashboard: every text escaped (parsing a page gives back the index's tokens and
labels exactly), one page per chosen feature, written atomically."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from support.feature_index import D_SAE, build_small_index

from steer.features.dashboard import histogram_svg, select_features, write_dashboard
from steer.features.store import FeatureIndex
from steer.html import shown_token
from steer.sae.labels import Label

NASTY = Label('<script>alert("x")</script> & co', 'it\'s <b>bold</b> & "quoted"')


class TextByClass(HTMLParser):
    """Collects the text inside elements with a given class (or id), one string per element."""

    def __init__(self, *, cls: str | None = None, ident: str | None = None):
        super().__init__(convert_charrefs=True)
        self.cls, self.ident = cls, ident
        self.found: list[str] = []
        self.depth = 0
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if self.depth:
            self.depth += 1
        elif (self.cls and self.cls in (attrs.get("class") or "").split()) or (
            self.ident and attrs.get("id") == self.ident
        ):
            self.depth = 1
            self.found.append("")
        self.tags.append(tag)

    def handle_endtag(self, tag):
        if self.depth:
            self.depth -= 1
        self.tags.append("/" + tag)

    def handle_data(self, data):
        if self.depth:
            self.found[-1] += data


def parse(html: str, **kwargs) -> TextByClass:
    parser = TextByClass(**kwargs)
    parser.feed(html)
    parser.close()
    return parser


@pytest.fixture
def site(tmp_path, tiny_model):
    folder, *_ = build_small_index(tmp_path, tiny_model)
    index = FeatureIndex.open(folder)
    alive = [f for f in range(D_SAE) if index.feature(f).n_fired]
    labels = {alive[0]: NASTY, alive[1]: Label("plain")}
    result = write_dashboard(index, labels, tmp_path / "site", progress=False)
    yield tmp_path / "site", index, labels, alive, result
    index.close()


def test_pages_give_back_the_tokens_and_labels_exactly(site):
    out, index, _labels, alive, result = site
    assert result.pages == result.listed == D_SAE
    assert sorted(p.name for p in (out / "features").iterdir()) == sorted(
        f"{f}.html" for f in range(D_SAE)
    )
    saw_special = False
    for f in alive:
        record = index.feature(f)
        html = (out / "features" / f"{f}.html").read_text(encoding="utf-8")
        contexts = parse(html, cls="ctx").found
        assert contexts == ["".join(shown_token(t) for t in c.tokens) for c in record.contexts]
        saw_special |= any(ch in "".join(contexts) for ch in "<&\"'")
        focus = parse(html, cls="focus").found
        assert focus == [shown_token(c.tokens[c.focus]) for c in record.contexts]
        assert "script" not in parse(html).tags
    assert saw_special  # the corpus puts <, & and quotes into contexts: escaping was tested
    nasty = (out / "features" / f"{alive[0]}.html").read_text(encoding="utf-8")
    assert parse(nasty, ident="label").found == [NASTY.name]
    assert parse(nasty, ident="description").found == [NASTY.description]
    assert "<script>alert" not in nasty and "<b>bold" not in nasty


def test_index_lists_every_feature_with_escaped_labels(site):
    out, index, labels, alive, _ = site
    html = (out / "index.html").read_text(encoding="utf-8")
    parsed = parse(html, cls="label")
    assert sorted(t for t in parsed.found if t) == sorted(lab.name for lab in labels.values())
    assert parsed.tags.count("tr") == D_SAE + 1  # header + one row per feature
    assert parsed.tags.count("script") == 1  # only index.js, by src
    assert '<script src="index.js"></script>' in html
    assert (out / "index.js").is_file() and (out / "style.css").is_file()
    top = index.features()[alive[0]].top_tokens
    assert shown_token(top[0]) in "".join(parse(html, cls="tok").found)


def test_rewrite_replaces_the_folder_atomically(site, tiny_model):
    out, index, labels, _, _ = site
    (out / "stale.txt").write_text("old")
    result = write_dashboard(index, labels, out, limit=3, progress=False)
    assert result.pages == 3
    assert not (out / "stale.txt").exists()
    assert len(list((out / "features").iterdir())) == 3
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".site.")]


def test_select_features_puts_labelled_ones_first(site):
    _, index, labels, _alive, _ = site
    chosen = select_features(index.features(), labels, 4)
    ids = [s.id for s in chosen]
    assert len(ids) == 4 and set(labels) <= set(ids) and ids == sorted(ids)
    assert all(index.feature(f).n_fired for f in ids)


def test_histogram_svg_bars_follow_the_counts():
    svg = histogram_svg([0, 5, 10, 0], [0.01, 0.1, 1, 10, 100], width=400, height=118)
    parsed = parse(svg)
    assert parsed.tags.count("rect") == 4
    assert 'height="50.0"' in svg and 'height="100.0"' in svg  # 5 and 10 of a 100px plot
    assert "0.1 to 1: 5" in svg
