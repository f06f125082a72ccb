"""Random mutations of every shipped recipe fed to ``steer check``: each one ends in exit 0, or
in exit 2 with one line; never a traceback or an internal error. Seeded, so CI runs the same
cases every time."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml
from support.cli_helpers import call
from support.mutations import mutate, mutate_text

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))
MUTATIONS_PER_RECIPE = 30
SEED = 19


def cases() -> list[tuple[str, int]]:
    return [(recipe.name, n) for recipe in RECIPES for n in range(MUTATIONS_PER_RECIPE)]


@pytest.mark.parametrize(("name", "n"), cases())
def test_a_mutated_recipe_is_ok_or_one_line(tmp_path, capsys, name, n):
    source = Path(RECIPES[0]).parent / name
    text = source.read_text(encoding="utf-8")
    rng = random.Random(f"{SEED}-{name}-{n}")
    if n % 3 == 2:
        mutated = mutate_text(text, rng)
    else:
        mutated = yaml.safe_dump(mutate(yaml.safe_load(text), rng), allow_unicode=True)
    # Beside the shipped recipe's own folder layout, so relative SAE paths still resolve.
    path = tmp_path / name
    path.write_text(mutated, encoding="utf-8")
    code, out, err = call(["check", str(path)], capsys)
    assert code in (0, 2), err
    assert "Traceback" not in err and "internal error" not in err, err
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, err
    else:
        assert out.startswith("ok:"), out
