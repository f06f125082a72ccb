"""A fresh clone keeps every promise: every shipped recipe and every command of the README's
"Command line" section runs from the repository's files alone.

The repository's files (``git ls-files``: tracked, plus untracked files git does not ignore) are
copied to a temporary folder, so ``../shared`` beside the copy does not exist (as in CI and in
a user's clone), and each command runs there in its own process: that copy's ``steer`` is the
one imported, ``HOME``, ``STEER_CACHE`` and ``STEER_WORK`` are temporary folders (only the
dequantized model cache is shared, to skip the ~30 s first load), ``STEER_CORPUS`` is unset,
and the network is out of reach (offline Hugging Face, proxies that go nowhere). Commands use
small sizes (4 new tokens, a 256-feature SAE, a 4-prompt pinpoint) to fit CI's time budget.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SAE = "smollm2-135m-res12-topk"
# The shipped text the README's examples pass (steer/data/corpus/LICENSES.md).
WIKI = "steer/data/corpus/wikitext2-excerpt.txt"
HARMFUL = "builtin:requests-harmful"  # the README shows both forms
BENIGN = "builtin:requests-benign"
SMALL_SAE = ("--d-sae", "256", "--batch-size", "256", "--collect-tokens", "2048")
FEW_TEXTS = ("--max-texts", "12", "--ctx-len", "32")
# Commands are mostly process start-up (imports, model load) on one core: two chains at a time
# use CI's two cores, each command on one thread.
WORKERS = 2
GROUPS = {"sae", "features", "monitor", "probe"}  # `steer GROUP COMMAND`


@dataclass
class Clone:
    """The copied repository and the folders and environment its commands run with."""

    root: Path
    out: Path
    env: dict[str, str]


@dataclass
class Chain:
    """Commands that depend on each other, run in order; chains run side by side."""

    name: str
    commands: list[list[str]] = field(default_factory=list)


def command_name(argv: list[str]) -> str:
    """``["features", "show", SAE, "sea"]`` -> ``"features show"``; ``["run", ...]`` -> ``"run"``."""
    return " ".join(argv[:2]) if argv[0] in GROUPS else argv[0]


def readme_commands() -> set[str]:
    """The commands of the README's "Command line" section (its first ``sh`` block)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Command line", 1)[1]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    lines = [line.split()[1:] for line in block.splitlines() if line.startswith("steer ")]
    return {command_name(words) for words in lines}


# ---------------------------------------------------------------- the copy and its environment


