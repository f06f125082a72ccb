"""A whole evaluation on the tiny model: every arm, the summary, the outputs, and resuming
after a judge fails midway."""

from __future__ import annotations

import json

import pytest

from steer import JudgeType, hookimpl
from steer.errors import SteerError
from steer.evaluation.report import print_table, report_html, write_outputs
from steer.evaluation.run import Evaluation
from steer.evaluation.summary import summarise


def run_all(evaluation, settings):
    records = evaluation.run()
    return records, summarise(
        records,
        settings.judges,
        prompts=settings.prompts,
        max_ppl_ratio=settings.max_ppl_ratio,
        resamples=settings.bootstrap,
        meta={"recipe": "tiny.yaml", "concept": "sea"},
    )


def test_every_arm_runs_and_is_summarised(tiny_steerer, small_settings, tmp_path, pm):
    evaluation = Evaluation(tiny_steerer, small_settings, store_folder=tmp_path / "out", pm=pm)
    names = [a.name for a in evaluation.arms()]
    assert names == ["none", "prompt", "recipe@0.5", "recipe@1", "diffmean@0.5", "diffmean@1"]
    # the vector is added as far as the recipe moves the stream: |4 * unit decoder row| = 4
    assert evaluation.norm == pytest.approx(4.0, rel=1e-3)
    records, result = run_all(evaluation, small_settings)
    for record in records.values():
        assert len(record["outputs"][0]) == len(small_settings.prompts)
        assert set(record["scores"]) == {"lexicon:cat,dog", "probe"}
        assert len(record["kl"]) == 2 and len(record["mc"]) == 32
    assert records["none"]["kl"] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert records["recipe@1"]["kl"][0] > records["recipe@0.5"]["kl"][0] > 0
    none = result["arms"]["none"]
    assert none["ppl_ratio"]["mean"] == pytest.approx(1.0)
    # plain against plain, side by side: about 1 (a loaded machine makes it noisy)
    assert 0.2 < none["speed_vs_plain"] < 5
    assert all(len(r["speed"]["ratios"]) == 3 for r in records.values())
    assert [r["family"] for r in result["table"]] == ["none", "prompt", "diffmean", "recipe"]
    assert set(result["picked"]) == {"recipe", "diffmean"}
    assert (tmp_path / "out" / "arms" / "recipe@1.json").is_file()
    paths = write_outputs(result, tmp_path / "out")
    assert json.loads(paths["json"].read_text())["concept"] == "sea"
    assert "<svg" in paths["html"].read_text()


class Flaky:
    """A judge plugin that fails (as a network judge would) after ``budget`` calls."""

    def __init__(self, budget):
        self.budget = budget
        self.calls = 0

    @hookimpl
    def steer_register_judges(self, register):
        def make(ctx, arg):
            def score(prompts, texts):
                self.calls += 1
                if self.calls > self.budget:
                    raise ConnectionError("quota exceeded")
                return [0.5] * len(texts)

            return score

        register(JudgeType("flaky", make))


def test_a_judge_that_fails_midway_leaves_a_resumable_result(
    tiny_steerer, small_settings, tmp_path, pm, monkeypatch
):
    flaky = Flaky(budget=3)
    pm.register(flaky, name="flaky-judge")
    small_settings.judges = ["lexicon:cat", "flaky"]
    out = tmp_path / "out"
    evaluation = Evaluation(tiny_steerer, small_settings, store_folder=out, pm=pm)
    with pytest.raises(SteerError) as failed:
        evaluation.run()
    message = str(failed.value)
    assert "judge 'flaky' failed on arm recipe@1" in message and "quota exceeded" in message
    assert "rerun the same command to resume" in message and "\n" not in message
    finished = json.loads((out / "arms" / "recipe@0.5.json").read_text())
    assert finished["scores"]["flaky"] == [[0.5] * 5]
    stuck = json.loads((out / "arms" / "recipe@1.json").read_text())
    assert "flaky" not in stuck["scores"] and "lexicon:cat" in stuck["scores"]
    # The rerun generates nothing again and judges only what is missing.
    import steer.evaluation.run as run_module

    def no_generation(*args, **kwargs):
        raise AssertionError("a finished arm was generated again")

    flaky.budget = 100
    again = Evaluation(tiny_steerer, small_settings, store_folder=out, pm=pm)
    monkeypatch.setattr(run_module, "generate_arm", no_generation)
    for arm in again.arms()[:4]:
        again.run_arm(arm)
    assert flaky.calls == 3 + 1 + 1  # the failed call, then recipe@1 only


def test_records_made_with_other_settings_are_not_reused(
    tiny_steerer, small_settings, tmp_path, pm
):
    out = tmp_path / "out"
    first = Evaluation(tiny_steerer, small_settings, store_folder=out, pm=pm)
    first.run_arm(first.arms()[0])
    small_settings.kl_windows = 1
    second = Evaluation(tiny_steerer, small_settings, store_folder=out, pm=pm)
    assert second.store.load("none") == {}
    assert len(second.run_arm(second.arms()[0])["kl"]) == 1


def test_seeds_need_a_sampling_recipe(tiny_steerer, small_settings, pm):
    small_settings.seeds = 2
    with pytest.raises(SteerError, match="--seeds > 1 needs a recipe that samples"):
        Evaluation(tiny_steerer, small_settings, pm=pm)


def test_terminal_table_and_html_escape_text(tiny_steerer, small_settings, pm):
    from rich.console import Console

    evaluation = Evaluation(tiny_steerer, small_settings, pm=pm)
    _, result = run_all(evaluation, small_settings)
    result["examples"][0]["prompt"] = "<script>alert(1)</script> [bold]x[/bold]"
    page = report_html(result)
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    console = Console(record=True, width=200, markup=False)
    print_table(result, console)
    text = console.export_text()
    assert "recipe@" in text and "ppl ratio" in text and "bootstrap" in text


def test_sampling_runs_each_seed_and_averages_them_per_prompt(
    tiny_recipe, tiny_model, small_settings, pm
):
    from steer.steering.engine import Steerer

    gen = tiny_recipe.generation.model_copy(update={"temperature": 1.0, "top_p": 1.0})
    steerer = Steerer(tiny_recipe.model_copy(update={"generation": gen}), pm=pm, model=tiny_model)
    small_settings.seeds = 2
    small_settings.judges = ["lexicon:the"]
    evaluation = Evaluation(steerer, small_settings, pm=pm)
    record = evaluation.run_arm(evaluation.arms()[0])
    assert len(record["outputs"]) == 2 and record["outputs"][0] != record["outputs"][1]
    assert len(record["scores"]["lexicon:the"]) == 2 and len(record["loss"]) == 2
