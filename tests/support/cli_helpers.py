"""Run the ``steer`` CLI in-process and check its one-line errors."""

from __future__ import annotations

import pytest

from steer.cli import main

# The keys of each entry of `steer run --json`'s "results" (and RunResults.to_dict()).
RESULT_KEYS = {"prompt", "baseline", "steered", "events", "actions", "trace"}


def call(argv, capsys) -> tuple[int, str, str]:
    """``(exit code, stdout, stderr)`` of ``steer *argv``."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return info.value.code, out, err


def assert_one_line_error(code, err, *fragments):
    """Exit code 2, no traceback, one line of stderr holding every fragment."""
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
