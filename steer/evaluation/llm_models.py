"""Models of the ``llm`` library (``pip install 'steer[llm]'``), found and checked the same way
for the ``llm`` judge and for auto-interp's explainer and scorer."""

from __future__ import annotations

from typing import Any

from steer.errors import SteerError

# The bundled SmolLM2 through transformers (steer's own llm plugin, plugins/llm_models.py).
OFFLINE_MODEL = "steer-smollm2"


def llm_model(model_id: str) -> Any:
    """The ``llm`` model ``model_id`` (an id or alias), checked: the library is installed, the
    model known, and its key set if it needs one; each failure is one line."""
    try:
        import llm
    except ImportError:
        raise SteerError("this needs the llm library: pip install 'steer[llm]'") from None
    try:
        model = llm.get_model(model_id)
    except llm.UnknownModelError:
        raise SteerError(
            f"llm model {model_id!r} is not configured (`llm models` lists those that are)"
        ) from None
    except ImportError as exc:  # an llm plugin whose own dependencies are missing
        raise SteerError(
            f"the llm library failed to load its plugins ({exc}); set LLM_LOAD_PLUGINS to "
            "the plugins to load, e.g. LLM_LOAD_PLUGINS=steer"
        ) from None
    needs = getattr(model, "needs_key", None)
    env = getattr(model, "key_env_var", None)
    if needs and not llm.get_key(None, needs, env):
        raise SteerError(
            f"llm model {model_id!r} needs a key: `llm keys set {needs}`"
            + (f" or ${env}" if env else "")
        )
    return model
