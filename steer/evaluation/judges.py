"""Judges: what scores how much a completion is about a concept, as a plugin registry kind.

A judge plugin registers a :class:`JudgeType` through ``steer_register_judges``. ``steer eval
--judge NAME[:ARG]`` builds it once per run with ``make(ctx, arg)`` (``ctx`` a
:class:`JudgeContext`: the concept and the services a judge may need, such as the unsteered
model's residuals) and calls what it returns with the prompts and completions of each arm.
The built-ins (``lexicon``, ``probe``, ``llm``) come from ``plugins/judges.py`` and
``plugins/llm_judge.py``, registered through the ``steer`` entry points like any plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from steer.errors import SteerError
from steer.plugins.registry import RegistryKind, call_plugin, registry

# (prompts, completions) -> one score per completion (higher: more about the concept)
ScoreFn = Callable[[Sequence[str], Sequence[str]], Sequence[float]]


@dataclass(frozen=True)
class JudgeType:
    """One way to score completions for a concept.

    Attributes:
        name: what ``--judge`` names (``--judge NAME`` or ``--judge NAME:ARG``).
        make: ``make(ctx, arg) -> score``: ``ctx`` is a :class:`JudgeContext`, ``arg`` the
            text after the colon (``None`` without one); raise :class:`steer.SteerError` for an
            argument or a setup that cannot work (an unconfigured model), before any arm runs.
            ``score(prompts, completions)`` returns one float per completion.
        description: one line for ``steer plugins``.
        scale: the largest score (1 for a rate, 2 for AxBench's 0-2 ratings), for reports.
    """

    name: str
    make: Callable[[Any, str | None], ScoreFn]
    description: str = ""
    scale: float = 1.0


JUDGES: RegistryKind[JudgeType] = RegistryKind(
    hook="steer_register_judges",
    kind="judge",
    expected=JudgeType,
    callables=("make",),
    lookup="judge",
)


@dataclass
class JudgeContext:
    """What a judge may use: the concept and the unsteered model at the recipe's layer.

    Attributes:
        concept: the concept's name (``sea``).
        topic: how to say it in a sentence (``the sea``).
        keywords: words that mention it.
        positive: texts about the concept; negative: texts not about it.
        model: the unsteered :class:`steer.LoadedModel` (``None`` in tests of text judges).
        layer: the block whose output the recipe edits (probes read it).
    """

    concept: str
    topic: str
    keywords: list[str]
    positive: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)
    model: Any = None
    layer: int = 0

    def residuals(self, texts: Sequence[str]) -> Any:
        """``[n, d_model]``: each text's residual stream after ``layer`` under the unsteered
        model, averaged over its positions (as ``steer probe`` pools them)."""
        from steer.monitoring.probe import pooled_residuals

        if self.model is None:
            raise SteerError("this judge needs the model, and none is loaded")
        return pooled_residuals(self.model, self.layer, list(texts), progress=False)["mean"]

    def train_probe(self) -> Any:
        """A logistic-regression probe (``steer probe``'s) on the residuals of the positive
        against the negative texts: ``probe.logits(x)`` scores residuals."""
        from steer.monitoring.probe import train_probe

        if not self.positive or not self.negative:
            raise SteerError(f"concept {self.concept!r} has no positive or no negative texts")
        return train_probe(self.residuals(self.positive), self.residuals(self.negative))

    def load_probe(self, path: str) -> Any:
        """A probe file from ``steer probe train`` (check it with :meth:`check_probe` once
        the layer is known)."""
        from steer.monitoring.probe import load_probe

        return load_probe(path)

    def check_probe(self, probe: Any, where: str = "probe") -> None:
        """Refuse a probe that reads another layer than the recipe edits."""
        layer = probe.meta.get("layer")
        if layer is not None and int(layer) != self.layer:
            raise SteerError(
                f"the probe reads layer {layer}, the recipe edits layer {self.layer}", where=where
            )


@dataclass(frozen=True)
class Judge:
    """A built judge: its ``--judge`` spec, scale and score function."""

    spec: str
    scale: float
    score: ScoreFn
    plugin: str

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """The judge's scores, checked: one finite float per completion."""
        scores = call_plugin(
            self.plugin, f"judge {self.spec!r}", self.score, list(prompts), list(completions)
        )
        out = [float(s) for s in scores]
        if len(out) != len(completions):
            raise SteerError(
                f"judge {self.spec!r} returned {len(out)} scores for {len(completions)} texts"
            )
        return out


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"probe:p.json"`` -> ``("probe", "p.json")``; ``"lexicon"`` -> ``("lexicon", None)``."""
    name, sep, arg = spec.strip().partition(":")
    if not name:
        raise SteerError(f"--judge {spec!r}: give a judge name (NAME or NAME:ARG)")
    if sep and not arg.strip():
        raise SteerError(f"--judge {spec!r}: nothing after the colon")
    return name, arg.strip() if sep else None


def judge_type(pm: Any, spec: str) -> JudgeType:
    """The registered judge ``spec`` names (unknown: one line listing the known ones)."""
    name, _ = parse_spec(spec)
    return registry(pm, JUDGES).get(name, where="--judge")


def build_judge(pm: Any, spec: str, ctx: JudgeContext) -> Judge:
    """The judge of ``spec``, made for ``ctx`` (errors name the plugin)."""
    name, arg = parse_spec(spec)
    reg = registry(pm, JUDGES)
    kind = reg.get(name, where="--judge")
    plugin = reg[name].plugin
    score = call_plugin(plugin, f"judge {name!r} (make)", kind.make, ctx, arg)
    if not callable(score):
        raise SteerError(f"judge {name!r} of plugin {plugin!r} made no score function")
    return Judge(spec=spec, scale=kind.scale, score=score, plugin=plugin)
