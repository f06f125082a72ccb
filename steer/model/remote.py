"""Running traces on a remote NDIF server through nnsight's remote backend.

A recipe's ``remote:`` says where its traces run:

* ``false`` (the default): here, on the loaded model;
* ``true``: on the NDIF server nnsight is configured for (``CONFIG.API.HOST`` or
  ``NDIF_HOST``; the API key from ``NDIF_API_KEY``);
* ``"http://host:port"`` (or https): on that NDIF-style server;
* ``"local"``: nnsight's dry run of the remote path: each trace is serialised as it would be
  sent, deserialised, and run here. No server; this is how CI tests the remote path.

A remote server has torch, transformers and nnsight, not steer. The code a trace runs (the
edits, the SAE and its weights) is therefore sent by value with each request (nnsight's
``register``, scoped to the request by :func:`shipped`): an SAE from a local folder goes to
the server as tensors. The server names its model by a Hugging Face Hub id, so a model that
has none (the bundled GGUF, a ``.gguf`` file, a local folder) cannot run there
(:func:`remote_model_problem`), and the model is loaded here without weights
(:func:`load_remote_model`). No torch at import: ``steer check`` validates ``remote:`` too.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from steer.errors import SteerError

LOCAL = "local"
# steer's own packages: sent by value, since the server has neither installed.
SHIPPED_PACKAGES = ("steer", "steer_plugins")
EXAMPLE_MODEL = "meta-llama/Llama-3.1-8B"

Remote = bool | str


def parse_remote(value: Any) -> Remote:
    """A recipe's ``remote:`` value, checked: ``true``/``false``, ``"local"``, or an
    ``http(s)://`` URL of a server. Raises ``ValueError`` with the one line to show."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        if value == LOCAL:
            return value
        parts = urlsplit(value)
        if (
            parts.scheme in ("http", "https")
            and parts.netloc
            and not any(c.isspace() for c in value)
        ):
            return value
    raise ValueError(
        f"expected true, false, {LOCAL!r} or a server URL (http:// or https://), got {value!r}"
    )


def sends_requests(remote: Remote) -> bool:
    """Whether traces go to a server (``true`` or a URL), not the local dry run or here."""
    return remote is True or (isinstance(remote, str) and remote != LOCAL)


def remote_model_problem(name: str) -> str | None:
    """Why the model ``name`` cannot run on an NDIF server (it is keyed by a Hub id there),
    or ``None``. Opens no network connection: the Hub itself is asked when a trace is sent."""
    from steer.model.load import DEFAULT_MODEL

    hint = f"name a model the server hosts by its Hugging Face id, e.g. {EXAMPLE_MODEL}"
    if name == DEFAULT_MODEL:
        what = "the bundled GGUF model"
    elif name.endswith(".gguf"):
        what = "a GGUF file"
    elif Path(name).expanduser().exists() or name.startswith((".", "/", "~")):
        what = "a local folder"
    else:
        return None
    return f"{name!r} is {what}, which a remote server cannot load: {hint}"


@contextlib.contextmanager
def shipped(remote: Remote) -> Iterator[dict[str, Any]]:
    """The keyword arguments that send a trace where ``remote`` says (none when it runs
    here), with steer's code registered for sending by value while the trace is serialised.

    Registration is undone afterwards: nnsight's serialiser is cloudpickle, and leaving steer
    registered would change how anything else in this process pickles steer's objects.
    """
    if not remote:
        yield {}
        return
    import cloudpickle

    registered = cloudpickle.list_registry_pickle_by_value()  # by the user: left as it is
    added = [
        sys.modules[name]
        for name in SHIPPED_PACKAGES
        if name in sys.modules and name not in registered  # not imported: not in any trace
    ]
    for module in added:
        cloudpickle.register_pickle_by_value(module)
    try:
        yield {"remote": remote}
    finally:
        for module in added:
            cloudpickle.unregister_pickle_by_value(module)


def load_remote_model(name: str, remote: Remote) -> Any:
    """The client side of a model that runs on a server: its config, tokenizer and generation
    settings, and the module tree with no weights (on torch's ``meta`` device): enough to build
    traces, tokenize and decode, with nothing of a 70B model downloaded but its config."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from steer.model.load import LoadedModel
    from steer.model.names import require_downloadable

    problem = remote_model_problem(name)
    if problem is not None:
        raise SteerError(problem, where="model")
    require_downloadable(name)
    try:
        config = AutoConfig.from_pretrained(name)
        tokenizer = AutoTokenizer.from_pretrained(name)
        with torch.device("meta"):
            hf = AutoModelForCausalLM.from_config(config)
        with contextlib.suppress(OSError):  # a repo without generation_config.json
            hf.generation_config = GenerationConfig.from_pretrained(name)
    except OSError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SteerError(f"cannot read the model from the Hub: {first}", where=name) from None
    hf.config.name_or_path = name  # nnsight keys the remote model by it
    return LoadedModel(name=name, hf=hf.eval(), tokenizer=tokenizer, device="cpu", remote=remote)
