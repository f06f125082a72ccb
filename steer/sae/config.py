"""What an SAE is, without torch: :class:`SAEConfig`, the dtype names a cfg.json may use, the
layer a hook name reads, and the checks of the built-in architectures' configs.

Reading and checking a cfg.json needs nothing heavier than this module, so ``steer check``
answers without importing torch; :mod:`steer.sae.base` builds the modules that compute.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# Names a cfg.json may use for a dtype (SAELens writes "float32", older files "torch.float32";
# sparsify's safetensors headers say "F32"), and the canonical name of each.
DTYPE_NAMES: dict[str, str] = {
    "float32": "float32",
    "float": "float32",
    "f32": "float32",
    "float16": "float16",
    "half": "float16",
    "f16": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float64": "float64",
    "double": "float64",
    "f64": "float64",
}

# Hook names that say which block's output (residual stream) an SAE reads.
_HF_RESID = re.compile(r"(?:^|\.)(?:layers|h)\.(\d+)$")  # model.layers.N, layers.N, transformer.h.N
_TL_RESID = re.compile(r"^blocks\.(\d+)\.hook_resid_(post|pre)$")


def canonical_dtype(name: Any) -> str:
    """``"float32"`` for a cfg.json ``dtype`` such as ``"torch.float32"`` or ``"F32"``; raises
    ``ValueError`` for anything else."""
    key = str(name).strip().lower().removeprefix("torch.")
    if key not in DTYPE_NAMES:
        known = ", ".join(sorted(set(DTYPE_NAMES.values())))
        raise ValueError(f"dtype {name!r} is not supported (use one of {known})")
    return DTYPE_NAMES[key]


def layer_of_hook(hf_hook_name: str | None, hook_name: str | None) -> int | None:
    """The block whose output (residual stream) a hook reads, or ``None`` if unknown.

    ``model.layers.N`` / ``layers.N`` (Hugging Face, sparsify) and
    ``blocks.N.hook_resid_post`` (TransformerLens) are the output of block N;
    ``blocks.N.hook_resid_pre`` is the input of block N, i.e. the output of block N-1.
    """
    if hf_hook_name and (m := _HF_RESID.search(hf_hook_name)):
        return int(m.group(1))
    if hook_name and (m := _TL_RESID.match(hook_name)):
        n = int(m.group(1))
        if m.group(2) == "post":
            return n
        # resid_pre of block 0 is the embeddings: no block's output, so no layer.
        return n - 1 if n > 0 else None
    return None


@dataclass(frozen=True)
class SAEConfig:
    """What an SAE is: its architecture, sizes, and where in which model it was trained.

    ``hook_name`` is the TransformerLens name (``blocks.12.hook_resid_post``) and
    ``hf_hook_name`` the Hugging Face module whose output the SAE reads (``model.layers.12``).
    ``metadata`` holds every other cfg.json metadata key, so a load-save round trip keeps it.
    """

    architecture: str
    d_in: int
    d_sae: int
    dtype: str = "float32"
    apply_b_dec_to_input: bool = True
    normalize_activations: str = "none"
    k: int | None = None
    hook_name: str | None = None
    hf_hook_name: str | None = None
    model_name: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def layer(self) -> int | None:
        """The block whose output the SAE reads (from the hook names), or ``None``."""
        return layer_of_hook(self.hf_hook_name, self.hook_name)

    @property
    def torch_dtype(self) -> torch.dtype:
        """``dtype`` as a torch dtype."""
        from steer.sae.base import parse_dtype

        return parse_dtype(self.dtype)


def check_common(cfg: SAEConfig, architecture: str, cls_name: str) -> None:
    """What every architecture requires of its config; raises ``ValueError``."""
    if cfg.architecture != architecture:
        raise ValueError(
            f"config architecture {cfg.architecture!r} does not match {cls_name} ({architecture!r})"
        )
    for key in ("d_in", "d_sae"):
        value = getattr(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    if cfg.normalize_activations != "none":
        raise ValueError(
            f"normalize_activations {cfg.normalize_activations!r} is not supported (only 'none')"
        )
    canonical_dtype(cfg.dtype)


def check_topk(cfg: SAEConfig) -> None:
    """TopK also requires ``1 <= k <= d_sae``."""
    if cfg.k is None:
        raise ValueError("architecture 'topk' needs `k` (how many features stay on)")
    if isinstance(cfg.k, bool) or not isinstance(cfg.k, int) or not 1 <= cfg.k <= cfg.d_sae:
        raise ValueError(f"k must be an integer from 1 to d_sae={cfg.d_sae}, got {cfg.k!r}")


# The built-in architectures' config checks (architecture -> check), what their classes run
# too: a cfg.json of a built-in architecture is checked without importing its class.
BUILTIN_CHECKS: dict[str, Callable[[SAEConfig], None]] = {
    "standard": lambda cfg: check_common(cfg, "standard", "StandardSAE"),
    "topk": lambda cfg: (check_common(cfg, "topk", "TopKSAE"), check_topk(cfg)),
    "jumprelu": lambda cfg: check_common(cfg, "jumprelu", "JumpReLUSAE"),
}
