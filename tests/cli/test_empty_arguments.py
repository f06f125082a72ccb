"""An empty value (an unset ``"$VAR"``) is refused in one line before any command runs."""

from __future__ import annotations

import pytest
from support.cli_helpers import assert_one_line_error, call

from steer.cli import empty_argument


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["run", ""], "steer run: argument 1 is empty"),
        (["features", "show", "sae", " "], "steer features show: argument 2 is empty"),
        (["run", "r.yaml", "--out", ""], "--out is empty"),
        (["run", "r.yaml", "--report="], "--report is empty"),
        (["run", "r.yaml", "-p", "\n"], "-p is empty"),
    ],
)
def test_empty_values_are_named(argv, line):
    assert line in empty_argument(argv)


def test_values_that_are_not_empty_pass():
    assert empty_argument(["run", "r.yaml", "--prompt", "hi", "-n", "4"]) is None
    assert empty_argument(["features", "search", "sae", "a b"]) is None


def test_the_cli_refuses_an_empty_value_in_one_line(capsys):
    code, _, err = call(["sae", "eval", "smollm2-135m-res12-topk", "--data", ""], capsys)
    assert_one_line_error(code, err, "--data is empty (an unset shell variable?)")
