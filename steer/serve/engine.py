"""The server's model loop: every request in flight advances by one token per batched forward
pass, each with its own interventions, monitors and sampling; requests join at the next step
(prefilled on their own first) and leave the moment they finish (iteration-level batching).

The loop runs on one thread of its own, so the event loop serving HTTP never waits on torch.
Jobs come in through :meth:`ServeEngine.submit` (a bounded queue: :class:`QueueFull` when it is
full) and their tokens go out through each job's ``emit``.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any

import torch

from steer.errors import SteerError
from steer.model.trace import forward_step
from steer.serve.batch import BatchState
from steer.serve.jobs import CANCELLED, ERROR, MONITOR_STOP, TIMEOUT, Job
from steer.serve.sampling import TextStream, choose, logprob_entry
from steer.steering.edit import RawEvent, Readings, edit_hook, sites_by_hook
from steer.steering.generation import eos_ids
from steer.steering.plan import Site, build_row_sites

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The engine's waiting queue is full; the client should retry later."""


class ServeEngine:
    """Generates for many jobs at once on one loaded model and its SAEs (a
    :class:`steer.steering.engine.Steerer`'s).

    ``max_batch`` rows generate together; up to ``max_queue`` more wait for a free row.
    """

    def __init__(self, steerer: Any, *, max_batch: int = 16, max_queue: int = 64):
        self.model = steerer.model
        self.saes = steerer.saes
        self.pm = steerer.pm
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.eos = eos_ids(self.model)
        self._eos_index = torch.tensor(sorted(self.eos), dtype=torch.long)
        tokenizer = self.model.tokenizer
        self.pad_id = tokenizer.pad_token_id
        self.decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)
        self.dtype = torch.promote_types(self.model.hf.dtype, torch.float32)
        self.device = self.model.device
        self._waiting: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        # the batch in flight (touched by the loop thread only)
        self.rows: list[Job] = []
        self.batch: BatchState | None = None
        self.sites: list[Site] = []
        self._sites_stale = True
        self._step = 0  # decode steps so far (>= 1 while decoding: step 0 is a prompt pass)
        self.stats = {"steps": 0, "tokens": 0, "prefills": 0, "completed": 0}

    # -- the other threads' side ---------------------------------------------------------

    def start(self) -> ServeEngine:
        self._thread = threading.Thread(target=self._loop, name="steer-engine", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def submit(self, jobs: list[Job]) -> None:
        """Queue ``jobs`` (all or none): :class:`QueueFull` when they do not fit."""
        with self._cond:
            if self._stopping:
                raise QueueFull("the server is shutting down")
            # Free rows take jobs at the next step; beyond them, max_queue may wait.
            room = self.max_queue + max(0, self.max_batch - len(self.rows))
            if len(self._waiting) + len(jobs) > room:
                raise QueueFull(f"{len(self.rows)} running, {len(self._waiting)} waiting")
            self._waiting.extend(jobs)
            self._cond.notify_all()

    def load(self) -> dict[str, int]:
        """Rows generating and jobs waiting, for /health."""
        return {"running": len(self.rows), "waiting": len(self._waiting), **self.stats}

    # -- the loop ------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._waiting and not self.rows:
                    self._cond.wait()
                if self._stopping:
                    break
                free = self.max_batch - len(self.rows)
                joiners = [self._waiting.popleft() for _ in range(min(free, len(self._waiting)))]
            try:
                self._advance(joiners)
            except Exception as exc:
                log.exception("generation step failed")
                message = str(exc) if isinstance(exc, SteerError) else f"generation failed: {exc}"
                for job in self.rows + joiners:
                    job.finish(ERROR, error=message)
                self.rows, self.batch, self._sites_stale = [], None, True
        for job in self.rows + list(self._waiting):
            job.finish(ERROR, error="the server shut down")

    def _advance(self, joiners: list[Job]) -> None:
        joiners = [j for j in joiners if not self._ended_early(j)]
        if joiners:
            self._prefill(joiners)
        self._leave()
        if self.rows:
            self._decode()
            self._leave()

    def _ended_early(self, job: Job) -> bool:
        if job.cancelled:
            # The client went away; the update still ends whatever waits on this job.
            job.finish(CANCELLED)
        elif job.expired():
            job.finish(TIMEOUT)
        return job.finished

    def _leave(self) -> None:
        """Drop finished, cancelled and timed-out rows from the batch."""
        keep = [i for i, job in enumerate(self.rows) if not self._ended_early(job)]
        if len(keep) == len(self.rows):
            return
        self.stats["completed"] += len(self.rows) - len(keep)
        self.rows = [self.rows[i] for i in keep]
        if keep:
            self.batch.keep(keep)
        else:
            self.batch = None
        self._sites_stale = True

    def _prefill(self, joiners: list[Job]) -> None:
        """Run the joiners' prompts (a batch of their own, step 0), choose their first tokens
        and stack them under the batch in flight."""
        inputs = BatchState.prefill_inputs(
            [j.prompt_ids for j in joiners], self.pad_id, self.device
        )
        sites = build_row_sites([j.steps for j in joiners], self.saes, self.pm, dtype=self.dtype)
        readings = Readings(keep_scores=False)
        valid = inputs["attention_mask"].bool()
        logits = self._forward(inputs, sites, 0, valid, readings)
        pads = (inputs["attention_mask"] == 0).sum(dim=1).tolist()
        for raw in readings.events:
            job = joiners[raw.row]
            position = raw.position - pads[raw.row]
            token = job.prompt_ids[position]
            self._report(job, raw, "prompt", position, token)
        for row, job in enumerate(joiners):
            job.stream = TextStream(self.decode, job.sampling.stop)
            job.generator = job.sampling.generator(job.index)
            self._next_token(job, logits[row])
        self.stats["prefills"] += 1
        state = BatchState.after_prefill(inputs)
        if self.batch is None:
            self.batch = state
        else:
            self.batch.join(state)
        self.rows += joiners
        self._sites_stale = True

    def _decode(self) -> None:
        """One decode step: every row feeds its last token and gets its next one."""
        if self._sites_stale:
            self.sites = self._rebuild_sites()
        self._step += 1
        tokens = torch.tensor([job.generated[-1] for job in self.rows], dtype=torch.long)
        inputs = self.batch.step_inputs(tokens)
        readings = Readings(keep_scores=False)
        logits = self._forward(inputs, self.sites, self._step, None, readings)
        for raw in readings.events:
            job = self.rows[raw.row]
            self._report(job, raw, "generated", len(job.generated) - 1, job.generated[-1])
        for row, job in enumerate(self.rows):
            if not job.finished:
                self._next_token(job, logits[row])
        self.stats["steps"] += 1

    def _rebuild_sites(self) -> list[Site]:
        """The batch's sites after rows joined or left, with each monitor's "fired" state
        carried over (so its action keeps applying, and is not started twice)."""
        sites = build_row_sites([j.steps for j in self.rows], self.saes, self.pm, dtype=self.dtype)
        for site in sites:
            for watch in site.watches:
                rows = watch.rows.tolist() if watch.rows is not None else range(len(self.rows))
                for row in rows:
                    if watch.label in self.rows[row].fired:
                        watch.fired[row] = (0, 0)  # from the start of every later step
        self._sites_stale = False
        return sites

    def _forward(self, inputs, sites: list[Site], step, valid, readings) -> torch.Tensor:
        by_hook = sites_by_hook(sites)
        hooks = [h for h, here in by_hook.items() if any(s.busy_at(step) for s in here)]

        def edit(hook, hidden: torch.Tensor) -> torch.Tensor:
            return edit_hook(by_hook[hook], hook, step, hidden, valid, readings)

        return forward_step(self.model, inputs, hooks=hooks, edit=edit).cpu()

    def _report(self, job: Job, raw: RawEvent, phase: str, index: int, token: int) -> None:
        """A monitor event on ``job``; its action (stop, warn) takes effect here."""
        event = {
            "index": job.index,
            "group": raw.label,
            "monitor": raw.monitor,
            "phase": phase,
            "token_index": index,
            "token": self.decode([token]),
            "feature": raw.feature,
            "activation": round(raw.activation, 4),
            "action": raw.action,
            "first": raw.first,
        }
        job.pending_events.append(event)
        if not raw.first or raw.label in job.fired:
            return
        job.fired.add(raw.label)
        if raw.action == "warn":
            log.warning(
                "monitor %s fired on %s token %d %r", raw.label, phase, index, event["token"]
            )
        elif raw.action == "stop":
            job.finish(MONITOR_STOP)

    def _next_token(self, job: Job, logits: torch.Tensor) -> None:
        if job.finished:
            return
        sampling = job.sampling
        if len(job.generated) < sampling.min_tokens:
            # out of place: the logits come from an inference-mode pass
            logits = logits.index_fill(0, self._eos_index, float("-inf"))
        token = choose(logits, sampling, job.generator)
        if token in self.eos:
            job.finish("stop")
            return
        job.generated.append(token)
        self.stats["tokens"] += 1
        logprob = None
        if sampling.logprobs:
            logprob = logprob_entry(logits, token, sampling.top_logprobs, self.decode)
        text = job.stream.push(token)
        if job.stream.stopped:
            job.send(text=text, token=token, logprob=logprob)
            job.finish("stop")
        elif len(job.generated) >= sampling.max_tokens:
            job.send(text=text, token=token, logprob=logprob)
            job.finish("length")
        else:
            job.send(text=text, token=token, logprob=logprob)
