"""One evaluation: every arm over the same prompts, each stage stored as it finishes.

:class:`Evaluation` generates each arm (seed by seed when the recipe samples), scores the
completions' loss under the unsteered model, the KL on held-out neutral text and the
multiple-choice accuracy with the arm's edit, then each judge; :func:`summarise` in
:mod:`steer.evaluation.summary` turns the records into the table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from steer.errors import SteerError
from steer.evaluation.arms import (
    INSTRUCTION,
    PREFIX,
    Arm,
    generate_arm,
    recipe_edit,
    recipe_hook,
    scaled,
    vector_edit,
    with_prompts,
)
from steer.evaluation.concepts import Concept
from steer.evaluation.judges import Judge, JudgeContext, build_judge
from steer.evaluation.metrics import (
    ArmEdit,
    kl_per_window,
    mc_correct,
    neutral_windows,
    prompt_losses,
    read_mc,
)
from steer.evaluation.store import ArmStore, fingerprint
from steer.steering.recipe import Recipe

log = logging.getLogger(__name__)
Stage = Callable[[str, str], None]  # (arm name, stage) before each stage runs
TIMING_TOKENS = 16  # new tokens per timed generation


@dataclass
class Settings:
    """What ``steer eval`` measures (its options)."""

    concept: Concept
    prompts: list[str]
    judges: list[str] = field(default_factory=lambda: ["lexicon"])
    strengths: list[float] = field(default_factory=lambda: [0.5, 1.0, 1.5])
    max_ppl_ratio: float = 2.0
    seeds: int = 1
    bootstrap: int = 1000
    kl_windows: int = 16
    mc_file: str | None = None
    split_seed: int = 0


def make_judges(pm: Any, settings: Settings) -> tuple[JudgeContext, list[Judge]]:
    """The judges of ``settings`` and the context they share (its model and layer are set
    when the evaluation starts). Made before any model loads, so a bad judge is one line."""
    c = settings.concept
    ctx = JudgeContext(
        concept=c.name, topic=c.topic, keywords=c.keywords, positive=c.positive, negative=c.negative
    )
    return ctx, [build_judge(pm, spec, ctx) for spec in settings.judges]


class Evaluation:
    """A recipe's evaluation against the baselines, on a loaded model.

    ``steerer`` is a :class:`steer.Steerer` of the recipe (its SAEs loaded, its labels
    resolved); ``store`` keeps each arm's record (see :mod:`steer.evaluation.store`).
    """

    def __init__(
        self,
        steerer: Any,
        settings: Settings,
        *,
        judges: tuple[JudgeContext, list[Judge]] | None = None,
        store_folder=None,
        pm=None,
    ):
        self.steerer = steerer
        self.model = steerer.model
        self.pm = pm if pm is not None else steerer.pm
        self.settings = settings
        self.recipe: Recipe = with_prompts(steerer.recipe, settings.prompts)
        self.hook = recipe_hook(self.recipe, steerer.saes)
        if self.recipe.generation.temperature == 0 and settings.seeds > 1:
            raise SteerError("--seeds > 1 needs a recipe that samples (temperature > 0)")
        self.ctx, self.judges = judges or make_judges(self.pm, settings)
        # The judges were made before the model loaded (an unconfigured judge model fails in
        # seconds); what they read from the model is known now.
        self.ctx.model, self.ctx.layer = self.model, self.hook.layer
        self.questions = read_mc(settings.mc_file)
        key = {
            "recipe": self.recipe.model_dump(mode="json"),
            "concept": vars(settings.concept),
            "seeds": settings.seeds,
            "kl_windows": settings.kl_windows,
            "mc": self.questions,
        }
        self.store = ArmStore(store_folder, fingerprint(key))
        self.windows = neutral_windows(self.model, n=settings.kl_windows)
        self.dtype = torch.promote_types(self.model.hf.dtype, torch.float32)
        self.base_edit = recipe_edit(self.recipe, steerer.saes, self.pm, self.dtype)
        self.vector = self.diffmean_vector()
        self.norm = self.recipe_norm()

    def diffmean_vector(self) -> torch.Tensor | None:
        """The concept's mean residual minus the non-concept mean, at the recipe's layer
        (``None`` where the recipe's site is not the residual stream after a block)."""
        if self.hook.kind != "resid_post":
            log.warning("the recipe edits %s: no difference-of-means arm", self.hook)
            return None
        pos = self.ctx.residuals(self.ctx.positive).mean(0)
        return pos - self.ctx.residuals(self.ctx.negative).mean(0)

    def recipe_norm(self) -> float:
        """The mean L2 norm of the recipe's change to the residual stream on the neutral
        windows: the diff-of-means vector is added at this norm times the same multipliers,
        so the two steered arms move the stream equally far."""
        from steer.model.trace import layer_output

        hidden = layer_output(self.model, self.hook, self.windows)
        with torch.inference_mode():
            return float((self.base_edit(hidden, None) - hidden).norm(dim=-1).mean())

    def arms(self) -> list[Arm]:
        """Every arm, in the order they run."""
        found = [Arm("none"), Arm("prompt")]
        found += [Arm("recipe", m) for m in self.settings.strengths]
        if self.vector is not None:
            found += [Arm("diffmean", m) for m in self.settings.strengths]
        return found

    def edit_of(self, arm: Arm) -> ArmEdit:
        """What ``arm`` does to one forward pass."""
        if arm.family == "prompt":
            return ArmEdit(prefix=PREFIX.format(topic=self.settings.concept.topic))
        if arm.family == "recipe":
            edit = recipe_edit(
                scaled(self.recipe, arm.strength), self.steerer.saes, self.pm, self.dtype
            )
            return ArmEdit(edit=edit, hook=self.hook)
        if arm.family == "diffmean":
            return ArmEdit(edit=vector_edit(self.vector, arm.strength * self.norm), hook=self.hook)
        return ArmEdit()

    def generate(
        self, arm: Arm, recipe: Recipe, prompts: list[str] | None = None
    ) -> tuple[list[str], int, float]:
        """``(completions, new tokens, seconds)`` of ``arm`` with ``recipe``'s settings on
        ``prompts`` (default: the evaluation's)."""
        prompts = list(prompts or self.settings.prompts)
        if arm.family == "recipe":
            from steer.steering.engine import Steerer

            steered = scaled(with_prompts(recipe, prompts), arm.strength)
            run = Steerer(steered, pm=self.pm, model=self.model).run(baseline=False)
            texts = [r.steered for r in run.results]
            return texts, int(run.timing["new_tokens"]), float(run.timing["steered_s"])
        if arm.family == "prompt":
            topic = self.settings.concept.topic
            prompts = [INSTRUCTION.format(prompt=p, topic=topic) for p in prompts]
        edit = self.edit_of(arm)
        done = generate_arm(self.model, recipe, prompts, edit=edit.edit, hook=edit.hook)
        return done.texts, done.new_tokens, done.seconds

    def time_arm(self, arm: Arm, repeats: int = 3) -> dict:
        """Speed against plain ``generate``, measured side by side: one batch of prompts, a
        fixed number of new tokens, plain then the arm, ``repeats`` times; the median ratio
        of plain time to the arm's (below 1: the arm is slower). Pairing each run with a plain
        one keeps the ratio honest when other work shares the machine."""
        n = self.recipe.generation.batch_size
        prompts = self.settings.prompts[:n]
        gen = self.recipe.generation.model_copy(
            update={"max_new_tokens": TIMING_TOKENS, "min_new_tokens": TIMING_TOKENS}
        )
        recipe = self.recipe.model_copy(update={"generation": gen})
        ratios = []
        for _ in range(repeats):
            plain = self.generate(Arm("none"), recipe, prompts)[2]
            took = self.generate(arm, recipe, prompts)[2]
            ratios.append(plain / took if took > 0 else float("nan"))
        return {
            "ratios": ratios,
            "ratio": sorted(ratios)[len(ratios) // 2],
            "tokens": TIMING_TOKENS,
        }

    def run_arm(self, arm: Arm, on_stage: Stage | None = None) -> dict:
        """The arm's record, computing (and storing) only the stages it lacks."""
        name, record = arm.name, self.store.load(arm.name)
        record.update(family=arm.family, strength=arm.strength)
        say = on_stage or (lambda _a, _s: None)
        base_seed = self.recipe.generation.seed or 0
        if "outputs" not in record:
            say(name, "generate")
            outputs, tokens, seconds = [], 0, 0.0
            for k in range(self.settings.seeds):
                gen = self.recipe.generation.model_copy(update={"seed": base_seed + k})
                texts, n, s = self.generate(arm, self.recipe.model_copy(update={"generation": gen}))
                outputs.append(texts)
                tokens, seconds = tokens + n, seconds + s
            record.update(outputs=outputs, new_tokens=tokens, seconds=seconds)
            self.store.save(name, record)
        if "loss" not in record:
            say(name, "perplexity")
            chat = self.recipe.generation.chat
            record["loss"] = [
                prompt_losses(self.model, self.settings.prompts, texts, chat=chat)
                for texts in record["outputs"]
            ]
            self.store.save(name, record)
        if "speed" not in record:
            say(name, "speed")
            record["speed"] = self.time_arm(arm)
            self.store.save(name, record)
        self.measure_edit(arm, record, say)
        self.judge(arm, record, say)
        return record

    def measure_edit(self, arm: Arm, record: dict, say: Stage) -> None:
        """KL on the neutral windows and multiple-choice accuracy, with the arm's edit."""
        if "kl" not in record:
            say(arm.name, "kl")
            record["kl"] = kl_per_window(self.model, self.windows, self.edit_of(arm))
            self.store.save(arm.name, record)
        if "mc" not in record:
            say(arm.name, "capability")
            record["mc"] = mc_correct(self.model, self.questions, self.edit_of(arm))
            self.store.save(arm.name, record)

    def judge(self, arm: Arm, record: dict, say: Stage) -> None:
        """Each judge's scores per seed and prompt; a judge that fails leaves the record as it
        was after the last finished stage, and says how to resume."""
        scores = record.setdefault("scores", {})
        for judge in self.judges:
            if judge.spec in scores:
                continue
            say(arm.name, f"judge {judge.spec}")
            try:
                scores[judge.spec] = [
                    judge(self.settings.prompts, texts) for texts in record["outputs"]
                ]
            except Exception as exc:
                where = self.store.folder
                keep = (
                    f"; finished arms and stages are kept in {where}: rerun the same command "
                    "to resume"
                    if where is not None
                    else "; run with --out DIR to keep finished arms"
                )
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise SteerError(
                    f"judge {judge.spec!r} failed on arm {arm.name}: {first}{keep}"
                ) from exc
            self.store.save(arm.name, record)

    def run(self, on_stage: Stage | None = None) -> dict[str, dict]:
        """Every arm's record, by name."""
        return {arm.name: self.run_arm(arm, on_stage) for arm in self.arms()}
