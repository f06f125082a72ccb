"""Sets of texts to score, contrast or probe: one text per line, or JSON(L) records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steer.corpus.documents import read_documents
from steer.errors import SteerError
from steer.io import check_text_file


def read_texts(path: str | Path, tokenizer: Any, *, max_texts: int | None = None) -> list[str]:
    """The texts of one set: JSONL/JSON records with a ``text`` field (read as
    :func:`steer.corpus.documents.read_documents` reads them), or plain text with one text per
    line. A missing or empty file (or one with no text) is a one-line :class:`SteerError`."""
    path = Path(path)
    check_text_file(path)
    if path.suffix in (".json", ".jsonl"):
        texts = read_documents(path, tokenizer)
    else:
        raw = path.read_text(encoding="utf-8")
        texts = [line.strip() for line in raw.splitlines() if line.strip()]
    if not texts:
        raise SteerError("no texts in the file (it is empty)", where=str(path))
    return texts[:max_texts] if max_texts is not None else texts
