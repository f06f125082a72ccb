"""``steer run``'s progress bars and table titles."""

from __future__ import annotations

from rich.progress import Progress

from steer.cli.run import BatchSteps, shorten


def test_batch_steps_count_across_batches_and_early_ends():
    progress = Progress(disable=True)
    task = progress.add_task("baseline", total=3 * 4)
    steps = BatchSteps(progress, task, per_batch=4)
    seen = []
    # Batch 0 runs its 4 steps; batch 1 ends after 2 (every prompt hit end-of-sequence);
    # batch 2 runs 4: the bar lands on the total, never past it.
    for step in [0, 1, 2, 3, 0, 1, 0, 1, 2, 3]:
        steps(step)
        seen.append(progress.tasks[0].completed)
    assert seen == [1, 2, 3, 4, 5, 6, 9, 10, 11, 12]


def test_a_long_prompt_is_shortened_to_one_line_in_titles():
    assert shorten("Tell me about\nyour weekend.") == "Tell me about your weekend."
    long = "word " * 100
    title = shorten(long, limit=40)
    assert len(title) == 40 and title.endswith("…") and "\n" not in title
