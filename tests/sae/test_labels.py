"""The labels file beside an SAE: load, save, resolve by name."""

from __future__ import annotations

import json

import pytest
from support.cli_helpers import call

from steer.errors import SteerError
from steer.sae.labels import Label, load_labels, resolve_feature, save_labels


def test_missing_file_is_empty(tmp_path):
    assert load_labels(tmp_path) == {}


def test_save_then_load_round_trips(tmp_path):
    labels = {7: Label("sea", "ocean, waves", "manual"), 2: Label("royalty", source="contrast")}
    path = save_labels(tmp_path, labels)
    assert path == tmp_path / "labels.json"
    data = json.loads(path.read_text())
    assert data["format"] == "steer-labels/1"
    assert data["sae"] == tmp_path.name
    assert list(data["features"]) == ["2", "7"]  # sorted by id
    assert data["features"]["7"] == {
        "name": "sea",
        "description": "ocean, waves",
        "source": "manual",
    }
    assert load_labels(tmp_path) == labels
    # no temporary files left beside it
    assert [p.name for p in tmp_path.iterdir()] == ["labels.json"]


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"format": "other", "features": {}}),
        json.dumps({"format": "steer-labels/1", "features": {"x": {"name": "a"}}}),
        json.dumps({"format": "steer-labels/1", "features": {"3": {"description": "no name"}}}),
    ],
)
def test_corrupt_file_is_one_line_error_naming_it(tmp_path, text):
    (tmp_path / "labels.json").write_text(text)
    with pytest.raises(SteerError) as err:
        load_labels(tmp_path)
    msg = str(err.value)
    assert "labels.json" in msg and "corrupt labels file" in msg
    assert "\n" not in msg


def test_resolve_ids_and_names():
    labels = {5: Label("Sea"), 9: Label("royalty")}
    assert resolve_feature(labels, 3, d_sae=10, where="w") == 3
    assert resolve_feature(labels, "sea", d_sae=10, where="w") == 5  # case-insensitive
    assert resolve_feature(labels, "ROYALTY", d_sae=10, where="w") == 9


def test_resolve_out_of_range_id():
    with pytest.raises(SteerError, match=r"w: feature id 10 out of range \[0, 10\)"):
        resolve_feature({}, 10, d_sae=10, where="w")
    with pytest.raises(SteerError, match="out of range"):
        resolve_feature({}, -1, d_sae=10, where="w")


def test_resolve_rejects_bool_and_other_types():
    with pytest.raises(SteerError, match="id or a label"):
        resolve_feature({}, True, d_sae=10, where="w")
    with pytest.raises(SteerError, match="id or a label"):
        resolve_feature({}, 1.5, d_sae=10, where="w")  # type: ignore[arg-type]


def test_unknown_label_suggests_close_matches():
    labels = {5: Label("sea"), 9: Label("royalty")}
    with pytest.raises(SteerError) as err:
        resolve_feature(labels, "seaa", d_sae=10, where="recipe.yaml: x", sae="my-sae")
    assert str(err.value) == (
        "recipe.yaml: x: unknown label 'seaa' for SAE my-sae (did you mean 'sea'?)"
    )
    with pytest.raises(SteerError) as err:
        resolve_feature(labels, "zzzz", d_sae=10, where="w")
    assert str(err.value) == "w: unknown label 'zzzz'"


def test_unknown_label_without_labels_file_says_how_to_add():
    with pytest.raises(SteerError, match=r"no labels\.json"):
        resolve_feature({}, "sea", d_sae=10, where="w")


# --- steer features label -------------------------------------------------------------------


@pytest.fixture
def sae_dir(tmp_path):
    from support.sae_factory import make_sae

    from steer.sae import save_sae

    path = tmp_path / "my-sae"
    save_sae(make_sae(d_in=16, d_sae=64, layer=0), path)
    return path


