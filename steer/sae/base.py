"""The base class every SAE architecture derives from (its config: :mod:`steer.sae.config`).

An SAE maps a residual-stream vector ``x`` (``d_in`` wide) to ``d_sae`` feature activations and
back, with SAELens' parameter names and shapes::

    pre  = (x - b_dec if apply_b_dec_to_input else x) @ W_enc + b_enc    # W_enc [d_in, d_sae]
    f    = activation(pre)                                                # per architecture
    x'   = f @ W_dec + b_dec                                              # W_dec [d_sae, d_in]
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import torch

from steer.errors import SteerError
from steer.sae.config import SAEConfig, canonical_dtype, check_common

# torch dtypes by canonical name (steer.sae.config.DTYPE_NAMES says which names a cfg may use).
_TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}

# Narrow matrix products take a different BLAS kernel (a matrix-vector path) that sums in
# another order, so a few gathered encoder columns would not reproduce the full encode's bits.
# encode_features pads narrow requests to this many columns to stay on the full GEMM's path.
_MIN_GEMM_WIDTH = 32


def parse_dtype(name: str) -> torch.dtype:
    """The torch dtype for a cfg.json ``dtype`` string such as ``"float32"`` or
    ``"torch.bfloat16"``; raises ``ValueError`` for anything else."""
    return _TORCH_DTYPES[canonical_dtype(name)]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``: the spelling SAELens writes to cfg.json."""
    return str(dtype).removeprefix("torch.")


