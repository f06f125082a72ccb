"""`steer run` with monitors: the JSONL event log and HTML report, bad input that fails before
anything loads, and an event log that survives the process being killed mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from support.cli_helpers import assert_one_line_error, call
from support.handmade import orthonormal_sae

import steer.model
from steer.sae import save_sae

ROOT = Path(__file__).resolve().parents[2]
QUIET = ("--no-baseline", "--json")


@pytest.fixture
def sae_path(tmp_path, tiny_model):
    path = tmp_path / "sae"
    save_sae(orthonormal_sae(d_in=tiny_model.d_model, d_sae=8, layer=1), path)
    return path


def write_recipe(tmp_path, sae_path, monitors, **extra) -> Path:
    data = {
        "model": "tiny",
        "saes": [{"id": "s", "path": str(sae_path)}],
        "prompts": ["The cat sat on the mat", "Paris is"],
        "generation": {"max_new_tokens": 6, "min_new_tokens": 6},
        "monitors": monitors,
        **extra,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if anything tries to load the model."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded, but the input was bad")

    monkeypatch.setattr(steer.model, "load_model", refuse)


@pytest.fixture
def tiny(monkeypatch, tiny_model):
    monkeypatch.setattr(steer.model, "load_model", lambda *a, **k: tiny_model)


ALWAYS = {"name": "always", "sae": "s", "features": [0, 3], "threshold": -1e9}


@pytest.mark.parametrize(
    ("monitor", "fragments"),
    [
        ({**ALWAYS, "features": ["no such label"]}, ["monitors[0].features[0]", "no such label"]),
        ({**ALWAYS, "threshold": "high"}, ["monitors[0].threshold", "valid number"]),
        ({**ALWAYS, "action": "explode"}, ["monitors[0].action", "unknown action 'explode'"]),
        ({**ALWAYS, "action": {"plugin": "nope"}}, ["monitors[0].action.plugin", "'nope'"]),
        ({**ALWAYS, "action": {"plugin": "clamp"}}, ["monitors[0].action", "needs a `value`"]),
        (
            {**ALWAYS, "action": {"plugin": "ablate", "features": [99]}},
            ["monitors[0].action.features[0]", "feature 99 is out of range"],
        ),
    ],
)
def test_bad_monitors_fail_before_the_model_loads(
    tmp_path, sae_path, capsys, no_model, monitor, fragments
):
    recipe = write_recipe(tmp_path, sae_path, [monitor])
    code, _, err = call(["run", str(recipe)], capsys)
    assert_one_line_error(code, err, str(recipe), *fragments)


def test_two_monitors_with_one_name_are_refused(tmp_path, sae_path, capsys, no_model):
    recipe = write_recipe(tmp_path, sae_path, [ALWAYS, {**ALWAYS, "features": [1]}])
    code, _, err = call(["run", str(recipe)], capsys)
    assert_one_line_error(code, err, "monitors[1].name", "two monitors are named 'always'")


@pytest.mark.parametrize(
    ("flag", "target", "fragment"),
    [
        ("--events", "missing/events.jsonl", "does not exist"),
        ("--events", "a-file/events.jsonl", "is not a folder"),
        ("--events", ".", "it is a folder"),
        ("--report", "missing/report.html", "does not exist"),
        ("--report", ".", "it is a folder"),
    ],
)
def test_an_unwritable_output_fails_before_the_model_loads(
    tmp_path, sae_path, capsys, no_model, flag, target, fragment
):
    (tmp_path / "a-file").write_text("")
    recipe = write_recipe(tmp_path, sae_path, [ALWAYS])
    code, _, err = call(["run", str(recipe), flag, str(tmp_path / target)], capsys)
    assert_one_line_error(code, err, fragment)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only folders")
def test_a_read_only_folder_fails_before_the_model_loads(tmp_path, sae_path, capsys, no_model):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    recipe = write_recipe(tmp_path, sae_path, [ALWAYS])
    code, _, err = call(["run", str(recipe), "--events", str(locked / "e.jsonl")], capsys)
    assert_one_line_error(code, err, "no permission to write in")


def test_events_flag_needs_monitors(tmp_path, sae_path, capsys, no_model):
    recipe = write_recipe(tmp_path, sae_path, [])
    code, _, err = call(["run", str(recipe), "--events", str(tmp_path / "e.jsonl")], capsys)
    assert_one_line_error(code, err, "--events needs monitors")


def test_a_monitored_run_writes_its_events_and_report(tmp_path, sae_path, capsys, tiny):
    stop = {"name": "stopper", "sae": "s", "features": [5], "threshold": -1e9, "action": "stop"}
    recipe = write_recipe(tmp_path, sae_path, [ALWAYS, {**stop, "positions": "generated"}])
    events, report = tmp_path / "events.jsonl", tmp_path / "report.html"
    argv = ["run", str(recipe), "--events", str(events), "--report", str(report), "--json"]
    code, out, err = call(argv, capsys)
    assert code == 0, err
    results = json.loads(out)["results"]
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert lines[0]["type"] == "run" and lines[-1]["type"] == "end"
    assert set(lines[0]["groups"]) == {"always", "stopper"}
    logged = [line for line in lines if line["type"] == "event"]
    assert len({line["run"] for line in lines}) == 1
    # The log holds exactly the events of the results, with prompt indices, in the order they
    # happened: step by step, the batch's prompts interleaved.
    stripped = [{k: v for k, v in e.items() if k not in ("type", "run")} for e in logged]
    assert sorted(stripped, key=lambda e: e["prompt"]) == [e for r in results for e in r["events"]]
    order = [e["prompt"] for e in stripped]
    assert order.index(1) < len(order) - 1 - order[::-1].index(0)
    # `stop` on the first generated token: each completion is that one token.
    for r in results:
        assert [(a["action"], a["token_index"]) for a in r["actions"]] == [("stop", 0)]
    assert lines[-1]["events"] == len(logged)
    assert [a["prompt"] for a in lines[-1]["actions"]] == [0, 1]
    assert "prompt 0: stop (stopper) at generated token 0" in err
    assert "<html" in report.read_text()
    # A second run appends to the same log, under a new run id.
    assert call(argv, capsys)[0] == 0
    runs = [json.loads(line) for line in events.read_text().splitlines()]
    assert len(runs) == 2 * len(lines) and len({line["run"] for line in runs}) == 2


def test_the_event_log_survives_a_kill_mid_run(tmp_path, tiny_model, sae_path):
    """SIGKILL a real `steer run` while it writes events: every line already written parses,
    and there is no end line."""
    model_dir = tmp_path / "model"
    tiny_model.hf.save_pretrained(model_dir)
    tiny_model.tokenizer.save_pretrained(model_dir)
    recipe = write_recipe(
        tmp_path,
        sae_path,
        [{**ALWAYS, "features": list(range(8))}],
        model=str(model_dir),
        prompts=[f"Once upon a time there was a little girl number {i}" for i in range(400)],
        generation={"max_new_tokens": 150, "min_new_tokens": 150, "batch_size": 1},
    )
    events = tmp_path / "events.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "steer.cli", "run", str(recipe), "--events", str(events), *QUIET],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if events.exists() and events.stat().st_size > 200_000:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = events.read_bytes().decode().split("\n")
    assert lines[-1] == "", "the last line was cut in half"
    records = [json.loads(line) for line in lines[:-1]]
    assert records[0]["type"] == "run"
    assert {r["type"] for r in records[1:]} == {"event"}
    assert len(records) > 500


def test_a_full_disk_stops_the_run_with_one_line_and_keeps_the_log(
    tmp_path, sae_path, capsys, tiny, monkeypatch
):
    import steer.monitoring.eventlog as eventlog

    events = tmp_path / "events.jsonl"
    real_write, lines = os.write, []

    def write(fd, data):
        if data.startswith(b'{"type"'):  # a line of the event log, not other output
            if len(lines) == 5:
                raise OSError(28, "No space left on device")
            lines.append(data)
        return real_write(fd, data)

    monkeypatch.setattr(eventlog.os, "write", write)
    recipe = write_recipe(tmp_path, sae_path, [ALWAYS])
    code, _, err = call(["run", str(recipe), "--events", str(events)], capsys)
    assert_one_line_error(code, err, str(events), "No space left on device")
    assert [json.loads(line)["type"] for line in events.read_text().splitlines()] == [
        "run",
        *["event"] * 4,
    ]
