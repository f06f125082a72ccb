"""Every option of every command, with the bad values a user could plausibly type: each ends in
one line naming what is wrong, exit code 2, no traceback, and (where it can be known then)
before a model loads.

``BAD_VALUES`` lists, per command, a valid command line and, per option, the bad values tried
and a fragment the one line must hold. ``test_every_option_has_bad_values`` fails when a
command or option is added without cases here, so the table stays complete.
"""

from __future__ import annotations

import json

import pytest
import typer.main
from support.cli_helpers import assert_one_line_error, call

from steer.cli import build_app

SAE = "smollm2-135m-res12-topk"
TEXTS = "The cat sat on the mat.\nA dog ran in the park.\nThe sun is hot today.\n" * 20

# Placeholders in the command lines: {texts} a text file, {empty} an empty file, {folder} an
# empty folder, {file} a file where a folder or a new file is expected, {missing} a path that
# does not exist, {new} a path that does not exist yet (a valid output), {binary} a file of
# bytes that are not UTF-8 text.
BASE = {
    "run": ["run", "recipes/demo.yaml", "-n", "1", "--no-baseline"],
    "check": ["check"],
    "train": ["train", "recipes/train-smollm2-res12.yaml", "--out", "{new}"],
    "pinpoint": ["pinpoint", "recipes/pinpoint-gender.yaml"],
    "sae eval": ["sae", "eval", SAE, "--data", "{texts}"],
    "sae list": ["sae", "list"],
    "sae convert": ["sae", "convert", SAE, "{new}"],
    "features index": ["features", "index", SAE, "--data", "{texts}", "--db", "{new_file}"],
    "features show": ["features", "show", SAE, "831"],
    "features search": ["features", "search", SAE, "the sea"],
    "features dashboard": ["features", "dashboard", SAE, "--out", "{new}"],
    "features label": ["features", "label", SAE, "831", "sea"],
    "features contrast": ["features", "contrast", SAE, "--pos", "{texts}", "--neg", "{texts}"],
    "features explain": ["features", "explain", SAE, "831", "--no-save"],
    "features score": ["features", "score", SAE, "831"],
    "features compare-bases": ["features", "compare-bases", SAE],
    "monitor score": ["monitor", "score", "recipes/monitor-toxicity.yaml", "-i", "{texts}"],
    "monitor eval": ["monitor", "eval", "--set", "{labelled}", "--set", "b={labelled}"],
    "probe train": [
        "probe",
        "train",
        "--pos",
        "{texts}",
        "--neg",
        "{texts}",
        "--out",
        "{new_file}",
    ],
    "probe eval": ["probe", "eval", "{probe}", "--pos", "{texts}", "--neg", "{texts}"],
    # never run as it is (it would serve until stopped): every case fails before the model loads
    "serve": ["serve", "recipes/demo.yaml"],
    # never run as it is (minutes on CPU): every case fails before the model loads
    "eval": ["eval", "recipes/steer-sea.yaml", "--concept", "sea"],
}

EMPTY = [("", "is empty"), (" ", "is empty")]  # an unset shell variable, quoted
TEXT_FILE = [
    *EMPTY,
    ("{missing}", "not found"),
    ("{empty}", "it is empty"),
    ("{binary}", "cannot read texts"),
    ("{folder}", "is a folder"),
    ("builtin:nope", "no shipped text named 'nope'"),
]
TEXT_SOURCES = [  # files or folders of them
    *TEXT_FILE[:-2],
    ("{folder}", "holds no .txt, .json or .jsonl files"),
    ("builtin:nope", "no shipped text named 'nope'"),
]
POSITIVE = [("0", "'{flag}'"), ("-1", "'{flag}'"), ("ten", "'{flag}'"), ("1.5", "'{flag}'")]
NOT_NEGATIVE = [("-1", "'{flag}'"), ("ten", "'{flag}'")]
MODEL = [
    *EMPTY,
    ("smollm2", "model 'smollm2' is not in the Hugging Face cache"),  # tests run offline
    ("{folder}", "not a model folder"),
    ("{texts}.gguf", "model file not found"),
]
DEVICE = [("tpu", "unknown device"), ("cuda", "no CUDA GPU"), ("cuda:7", "'cuda:7'"), *EMPTY]
NEW_FILE = [*EMPTY, ("{folder}", "it is a folder"), ("{file}/out", "is not a folder")]
SAE_NAME = [*EMPTY, ("nope", "no SAE named 'nope'"), ("{folder}", "not an SAE folder")]
RECIPE = [
    *EMPTY,
    ("{missing}", "not found"),
    ("{folder}", "is a folder"),
    ("{empty}", "empty"),
    ("{binary}", "not UTF-8 text"),
]
NEEDS_MODEL = "model"  # a third element: only the loaded model can tell (an integration case)

