"""Hostile and broken input through the command line: markup in what users write, non-finite
numbers, duplicate YAML keys, filesystem faults on every command that writes, and plugins that
raise mid-run. Each is one line and exit 2 (the output printed as it was written), with
nothing half-written left behind and an earlier file intact."""

from __future__ import annotations

import errno
import os
import re
import tempfile

import pytest
import yaml
from support.cli_helpers import assert_one_line_error, call
from support.feature_index import build_small_index
from support.handmade import orthonormal_sae
from support.plugin_project import RAISING_PLUGIN, install_plugin

from steer.cli import main
from steer.plugins.registry import PluginError
from steer.sae import save_sae
from steer.sae.labels import Label, save_labels

MARKUP = "[/bold]oops[red]"
TEXTS = "The cat sat on the mat.\nA dog ran in the park.\nThe sun is hot today.\n"


@pytest.fixture
def sae_path(tmp_path, tiny_model):
    path = tmp_path / "sae"
    save_sae(orthonormal_sae(d_in=tiny_model.d_model, d_sae=8, layer=1), path)
    return path


def steering_recipe(tmp_path, sae_path, **extra) -> str:
    data = {
        "model": "tiny",
        "saes": [{"id": "s", "path": str(sae_path)}],
        "prompts": ["The cat sat on the mat"],
        "generation": {"max_new_tokens": 3},
        **extra,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def one_line_error(code, err, *fragments) -> None:
    """:func:`assert_one_line_error`, once the progress bars (which a terminal overwrites in
    place) are taken out of stderr."""
    bars = re.compile(r"\d+%\|")
    kept = [part for part in re.split(r"[\r\n]", err) if part.strip() and not bars.search(part)]
    assert_one_line_error(code, "\n".join(kept), *fragments)


def leftovers(folder) -> list[str]:
    """Temporary files or folders an interrupted atomic write would leave."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".") and ".tmp" in p.name]


# ------------------------------------------------------------------------------ markup


def test_markup_in_a_prompt_and_a_group_name_is_printed_as_written(
    tmp_path, sae_path, tiny_everywhere, capsys
):
    monitor = {"name": MARKUP, "sae": "s", "features": [0, 1], "threshold": -1.0, "action": "warn"}
    path = steering_recipe(tmp_path, sae_path, monitors=[monitor])
    code, out, err = call(["run", path, "--prompt", f"Say {MARKUP}"], capsys)
    assert code == 0, err
    assert f"Say {MARKUP}" in out and MARKUP in out and MARKUP in err


def test_markup_in_a_label_is_listed_as_written(sae_path, capsys):
    save_labels(sae_path, {3: Label(MARKUP, description="[link=x]y[/link]")})
    code, out, err = call(["features", "label", str(sae_path), "--list"], capsys)
    assert code == 0, err
    assert MARKUP in out and "[link=x]y[/link]" in out


@pytest.mark.parametrize(
    "recipe",
    [
        {"prompts": ["hi"], "[/x]": 1},  # an unknown key made of markup
        {"prompts": ["hi"], "generation": {"chat": MARKUP}},
        "prompts: [hi]\n[/bold]: 2\n",
    ],
)
def test_markup_in_an_error_message_is_printed_as_written(tmp_path, capsys, recipe):
    path = tmp_path / "[red]recipe.yaml"
    path.write_text(recipe if isinstance(recipe, str) else yaml.safe_dump(recipe))
    code, _, err = call(["check", str(path)], capsys)
    assert_one_line_error(code, err, str(path))


# ------------------------------------------------------------------------------ numbers


@pytest.mark.parametrize(
    ("lines", "fragment"),
    [
        ("interventions: [{plugin: clamp, sae: s, features: [1], value: .nan}]",
         "interventions[0].value: Input should be a finite number"),
        ("interventions: [{plugin: add, sae: s, features: [1], value: -.inf}]",
         "interventions[0].value: Input should be a finite number"),
        ("generation: {temperature: .inf}", "generation.temperature"),
        ("monitors: [{sae: s, features: [1], threshold: .nan}]",
         "monitors[0].threshold: Input should be a finite number"),
    ],
)  # fmt: skip
def test_non_finite_numbers_are_refused(tmp_path, sae_path, capsys, lines, fragment):
    path = tmp_path / "recipe.yaml"
    path.write_text(f"saes: [{{id: s, path: {sae_path}}}]\nprompts: [hi]\n{lines}\n")
    code, _, err = call(["check", str(path)], capsys)
    assert_one_line_error(code, err, fragment)


def test_non_finite_training_settings_and_flags_are_refused(tmp_path, capsys):
    data = tmp_path / "d.txt"
    data.write_text(TEXTS)
    argv = ["train", "--data", str(data), "--out", str(tmp_path / "o"), "--lr", "nan"]
    code, _, err = call(argv, capsys)
    assert_one_line_error(code, err, "lr", "finite")
    argv = ["probe", "train", "--pos", str(data), "--neg", str(data), "--out", "p.json"]
    code, _, err = call([*argv, "--l2", "inf"], capsys)
    assert_one_line_error(code, err, "--l2 must be a finite number")


# ------------------------------------------------------------------------------ YAML keys


@pytest.mark.parametrize(
    ("command", "text", "fragment"),
    [
        (
            ["check"],
            "prompts: [hi]\ngeneration:\n  seed: 1\n  seed: 2\n",
            ":4: duplicate key 'seed'",
        ),
        (["train"], "out: o\ndata: [{path: x}]\nlayer: 1\nlayer: 2\n", ":4: duplicate key 'layer'"),
        (["pinpoint"], "prompts: [a]\nprompts: [b]\n", ":2: duplicate key 'prompts'"),
    ],
)
def test_duplicate_yaml_keys_are_refused_with_their_line(tmp_path, capsys, command, text, fragment):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    code, _, err = call([*command, str(path)], capsys)
    assert_one_line_error(code, err, f"{path}{fragment}")


# ------------------------------------------------------------------------------ filesystem


@pytest.fixture
def commands(tmp_path, sae_path, tiny_everywhere, tiny_model):
    """Every command that writes a file the user names: ``name -> argv(out)``."""
    texts = tmp_path / "texts.txt"
    texts.write_text(TEXTS * 30)  # enough for training's 128-token windows
    indexed, _, data, _ = build_small_index(tmp_path / "indexed", tiny_model)
    monitored = steering_recipe(tmp_path, sae_path, monitors=[{"sae": "s", "features": [1]}])
    pinpoint = tmp_path / "pinpoint.yaml"
    pinpoint.write_text(
        yaml.safe_dump(
            {
                "model": "tiny",
                "saes": [{"id": "s", "path": str(sae_path)}],
                "prompts": ["The cat sat on the", "A dog ran in the"],
                "metric": {"logit_diff": {"target": " cat", "foil": " dog"}},
                "top_k": 3,
                "curve_max": 2,
                "neuron_baseline": False,
            }
        )
    )
    pos_neg = ["--pos", str(texts), "--neg", str(texts)]
    return {
        "dashboard": lambda out: ["features", "dashboard", str(indexed), "--out", str(out)],
        "index": lambda out: ["features", "index", str(indexed), "--data", str(data), "--db", str(out)],
        "train": lambda out: ["train", "--data", str(texts), "--out", str(out), "--layer", "1",
                              "--d-sae", "16", "--k", "2", "--collect-tokens", "2048",
                              "--train-tokens", "64", "--batch-size", "16"],
        "probe": lambda out: ["probe", "train", *pos_neg, "--layer", "1", "--out", str(out)],
        "monitor score": lambda out: ["monitor", "score", monitored, "-i", str(texts), "--out", str(out)],
        "pinpoint": lambda out: ["pinpoint", str(pinpoint), "--out", str(out)],
        "run --report": lambda out: ["run", monitored, "--no-baseline", "--report", str(out)],
        "run --events": lambda out: ["run", monitored, "--no-baseline", "--events", str(out)],
    }  # fmt: skip


OUT_NAMES = {"probe": "probe.json", "index": "index.sqlite", "run --report": "report.html"}


@pytest.mark.parametrize(
    "name",
    ["dashboard", "index", "train", "probe", "monitor score", "pinpoint", "run --report",
     "run --events"],
)  # fmt: skip
def test_an_output_whose_parent_is_a_file_is_one_line(tmp_path, commands, capsys, name):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / OUT_NAMES.get(name, "out")
    code, _, err = call(commands[name](out), capsys)
    one_line_error(code, err, str(blocker))
    assert blocker.read_text() == "not a folder"


@pytest.fixture
def read_only(monkeypatch, tmp_path):
    """Writing beside a chosen target fails as in a read-only folder (the tests run as root,
    which a real read-only folder would not stop)."""
    real_mkstemp, real_mkdtemp = tempfile.mkstemp, tempfile.mkdtemp

    def refuse(real):
        def make(*args, dir=None, **kwargs):
            if dir is not None and str(dir).startswith(str(tmp_path / "locked")):
                raise PermissionError(errno.EACCES, "Permission denied", str(dir))
            return real(*args, dir=dir, **kwargs)

        return make

    monkeypatch.setattr(tempfile, "mkstemp", refuse(real_mkstemp))
    monkeypatch.setattr(tempfile, "mkdtemp", refuse(real_mkdtemp))
    (tmp_path / "locked").mkdir()
    return tmp_path / "locked"


@pytest.mark.parametrize("name", ["dashboard", "train", "probe", "monitor score", "pinpoint"])
def test_a_read_only_folder_is_one_line(commands, read_only, capsys, name):
    out = read_only / OUT_NAMES.get(name, "out")
    code, _, err = call(commands[name](out), capsys)
    one_line_error(code, err, str(read_only), "Permission denied")
    assert list(read_only.iterdir()) == []


@pytest.fixture
def full_disk(monkeypatch):
    """Every fsync fails as on a full disk (atomic writes fsync each file before the rename)."""

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)


@pytest.mark.parametrize("name", ["probe", "monitor score", "pinpoint", "dashboard"])
def test_a_full_disk_keeps_the_earlier_output(tmp_path, commands, capsys, monkeypatch, name):
    out = tmp_path / "outputs" / OUT_NAMES.get(name, "out")
    out.parent.mkdir()  # output files go into a folder that exists (a typo is refused)
    code, _, err = call(commands[name](out), capsys)
    assert code in (0, None), err
    before = {
        p.relative_to(out.parent): p.read_bytes() for p in out.parent.rglob("*") if p.is_file()
    }

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    code, _, err = call(commands[name](out), capsys)
    one_line_error(code, err, str(out), "No space left on device")
    after = {
        p.relative_to(out.parent): p.read_bytes() for p in out.parent.rglob("*") if p.is_file()
    }
    assert after == before and leftovers(out.parent) == []


@pytest.mark.parametrize("command", [["features", "label", "SAE", "3", "sea"], ["contrast"]])
def test_labels_on_a_full_disk_keep_the_earlier_labels(
    tmp_path, sae_path, tiny_everywhere, capsys, monkeypatch, command
):
    save_labels(sae_path, {1: Label("boats")})
    before = (sae_path / "labels.json").read_bytes()
    texts = tmp_path / "texts.txt"
    texts.write_text(TEXTS)
    if command == ["contrast"]:
        argv = ["features", "contrast", str(sae_path), "--pos", str(texts), "--neg", str(texts),
                "--save-labels", "x", "--model", "tiny"]  # fmt: skip
    else:
        argv = [str(sae_path) if a == "SAE" else a for a in command]

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    code, _, err = call(argv, capsys)
    one_line_error(code, err, "labels.json", "No space left on device")
    assert (sae_path / "labels.json").read_bytes() == before and leftovers(sae_path) == []


# ------------------------------------------------------------------------------ plugins


@pytest.fixture
def raising_plugin(tmp_path, monkeypatch):
    return install_plugin(tmp_path, monkeypatch, "raisingplugin", RAISING_PLUGIN)


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (
            {"interventions": [{"plugin": "explode", "sae": "s", "features": [1]}]},
            ["plugin 'raisingplugin' failed in intervention 'explode' (apply)",
             "ZeroDivisionError: the intervention broke"],
        ),
        (
            {"monitors": [{"plugin": "stare", "sae": "s", "features": [1]}]},
            ["plugin 'raisingplugin' failed in monitor 'stare' (observe)", "KeyError"],
        ),
    ],
)  # fmt: skip
def test_a_plugin_that_raises_mid_run_is_named(
    raising_plugin, tmp_path, sae_path, tiny_everywhere, capsys, extra, fragments
):
    path = steering_recipe(tmp_path, sae_path, **extra)
    code, _, err = call(["run", path, "--no-baseline"], capsys)
    assert_one_line_error(code, err, *fragments)
    with pytest.raises(PluginError):  # --debug: the exception itself, for its traceback
        main(["run", path, "--no-baseline", "--debug"])


def test_a_plugin_that_raises_in_monitor_score_is_named(
    raising_plugin, tmp_path, sae_path, tiny_everywhere, capsys
):
    path = steering_recipe(
        tmp_path, sae_path, monitors=[{"plugin": "stare", "sae": "s", "features": [1]}]
    )
    texts = tmp_path / "texts.txt"
    texts.write_text(TEXTS)
    code, _, err = call(["monitor", "score", path, "-i", str(texts)], capsys)
    one_line_error(code, err, "plugin 'raisingplugin' failed in monitor 'stare'")


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["run"], ["steer run: Missing argument 'RECIPE'", "steer run --help"]),
        (["bogus"], ["No such command 'bogus'"]),
        (["probe", "train", "--l2", "nan"], ["steer probe train", "'--l2'"]),
        (
            ["features", "index", "x", "--data", "builtin:wikitext2-excerpt", "--top-k", "0"],
            ["'--top-k'"],
        ),
    ],
)
def test_usage_errors_are_one_line(capsys, argv, fragments):
    code, _, err = call(argv, capsys)
    assert_one_line_error(code, err, *fragments)
