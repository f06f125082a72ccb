"""Random mutations of a YAML recipe, as a careless user or an attacker would make them: for the
``steer check`` fuzz test and the bad-input campaign (experiments/bad_input_campaign.py)."""

from __future__ import annotations

import copy
import math
import random
from typing import Any

# Values a careless user or an attacker puts anywhere in a recipe.
ODD_VALUES: list[Any] = [
    None,
    math.nan,
    math.inf,
    -math.inf,
    "[/bold]x[red]",
    "[link=file:///etc/passwd]y[/link]",
    "",
    " ",
    -1,
    0,
    10**30,
    1.5,
    True,
    [],
    {},
    [None],
    {"[bold]": 1},
    "\x00\n\t",
]


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in a YAML tree, the root excluded."""
    found = []
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, child in items:
        found.append((*prefix, key))
        found += paths(child, (*prefix, key))
    return found


def mutate(data: Any, rng: random.Random) -> Any:
    """One structural mutation of ``data``: a value replaced, a key deleted, an unknown key
    added, or a list emptied."""
    data = copy.deepcopy(data)
    where = rng.choice(paths(data))
    parent = data
    for key in where[:-1]:
        parent = parent[key]
    last = where[-1]
    action = rng.choice(["replace", "replace", "replace", "delete", "add"])
    if action == "delete":
        del parent[last]
    elif action == "add" and isinstance(parent, dict):
        parent[rng.choice(["bogus", "[/x]", "value"])] = rng.choice(ODD_VALUES)
    else:
        parent[last] = copy.deepcopy(rng.choice(ODD_VALUES))
    return data


def mutate_text(text: str, rng: random.Random) -> str:
    """One textual mutation: a line repeated (a duplicate key), or markup pasted into a line."""
    lines = text.splitlines()
    i = rng.randrange(len(lines))
    if rng.random() < 0.5:
        lines.insert(i, lines[i])
    else:
        lines[i] = lines[i] + " [/bold]"
    return "\n".join(lines) + "\n"
