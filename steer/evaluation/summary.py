"""From arm records to the table: the strength of each steered family picked on one half of
the prompts, and every number reported on the other half with its bootstrap interval."""

from __future__ import annotations

import math
from typing import Any

from steer.evaluation.stats import bootstrap_ci, mean_at, pick_strength, split_halves

FAMILIES = ("none", "prompt", "diffmean", "recipe")


def per_prompt(runs: list[list[float | None]]) -> list[float | None]:
    """Per prompt, the mean over seeds (``runs[seed][prompt]``), skipping ``None``."""
    out: list[float | None] = []
    for values in zip(*runs, strict=True):
        known = [v for v in values if v is not None]
        out.append(sum(known) / len(known) if known else None)
    return out


def estimate(values: list[float | None], indices: list[int], resamples: int) -> dict | None:
    """The bootstrap estimate of ``values`` at ``indices`` (``None`` entries left out)."""
    known = [values[i] for i in indices if values[i] is not None]
    if not known:
        return None
    return bootstrap_ci(known, resamples=resamples).to_dict()


def ratio(estimate_of_log: dict | None) -> dict | None:
    """An estimate of a log-ratio as the ratio (``exp`` of mean and bounds)."""
    if estimate_of_log is None:
        return None
    return {k: round(math.exp(v), 6) if k != "n" else v for k, v in estimate_of_log.items()}


def arm_row(record: dict, none: dict, report: list[int], judges: list[str], resamples: int):
    """One arm's numbers on the ``report`` prompts, against the ``none`` arm's."""
    loss, base = per_prompt(record["loss"]), per_prompt(none["loss"])
    paired = [None if a is None or b is None else a - b for a, b in zip(loss, base, strict=True)]
    all_kl = list(range(len(record["kl"])))
    all_mc = list(range(len(record["mc"])))
    speed = record["new_tokens"] / record["seconds"] if record["seconds"] > 0 else math.nan
    none_speed = none["new_tokens"] / none["seconds"] if none["seconds"] > 0 else math.nan
    # The paired measurement when there is one; else this run's tokens/s against none's.
    timed = record.get("speed", {}).get("ratio")
    relative = timed if timed is not None else speed / none_speed if none_speed > 0 else None
    return {
        "family": record["family"],
        "strength": record["strength"],
        "scores": {j: estimate(per_prompt(record["scores"][j]), report, resamples) for j in judges},
        "loss": estimate(loss, report, resamples),
        "ppl_ratio": ratio(estimate(paired, report, resamples)),
        "kl": estimate(record["kl"], all_kl, resamples),
        "mc_accuracy": estimate(record["mc"], all_mc, resamples),
        "tokens_per_s": round(speed, 2),
        "speed_vs_plain": None if relative is None else round(relative, 3),
    }


def summarise(
    records: dict[str, dict],
    judges: list[str],
    *,
    prompts: list[str],
    meta: dict[str, Any] | None = None,
    examples: int = 4,
    max_ppl_ratio: float,
    resamples: int = 1000,
    split_seed: int = 0,
) -> dict[str, Any]:
    """The evaluation's result: the split, the strength picked per steered family, every
    arm's row on the report half, and the table (none, prompt, and each family at its picked
    strength)."""
    none = records["none"]
    n = len(none["outputs"][0])
    pick, report = split_halves(n, seed=split_seed)
    first = judges[0]
    reference = mean_at(per_prompt(none["loss"]), pick)
    picked: dict[str, float] = {}
    for family in ("recipe", "diffmean"):
        sweep = {
            r["strength"]: {
                "score": per_prompt(r["scores"][first]),
                "loss": per_prompt(r["loss"]),
            }
            for r in records.values()
            if r["family"] == family
        }
        if sweep:
            picked[family] = pick_strength(
                sweep, pick, reference_loss=reference, max_ppl_ratio=max_ppl_ratio
            )
    rows = {
        name: arm_row(r, none, report, judges, resamples) | {"arm": name}
        for name, r in records.items()
    }
    for name, r in records.items():
        rows[name]["pick_score"] = round(mean_at(per_prompt(r["scores"][first]), pick), 6)
        rows[name]["picked"] = (
            picked.get(r["family"]) == r["strength"] and r["strength"] is not None
        )
    table = [rows["none"], rows["prompt"]] + [row for row in rows.values() if row["picked"]]
    table = sorted(table, key=lambda r: FAMILIES.index(r["family"]))
    shown = [
        {
            "prompt": prompts[i],
            "completions": {r["arm"]: records[r["arm"]]["outputs"][0][i] for r in table},
        }
        for i in report[:examples]
    ]
    return {
        **(meta or {}),
        "judges": judges,
        "n_prompts": n,
        "split": {"pick": pick, "report": report, "seed": split_seed},
        "picked_by": f"{first} on the pick half, perplexity ratio <= {max_ppl_ratio:g}",
        "picked": picked,
        "arms": rows,
        "table": table,
        "examples": shown,
    }