def _repository_files() -> list[str]:
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout: the copy is what `git ls-files` lists")
    listed = subprocess.run(
        [git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (REPO / name).is_file()]


def _environment(tmp: Path, root: Path) -> dict[str, str]:
    from steer.model.load import cache_dir

    # The copy's steer and plugins come first on the path (ahead of the editable install).
    packages = tmp / "packages"
    packages.mkdir()
    (packages / "steer").symlink_to(root / "steer", target_is_directory=True)
    (packages / "steer_plugins").symlink_to(root / "plugins", target_is_directory=True)
    # Only the dequantized model is shared, so that it is made once, not once per command.
    models = cache_dir() / "models"
    models.mkdir(parents=True, exist_ok=True)
    (tmp / "cache").mkdir()
    (tmp / "cache" / "models").symlink_to(models, target_is_directory=True)
    dropped = {"STEER_CORPUS", "PYTHONPATH", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"}
    dropped |= {"NO_PROXY", "no_proxy"}  # no host may bypass the proxies below
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    nowhere = "http://127.0.0.1:9"  # the discard port: a download attempt fails at once
    env.update(
        HOME=str(tmp / "home"),
        STEER_CACHE=str(tmp / "cache"),
        STEER_WORK=str(tmp / "work"),
        PYTHONPATH=str(packages),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HTTP_PROXY=nowhere,
        HTTPS_PROXY=nowhere,
        http_proxy=nowhere,
        https_proxy=nowhere,
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
    )
    (tmp / "home").mkdir()
    return env


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Clone:
    """The repository's files copied into a temporary folder with no ``../shared`` beside it."""
    tmp = tmp_path_factory.mktemp("fresh-clone")
    root = tmp / "steer"
    for name in _repository_files():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, root / name)
    assert not (root.parent / "shared").exists()
    (tmp / "out").mkdir()
    return Clone(root, tmp / "out", _environment(tmp, root))


def _small_pinpoint_copy(clone: Clone, recipe: Path) -> str:
    """A few-prompt copy of a pinpoint recipe, written beside it (same relative paths)."""
    data = yaml.safe_load(recipe.read_text(encoding="utf-8"))
    data.update(prompts=data["prompts"][:4], top_k=4, curve_max=4, side_effect_tokens=256)
    small = recipe.with_name(f"fresh-clone-{recipe.name}")
    small.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return str(small.relative_to(clone.root))


# ---------------------------------------------------------------- what runs


def _recipe_chains(clone: Clone) -> list[Chain]:
    """Each shipped recipe checked and run; training and pinpoint recipes by their commands."""
    out = clone.out
    steering = Chain("steering recipes")
    other = Chain("training and pinpoint recipes")
    for path in sorted((clone.root / "recipes").glob("*.yaml")):
        recipe = str(path.relative_to(clone.root))
        if path.name.startswith("train-"):
            flags = ["--out", str(out / path.stem), *SMALL_SAE, "--train-tokens", "4096"]
            other.commands.append(["train", recipe, *flags])
        elif path.name.startswith("pinpoint-"):
            small, pin = _small_pinpoint_copy(clone, path), out / path.stem
            written = str(out / f"{path.stem}-ablate.yaml")
            other.commands.append(
                ["pinpoint", small, "--json", "--out", str(pin), "--write-recipe", written]
            )
            other.commands.append(["check", written])
        else:
            run = ["run", recipe, "--max-new-tokens", "4", "--no-baseline", "--json"]
            if "monitors:" in path.read_text(encoding="utf-8"):
                stem = out / path.stem
                run += ["--events", f"{stem}.jsonl", "--report", f"{stem}.html"]
            steering.commands += [["check", recipe], run]
    return [steering, other]


def _readme_chains(clone: Clone) -> list[Chain]:
    """The README's "Command line" commands on shipped files (and on what earlier ones wrote)."""
    out = clone.out
    mine = str(out / "my-sae")
    train_flags = ["--data", WIKI, "--out", mine, "--architecture", "standard", *SMALL_SAE]
    sae = Chain(
        "train, evaluate and index an SAE",
        [
            ["plugins"],
            ["sae", "list"],
            ["train", *train_flags, "--l1-coefficient", "5", "--train-tokens", "2048"],
            ["train", *train_flags, "--l1-coefficient", "5", "--train-tokens", "2048", "--resume"],
            ["sae", "eval", mine, "--data", WIKI, "--max-tokens", "1024", "--ce-tokens", "512"],
            ["features", "index", mine, "--data", WIKI, "--max-tokens", "1024"],
            ["features", "dashboard", mine, "--out", str(out / "dashboard"), "--features", "3"],
            ["features", "show", SAE, "sea", "--contexts", "2"],
            ["features", "search", SAE, "The fleet sailed across the Pacific."],
        ],
    )
    texts = ["--pos", HARMFUL, "--neg", BENIGN]
    probe = str(out / "probe.safetensors")
    monitored = "recipes/monitor-harmful-requests.yaml"
    scores = ["--json", "--out", str(out / "scores.jsonl"), "--ctx-len", "32"]
    # Two labelled sets from the shipped texts (the same texts: a smoke run, not a study).
    two_sets = ["--set", f"a={HARMFUL},{BENIGN}", "--set", f"b={HARMFUL},{BENIGN}", "--json"]
    sets = Chain(
        "labelled sets, labels, monitors and probes",
        [
            ["features", "contrast", SAE, *texts, *FEW_TEXTS, "--top", "5"],
            ["features", "label", SAE, "1234", "fresh-clone", "--description", "a test label"],
            ["features", "label", SAE, "--list"],
            ["features", "label", SAE, "1234", "--remove"],
            ["monitor", "score", monitored, "--input", HARMFUL, *scores],
            ["monitor", "eval", *two_sets, "--detectors", "group,dense", "--bootstrap", "50"],
            ["probe", "train", *texts, "--layer", "12", "--out", probe, *FEW_TEXTS],
            ["probe", "eval", probe, *texts, "--max-texts", "12", "--json"],
        ],
    )
    return [sae, sets]


def _failure(argv: list[str], done: subprocess.CompletedProcess) -> str | None:
    """What is wrong with one command's run: a non-zero exit, or ``--json`` output that is not
    one JSON object; ``None`` when nothing is."""
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-8:])
        return f"exit {done.returncode}\n{tail}"
    if "--json" in argv:
        try:
            json.loads(done.stdout)
        except json.JSONDecodeError as exc:
            return f"--json printed something that is not JSON ({exc})"
    return None


