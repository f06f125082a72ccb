"""Third-party plugins as users make them: a module plus one entry-point line, installed with
pip into a folder the test puts on ``sys.path``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

# A plugin whose intervention and monitor raise: what a user meets when a plugin breaks mid-run.
RAISING_PLUGIN = """
from steer import InterventionType, MonitorType, hookimpl


def explode(acts, value):
    raise ZeroDivisionError("the intervention broke")


def stare(acts, spec):
    raise KeyError("the monitor broke")


@hookimpl
def steer_register_interventions(register):
    register(InterventionType("explode", explode, "raises"))


@hookimpl
def steer_register_monitors(register):
    register(MonitorType("stare", stare, "raises"))
"""


def write_plugin_project(root, module_source: str, entry_point: str, module: str):
    """A project folder holding one plugin module and its entry-point line."""
    (root / f"{module}.py").write_text(textwrap.dedent(module_source))
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = ["setuptools>=61"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "steer-{module}"
            version = "0.1"

            [tool.setuptools]
            py-modules = ["{module}"]

            [project.entry-points.steer]
            {entry_point}
            """
        )
    )


def pip_install(project, target):
    """Install ``project`` with pip into the folder ``target`` (offline, no dependencies)."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(project),
        ],
        check=True,
        capture_output=True,
    )


def install_plugin(tmp_path: Path, monkeypatch, module: str, source: str) -> Path:
    """Install the plugin module ``module`` (its ``source``) under the entry point of the same
    name, and make it importable for the rest of the test."""
    project = tmp_path / f"{module}-project"
    project.mkdir()
    write_plugin_project(project, source, f'{module} = "{module}"', module)
    target = tmp_path / f"{module}-site"
    pip_install(project, target)
    monkeypatch.syspath_prepend(str(target))
    return target
