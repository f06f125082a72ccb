"""What an SAE is, without torch: :class:`SAEConfig`, the dtype names a cfg.json may use, the
layer a hook name reads, and the checks of the built-in architectures' configs.

Reading and checking a cfg.json needs nothing heavier than this module, so ``steer check``
answers without importing torch; :mod:`steer.sae.base` builds the modules that compute.
"""

from __future__ import annotations

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
    from steer.model.sites import hook_of  # the one reader of hook names (torch-free)

    from_hf = hook_of(None, hf_hook_name)
    if from_hf is not None and from_hf.kind == "resid_post":  # the HF name wins
        return from_hf.layer
    hook = hook_of(hook_name)
    if hook is None or hook.kind not in ("resid_pre", "resid_post"):
        return None
    if hook.kind == "resid_post":
        return hook.layer
    # resid_pre of block 0 is the embeddings: no block's output, so no layer.
    return hook.layer - 1 if hook.layer > 0 else None


def agreed_site(cfg: SAEConfig, *, site: str | None, layer: int | None, where: str) -> Any:
    """The :class:`~steer.model.sites.Hook` an SAE's hook names give, after checking that a
    recipe's ``site`` and ``layer`` agree with it (one-line SteerErrors at ``where.site`` /
    ``where.layer``); ``None`` when the names give no site. Torch-free: ``steer check`` runs it
    on a cfg.json, loading runs it on the SAE."""
    from steer.errors import SteerError
    from steer.model.sites import hook_of

    own = hook_of(cfg.hook_name, cfg.hf_hook_name)
    if own is None:
        return None
    if site is not None and site != own.kind:
        raise SteerError(
            f"site {site} does not match the SAE, trained on {own}", where=f"{where}.site"
        )
    # `layer` alone has always meant the block whose output the SAE reads; an SAE on block
    # N+1's input (hook_resid_pre) reads that same vector.
    if layer is not None and layer not in (own.layer, cfg.layer):
        trained = cfg.layer if cfg.layer is not None else own.layer
        raise SteerError(
            f"layer {layer} does not match the SAE, trained on layer {trained}",
            where=f"{where}.layer",
        )
    return own


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
    # What SAELens keeps in cfg.json or its release list and steer applies: the input scale of
    # ``expected_average_only_in`` (the factor is folded into the weights when they load),
    # TopK's decoder-norm rescaling (folded the same way), and a transcoder's output width and
    # the site it writes.
    norm_scaling_factor: float | None = None
    rescale_acts_by_decoder_norm: bool = False
    d_out: int | None = None
    hook_name_out: str | None = None
    hf_hook_name_out: str | None = None

    @property
    def layer(self) -> int | None:
        """The block whose output the SAE reads (from the hook names), or ``None``."""
        return layer_of_hook(self.hf_hook_name, self.hook_name)

    @property
    def output_width(self) -> int:
        """Width of what the decoder writes: ``d_out`` for a transcoder, else ``d_in``."""
        return self.d_out if self.d_out is not None else self.d_in

    @property
    def is_transcoder(self) -> bool:
        """Whether the SAE reads one site and writes another (a transcoder)."""
        return self.architecture in TRANSCODER_ARCHITECTURES

    @property
    def centered_input(self) -> bool:
        """Whether the SAE was trained on TransformerLens's centred residual stream
        (``model_from_pretrained_kwargs.center_writing_weights: true``): its input is the
        Hugging Face activation minus its mean over the hidden dimension."""
        kwargs = self.metadata.get("model_from_pretrained_kwargs")
        return isinstance(kwargs, dict) and kwargs.get("center_writing_weights") is True

    @property
    def torch_dtype(self) -> torch.dtype:
        """``dtype`` as a torch dtype."""
        from steer.sae.base import parse_dtype

        return parse_dtype(self.dtype)


# Architectures whose decoder writes a different site from the one the encoder reads.
TRANSCODER_ARCHITECTURES = (
    "transcoder",
    "skip_transcoder",
    "jumprelu_transcoder",
    "jumprelu_skip_transcoder",
    "topk_transcoder",
    "topk_skip_transcoder",
)

# SAELens's normalize_activations modes steer runs, and why it refuses the others.
NORMALIZATIONS = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")
_REFUSED_NORMALIZATIONS = {
    "covariance_whitening": "SAELens folds the whitening into the weights when training ends; "
    "a file still marked so lacks the whitening statistics",
}


