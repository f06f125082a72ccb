"""SAELens as the peer a family reader is checked against: SAELens's own loader reads the same
files from an offline Hugging Face cache (:mod:`support.hf_cache`), its SAE is built the way
``SAE.from_pretrained_with_cfg_and_sparsity`` builds it, and steer's SAE must hold the same
weights and give the same features and reconstructions, to the bit.

SAELens is imported inside the functions: a test module imports this before its
``pytest.importorskip("sae_lens")``.
"""

from __future__ import annotations

from typing import Any

import torch


def saelens_sae(
    cfg_dict: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    *,
    dtype: str = "float32",
    norm_scaling_factor: float | None = None,
) -> Any:
    """SAELens's SAE for a loader's ``(cfg_dict, state_dict)``, built as
    ``SAE.from_pretrained_with_cfg_and_sparsity`` builds it: the config defaulted, the
    architecture's config and SAE classes, the state dict processed and assigned, the release
    list's ``norm_scaling_factor`` folded in where the config asks for one and a factor is
    given, and the SAE cast to ``dtype`` (from_pretrained's, default float32)."""
    from sae_lens import SAE
    from sae_lens.loading.pretrained_sae_loaders import handle_config_defaulting

    cfg_dict = handle_config_defaulting(dict(cfg_dict))
    sae_cfg = SAE.get_sae_config_class_for_architecture(cfg_dict["architecture"]).from_dict(
        cfg_dict
    )
    sae = SAE.get_sae_class_for_architecture(sae_cfg.architecture())(sae_cfg)
    sae.process_state_dict_for_loading(state_dict)
    sae.load_state_dict(state_dict, assign=True)
    scaled = cfg_dict.get("normalize_activations") == "expected_average_only_in"
    if scaled and norm_scaling_factor is not None:
        sae.fold_activation_norm_scaling_factor(norm_scaling_factor)
    return sae.to(dtype=getattr(torch, dtype))


def saelens_peer(
    loader: str,
    repo_id: str,
    folder_name: str,
    *,
    dtype: str = "float32",
    norm_scaling_factor: float | None = None,
    **cfg_overrides: Any,
) -> tuple[Any, dict[str, Any]]:
    """``(SAELens's SAE, its loader's cfg dict)`` for ``folder_name`` of ``repo_id`` in the
    Hugging Face cache: SAELens's loader named ``loader`` (``"goodfire"``, ``"llama_scope"``:
    the names of its release list) reads it with from_pretrained's ``device`` and ``dtype``
    plus ``cfg_overrides`` (what the release list would add; SAELens hard-codes some sizes,
    which the tests' tiny fixtures override), and :func:`saelens_sae` builds it."""
    from sae_lens.loading.pretrained_sae_loaders import NAMED_PRETRAINED_SAE_LOADERS

    overrides = {"device": "cpu", "dtype": dtype, **cfg_overrides}
    cfg_dict, state_dict, _ = NAMED_PRETRAINED_SAE_LOADERS[loader](
        repo_id=repo_id, folder_name=folder_name, device="cpu", cfg_overrides=overrides
    )
    sae = saelens_sae(cfg_dict, state_dict, dtype=dtype, norm_scaling_factor=norm_scaling_factor)
    return sae, cfg_dict


def seeded_inputs(d_in: int, n: int = 64, seed: int = 7) -> torch.Tensor:
    """``n`` seeded randn inputs of width ``d_in``."""
    return torch.randn(n, d_in, generator=torch.Generator().manual_seed(seed))


def assert_same_features(ours: Any, theirs: Any, x: torch.Tensor) -> torch.Tensor:
    """The same features for ``x`` and the same reconstructions of them, bit for bit (the
    same weights and formulas); returns the features."""
    with torch.no_grad():
        feats = ours.encode(x)
        assert torch.equal(feats, theirs.encode(x))
        assert torch.equal(ours.decode(feats), theirs.decode(feats))
    return feats


def assert_same_sae(ours: Any, theirs: Any, x: torch.Tensor) -> torch.Tensor:
    """Every tensor of SAELens's SAE is steer's tensor of the same name, bit for bit, and so
    are the features for ``x`` and their reconstructions (:func:`assert_same_features`);
    returns the features."""
    for name, value in theirs.state_dict().items():
        assert torch.equal(getattr(ours, name), value), name
    return assert_same_features(ours, theirs, x)


def assert_same_outputs(ours: Any, theirs: Any, x: torch.Tensor) -> None:
    """:func:`assert_same_features` for ``x``, with some features on and some off, and the same
    forward pass (encode then decode)."""
    feats = assert_same_features(ours, theirs, x)
    assert 0 < int((feats > 0).sum()) < feats.numel()  # some features on, some off
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))


__all__ = [
    "assert_same_features",
    "assert_same_outputs",
    "assert_same_sae",
    "saelens_peer",
    "saelens_sae",
    "seeded_inputs",
]
