"""The feature index of an SAE shipped with steer, built on first use.

A shipped SAE may carry its index (``features.sqlite`` in its folder) or, to keep the package
small, only how to build it: ``index.json`` in its folder, which names text shipped with steer
and the build's settings, so that every user builds the same index::

    {"format": "steer-index-recipe/1",
     "data": ["data/corpus/wikitext2-excerpt.txt", "data/corpus/train-sample"],
     "max_tokens": null, "ctx_len": 128, "top_k": 20, "context_tokens": 24, "samples": 24,
     "batch_windows": 16}

``data`` paths are relative to the ``steer`` package folder (files, or folders read one level
deep as everywhere else); ``max_tokens`` ``null`` reads all of them. The first command that
needs the index (``steer features show``, ``search``, ``dashboard``, ``explain``, ``score``)
says what it builds, builds it with a progress bar into the steer cache
(``<cache>/indexes/<name>/features.sqlite``; never into the package, which may be read-only)
and opens it; later commands find it there. A stopped build continues where it stopped (the
index builder's resumable ``.partial`` file). A cached index built from other weights, data
or settings (steer upgraded) is rebuilt.

SAEs that are not shipped keep their index beside them, built with ``steer features index``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from steer.errors import SteerError
from steer.features.store import INDEX_FILENAME, FeatureIndex, index_file

RECIPE_FILE = "index.json"
RECIPE_FORMAT = "steer-index-recipe/1"
PACKAGE_DIR = Path(__file__).resolve().parent.parent
# The notice's time estimate, for SmolLM2-135M and an SAE of 8,192 features on one CPU thread
# (measured on this project's 2-core machine, busy: 4k tokens in 36 s, of which ~25 s load the
# model and compute every feature's output tokens, then ~400 tokens/s), rounded down.
CPU_FIXED_SECONDS = 30
CPU_TOKENS_PER_SECOND = 350
# English text in the shipped files runs at about 4 bytes per SmolLM2 token; the estimate is
# made before any tokenizer loads.
BYTES_PER_TOKEN = 4.0
# The least value of each number in a recipe (``max_tokens`` may also be null: all the data).
MIN_VALUES = {
    "max_tokens": 128,
    "ctx_len": 2,
    "top_k": 1,
    "context_tokens": 2,
    "samples": 0,
    "batch_windows": 1,
}


@dataclass(frozen=True)
class IndexRecipe:
    """How the index of a shipped SAE is built: the ``index.json`` in its folder."""

    data: tuple[str, ...]
    max_tokens: int | None = None
    ctx_len: int = 128
    top_k: int = 20
    context_tokens: int = 24
    samples: int = 24
    batch_windows: int = 16
    model: str = "smollm2-135m-instruct"

    def paths(self) -> list[Path]:
        """The data files and folders, inside the installed package."""
        return [PACKAGE_DIR / p for p in self.data]

    def build_settings(self) -> dict[str, Any]:
        """The keyword arguments of :func:`steer.features.index.build_index` it fixes."""
        keys = ("max_tokens", "ctx_len", "top_k", "context_tokens", "samples", "batch_windows")
        return {k: getattr(self, k) for k in keys}

    def estimated_tokens(self) -> int:
        """Roughly how many tokens the build reads (from the files' sizes)."""
        from steer.corpus.documents import source_files

        size = sum(p.stat().st_size for p in source_files(self.paths()))
        tokens = int(size / BYTES_PER_TOKEN)
        return min(tokens, self.max_tokens) if self.max_tokens else tokens


def read_recipe(sae_folder: Path) -> IndexRecipe | None:
    """The index recipe in ``sae_folder`` (``index.json``), or None when there is none. A file
    that is not a valid recipe is a one-line :class:`SteerError` naming it."""
    path = Path(sae_folder) / RECIPE_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SteerError(f"corrupt index recipe: {exc}", where=str(path)) from None
    if not isinstance(raw, dict) or raw.get("format") != RECIPE_FORMAT:
        raise SteerError(f"not an index recipe (format {RECIPE_FORMAT!r})", where=str(path))
    known = {f.name for f in fields(IndexRecipe)}
    unknown = sorted(set(raw) - known - {"format", "comment"})
    data = raw.get("data")
    if unknown or not isinstance(data, list) or not data:
        why = f"unknown keys {unknown}" if unknown else "'data' must be a non-empty list"
        raise SteerError(f"corrupt index recipe: {why}", where=str(path))
    for item in data:
        inside = isinstance(item, str) and not Path(item).is_absolute()
        if not inside or not (PACKAGE_DIR / item).resolve().is_relative_to(PACKAGE_DIR):
            raise SteerError(
                f"index recipe data {item!r} is not a path inside the steer package",
                where=str(path),
            )
    values = {k: v for k, v in raw.items() if k in known}
    for key, value in values.items():
        least = MIN_VALUES.get(key)
        if least is None or (key == "max_tokens" and value is None):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise SteerError(
                f"index recipe {key} must be a whole number >= {least} (got {value!r})",
                where=str(path),
            )
    return IndexRecipe(**{**values, "data": tuple(data)})


def cached_index_path(name: str) -> Path:
    """Where the index of the shipped SAE ``name`` is built: in the steer cache."""
    from steer.model import cache_dir

    return cache_dir() / "indexes" / name / INDEX_FILENAME


def shipped_name(sae: str, folder: Path) -> str | None:
    """The builtin name of the SAE the user named ``sae`` (folder ``folder``), or None when it
    is not one shipped with steer."""
    from steer.sae import sources
    from steer.sae.labels import is_shipped

    if str(sae) in sources.builtin_saes():
        return str(sae)
    return Path(folder).name if is_shipped(folder) else None


def index_location(sae: str, folder: Path) -> tuple[Path, IndexRecipe | None]:
    """``(index file, recipe)``: where the index of an SAE is read, and the recipe to build it
    there on first use (None: the file is there already, or the SAE has no recipe)."""
    own = index_file(folder)
    name = shipped_name(sae, folder)
    if name is None or own.is_file():
        return own, None
    recipe = read_recipe(folder)
    if recipe is None:
        return own, None
    return cached_index_path(name), recipe


def is_current(db: Path, folder: Path, recipe: IndexRecipe) -> bool | None:
    """Whether the cached index ``db`` (or its work file) was built from the SAE's weights, the
    recipe's data and settings: True, False (rebuild it), None (no file yet)."""
    from steer.corpus.documents import source_files
    from steer.features.index import partial_path
    from steer.features.index_db import read_meta
    from steer.io import file_sha256
    from steer.sae.configs import WEIGHTS_FILENAME

    existing = [p for p in (db, partial_path(db)) if p.exists()]
    if not existing:
        return None
    weights = Path(folder) / WEIGHTS_FILENAME
    want = {
        "sae_sha256": file_sha256(weights) if weights.is_file() else None,
        "data_sha256": [file_sha256(p) for p in source_files(recipe.paths())],
        "max_tokens": recipe.max_tokens,
        "ctx_len": recipe.ctx_len,
        "top_k": recipe.top_k,
        "context_tokens": recipe.context_tokens,
        "quantile_samples": recipe.samples,
    }
    for path in existing:
        meta = read_meta(path) or {}
        if any(meta.get(k) != v for k, v in want.items()):
            return False
    return True


def notice_text(name: str, recipe: IndexRecipe, db: Path) -> str:
    """The one line said before a first-use build: what, from which text, how long, where."""
    tokens = recipe.estimated_tokens()
    minutes = max(1, round((CPU_FIXED_SECONDS + tokens / CPU_TOKENS_PER_SECOND) / 60))
    corpus = "data/corpus/"
    if all(p.startswith(corpus) for p in recipe.data):
        texts = f"steer/{corpus}: " + ", ".join(p.removeprefix(corpus) for p in recipe.data)
    else:
        texts = ", ".join(f"steer/{p}" for p in recipe.data)
    return (
        f"building the feature index of {name} on first use: ~{tokens // 1000}k tokens of the "
        f"text shipped with steer ({texts}); about {minutes} min on one CPU core, less on a "
        f"GPU; kept in {db} (if stopped, the next run continues it)"
    )


def say_on_stderr(line: str) -> None:
    """Print one line on stderr (the default ``notice`` of :func:`ensure_index`)."""
    print(line, file=sys.stderr, flush=True)


@contextmanager
def build_lock(db: Path, waiting: Callable[[], None]) -> Iterator[None]:
    """Hold an exclusive lock on ``<db>.lock`` while the index ``db`` is built, so that two
    commands started together do not both build it: the second calls ``waiting`` and waits,
    then finds the index built. No lock where the platform has no ``fcntl`` (Windows)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(db.with_name(db.name + ".lock"), "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waiting()
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_index(
    sae: str,
    folder: Path,
    *,
    notice: Callable[[str], None] | None = None,
    progress: bool = True,
) -> Path:
    """The index file of the SAE ``sae`` (folder ``folder``), built first when it is a shipped
    SAE with an ``index.json`` and no index yet (or a stale one in the cache).

    ``notice`` gets the one-line messages (default: printed on stderr); the build shows a
    progress bar unless ``progress`` is false. For any other SAE the path is that of its own
    index, built or not (:meth:`FeatureIndex.open` says how to build a missing one).
    """
    from steer.io import check_writable_dir

    db, recipe = index_location(sae, folder)
    if recipe is None or (is_current(db, folder, recipe) and db.is_file()):
        return db
    say = notice or say_on_stderr
    name = shipped_name(sae, folder) or Path(folder).name
    check_writable_dir(db.parent, what="steer cache")
    db.parent.mkdir(parents=True, exist_ok=True)
    waiting = f"another steer command is building the feature index of {name}; waiting for it"
    with build_lock(db, lambda: say(waiting)):
        current = is_current(db, folder, recipe)
        if current and db.is_file():  # built meanwhile by the command waited for
            return db
        rebuild = current is False
        build_cached_index(name, folder, recipe, db, rebuild=rebuild, say=say, progress=progress)
    return db


def build_cached_index(
    name: str,
    folder: Path,
    recipe: IndexRecipe,
    db: Path,
    *,
    rebuild: bool,
    say: Callable[[str], None],
    progress: bool = True,
) -> None:
    """Build the index of the shipped SAE ``name`` by its ``recipe`` into ``db`` (continuing a
    partial build of the same recipe; ``rebuild`` replaces one of another), saying so first."""
    from steer.features.index import build_index
    from steer.features.index_db import check_index_target
    from steer.sae.loading import load_sae_and_model

    check_index_target(db, rebuild=rebuild)
    say(notice_text(name, recipe, db))
    _folder, loaded, lm = load_sae_and_model(folder, model=recipe.model)
    result = build_index(
        lm,
        loaded,
        folder,
        recipe.paths(),
        db=db,
        rebuild=rebuild,
        progress=progress,
        desc=f"index {name}",
        **recipe.build_settings(),
    )
    say(f"feature index ready: {result.tokens} tokens in {result.seconds:.0f} s ({db})")


def open_feature_index(
    sae: str,
    db: Path | None = None,
    *,
    notice: Callable[[str], None] | None = None,
    progress: bool = True,
) -> tuple[Path, FeatureIndex]:
    """``(folder, index)`` for the SAE a command names (builtin name or folder), checked
    against the SAE's weights: the index ``db`` when given (it must exist), else the SAE's
    own, built on first use for a shipped SAE (:func:`ensure_index`)."""
    from steer.sae.sources import sae_folder

    folder = sae_folder(sae)
    if db is not None:
        if not index_file(db).is_file():  # the index the user named
            raise SteerError("feature index not found (--db)", where=str(index_file(db)))
        path = index_file(db)
    else:
        path = ensure_index(sae, folder, notice=notice, progress=progress)
    index = FeatureIndex.open(path if path.is_file() else folder, sae=sae)
    index.check_sae(folder)
    return folder, index