def _run_chain(clone: Clone, chain: Chain) -> tuple[list[str], list[str]]:
    """``(failures, timings)``: the chain stops at its first failing command."""
    timings = []
    for argv in chain.commands:
        t0 = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "steer.cli", *argv],
            cwd=clone.root,
            env=clone.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        command = f"steer {' '.join(argv)}"
        timings.append(f"{time.perf_counter() - t0:5.1f} s  {command}")
        if (failed := _failure(argv, done)) is not None:
            return [f"[{chain.name}] {command}: {failed}"], timings
    return [], timings


# ---------------------------------------------------------------- the tests


def test_the_readme_commands_are_all_run_here():
    # A command added to the README's "Command line" section needs a fresh-clone run here.
    clone = Clone(REPO, Path("/nowhere"), {})
    planned = set()
    for chain in _readme_chains(clone):
        planned |= {command_name(argv) for argv in chain.commands}
    planned |= {"run", "check", "train", "pinpoint"}  # the recipes' chains
    # A server runs until it is stopped: tests/serve/test_cli_serve.py starts `steer serve` as a
    # process, talks to it and stops it.
    planned |= {"serve"}
    assert readme_commands() - planned == set()


@pytest.mark.integration
def test_the_copy_imports_its_own_steer(clone):
    code = "import steer, steer_plugins; print(steer.__file__); print(steer_plugins.__file__)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=clone.root,
        env=clone.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    for line in done.stdout.split():
        assert Path(line).resolve().is_relative_to(clone.root), line


@pytest.mark.integration
def test_every_recipe_and_readme_command_runs_from_a_fresh_clone(clone):
    steering, other = _recipe_chains(clone)
    sae, sets = _readme_chains(clone)
    chains = [steering, sae, sets, other]  # longest first: the two workers finish together
    t0 = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(lambda chain: _run_chain(clone, chain), chains))
    failures = [f for failed, _ in results for f in failed]
    timings = [t for _, done in results for t in done]
    summary = f"{len(timings)} commands in {time.perf_counter() - t0:.0f} s\n" + "\n".join(timings)
    print(f"\nfresh clone: {summary}")
    assert failures == [], "\n\n".join([*failures, summary])

    out = clone.out
    # What the README promises each command writes.
    assert (out / "pinpoint-gender" / "curve.png").is_file()  # matplotlib is a dependency
    assert (out / "pinpoint-gender" / "pinpoint.json").is_file()
    assert (out / "monitor-crime-stop.html").is_file()
    assert (out / "my-sae" / "features.sqlite").is_file()
    assert (out / "dashboard" / "index.html").is_file()
    assert (out / "probe.safetensors").is_file()
    assert len((out / "scores.jsonl").read_text().splitlines()) == 50  # one line per text
    trained = json.loads((out / "train-smollm2-res12" / "cfg.json").read_text())
    assert trained["d_sae"] == 256
    assert "shared/corpus" not in (out / "pinpoint-gender" / "pinpoint.json").read_text()
