"""Text shipped inside steer (``steer/data/corpus/``): small licensed excerpts that recipes and
examples use, so they run from a clone or a ``pip install`` alone (sources and licences:
``steer/data/corpus/LICENSES.md``).

A recipe names a shipped file by its stem with the ``builtin:`` prefix
(``side_effect_data: builtin:wikitext2-excerpt``), never by a path into site-packages, the way
an SAE is named by ``builtin: smollm2-135m-res12-topk``.
"""

from __future__ import annotations

from pathlib import Path

from steer.errors import SteerError

BUILTIN_PREFIX = "builtin:"
# What the corpus readers take (steer.corpus.documents); LICENSES.md is not a text to read.
_TEXT_SUFFIXES = (".txt", ".jsonl", ".json")


def shipped_corpus_dir() -> Path:
    """The folder of shipped text, ``steer/data/corpus`` inside the installed package."""
    return Path(__file__).resolve().parent.parent / "data" / "corpus"


def shipped_texts() -> dict[str, Path]:
    """Every shipped text by name (the file's stem), sorted by name.

    Only the folder's own files are named: its subfolders (``train-sample/``, the corpus
    layout the shipped training recipe reads) are reached by path.
    """
    folder = shipped_corpus_dir()
    if not folder.is_dir():
        return {}
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix in _TEXT_SUFFIXES]
    return {p.stem: p for p in sorted(files, key=lambda p: p.stem)}


def shipped_text(name: str) -> Path:
    """The file of the shipped text ``name`` (e.g. ``wikitext2-excerpt``); an unknown name is
    a one-line :class:`SteerError` listing the shipped names."""
    texts = shipped_texts()
    if name not in texts:
        known = ", ".join(texts) or "none"
        raise SteerError(f"no shipped text named {name!r} (shipped: {known})")
    return texts[name]


def is_builtin(value: str | Path) -> bool:
    """Whether ``value`` names a shipped text (``builtin:NAME``) rather than a path."""
    return isinstance(value, str) and value.startswith(BUILTIN_PREFIX)


def resolve_text_path(value: str | Path, base: str | Path | None = None) -> Path:
    """The file a recipe's text path means: ``builtin:NAME`` is the shipped text NAME; any
    other path has ``~`` expanded and, when relative and ``base`` is given, is taken from
    ``base`` (the recipe's folder, not the working directory)."""
    if is_builtin(value):
        return shipped_text(str(value)[len(BUILTIN_PREFIX) :].strip())
    path = Path(value).expanduser()
    if base is not None and not path.is_absolute():
        path = (Path(base) / path).resolve()
    return path