BAD_VALUES: dict[str, dict[str, list[tuple[str, ...]]]] = {
    "serve": {
        "RECIPE": RECIPE,
        "--host": [*EMPTY, ("http://localhost", "not an address"), ("1.2.3.4:80", "not an address")],
        "--port": [("-1", "'--port'"), ("70000", "'--port'"), ("http", "'--port'")],
        "--api-key": EMPTY,
        "--device": DEVICE,
        "--max-batch": POSITIVE,
        "--max-queue": NOT_NEGATIVE,
        "--max-tokens": POSITIVE,
        "--max-body-bytes": POSITIVE,
        "--timeout": [("0", "'--timeout'"), ("-1", "'--timeout'"), ("nan", "'--timeout'"), ("x", "'--timeout'")],
        "--access-log": NEW_FILE,
        "--replicas": [*POSITIVE, ("2", "--replicas needs --ray")],
    },
    "run": {
        "RECIPE": RECIPE,
        "--prompt": EMPTY,
        "--max-new-tokens": [*POSITIVE, ("100000", "exceed the model's context", NEEDS_MODEL)],
        "--device": DEVICE,
        "--events": NEW_FILE,
        "--report": NEW_FILE,
        "--dashboard": [*EMPTY, ("{missing}", "needs --report")],
    },
    "check": {"RECIPE": RECIPE},
    "train": {
        "RECIPE": RECIPE,
        "--data": TEXT_SOURCES,
        "--out": [*EMPTY, ("{file}", "is a file"), ("{texts_dir}", "holds no SAE")],
        "--model": MODEL,
        "--layer": [("-1", "'--layer'"), ("x", "'--layer'"), ("99", "out of range", NEEDS_MODEL)],
        "--architecture": [("tanh", "'--architecture'"), *EMPTY],
        "--site": [("mlp", "'--site'"), ("hook_mlp_out", "'--site'"), *EMPTY],
        "--d-sae": POSITIVE,
        "--k": [*POSITIVE, ("100000", "larger than d_sae")],
        "--l1-coefficient": [("-1", "'--l1-coefficient'"), ("nan", "'--l1-coefficient'")],
        "--batch-size": POSITIVE,
        "--lr": [("0", "'--lr'"), ("-1", "'--lr'"), ("inf", "'--lr'"), ("fast", "'--lr'")],
        "--seed": [("x", "'--seed'"), ("1.5", "'--seed'")],
        "--checkpoint-every": [("-1", "'--checkpoint-every'"), ("x", "'--checkpoint-every'")],
        "--collect-tokens": POSITIVE,
        "--train-tokens": POSITIVE,
    },
    "pinpoint": {
        "RECIPE": RECIPE,
        "--out": [*EMPTY, ("{file}", "is a file"), ("{file}/out", "is a file")],
        "--write-recipe": NEW_FILE,
        "--recipe-features": POSITIVE,
        "--dashboard": [*EMPTY, ("{missing}", "needs --out")],
        "--rows": POSITIVE,
    },
    "sae eval": {
        "SAE": SAE_NAME,
        "--data": TEXT_FILE,
        "--model": MODEL,
        "--max-tokens": [("0", "'--max-tokens'"), ("100", "'--max-tokens'"), ("x", "'--max-tokens'")],
        "--ce-tokens": [("0", "'--ce-tokens'"), ("-5", "'--ce-tokens'")],
    },
    "sae list": {
        "--release": [*EMPTY, ("gemma-scope-2b-res", "unknown SAE release 'gemma-scope-2b-res'")],
    },
    "sae convert": {
        "SOURCE": [*EMPTY, ("nope", "no SAE named 'nope'"), ("{folder}", "no cfg.json here"),
                   ("{texts}", "is a file, not an SAE folder"),
                   ("gpt2-small-res-jb/blocks.99.hook_resid_pre", "has no sae_id")],
        "OUT": [*EMPTY, ("{file}", "is a file"), ("{texts_dir}", "is not empty")],
    },
    "features index": {
        "SAE": SAE_NAME,
        "--data": TEXT_SOURCES,
        "--max-tokens": [("0", "'--max-tokens'"), ("lots", "'--max-tokens'")],
        "--top-k": POSITIVE,
        "--context": [("0", "'--context'"), ("1", "'--context'"), ("-3", "'--context'")],
        "--samples": NOT_NEGATIVE,
        "--db": [*EMPTY, ("{file}/x.sqlite", "is not a folder"), ("{texts}", "not a feature index")],
        "--model": MODEL,
        "--flush-every": POSITIVE,
    },
    "features show": {
        "SAE": SAE_NAME,
        "ID": [("-1", "feature"), ("8192", "out of range"), ("nope", "unknown label 'nope'")],
        "--db": [*EMPTY, ("{missing}", "feature index not found"), ("{texts}", "not a feature index"),
                 ("{folder}", "feature index not found")],
        "--contexts": NOT_NEGATIVE,
    },
    "features search": {
        "SAE": SAE_NAME,
        "TEXT": EMPTY,
        "--top": POSITIVE,
        "--per-token": POSITIVE,
        "--rank": [("best", "--rank must be one of"), *EMPTY],
        "--max-density": [("0", "--max-density must be above 0"), ("2", "'--max-density'"),
                          ("-0.1", "'--max-density'")],
        "--db": [*EMPTY, ("{missing}", "feature index not found"), ("{texts}", "not a feature index")],
        "--model": MODEL,
    },
    "features dashboard": {
        "SAE": SAE_NAME,
        "--out": [*EMPTY, ("{file}", "is not a folder"), ("{texts_dir}", "--force")],
        "--features": [("x", "'--features'"), ("-1", "'--features'"), *EMPTY],
        "--db": [*EMPTY, ("{missing}", "feature index not found"), ("{texts}", "not a feature index")],
    },
    "features label": {
        "SAE": SAE_NAME,
        "ID": [("-1", "feature"), ("8192", "out of range"), ("x", "unknown label 'x'"), *EMPTY],
        "NAME": [*EMPTY, ("42", "must not be a number"), ("sea\nside", "control character")],
        "--description": EMPTY,
        "--source": [*EMPTY, ("robot", "--source must be one of")],
    },
    "features contrast": {
        "SAE": SAE_NAME,
        "--pos": TEXT_FILE,
        "--neg": TEXT_FILE,
        "--top": POSITIVE,
        "--max-texts": POSITIVE,
        "--model": MODEL,
        "--ctx-len": [("1", "'--ctx-len'"), ("0", "'--ctx-len'"), ("ten", "'--ctx-len'")],
        "--batch": POSITIVE,
        "--save-labels": [*EMPTY, ("a\tb", "control character"), ("7", "must not be a number")],
        "--save-top": POSITIVE,
    },
    "features explain": {
        "SAE": SAE_NAME,
        "ID": [("-1", "feature"), ("8192", "out of range"), ("nope", "unknown label 'nope'")],
        "--explainer": [*EMPTY, ("nope", "llm")],  # not configured, or llm lacks a plugin's deps
        "--scorer": [*EMPTY, ("nope", "llm")],
        "--examples": POSITIVE,
        "--db": [*EMPTY, ("{missing}", "feature index not found"), ("{texts}", "not a feature index")],
    },
    "features score": {
        "SAE": SAE_NAME,
        "ID": [("-1", "feature"), ("8192", "out of range"), ("nope", "unknown label 'nope'")],
        "--explanation": EMPTY,
        "--scorer": [*EMPTY, ("nope", "llm")],
        "--examples": POSITIVE,
        "--seed": [("x", "'--seed'"), ("1.5", "'--seed'")],
        "--db": [*EMPTY, ("{missing}", "feature index not found"), ("{texts}", "not a feature index")],
    },
    "features compare-bases": {
        "SAE": SAE_NAME,
        "--data": TEXT_SOURCES,
        "--directions": [*POSITIVE, ("1", "'--directions'")],
        "--examples": [*POSITIVE, ("1", "'--examples'")],
        "--max-tokens": [("0", "'--max-tokens'"), ("100", "'--max-tokens'"), ("x", "'--max-tokens'")],
        "--scorer": [*EMPTY, ("nope", "llm")],
        "--seed": [("x", "'--seed'"), ("1.5", "'--seed'")],
        "--model": MODEL,
        "--out": NEW_FILE,
    },
    "monitor score": {
        "RECIPE": [*RECIPE, ("recipes/steer-food.yaml", "no monitors")],
        "--input": TEXT_FILE,
        "--out": NEW_FILE,
        "--show": NOT_NEGATIVE,
        "--ctx-len": [("1", "'--ctx-len'"), ("0", "'--ctx-len'")],
        "--batch": POSITIVE,
        "--device": DEVICE,
    },
    "monitor eval": {
        "--set": [*EMPTY, ("a=", "--set takes NAME=FILE.jsonl"),
                  ("{missing}", "labelled file not found"), ("{folder}", "is a folder"),
                  ("{texts}", "not a JSON object"), ("{empty}", "has no positive texts"),
                  ("{binary}", "cannot read it"), ("b={labelled}", "two sets are named 'b'"),
                  ("{texts},{empty}", "empty"), ("{texts},", "NAME=POS,NEG")],
        "--sae": SAE_NAME,
        "--model": MODEL,
        "--detectors": [*EMPTY, ("magic", "--detectors: unknown magic"), (",", "--detectors: unknown"),
                        ("group,probe", "unknown probe")],
        "--fpr": [("0", "--fpr must be between 0 and 1"), ("1", "--fpr must be between 0 and 1"),
                  ("nan", "--fpr must be between 0 and 1"), ("x", "'--fpr'")],
        "--bootstrap": NOT_NEGATIVE,
        "--l1": [("-1", "'--l1'"), ("nan", "'--l1'"), ("inf", "--l1 must be a finite number")],
        "--seed": [("x", "'--seed'"), ("1.5", "'--seed'")],
        "--ctx-len": [("1", "'--ctx-len'"), ("0", "'--ctx-len'")],
        "--batch": POSITIVE,
        "--out": NEW_FILE,
    },
    "probe train": {
        "--pos": TEXT_FILE,
        "--neg": TEXT_FILE,
        "--layer": [("-1", "'--layer'"), ("x", "'--layer'"), ("99", "out of range", NEEDS_MODEL)],
        "--out": [*EMPTY, ("{new_file}.pt", ".safetensors or .json"), ("{folder}", ".safetensors"),
                  ("{file}/out.json", "is not a folder")],
        "--pooling": [("median", "--pooling must be one of"), *EMPTY],
        "--l2": [("-1", "'--l2'"), ("nan", "'--l2'"), ("inf", "--l2 must be a finite number")],
        "--model": MODEL,
        "--max-texts": POSITIVE,
        "--ctx-len": [("1", "'--ctx-len'"), ("0", "'--ctx-len'")],
        "--batch": POSITIVE,
    },
    "eval": {
        "RECIPE": RECIPE,
        "--concept": [*EMPTY, ("tea", "unknown concept 'tea'")],
        "--keywords": [*EMPTY, (",", "--keywords needs at least one word"),
                       ("xqzvbnm", "concept 'sea' has no positive texts")],
        "--pos": TEXT_FILE,
        "--neg": TEXT_FILE,
        "--judge": [*EMPTY, ("nope", "unknown judge 'nope'"), ("lexicon:", "nothing after the colon"),
                    (":x", "give a judge name"), ("probe:{missing}", "not found")],
        "--prompts": TEXT_FILE,
        "--strengths": [*EMPTY, ("x", "--strengths takes numbers"), ("0", "above 0"),
                        ("nan", "above 0"), (",", "at least one number")],
        "--max-ppl-ratio": [("0.5", "'--max-ppl-ratio'"), ("x", "'--max-ppl-ratio'"),
                            ("inf", "--max-ppl-ratio must be a finite number")],
        "--seeds": [*POSITIVE, ("2", "--seeds > 1 needs a recipe that samples")],
        "--bootstrap": NOT_NEGATIVE,
        "--kl-windows": POSITIVE,
        "--mc": [*TEXT_FILE, ("{texts}", "not a JSON object")],
        "--max-new-tokens": POSITIVE,
        "--out": [*EMPTY, ("{file}", "is a file")],
        "--device": DEVICE,
    },
    "probe eval": {
        "PROBE": [*EMPTY, ("{missing}", "not found"), ("{texts}", "probe"),
                  ("{folder}", "is a folder"), ("{empty}", "probe")],
        "--pos": TEXT_FILE,
        "--neg": TEXT_FILE,
        "--layer": [("-1", "layer"), ("x", "'--layer'")],
        "--model": [*EMPTY, ("smollm2", "the probe was trained on model")],
        "--max-texts": POSITIVE,
        "--batch": POSITIVE,
    },
}  # fmt: skip


