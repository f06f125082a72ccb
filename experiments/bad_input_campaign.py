"""A bad-input campaign against the ``steer`` command line: hostile and careless input in every
category of issue 19 (markup, non-finite numbers, duplicate YAML keys, filesystem faults,
plugins that raise, oversized or non-model files, pickled checkpoints) plus seeded mutations of
every shipped recipe, each run through ``steer.cli.main`` in-process on the real SmolLM2 and
the shipped SAE. Prints, per category, how many cases ended in each outcome:

  one line / exit 2      what steer promises for bad input
  exit 0                 accepted (for hostile input: the run "succeeded" on nonsense)
  internal error         exit 1, steer's own bug
  several lines / exit 2 refused, but not in one line
  traceback              an exception escaped the CLI
  ran attacker's code    a pickled checkpoint was unpickled on resume
  hangs                  no answer within --hang seconds

The same script runs against an older checkout (``PYTHONPATH=/path/to/old python
experiments/bad_input_campaign.py``) for a before/after table; it uses only the CLI, so it works
across refactors. About 6 minutes on 2 CPU cores.

    until python experiments/bad_input_campaign.py --json out.json; do :; done

(a case that hangs ends the process after ``--hang`` seconds; rerunning the command goes on
after it).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import os
import random
import re
import shutil
import sys
import tempfile
import textwrap
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import yaml

REPO = Path(__file__).resolve().parent.parent
MARKUP = "[/bold]oops[red]"
TEXTS = "The cat sat on the mat.\nA dog ran in the park.\nThe sun is hot today.\n" * 40
BARS = re.compile(r"\d+%\||\d+win \[|\d+it \[")


@dataclass
class Case:
    category: str
    name: str
    argv: Callable[[Path], list[str]]
    patches: list = field(default_factory=list)  # context managers active during the call
    fuzz: bool = False  # exit 0 is fine too (a mutation may leave the recipe valid)
    real_load: bool = False  # the case is about the model file: do not hand it the loaded one


def classify(code, err: str, crashed: bool, marker: Path) -> str:
    if marker.exists():
        return "ran attacker's code"
    if crashed:
        return "traceback"
    lines = [p for p in re.split(r"[\r\n]", err) if p.strip() and not BARS.search(p)]
    if code in (0, None):
        return "exit 0"
    if code == 1 or any("internal error" in line for line in lines):
        return "internal error"
    if code == 2 and len(lines) == 1 and "Traceback" not in err:
        return "one line / exit 2"
    if code == 2:
        return "several lines / exit 2"
    return f"exit {code}"


def run_case(case: Case, work: Path, marker: Path, model) -> str:
    import steer.model
    from steer.cli import main

    out, err = io.StringIO(), io.StringIO()
    code, crashed = None, False
    with contextlib.ExitStack() as stack:
        for patch in case.patches:
            stack.enter_context(patch())
        if not case.real_load:  # the model loaded once, wherever steer loads one by name
            stack.enter_context(mock.patch.object(steer.model, "load_model", lambda *a, **k: model))
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        try:
            main(case.argv(work))
        except SystemExit as exc:
            code = exc.code
        except BaseException:  # what escapes the CLI is what is measured
            crashed = True
    return classify(code, err.getvalue(), crashed, marker)


# ----------------------------------------------------------------------------- fixtures


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def steering(work: Path, name: str, body: str) -> str:
    head = "saes: [{id: s, builtin: smollm2-135m-res12-topk}]\ngeneration: {max_new_tokens: 2}\n"
    return write(work / "recipes" / f"{name}.yaml", head + textwrap.dedent(body))


def bad_sae(work: Path, name: str, edit: Callable) -> str:
    """A copy of the shipped SAE with ``edit(cfg, tensors)`` applied."""
    from safetensors.torch import load_file, save_file

    src = REPO / "steer" / "data" / "saes" / "smollm2-135m-res12-topk"
    folder = work / "saes" / name
    if not folder.exists():
        shutil.copytree(src, folder, ignore=shutil.ignore_patterns("*.sqlite", "labels.json"))
        cfg = json.loads((folder / "cfg.json").read_text())
        tensors = load_file(folder / "sae_weights.safetensors")
        edit(cfg, tensors)
        (folder / "cfg.json").write_text(json.dumps(cfg))
        save_file(
            {k: v.contiguous() for k, v in tensors.items()}, folder / "sae_weights.safetensors"
        )
    return str(folder)


def nan_at(name: str, value: float):
    def edit(cfg, tensors):
        tensors[name] = tensors[name].clone()
        tensors[name].view(-1)[:3] = value

    return edit


def huge(cfg, tensors):
    cfg["d_sae"] = 10**12


def install_plugin(work: Path) -> None:
    """A plugin whose intervention and monitor raise, installed with pip into a folder on
    sys.path (steer finds it through the entry-point group)."""
    sys.path.insert(0, str(REPO / "tests"))
    from support.plugin_project import RAISING_PLUGIN, pip_install, write_plugin_project

    project = work / "plugin"
    project.mkdir(parents=True, exist_ok=True)
    write_plugin_project(
        project, RAISING_PLUGIN, 'raisingplugin = "raisingplugin"', "raisingplugin"
    )
    pip_install(project, work / "site")
    sys.path.insert(0, str(work / "site"))


def planted_checkpoint(work: Path, marker: Path) -> str:
    """A training run whose checkpoint folder holds a pickle that, unpickled, writes
    ``marker``: what a checkpoint from a stranger can do to ``--resume``."""
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    ckpt = work / "ckpt"
    ckpt.mkdir(parents=True, exist_ok=True)
    (ckpt / "checkpoint.pt").write_bytes(pickle.dumps(Payload()))
    for name in ("checkpoint.safetensors", "checkpoint.json"):
        (ckpt / name).write_bytes(b"")  # a newer steer's files, broken: it must say so
    return str(ckpt)


# ----------------------------------------------------------------------------- patches


def failing(name: str, exc: OSError):
    """A patch making ``os.<name>`` raise ``exc`` (a full disk, a read-only folder)."""

    def raise_it(*args, **kwargs):
        raise exc

    return lambda: mock.patch.object(os, name, raise_it)


FULL_DISK = failing("fsync", OSError(errno.ENOSPC, "No space left on device"))


def read_only(work: Path):
    def make():
        real_mkstemp, real_mkdtemp = tempfile.mkstemp, tempfile.mkdtemp

        def refuse(real):
            def inner(*args, dir=None, **kwargs):
                if dir is not None and "locked" in str(dir):
                    raise PermissionError(errno.EACCES, "Permission denied", str(dir))
                return real(*args, dir=dir, **kwargs)

            return inner

        stack = contextlib.ExitStack()
        stack.enter_context(mock.patch.object(tempfile, "mkstemp", refuse(real_mkstemp)))
        stack.enter_context(mock.patch.object(tempfile, "mkdtemp", refuse(real_mkdtemp)))
        return stack

    (work / "locked").mkdir(exist_ok=True)
    return make


# ----------------------------------------------------------------------------- the cases


def markup_cases() -> list[Case]:
    def labelled(w: Path) -> str:
        folder = w / "saes" / "labelled"
        if not folder.exists():
            shutil.copytree(
                REPO / "steer/data/saes/smollm2-135m-res12-topk",
                folder,
                ignore=shutil.ignore_patterns("*.sqlite"),
            )
            labels = json.loads((folder / "labels.json").read_text())
            key = next(iter(labels["features"]))
            labels["features"][key]["name"] = MARKUP
            (folder / "labels.json").write_text(json.dumps(labels))
        return str(folder)

    group = (
        f"monitors: [{{name: '{MARKUP}', sae: s, features: [831], threshold: -1, action: warn}}]\n"
    )
    return [
        Case("markup", "prompt", lambda w: ["run", steering(w, "m1", "prompts: [hi]\n"),
                                            "--no-baseline", "-p", f"Say {MARKUP}"]),
        Case("markup", "group name", lambda w: ["run", steering(w, "m2", "prompts: [hi]\n" + group),
                                                "--no-baseline"]),
        Case("markup", "label --list", lambda w: ["features", "label", labelled(w), "--list"]),
        Case("markup", "label search", lambda w: ["features", "label", labelled(w), "sea", MARKUP]),
        Case("markup", "recipe key", lambda w: ["check", steering(w, "m3", f"prompts: [hi]\n'{MARKUP}': 1\n")]),
        Case("markup", "recipe path", lambda w: ["check", str(w / f"{MARKUP}.yaml")]),
        Case("markup", "monitor score", lambda w: ["monitor", "score", steering(w, "m4", "prompts: [hi]\n" + group),
                                                   "-i", write(w / "t.txt", TEXTS)]),
    ]  # fmt: skip


def number_cases() -> list[Case]:
    recipes = {
        "clamp value nan": "interventions: [{plugin: clamp, sae: s, features: [1], value: .nan}]",
        "add value inf": "interventions: [{plugin: add, sae: s, features: [1], value: .inf}]",
        "scale value -inf": "interventions: [{plugin: scale, sae: s, features: [1], value: -.inf}]",
        "temperature nan": "generation: {max_new_tokens: 2, temperature: .nan}",
        "temperature inf": "generation: {max_new_tokens: 2, temperature: .inf}",
        "top_p nan": "generation: {max_new_tokens: 2, temperature: 1, top_p: .nan}",
        "threshold nan": "monitors: [{sae: s, features: [1], threshold: .nan}]",
        "threshold -inf": "monitors: [{sae: s, features: [1], threshold: -.inf}]",
        "response value nan": "monitors: [{sae: s, features: [1], action: {plugin: clamp, value: .nan}}]",
    }
    cases = [
        Case(
            "non-finite",
            name,
            lambda w, n=name, b=body: [
                "run",
                steering(w, n.replace(" ", "-"), f"prompts: [hi]\n{b}\n"),
                "--no-baseline",
            ],
        )
        for name, body in recipes.items()
    ]
    data = lambda w: write(w / "t.txt", TEXTS)  # noqa: E731
    cases += [
        Case(
            "non-finite",
            "train --lr nan",
            lambda w: ["train", "--data", data(w), "--out", str(w / "o1"), "--lr", "nan"],
        ),
        Case(
            "non-finite",
            "train --l1 inf",
            lambda w: [
                "train",
                "--data",
                data(w),
                "--out",
                str(w / "o2"),
                "--architecture",
                "standard",
                "--l1-coefficient",
                "inf",
            ],
        ),
        Case(
            "non-finite",
            "train recipe lr .nan",
            lambda w: [
                "train",
                write(w / "tr.yaml", f"data: [{{path: {data(w)}}}]\nout: {w / 'o3'}\nlr: .nan\n"),
            ],
        ),
        Case(
            "non-finite",
            "probe --l2 nan",
            lambda w: [
                "probe",
                "train",
                "--pos",
                data(w),
                "--neg",
                data(w),
                "--out",
                str(w / "p.json"),
                "--l2",
                "nan",
            ],
        ),
    ]
    for name, tensor, value in (
        ("W_enc NaN", "W_enc", float("nan")),
        ("b_dec inf", "b_dec", float("inf")),
    ):
        cases.append(
            Case(
                "non-finite",
                f"SAE weights {name}",
                lambda w, n=name, t=tensor, v=value: [
                    "run",
                    write(
                        w / "recipes" / f"{n}.yaml",
                        f"saes: [{{id: s, path: {bad_sae(w, n.replace(' ', '-'), nan_at(t, v))}}}]\n"
                        "prompts: [hi]\ngeneration: {max_new_tokens: 2}\ninterventions: [{plugin: clamp, sae: s, features: [1], value: 2}]\n",
                    ),
                    "--no-baseline",
                ],
            )
        )
    return cases  # fmt: skip


def duplicate_cases() -> list[Case]:
    texts = {
        "top level": "prompts: [hi]\nprompts: [there]\n",
        "generation": "prompts: [hi]\ngeneration:\n  seed: 1\n  seed: 2\n",
        "intervention": "prompts: [hi]\ninterventions:\n  - plugin: clamp\n    sae: s\n    features: [1]\n    value: 1\n    value: 2\n",
        "monitor": "prompts: [hi]\nmonitors:\n  - sae: s\n    features: [1]\n    threshold: 1\n    threshold: 2\n",
    }
    cases = [
        Case(
            "duplicate keys",
            f"steering: {n}",
            lambda w, n=n, t=t: ["check", steering(w, "d-" + n.replace(" ", "-"), t)],
        )
        for n, t in texts.items()
    ]
    cases.append(
        Case(
            "duplicate keys",
            "training recipe",
            lambda w: [
                "train",
                write(
                    w / "dt.yaml",
                    f"data: [{{path: {write(w / 't.txt', TEXTS)}}}]\nout: {w / 'o'}\nlayer: 1\nlayer: 2\n",
                ),
            ],
        )
    )
    cases.append(
        Case(
            "duplicate keys",
            "pinpoint recipe",
            lambda w: [
                "pinpoint",
                write(
                    w / "dp.yaml",
                    "saes: [{id: s, builtin: smollm2-135m-res12-topk}]\nprompts: [a]\nprompts: [b]\n"
                    "metric: {logit_diff: {target: ' he', foil: ' she'}}\n",
                ),
            ],
        )
    )
    return cases  # fmt: skip


def writers(w: Path) -> dict[str, Callable[[Path], list[str]]]:
    """Every command that writes a file the user names: ``name -> argv(output path)``."""
    data = write(w / "t.txt", TEXTS)
    watched = steering(w, "watched", "prompts: [hi]\nmonitors: [{sae: s, features: [831]}]\n")
    pinpoint = write(
        w / "pin.yaml",
        (
            "saes: [{id: s, builtin: smollm2-135m-res12-topk}]\n"
            "prompts: ['The doctor said that', 'The nurse said that']\n"
            "metric: {logit_diff: {target: ' he', foil: ' she'}}\n"
            "top_k: 3\ncurve_max: 2\nneuron_baseline: false\n"
        ),
    )
    sae = "smollm2-135m-res12-topk"
    return {
        "dashboard": lambda out: ["features", "dashboard", sae, "--out", str(out), "--features", "3"],
        "index": lambda out: ["features", "index", sae, "--data", data, "--db", str(out), "--max-tokens", "256"],
        "train": lambda out: ["train", "--data", data, "--out", str(out), "--layer", "3", "--d-sae", "64",
                              "--k", "4", "--collect-tokens", "1024", "--train-tokens", "512",
                              "--batch-size", "128"],
        "probe train": lambda out: ["probe", "train", "--pos", data, "--neg", data, "--layer", "3",
                                    "--max-texts", "4", "--out", str(out)],
        "monitor score": lambda out: ["monitor", "score", watched, "-i", data, "--out", str(out)],
        "pinpoint": lambda out: ["pinpoint", pinpoint, "--out", str(out)],
        "run --report": lambda out: ["run", watched, "--no-baseline", "--report", str(out)],
        "run --events": lambda out: ["run", watched, "--no-baseline", "--events", str(out)],
    }  # fmt: skip


def labels_writers(w: Path, where: str) -> dict[str, Callable[[], list[str]]]:
    def copy() -> str:
        folder = w / where / "sae"
        if not folder.exists():
            shutil.copytree(REPO / "steer/data/saes/smollm2-135m-res12-topk", folder,
                            ignore=shutil.ignore_patterns("*.sqlite"))  # fmt: skip
        return str(folder)

    data = write(w / "t.txt", TEXTS)
    return {
        "features label": lambda: ["features", "label", copy(), "5", "my-label"],
        "contrast --save-labels": lambda: ["features", "contrast", copy(), "--pos", data, "--neg", data,
                                           "--max-texts", "4", "--save-labels", "x"],
    }  # fmt: skip


def filesystem_cases(work: Path) -> list[Case]:
    cases = []
    locked = read_only(work)
    for name, argv in writers(work).items():
        suffix = ".json" if name == "probe train" else ".sqlite" if name == "index" else ""
        cases.append(Case("filesystem", f"{name}: parent is a file",
                          lambda w, a=argv, s=suffix: a(Path(write(w / "a-file", "x")) / f"out{s}")))  # fmt: skip
        cases.append(Case("filesystem", f"{name}: full disk",
                          lambda w, a=argv, s=suffix, n=name: a(w / "full" / n.replace(" ", "-") / f"out{s}"),
                          [FULL_DISK]))  # fmt: skip
        if name not in ("run --events", "index"):  # these open files without a temporary one
            cases.append(Case("filesystem", f"{name}: read-only folder",
                              lambda w, a=argv, s=suffix: a(w / "locked" / f"out{s}"), [locked]))  # fmt: skip
    for name, argv in labels_writers(work, "full").items():
        cases.append(Case("filesystem", f"{name}: full disk", lambda w, a=argv: a(), [FULL_DISK]))
    for name, argv in labels_writers(work, "locked").items():
        cases.append(
            Case("filesystem", f"{name}: read-only folder", lambda w, a=argv: a(), [locked])
        )
    return cases


def plugin_cases(work: Path) -> list[Case]:
    site = work / "site"

    def on_path():
        return mock.patch.object(sys, "path", [str(site), *sys.path])

    exploding = "prompts: [hi]\ninterventions: [{plugin: explode, sae: s, features: [1]}]\n"
    staring = "prompts: [hi]\nmonitors: [{plugin: stare, sae: s, features: [1]}]\n"
    return [
        Case("plugin raises", "intervention apply", lambda w: ["run", steering(w, "p1", exploding), "--no-baseline"], [on_path]),
        Case("plugin raises", "monitor observe (run)", lambda w: ["run", steering(w, "p2", staring), "--no-baseline"], [on_path]),
        Case("plugin raises", "monitor observe (score)", lambda w: ["monitor", "score", steering(w, "p3", staring),
             "-i", write(w / "t.txt", TEXTS)], [on_path]),
    ]  # fmt: skip


def resource_cases(work: Path, marker: Path) -> list[Case]:
    def model_file(w: Path, name: str, content: bytes) -> str:
        path = w / "models" / f"{name}.gguf"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return steering(w, f"model-{name}", f"model: {path}\nprompts: [hi]\n")

    def resume(w: Path) -> list[str]:
        ckpt = planted_checkpoint(w, marker)
        recipe = write(w / "resume.yaml", f"data: [{{path: {write(w / 't.txt', TEXTS)}}}]\nout: {w / 'o'}\n"
                       f"layer: 3\nd_sae: 64\nk: 4\ntokens: {{collect: 1024, train: 256}}\nbatch_size: 128\n"
                       f"checkpoint_dir: {ckpt}\ncache_dir: {w / 'cache'}\n")  # fmt: skip
        return ["train", recipe, "--resume"]

    huge_sae = lambda w: bad_sae(w, "huge", huge)  # noqa: E731
    return [
        Case("resources", "huge d_sae (check)", lambda w: ["check", write(w / "h1.yaml",
             f"saes: [{{id: s, path: {huge_sae(w)}}}]\nprompts: [hi]\n")]),
        Case("resources", "huge d_sae (run)", lambda w: ["run", write(w / "h2.yaml",
             f"saes: [{{id: s, path: {huge_sae(w)}}}]\nprompts: [hi]\ninterventions: [{{plugin: ablate, sae: s, features: [1]}}]\n"),
             "--no-baseline"]),
        Case("resources", "model .gguf is text", lambda w: ["run", model_file(w, "text", b"hello world\n" * 100), "--no-baseline"], real_load=True),
        Case("resources", "model .gguf is empty", lambda w: ["run", model_file(w, "empty", b""), "--no-baseline"],
             real_load=True),
        Case("resources", "model .gguf is HTML", lambda w: ["run", model_file(w, "html", b"<!DOCTYPE html><html>" * 50),
             "--no-baseline"], real_load=True),
        Case("unpickling", "resume from a planted pickle", resume),
    ]  # fmt: skip


def fuzz_cases(per_recipe: int) -> list[Case]:
    sys.path.insert(0, str(REPO / "tests"))
    from support.mutations import mutate, mutate_text

    cases = []
    for recipe in sorted((REPO / "recipes").glob("*.yaml")):
        text = recipe.read_text(encoding="utf-8")
        for n in range(per_recipe):
            rng = random.Random(f"campaign-{recipe.name}-{n}")
            if n % 3 == 2:
                mutated = mutate_text(text, rng)
            else:
                mutated = yaml.safe_dump(mutate(yaml.safe_load(text), rng), allow_unicode=True)
            name = f"{recipe.stem}-{n}"
            cases.append(Case("fuzz (steer check)", name,
                              lambda w, nm=name, m=mutated: ["check", write(w / "fuzz" / f"{nm}.yaml", m)],
                              fuzz=True))  # fmt: skip
    return cases


# ----------------------------------------------------------------------------- running it

OUTCOMES = [
    "one line / exit 2",
    "hangs",
    "exit 0",
    "several lines / exit 2",
    "internal error",
    "traceback",
    "ran attacker's code",
]


def allowed(case: Case, outcome: str) -> bool:
    if case.fuzz or case.category == "unpickling":
        return outcome in ("one line / exit 2", "exit 0")
    if case.category == "markup":  # printing the user's text as written is the fix
        return outcome in ("one line / exit 2", "exit 0")
    return outcome == "one line / exit 2"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="Outcomes, written as it goes.")
    parser.add_argument("--fuzz", type=int, default=20, help="Mutations per shipped recipe.")
    parser.add_argument("--hang", type=float, default=90, help="Seconds before a case hangs.")
    args = parser.parse_args()

    import steer
    import steer.model

    print(f"steer from {Path(steer.__file__).parent}", flush=True)
    model = steer.model.load_model(device="cpu")
    work = Path(tempfile.mkdtemp(prefix="steer-campaign-"))
    marker = work / "attacker-code-ran"
    install_plugin(work)
    sys.path.remove(str(work / "site"))  # only the plugin cases see it
    cases = (
        markup_cases() + number_cases() + duplicate_cases() + filesystem_cases(work)
        + plugin_cases(work) + resource_cases(work, marker) + fuzz_cases(args.fuzz)
    )  # fmt: skip
    # Resumable: a case that hangs ends this process (the watchdog), its entry says so, and
    # the next run of the same command goes on after it.
    record = json.loads(args.json.read_text()) if args.json.is_file() else []
    for i, case in enumerate(cases[len(record) :], len(record) + 1):
        entry = {"category": case.category, "case": case.name, "outcome": "hangs"}
        entry["as promised"] = False
        record.append(entry)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        watchdog = threading.Timer(args.hang, os._exit, args=(3,))
        watchdog.start()
        outcome = run_case(case, work, marker, model)
        watchdog.cancel()
        entry.update(outcome=outcome, **{"as promised": allowed(case, outcome)})
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        flag = "" if entry["as promised"] else "   <-- not as promised"
        print(f"[{i}/{len(cases)}] {case.category}: {case.name}: {outcome}{flag}", flush=True)
        marker.unlink(missing_ok=True)
    print_table(record)
    shutil.rmtree(work, ignore_errors=True)


def print_table(record: list[dict]) -> None:
    table: dict[str, Counter] = defaultdict(Counter)
    for r in record:
        table[r["category"]][r["outcome"]] += 1
    shown = [o for o in OUTCOMES if any(t[o] for t in table.values())]
    print("\n| category | cases | " + " | ".join(shown) + " | as promised |")
    print("|---|---|" + "---|" * len(shown) + "---|")
    for category, counts in table.items():
        ok = sum(r["as promised"] for r in record if r["category"] == category)
        cells = " | ".join(str(counts[o]) for o in shown)
        print(f"| {category} | {sum(counts.values())} | {cells} | {ok} |")
    total: Counter = Counter()
    for counts in table.values():
        total.update(counts)
    ok = sum(r["as promised"] for r in record)
    print(f"| all | {len(record)} | " + " | ".join(str(total[o]) for o in shown) + f" | {ok} |")


if __name__ == "__main__":
    main()
