"""The static dashboard: every text escaped (parsing a page gives back the index's tokens and
labels exactly), one page per chosen feature with its quantile samples and nearest features,
written atomically, and never deleting a file it did not write."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from support.feature_index import D_SAE, build_index_without_samples, build_small_index

from steer.errors import SteerError
from steer.features.dashboard import (
    histogram_svg,
    nearest_features,
    select_features,
    write_dashboard,
)
from steer.features.pages import quantile_bands
from steer.features.store import FeatureIndex
from steer.html import DASHBOARD_MARKER, read_dashboard_marker, shown_token
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
    folder, sae, *_ = build_small_index(tmp_path, tiny_model, samples=8)
    index = FeatureIndex.open(folder)
    alive = [f for f in range(D_SAE) if index.feature(f).n_fired]
    labels = {alive[0]: NASTY, alive[1]: Label("plain")}
    result = write_dashboard(index, labels, tmp_path / "site", decoder=sae.W_dec, progress=False)
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
        # The top contexts, then the quantile samples (strongest first), in page order.
        shown = record.contexts + record.samples
        assert len(record.samples) == min(8, record.n_fired)
        contexts = parse(html, cls="ctx").found
        assert contexts == ["".join(shown_token(t) for t in c.tokens) for c in shown]
        saw_special |= any(ch in "".join(contexts) for ch in "<&\"'")
        focus = parse(html, cls="focus").found
        assert focus == [shown_token(c.tokens[c.focus]) for c in shown]
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


def test_rewrite_replaces_a_previous_dashboard_atomically(site):
    out, index, labels, _, _ = site
    result = write_dashboard(index, labels, out, limit=3, progress=False)
    assert result.pages == 3
    assert len(list((out / "features").iterdir())) == 3
    marker = read_dashboard_marker(out)
    assert len(marker["pages"]) == 3 and "features" not in marker["files"]
    assert sorted(marker["files"]) == sorted(
        ["index.html", "style.css", "index.js", *(f"features/{f}.html" for f in marker["pages"])]
    )
    assert marker["sae_sha256"] == index.meta["sae_sha256"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".site.")]


def _files(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize(
    "plant",
    [
        {"notes.txt": b"mine"},  # a folder that is not a dashboard
        {"deep/er/thesis.tex": b"mine", "a.html": b"<p>"},
        {"features/notes.txt": b"mine"},  # beside the pages of a previous dashboard
        {"extra/": None},  # an empty folder of the user's
        {DASHBOARD_MARKER: b"{not json"},  # a marker steer did not write
    ],
)
def test_never_deletes_a_file_it_did_not_write(site, plant):
    out, index, labels, _, _ = site
    target = out if "features/notes.txt" in plant else out.parent / "mine"
    if target != out:
        target.mkdir()
    for name, data in plant.items():
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            path.mkdir()
        else:
            path.write_bytes(data)
    before = _files(target)
    dirs = {p for p in target.rglob("*") if p.is_dir()}
    with pytest.raises(SteerError, match="--force") as info:
        write_dashboard(index, labels, target, limit=2, progress=False)
    assert "\n" not in str(info.value) and str(target) in str(info.value)
    assert _files(target) == before  # every file is there, unchanged
    assert {p for p in target.rglob("*") if p.is_dir()} == dirs
    # --force is the user's say-so: then the folder is replaced by the dashboard.
    write_dashboard(index, labels, target, limit=2, force=True, progress=False)
    assert read_dashboard_marker(target)["pages"] and not (target / "notes.txt").exists()


def test_a_new_an_empty_and_a_file_path(site, tmp_path):
    _, index, labels, _, _ = site
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (empty, tmp_path / "new" / "deeper"):
        assert write_dashboard(index, labels, out, limit=2, progress=False).pages == 2
        assert (out / "index.html").is_file()
    a_file = tmp_path / "file.html"
    a_file.write_text("mine")
    with pytest.raises(SteerError, match="is not a folder"):
        write_dashboard(index, labels, a_file, limit=2, force=True, progress=False)
    assert a_file.read_text() == "mine"


def test_select_features_puts_labelled_ones_first(site):
    _, index, labels, _alive, _ = site
    chosen = select_features(index.features(), labels, 4)
    ids = [s.id for s in chosen]
    assert len(ids) == 4 and set(labels) <= set(ids) and ids == sorted(ids)
    assert all(index.feature(f).n_fired for f in ids)


def test_histogram_svg_bars_follow_the_counts():
    counts = [0, 0, 0, 5, 10, 0, 0, 0]
    edges = [0.01, 0.1, 0.3, 1, 3, 10, 30, 100, 1000]
    svg = histogram_svg(counts, edges, width=400, height=156)  # a 100px plot
    parsed = parse(svg)
    # Cropped to the bins next to the non-empty ones: 0.3 .. 10.
    assert parsed.tags.count("rect") == 4
    assert 'height="50.0"' in svg and 'height="100.0"' in svg  # 5 and 10 of a y axis to 10
    assert "activation 1 to 3: 5 tokens" in svg and "activation 3 to 10: 10 tokens" in svg
    texts = parse(svg, cls="tick").found
    assert texts[:3] == ["0", "5", "10"]  # y ticks: counts
    assert texts[3:] == ["0.3", "1", "3", "10", "30"]  # x ticks: the bin edges
    assert parse(svg, cls="count").found == ["5", "10"]  # each bar's count on it
    assert parse(svg, cls="title").found == ["activation (log-spaced bins)", "tokens"]
    assert "below 0.1" in histogram_svg([3, 0], [0.01, 0.1, 1])
    assert "no activations" in histogram_svg([0, 0], [0.01, 0.1, 1])


def test_quantile_bands_cut_the_samples_by_rank():
    bands = quantile_bands(list(range(10, 0, -1)))
    assert [(lo, hi) for lo, hi, _ in bands] == [(75, 100), (50, 75), (25, 50), (0, 25)]
    assert [len(c) for *_, c in bands] == [2, 3, 3, 2]
    assert [x for *_, chunk in bands for x in chunk] == list(range(10, 0, -1))
    assert [len(c) for *_, c in quantile_bands([3, 2])] == [1, 1]


def test_nearest_features_are_the_highest_decoder_cosines(site, tiny_model):
    import torch

    w = torch.randn(40, 16)
    w[7] = w[3] * 2.5  # the same direction, longer
    ids, cos = nearest_features(w, k=5)
    assert ids[3][0] == 7 and cos[3][0] == pytest.approx(1.0, abs=1e-5)
    unit = w / w.norm(dim=1, keepdim=True)
    sims = unit @ unit.T
    for f in range(40):
        sims[f, f] = -2
        assert ids[f] == sims[f].topk(5).indices.tolist()
        assert f not in ids[f]


def test_feature_pages_link_their_nearest_features(site):
    out, _index, _labels, alive, _ = site
    html = (out / "features" / f"{alive[1]}.html").read_text(encoding="utf-8")
    table = html[html.index('id="nearest-table"') :]
    linked = [int(x) for x in re.findall(r'<a href="(\d+)\.html">', table)]
    assert len(linked) == 8 and alive[1] not in linked
    assert all((out / "features" / f"{f}.html").is_file() for f in linked)
    if alive[0] in linked:  # a labelled neighbour is named, escaped
        assert parse(table, cls="label").found.count(NASTY.name) == 1


def test_an_index_without_samples_says_how_to_get_them(tmp_path, tiny_model):
    folder = build_index_without_samples(tmp_path, tiny_model)
    with FeatureIndex.open(folder) as index:
        write_dashboard(index, {}, tmp_path / "site", limit=2, sae="my <sae>", progress=False)
    page = next((tmp_path / "site" / "features").iterdir()).read_text(encoding="utf-8")
    note = parse(page, ident="no-samples").found
    assert note and "steer features index my <sae> --data FILE --rebuild" in note[0]
    assert "not computed" in page  # no decoder given: no nearest features