def _commands():
    """``{"features index": click command}`` for every command of the ``steer`` app."""
    found = {}

    def walk(command, path):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
        else:
            found[" ".join(path)] = command

    walk(typer.main.get_command(build_app()), [])
    return found


def _options_with_values(command) -> set[str]:
    """The options that take a value (flags like --json take none) and the arguments."""
    names = set()
    for param in command.params:
        if getattr(param, "is_flag", False) or param.name in ("help",):
            continue
        names.add(param.opts[0] if param.param_type_name == "option" else _argument_name(param))
    return names


def _argument_name(param) -> str:
    return (param.metavar or param.name.upper()).strip("[]")


def test_every_option_has_bad_values():
    commands = _commands()
    missing_commands = set(commands) - set(BAD_VALUES) - {"plugins"}
    assert not missing_commands, f"no bad values for: {sorted(missing_commands)}"
    for name, command in commands.items():
        if name == "plugins":
            assert not _options_with_values(command), name  # they take nothing
            continue
        untried = _options_with_values(command) - set(BAD_VALUES[name])
        assert not untried, f"steer {name}: no bad values for {sorted(untried)}"


CASES = [
    pytest.param(
        name,
        option,
        case[0],
        case[1],
        id=f"{name} {option}={case[0][:20]!r}",
        marks=[pytest.mark.integration] if case[2:] == (NEEDS_MODEL,) else [],
    )
    for name, options in BAD_VALUES.items()
    for option, values in options.items()
    for case in values
]


