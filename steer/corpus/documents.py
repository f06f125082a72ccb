"""Documents from text files and Hugging Face datasets, as the model should see them.

``.txt`` files split on blank lines and ``<|endoftext|>``; JSON(L) records give a ``text``
field or instruction/chat turns rendered with the tokenizer's chat template; a Hugging Face
dataset is streamed (``pip install steer[hf]``, needs network).
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steer.errors import SteerError

log = logging.getLogger(__name__)


_DOC_SPLIT = re.compile(r"\n\s*\n|<\|endoftext\|>")
_HUMAN, _ASSISTANT = "### Human:", " ### Assistant: "


@dataclass(frozen=True)
class HFSource:
    """A Hugging Face dataset streamed with the ``datasets`` library (needs network and
    ``pip install steer[hf]``). Records are read in order; ``max_rows`` bounds how many."""

    name: str
    split: str = "train"
    text_field: str = "text"
    config: str | None = None
    max_rows: int | None = None

    def __str__(self) -> str:
        config = f"/{self.config}" if self.config else ""
        return f"hf:{self.name}{config}:{self.split}"


DataSource = str | Path | HFSource


def source_files(paths: Iterable[DataSource]) -> list[Path]:
    """Expand folders to the ``.txt``/``.json``/``.jsonl`` files inside them (sorted).
    Hugging Face sources have no local files and are skipped."""
    out: list[Path] = []
    for raw in paths:
        if isinstance(raw, HFSource):
            continue
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".txt", ".json", ".jsonl"))
            if not found:
                raise SteerError("folder holds no .txt, .json or .jsonl files", where=str(path))
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise SteerError("data file not found", where=str(path))
    return out


def read_documents(path: str | Path, tokenizer: Any) -> list[str]:
    """The documents in one file, as the model should see them.

    ``.txt``: split on blank lines and ``<|endoftext|>``. ``.jsonl``/``.json``: records with a
    ``text`` field (plain text, or dolly's ``### Human: ... ### Assistant: ...``, which is
    rendered as a chat) or ``instruction``/``input``/``output`` (+ optional ``history``),
    rendered with the tokenizer's chat template.
    """
    path = Path(path)
    if not path.is_file():
        raise SteerError("data file not found", where=str(path))
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise SteerError("data file is empty", where=str(path))
    if path.suffix == ".txt":
        docs = [d.strip() for d in _DOC_SPLIT.split(text)]
    elif path.suffix in (".json", ".jsonl"):
        records = _json_records(text, path)
        docs = [_render_record(rec, tokenizer, f"{path}:{i + 1}") for i, rec in enumerate(records)]
    else:
        raise SteerError("unsupported data file (use .txt, .json or .jsonl)", where=str(path))
    docs = [d for d in docs if d]
    if not docs:
        raise SteerError("data file holds no text", where=str(path))
    return docs


def _load_dataset(source: HFSource) -> Iterable[Any]:
    """The records of ``source``, streamed (the one place that calls ``datasets``)."""
    try:
        import datasets
    except ImportError:
        raise SteerError(
            "reading Hugging Face datasets needs the datasets library: pip install steer[hf]",
            where=str(source),
        ) from None
    try:
        rows = datasets.load_dataset(source.name, source.config, split=source.split, streaming=True)
    except Exception as exc:  # network, unknown repo or split: datasets raises many kinds
        raise SteerError(
            f"cannot load the dataset: {_first_line(exc)}", where=str(source)
        ) from None
    return rows


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _stream(source: HFSource) -> Iterator[Any]:
    # Streaming reads over the network while iterating, so failures can come at any record.
    rows = iter(_load_dataset(source))
    for i in itertools.count(1):
        if source.max_rows is not None and i > source.max_rows:
            return
        try:
            yield next(rows)
        except StopIteration:
            return
        except Exception as exc:
            raise SteerError(
                f"cannot read record {i}: {_first_line(exc)}", where=str(source)
            ) from None


def iter_hf_documents(source: HFSource, tokenizer: Any) -> Iterator[str]:
    """The documents of a Hugging Face dataset, rendered like JSONL records: the
    ``text_field`` of each record (chat-formatted ``### Human:`` text goes through the chat
    template). Empty documents are skipped; at most ``max_rows`` records are read."""
    for i, rec in enumerate(_stream(source)):
        where = f"{source}:{i + 1}"
        if not isinstance(rec, dict):
            raise SteerError("record is not a mapping", where=where)
        text = _field(rec, source.text_field, where)
        if text.startswith(_HUMAN) and _ASSISTANT in text:
            text = _render_record({"text": text}, tokenizer, where)
        if text.strip():
            yield text.strip()


def _json_records(text: str, path: Path) -> list[Any]:
    try:
        if path.suffix == ".json":
            data = json.loads(text)
            if not isinstance(data, list):
                raise SteerError("a .json data file must hold a list of records", where=str(path))
            return data
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise SteerError(f"invalid JSON at line {exc.lineno}: {exc.msg}", where=str(path)) from None


def _render_record(rec: Any, tokenizer: Any, where: str) -> str:
    if not isinstance(rec, dict):
        raise SteerError("record is not a JSON object", where=where)
    if "instruction" in rec:
        prompt = _field(rec, "instruction", where)
        extra = rec.get("input") or ""
        if extra:
            prompt = f"{prompt}\n\n{_field(rec, 'input', where)}"
        turns = [(str(u), str(a)) for u, a in rec.get("history") or []]
        turns.append((prompt, _field(rec, "output", where)))
        return _chat(tokenizer, turns, where)
    text = _field(rec, "text", where)
    if text.startswith(_HUMAN) and _ASSISTANT in text:
        user, answer = text[len(_HUMAN) :].split(_ASSISTANT, 1)
        return _chat(tokenizer, [(user.strip(), answer.strip())], where)
    return text.strip()


def _field(rec: dict, name: str, where: str) -> str:
    if name not in rec:
        raise SteerError(f"record has no {name!r} field", where=where)
    if not isinstance(rec[name], str):
        raise SteerError(f"field {name!r} is {type(rec[name]).__name__}, not text", where=where)
    return rec[name]


def _chat(tokenizer: Any, turns: list[tuple[str, str]], where: str) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise SteerError("instruction data needs a model with a chat template", where=where)
    messages = []
    for user, answer in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return tokenizer.apply_chat_template(messages, tokenize=False)
