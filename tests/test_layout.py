"""The layout's rules, checked on the source: one nnsight adapter, subsystems that import each
other in one direction only, built-in plugins on the public API alone, small modules and
functions, and a command line that starts without loading torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import steer

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "steer"
BUILTIN_PLUGINS = REPO / "plugins"

# Which of steer's parts each part may import. The top-level modules (errors, io, schema,
# html) are the base every part may use; a subsystem never imports one listed after it, so
# there are no cycles and a newcomer reads the packages bottom-up.
BASE = {"errors", "io", "schema", "html", "lazy", "distributed"}
MAY_IMPORT = {
    "errors": set(),
    "io": {"errors"},
    "schema": {"errors"},
    "html": set(),
    "lazy": set(),
    "distributed": {"errors"},
    "plugins": BASE,
    "model": BASE,
    "corpus": BASE,
    "sae": BASE | {"plugins", "model"},
    "steering": BASE | {"plugins", "model", "sae"},
    "training": BASE | {"model", "corpus", "sae"},
    "features": BASE | {"model", "corpus", "sae"},
    "monitoring": BASE | {"plugins", "model", "corpus", "sae", "steering", "features"},
    "pinpoint": BASE | {"plugins", "model", "corpus", "sae", "steering"},
    "serve": BASE | {"plugins", "model", "sae", "steering"},
    "evaluation": BASE
    | {"plugins", "model", "corpus", "sae", "steering", "features", "monitoring", "pinpoint"},
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def modules(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def imported(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, module, names)`` of every absolute import in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names]
    return found


def part_of(path: Path) -> str:
    """``steer/steering/engine.py`` -> ``steering``; ``steer/io.py`` -> ``io``."""
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def test_nnsight_is_imported_by_the_trace_adapter_only():
    users = [
        f"{path.relative_to(REPO)}:{line}"
        for path in modules(PACKAGE) + modules(BUILTIN_PLUGINS)
        for line, module, _ in imported(path)
        if module.split(".")[0] == "nnsight"
    ]
    assert users and all(u.startswith("steer/model/trace.py:") for u in users), users


def test_the_nnsight_wrapper_is_used_by_the_trace_adapter_only():
    # `model.lm` is the nnsight wrapper; reaching it elsewhere would be a second adapter.
    offenders = []
    for path in modules(PACKAGE):
        if path == PACKAGE / "model" / "trace.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "lm":
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    # load.py defines the property that wraps the model (through trace.wrap).
    assert offenders == [], offenders


def test_subsystems_import_each_other_in_one_direction():
    wrong = []
    for path in modules(PACKAGE):
        if path.parent == PACKAGE and path.name == "__init__.py":
            continue  # the public API: lazy imports of every part, by name
        part = part_of(path)
        if part == "cli":
            continue  # the command line sits on top of everything
        for line, module, _ in imported(path):
            if not module.startswith("steer."):
                continue
            target = module.split(".")[1]
            if target != part and target not in MAY_IMPORT[part]:
                wrong.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    assert wrong == [], "\n".join(wrong)


def test_every_part_of_the_package_is_placed_in_the_import_order():
    parts = {part_of(p) for p in modules(PACKAGE)} - {"__init__", "cli", "data"}
    assert parts == set(MAY_IMPORT)


def test_builtin_plugins_import_only_the_public_api():
    public = set(steer.__all__)
    wrong = []
    for path in modules(BUILTIN_PLUGINS):
        for line, module, names in imported(path):
            if module == "steer":
                wrong += [f"{path.name}:{line} steer.{n}" for n in names if n not in public]
            elif module.startswith("steer"):
                wrong.append(f"{path.name}:{line} imports {module}")
    assert wrong == [], wrong


def test_the_public_api_names_resolve():
    for name in steer.__all__:
        assert getattr(steer, name) is not None, name


def test_no_module_reaches_into_private_state():
    # `obj._name` on anything but self/cls, or importing a `_name` from another module.
    wrong = []
    for path in modules(PACKAGE) + modules(BUILTIN_PLUGINS):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                owner = node.value
                if node.attr.startswith("__") or (
                    isinstance(owner, ast.Name) and owner.id in ("self", "cls")
                ):
                    continue
                wrong.append(f"{path.relative_to(REPO)}:{node.lineno} .{node.attr}")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("steer"):
                wrong += [
                    f"{path.relative_to(REPO)}:{node.lineno} imports {a.name}"
                    for a in node.names
                    if a.name.startswith("_")
                ]
    assert wrong == [], wrong


def test_modules_are_small():
    big = [
        f"{p.relative_to(REPO)}: {n} lines"
        for p in modules(PACKAGE) + modules(BUILTIN_PLUGINS)
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    ]
    assert big == [], big


def test_library_functions_are_short():
    long = []
    for path in modules(PACKAGE) + modules(BUILTIN_PLUGINS):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {length}")
    assert long == [], long


@pytest.mark.parametrize(
    "code",
    [
        # importing steer has no side effects: no torch, no plugins
        "import steer",
        # loading every plugin (the CLI does it on each call) stays light
        "from steer.plugins import get_plugin_manager; get_plugin_manager()",
        # `steer --help` lists every command, plugins' too, without torch
        "from steer.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass",
        # `steer check` reads every recipe kind without torch
        *(
            f"from steer.cli import main\ntry:\n    main(['check', {str(REPO / 'recipes' / r)!r}])"
            "\nexcept SystemExit as e:\n    assert e.code == 0, e.code"
            for r in ("demo.yaml", "train-smollm2-res12.yaml", "pinpoint-gender.yaml")
        ),
    ],
    ids=["import", "plugins", "help", "check steering", "check training", "check pinpoint"],
)
def test_startup_does_not_load_torch(code):
    check = "\nimport sys\nassert 'torch' not in sys.modules, 'torch was imported'\n"
    done = subprocess.run(
        [sys.executable, "-c", code + check], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_every_subpackage_is_installed():
    # A subpackage missing from pyproject's list works in the editable checkout and is absent
    # from a real install.
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in PACKAGE.rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert found | {"steer_plugins"} == listed