class Restore(NamedTuple):
    """How a reconstruction goes back to the model's space: ``y / divide * multiply + add``
    (``None``: that step is skipped). Per-token normalisations need the input to know it."""

    divide: torch.Tensor | float | None = None
    multiply: torch.Tensor | None = None
    add: torch.Tensor | None = None

    def apply(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` in the model's space."""
        if self.divide is not None:
            y = y / self.divide
        if self.multiply is not None:
            y = y * self.multiply
        return y if self.add is None else y + self.add

    def scale(self, delta: torch.Tensor) -> torch.Tensor:
        """A change of the reconstruction, in the model's space (the shift cancels)."""
        if self.divide is not None:
            delta = delta / self.divide
        return delta if self.multiply is None else delta * self.multiply


class SAE(torch.nn.Module):
    """Base class of all SAE architectures (built-in and from plugins).

    A subclass sets ``architecture`` (the cfg.json name), implements :meth:`activation`, and may
    add parameters in ``__init__`` (after calling ``super().__init__(cfg)``); every parameter
    and persistent buffer is saved to and loaded from ``sae_weights.safetensors`` under its
    attribute name. A subclass whose activation acts on each feature on its own sets
    ``columnwise = True`` and implements :meth:`activation_columns`, so that
    :meth:`encode_features` can skip the other encoder columns.
    """

    architecture: ClassVar[str]
    columnwise: ClassVar[bool] = False

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        type(self).check_config(cfg)
        self.cfg = cfg
        dtype = cfg.torch_dtype
        self.W_enc = torch.nn.Parameter(torch.zeros(cfg.d_in, cfg.d_sae, dtype=dtype))
        self.b_enc = torch.nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))
        # A transcoder's decoder writes another site, possibly of another width (d_out).
        out = cfg.output_width
        self.W_dec = torch.nn.Parameter(torch.zeros(cfg.d_sae, out, dtype=dtype))
        self.b_dec = torch.nn.Parameter(torch.zeros(out, dtype=dtype))

    @classmethod
    def check_config(cls, cfg: SAEConfig) -> None:
        """Raise ``ValueError`` if this class cannot run ``cfg`` (called before any weights are
        read, so a bad cfg.json fails fast). Subclasses extend it for their own keys."""
        check_common(cfg, cls.architecture, cls.__name__)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the weights (inputs are cast to it)."""
        return self.W_enc.dtype

    @property
    def device(self) -> torch.device:
        """The device of the weights."""
        return self.W_enc.device

    @property
    def needs_input_to_decode(self) -> bool:
        """Whether :meth:`decode` needs the input (``like=``): the SAE normalises each token
        (``constant_norm_rescale``, ``layer_norm``) or reads a centred stream."""
        cfg = self.cfg
        return cfg.centered_input or cfg.normalize_activations in (
            "constant_norm_rescale",
            "layer_norm",
        )

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, Restore]:
        """``x`` (cast to the SAE's dtype) as the SAE saw its training data, and how a
        reconstruction goes back: SAELens's ``normalize_activations`` modes, after
        TransformerLens's centring when the SAE was trained on a centred stream."""
        cfg = self.cfg
        x = x.to(self.W_enc.dtype)
        shift = None
        if cfg.centered_input:
            shift = x.mean(dim=-1, keepdim=True)
            x = x - shift
        mode = cfg.normalize_activations
        if mode == "constant_norm_rescale":
            coeff = (cfg.d_in**0.5) / x.norm(dim=-1, keepdim=True)
            return x * coeff, Restore(divide=coeff, add=shift)
        if mode == "layer_norm":
            mu = x.mean(dim=-1, keepdim=True)
            centred = x - mu
            std = centred.std(dim=-1, keepdim=True)
            # As SAELens: divide by std + eps, multiply back by std alone.
            add = mu if shift is None else mu + shift
            return centred / (std + 1e-5), Restore(multiply=std, add=add)
        if mode == "expected_average_only_in":  # until fold_for_inference folds the factor
            factor = float(cfg.norm_scaling_factor)
            return x * factor, Restore(divide=factor, add=shift)
        return x, Restore(add=shift)

    def _sae_in(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)[0]
        return x - self.b_dec if self.cfg.apply_b_dec_to_input else x

    @torch.no_grad()
    def fold_for_inference(self) -> None:
        """Fold settings that are a fixed rescaling into the weights, as SAELens does when it
        loads: ``expected_average_only_in``'s factor (encoder times it, decoder and b_dec
        divided by it) and TopK's ``rescale_acts_by_decoder_norm`` (decoder rows made unit,
        encoder columns and b_enc multiplied by the old norms). Feature activations and
        reconstructions are unchanged; the config then says ``none`` / ``false``, and its
        metadata records what was folded."""
        cfg = self.cfg
        folded = {}
        if cfg.normalize_activations == "expected_average_only_in":
            factor = float(cfg.norm_scaling_factor)
            # As SAELens's fold_activation_norm_scaling_factor, division included (x / f and
            # x * (1 / f) round differently), so the folded weights are its bits.
            self._scale_param("W_enc", factor)
            self._scale_param("W_dec", factor, divide=True)
            self._scale_param("b_dec", factor, divide=True)
            folded["folded_norm_scaling_factor"] = factor
        if cfg.rescale_acts_by_decoder_norm:
            norms = self.W_dec.float().norm(dim=-1)
            self._scale_param("W_enc", norms)
            self._scale_param("b_enc", norms)
            self._scale_param("W_dec", norms.unsqueeze(1), divide=True)
            folded["folded_decoder_norms"] = True
        if folded:
            self.cfg = dataclasses.replace(
                cfg,
                normalize_activations="none"
                if "folded_norm_scaling_factor" in folded
                else cfg.normalize_activations,
                norm_scaling_factor=None,
                rescale_acts_by_decoder_norm=False,
                metadata={**cfg.metadata, **folded},
            )

    def _scale_param(
        self, name: str, factor: torch.Tensor | float, *, divide: bool = False
    ) -> None:
        # In float32 at least, so a bf16 SAE is not rounded twice.
        param = getattr(self, name)
        work = param.data.to(torch.promote_types(param.dtype, torch.float32))
        param.data.copy_((work / factor if divide else work * factor).to(param.dtype))

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations ``[..., d_sae]`` of ``x`` ``[..., d_in]`` (cast to the SAE's
        dtype)."""
        return self._sae_in(x) @ self.W_enc + self.b_enc

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """Feature activations from all pre-activations ``[..., d_sae]``."""
        raise NotImplementedError(f"{type(self).__name__} must implement activation()")

    def activation_columns(self, pre: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Activations of features ``idx`` from their own pre-activations ``[..., len(idx)]``.

        Only called when ``columnwise`` is true; must apply the same float operations as
        :meth:`activation` does to those columns.
        """
        raise NotImplementedError(f"{type(self).__name__} is not columnwise")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations ``[..., d_sae]`` of ``x`` ``[..., d_in]``. ``x`` is cast to the
        SAE's dtype, and so is the result."""
        return self.activation(self.pre_acts(x))

    def encode_features(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Activations ``[..., len(idx)]`` of just the features ``idx``; equal to
        ``encode(x)[..., idx]``.

        Columnwise architectures (standard, jumprelu) compute only those encoder columns, which
        is what makes editing a few features cheap. Others (topk: a feature's value depends on
        the k-th largest pre-activation) run the full encode and pick the columns.
        """
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.W_enc.device)
        if not self.columnwise:
            return self.encode(x)[..., idx]
        return self.activation_columns(self.pre_acts_columns(x, idx), idx)

    def encode_features_bound(
        self, x: torch.Tensor, idx: torch.Tensor
    ) -> tuple[torch.Tensor, bool]:
        """A cheap read of features ``idx``: ``(values [..., len(idx)], exact)``.

        Columnwise architectures give the exact activations from their own encoder columns.
        Architectures with an :meth:`activation_bound_columns` (topk) give, from the same
        columns, an upper bound that equals the activation wherever the feature is on, and
        ``exact=False``: a threshold test on the bound never misses a hit, and only the
        positions that pass need the full encode (this is how monitors stay cheap). Others
        run the full encode.
        """
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.W_enc.device)
        if self.columnwise:
            return self.activation_columns(self.pre_acts_columns(x, idx), idx), True
        bound = self.activation_bound_columns(self.pre_acts_columns(x, idx), idx)
        if bound is None:
            return self.encode(x)[..., idx], True
        return bound, False

    def activation_bound_columns(self, pre: torch.Tensor, idx: torch.Tensor) -> torch.Tensor | None:
        """For architectures that are not columnwise: an upper bound on the activations of
        features ``idx`` from their own pre-activations, equal to the activation wherever the
        feature is on; ``None`` (the default) where there is no such bound."""
        return None

    def pre_acts_columns(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Encoder pre-activations ``[..., len(idx)]`` of just the features ``idx``."""
        w = self.W_enc[:, idx]
        m = w.shape[1]
        width = min(_MIN_GEMM_WIDTH, self.cfg.d_sae)
        if m < width:
            w = torch.cat([w, w.new_zeros(w.shape[0], width - m)], dim=1)
        return (self._sae_in(x) @ w)[..., :m] + self.b_enc[idx]

    def decode(self, f: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruction ``[..., d_in]`` (a transcoder: ``[..., d_out]``) of feature
        activations ``f`` ``[..., d_sae]``, in the model's space.

        ``like`` is the input ``f`` was encoded from; it is needed only when
        :attr:`needs_input_to_decode` (a per-token normalisation or a centred stream).
        """
        y = f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec
        return self.restore_for(like).apply(y)

    def restore_for(self, like: torch.Tensor | None) -> Restore:
        """How this SAE's reconstructions of ``like`` go back to the model's space."""
        if like is not None:
            return self.normalize(like)[1]
        if self.needs_input_to_decode:
            raise ValueError(
                f"this SAE's output depends on its input (normalize_activations="
                f"{self.cfg.normalize_activations!r}, centred={self.cfg.centered_input}): "
                "pass like="
            )
        if self.cfg.normalize_activations == "expected_average_only_in":
            return Restore(divide=float(self.cfg.norm_scaling_factor))
        return Restore()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x))``: the SAE's reconstruction of ``x`` (a transcoder: its
        prediction of the output site)."""
        return self.decode(self.encode(x), like=x)

    def decoder_rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Decoder directions ``[len(idx), d_in]`` of features ``idx`` (rows of ``W_dec``)."""
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.W_dec.device)
        return self.W_dec[idx]

    def extra_repr(self) -> str:
        cfg = self.cfg
        k = f", k={cfg.k}" if cfg.k is not None else ""
        out = f", d_out={cfg.d_out}" if cfg.d_out is not None else ""
        return f"{cfg.architecture}, d_in={cfg.d_in}, d_sae={cfg.d_sae}{out}{k}, layer={cfg.layer}"


def construct(cls: type[SAE], cfg: SAEConfig, *, where: str) -> SAE:
    """``cls(cfg)``, with a config the class refuses reported as a one-line SteerError."""
    try:
        return cls(cfg)
    except (ValueError, TypeError) as exc:
        raise SteerError(str(exc).splitlines()[0], where=where) from exc