@pytest.fixture
def places(tmp_path):
    return make_places(tmp_path)


def make_places(tmp_path):
    """Create the files and folders the placeholders name, in ``tmp_path``."""
    (tmp_path / "texts.txt").write_text(TEXTS)
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00\x81" * 64)
    (tmp_path / "folder").mkdir()
    (tmp_path / "a-file").write_text("not a folder\n")
    labelled = [{"text": f"text {i}", "label": i % 2} for i in range(8)]
    (tmp_path / "labelled.jsonl").write_text("".join(json.dumps(r) + "\n" for r in labelled))
    texts_dir = tmp_path / "someone-elses"
    texts_dir.mkdir()
    (texts_dir / "notes.txt").write_text("mine\n")
    return {
        "texts": str(tmp_path / "texts.txt"),
        "empty": str(tmp_path / "empty.txt"),
        "binary": str(tmp_path / "binary.txt"),
        "folder": str(tmp_path / "folder"),
        "file": str(tmp_path / "a-file"),
        "missing": str(tmp_path / "missing.txt"),
        "new": str(tmp_path / "out" / "new"),
        "new_file": str(tmp_path / "new.json"),
        "texts_dir": str(texts_dir),
        "labelled": str(tmp_path / "labelled.jsonl"),
        "probe": str(_probe_file(tmp_path / "probe.json")),
    }