def one_line_error(code, err) -> str:
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_label_add_rename_list_remove(sae_dir, capsys):
    code, out, err = call(
        ["features", "label", str(sae_dir), "12", "sea", "--description", "ocean, waves"], capsys
    )
    assert code == 0, err
    assert "feature 12 is now 'sea'" in out
    assert load_labels(sae_dir) == {12: Label("sea", "ocean, waves", "manual")}
    code, _, err = call(["features", "label", str(sae_dir), "12", "the sea"], capsys)
    assert code == 0, err
    code, _, _ = call(["features", "label", str(sae_dir), "3", "ships", "--source", "auto"], capsys)
    assert load_labels(sae_dir) == {12: Label("the sea"), 3: Label("ships", source="auto")}
    code, out, _ = call(["features", "label", str(sae_dir), "--list", "--json"], capsys)
    assert code == 0
    assert json.loads(out)["features"]["3"]["name"] == "ships"
    code, out, _ = call(["features", "label", str(sae_dir), "--list"], capsys)
    assert code == 0 and "the sea" in out and "ships" in out
    # remove by label name as well as by id
    code, out, err = call(["features", "label", str(sae_dir), "ships", "--remove"], capsys)
    assert code == 0, err
    assert "removed label 'ships' of feature 3" in out
    assert load_labels(sae_dir) == {12: Label("the sea")}


def test_label_list_without_labels_file(sae_dir, capsys):
    code, out, _ = call(["features", "label", str(sae_dir), "--list"], capsys)
    assert code == 0 and "no labels" in out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["3", "Sea"], "label 'Sea' already names feature 12"),
        (["64", "x"], "ID: feature id 64 out of range [0, 64)"),
        (["seaa", "x"], "ID: unknown label 'seaa' for SAE my-sae (did you mean 'sea'?)"),
        (["5", "--remove"], "feature 5 has no label"),
        (["5"], "give the NAME"),
        (["5", "42"], "must not be a number"),
        (["5", "x", "--source", "guess"], "--source must be one of manual, contrast, auto"),
        ([], "give a feature ID"),
    ],
)
def test_label_bad_input_is_one_line(sae_dir, capsys, argv, fragment):
    save_labels(sae_dir, {12: Label("sea")})
    code, _, err = call(["features", "label", str(sae_dir), *argv], capsys)
    assert fragment in one_line_error(code, err)
    assert load_labels(sae_dir) == {12: Label("sea")}  # nothing changed


def test_label_unknown_sae(tmp_path, capsys):
    code, _, err = call(["features", "label", str(tmp_path / "nope"), "1", "x"], capsys)
    assert "no SAE named" in one_line_error(code, err)


def test_shipped_sae_has_30_described_manual_labels():
    from steer.sae import read_sae_config
    from steer.sae.sources import builtin_saes

    folder = builtin_saes()["smollm2-135m-res12-topk"]
    labels = load_labels(folder)
    d_sae = read_sae_config(folder).d_sae
    manual = {fid: lab for fid, lab in labels.items() if lab.source == "manual"}
    assert len(manual) >= 30
    assert all(0 <= fid < d_sae for fid in labels)
    assert all(lab.description.strip() for lab in manual.values())
    names = [lab.name.casefold() for lab in labels.values()]
    assert len(names) == len(set(names))


def test_labels_of_a_shipped_sae_go_to_the_user_data_folder(user_data, capsys):
    from support.cli_helpers import call

    from steer.sae.labels import labels_path, load_labels
    from steer.sae.sources import builtin_saes

    name, folder = next(iter(builtin_saes().items()))
    shipped_file = folder / "labels.json"
    before = shipped_file.read_bytes()
    shipped = load_labels(folder)
    first, label = next(iter(sorted(shipped.items())))
    free = next(i for i in range(10_000) if i not in shipped)
    code, _, err = call(["features", "label", name, str(free), "my-own-feature"], capsys)
    assert code == 0, err
    code, _, err = call(["features", "label", name, str(first), "--remove"], capsys)
    assert code == 0, err
    assert shipped_file.read_bytes() == before  # the installed package is never written
    overlay = labels_path(folder)
    assert overlay.is_relative_to(user_data) and overlay.is_file()
    now = load_labels(folder)
    assert now[free].name == "my-own-feature" and first not in now
    assert len(now) == len(shipped)  # one added, one removed, the rest as shipped
    assert label.name not in {lab.name for lab in now.values()}