def check_common(cfg: SAEConfig, architecture: str, cls_name: str) -> None:
    """What every architecture requires of its config; raises ``ValueError``."""
    if cfg.architecture != architecture:
        raise ValueError(
            f"config architecture {cfg.architecture!r} does not match {cls_name} ({architecture!r})"
        )
    for key in ("d_in", "d_sae"):
        _check_positive(key, getattr(cfg, key))
    if cfg.d_out is not None:
        _check_positive("d_out", cfg.d_out)
    _check_normalization(cfg)
    if cfg.rescale_acts_by_decoder_norm and architecture != "topk":
        raise ValueError(
            f"rescale_acts_by_decoder_norm is a TopK setting; architecture {architecture!r} "
            "does not have it"
        )
    if cfg.is_transcoder:
        if cfg.centered_input:
            raise ValueError("a transcoder trained on a centred residual stream is not supported")
        if cfg.apply_b_dec_to_input:
            raise ValueError(
                "a transcoder cannot subtract b_dec from its input (apply_b_dec_to_input must "
                "be false: b_dec lives at the output site)"
            )
        if cfg.normalize_activations not in ("none", "expected_average_only_in"):
            raise ValueError(
                f"normalize_activations {cfg.normalize_activations!r} is not supported for "
                "transcoders (the output site has no input to take the norm from)"
            )
    elif cfg.d_out is not None and cfg.d_out != cfg.d_in:
        raise ValueError(
            f"d_out {cfg.d_out} differs from d_in {cfg.d_in}, but only a "
            "transcoder writes a different width"
        )
    canonical_dtype(cfg.dtype)


def _check_positive(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")


def _check_normalization(cfg: SAEConfig) -> None:
    mode = cfg.normalize_activations
    if mode in _REFUSED_NORMALIZATIONS:
        raise ValueError(
            f"normalize_activations {mode!r} is not supported: {_REFUSED_NORMALIZATIONS[mode]}"
        )
    if mode not in NORMALIZATIONS:
        raise ValueError(
            f"normalize_activations {mode!r} is not a SAELens mode (known: "
            f"{', '.join(NORMALIZATIONS)})"
        )
    factor = cfg.norm_scaling_factor
    if mode == "expected_average_only_in":
        if factor is None:
            raise ValueError(
                "normalize_activations 'expected_average_only_in' needs norm_scaling_factor "
                "(SAELens keeps it in the release list: name the SAE by `release:` + `sae_id:`, "
                "or give `norm_scaling_factor:` in the recipe's SAE entry)"
            )
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
            raise ValueError(f"norm_scaling_factor must be a positive number, got {factor!r}")
        if factor != factor or factor == float("inf"):
            raise ValueError(f"norm_scaling_factor must be finite, got {factor!r}")


def check_topk(cfg: SAEConfig) -> None:
    """TopK also requires ``1 <= k <= d_sae``."""
    if cfg.k is None:
        raise ValueError(f"architecture {cfg.architecture!r} needs `k` (how many features stay on)")
    if isinstance(cfg.k, bool) or not isinstance(cfg.k, int) or not 1 <= cfg.k <= cfg.d_sae:
        raise ValueError(f"k must be an integer from 1 to d_sae={cfg.d_sae}, got {cfg.k!r}")


# The built-in architectures' config checks (architecture -> check), what their classes run
# too: a cfg.json of a built-in architecture is checked without importing its class.
BUILTIN_CHECKS: dict[str, Callable[[SAEConfig], None]] = {
    "standard": lambda cfg: check_common(cfg, "standard", "StandardSAE"),
    "topk": lambda cfg: (check_common(cfg, "topk", "TopKSAE"), check_topk(cfg)),
    "jumprelu": lambda cfg: check_common(cfg, "jumprelu", "JumpReLUSAE"),
    "gated": lambda cfg: check_common(cfg, "gated", "GatedSAE"),
    "transcoder": lambda cfg: check_common(cfg, "transcoder", "Transcoder"),
    "skip_transcoder": lambda cfg: check_common(cfg, "skip_transcoder", "SkipTranscoder"),
    "jumprelu_transcoder": lambda cfg: check_common(
        cfg, "jumprelu_transcoder", "JumpReLUTranscoder"
    ),
    "jumprelu_skip_transcoder": lambda cfg: check_common(
        cfg, "jumprelu_skip_transcoder", "JumpReLUSkipTranscoder"
    ),
    "topk_transcoder": lambda cfg: (
        check_common(cfg, "topk_transcoder", "TopKTranscoder"),
        check_topk(cfg),
    ),
    "topk_skip_transcoder": lambda cfg: (
        check_common(cfg, "topk_skip_transcoder", "TopKSkipTranscoder"),
        check_topk(cfg),
    ),
}