def _probe_file(path):
    """A probe of layer 12 of the bundled model, fitted on random activations."""
    import torch

    from steer.monitoring.probe import save_probe, train_probe

    gen = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(8, 576, generator=gen) + 0.5, torch.randn(8, 576, generator=gen)
    meta = {"layer": 12, "model": "smollm2-135m-instruct", "pooling": "mean"}
    return save_probe(train_probe(pos, neg, meta=meta), path)


def _argv(name: str, option: str, value: str, places: dict[str, str]) -> list[str]:
    """The valid command line of ``name`` with ``option`` set to ``value``: an argument
    replaces the base's one (or is added, for ``check``), an option is appended (the last
    occurrence wins; repeatable options are given once)."""
    base = [part.format(**places) for part in BASE[name]]
    value = value.format(**places)
    n_words = len(name.split())
    if option.startswith("-"):
        if option in base:  # a repeatable option: replace its value, not add a second
            i = base.index(option)
            return [*base[: i + 1], value, *base[i + 2 :]]
        return [*base, option, value]
    command = typer.main.get_command(build_app())
    for word in name.split():
        command = command.commands[word]
    arguments = [_argument_name(p) for p in command.params if p.param_type_name == "argument"]
    position = n_words + arguments.index(option)
    if position < len(base):
        return [*base[:position], value, *base[position + 1 :]]
    return [*base, value]


@pytest.fixture
def no_model_loads(request, monkeypatch):
    """Unless the case needs the model, loading weights fails the test: bad input must be
    refused before the model loads (a model name is still checked, without weights)."""
    if request.node.get_closest_marker("integration"):
        # The model's first load converts it, with a progress bar on stderr: do that before
        # the case, whose stderr must hold the error line alone.
        request.getfixturevalue("smollm")
        return
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad value was refused")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)


@pytest.mark.parametrize(("name", "option", "value", "fragment"), CASES)
def test_a_bad_value_is_one_line(name, option, value, fragment, places, capsys, no_model_loads):
    argv = _argv(name, option, value, places)
    capsys.readouterr()  # what fixtures printed (a first model conversion's progress bar)
    code, _, err = call(argv, capsys)
    assert_one_line_error(code, err, fragment.format(flag=option))
