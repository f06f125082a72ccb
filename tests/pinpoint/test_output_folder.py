"""``steer pinpoint --out DIR`` replaces only what an earlier pinpoint wrote there."""

from __future__ import annotations

import json

import pytest
from support.cli_helpers import assert_one_line_error, call

from steer.errors import SteerError
from steer.pinpoint.report import check_output_folder


def test_a_new_or_unrelated_folder_is_fine(tmp_path):
    check_output_folder(tmp_path / "new")
    (tmp_path / "notes.txt").write_text("mine")
    check_output_folder(tmp_path)  # other files are never touched


def test_an_earlier_pinpoint_output_is_replaced(tmp_path):
    earlier = {"metric": "logit_diff", "clean_metric": 1.0, "sites": [], "timing": {}}
    (tmp_path / "pinpoint.json").write_text(json.dumps(earlier))
    (tmp_path / "curve.png").write_bytes(b"\x89PNG")
    check_output_folder(tmp_path)


@pytest.mark.parametrize(
    ("files", "named"),
    [
        ({"curve.png": "my own plot"}, "curve.png"),
        ({"pinpoint.json": '{"my": "data"}'}, "pinpoint.json"),
        ({"pinpoint.json": "not json", "curve.html": "<p>"}, "pinpoint.json"),
    ],
)
def test_files_steer_did_not_write_are_never_replaced(tmp_path, files, named):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(SteerError, match=f"holds {named}, which steer pinpoint did not write"):
        check_output_folder(tmp_path)


def test_the_cli_refuses_before_loading_anything(tmp_path, capsys, monkeypatch):
    import steer.pinpoint

    def must_not_run(*args, **kwargs):
        raise AssertionError("pinpointed before refusing the output folder")

    monkeypatch.setattr(steer.pinpoint, "Pinpointer", must_not_run)
    (tmp_path / "curve.png").write_bytes(b"\x89PNG mine")
    argv = ["pinpoint", "recipes/pinpoint-gender.yaml", "--out", str(tmp_path)]
    code, _, err = call(argv, capsys)
    assert_one_line_error(code, err, "holds curve.png, which steer pinpoint did not write")
    assert (tmp_path / "curve.png").read_bytes() == b"\x89PNG mine"
