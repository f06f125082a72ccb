"""The studies in experiments/ still start: each imports (its data files under
experiments/data/ included) and parses its command line, checked with ``--help`` in a fresh
interpreter, run from outside the repository so no script depends on the working directory.

No marker on purpose: these run in the default ``pytest`` run. Each script imports torch once
(about 2 s); the seven take about 12 s on one core."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = REPO / "experiments"
SCRIPTS = sorted(p.name for p in EXPERIMENTS.glob("*.py") if p.name != "common.py")


def test_the_studies_are_all_there():
    assert set(SCRIPTS) >= {
        "contrast_labelled.py",
        "find_demo_features.py",
        "monitor_safety.py",
        "pinpoint_gender.py",
        "steer_by_label.py",
        "sweep_plot.py",
        "train_first_sae.py",
    }


@pytest.mark.parametrize("script", SCRIPTS)
def test_study_parses_its_arguments(script, tmp_path):
    done = subprocess.run(
        [sys.executable, str(EXPERIMENTS / script), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"usage: {script}"), done.stdout[:200]


def test_every_data_file_parses_and_is_read_by_a_study():
    sources = "".join((EXPERIMENTS / s).read_text(encoding="utf-8") for s in SCRIPTS)
    files = sorted((EXPERIMENTS / "data").iterdir())
    assert files
    for path in files:
        assert path.name in sources, f"{path.name} is read by no study"
        if path.suffix == ".yaml":
            assert yaml.safe_load(path.read_text(encoding="utf-8")), path.name
