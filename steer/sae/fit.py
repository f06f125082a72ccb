"""Whether an SAE fits a model: the site it reads (:mod:`steer.model.sites`), that site's width,
and the model its config names."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

from steer.errors import SteerError
from steer.model.layouts import check_site, site_width
from steer.model.sites import Hook, hook_of
from steer.sae.base import SAE
from steer.sae.config import agreed_site

# Model families an SAE's model_name and a model's name are told apart by. A name with none
# of these (a test model, a local folder) is not compared.
_FAMILIES = ("gemma", "llama", "qwen", "mistral", "mixtral", "gpt2", "pythia", "smollm", "phi",
             "deepseek", "olmo", "gptoss", "gpt-oss")  # fmt: skip
_SIZE = re.compile(r"(?<![a-z0-9.])(\d+(?:\.\d+)?)([mb])(?![a-z])")


def model_names_differ(sae_model: str | None, model: str | None) -> bool:
    """Whether the model an SAE's config names and a loaded model's name are different models:
    both name a known family and the families or the sizes (``2b`` / ``9b``) differ. Names
    that say neither (``test-model``, a folder) are not judged; an instruction-tuned variant
    of the SAE's base model is the same model (SAEs are routinely used so)."""
    if not sae_model or not model:
        return False
    a, b = _describe(sae_model), _describe(model)
    if a[0] is None or b[0] is None:
        return False
    return a[0] != b[0] or (a[1] is not None and b[1] is not None and a[1] != b[1])


def _describe(name: str) -> tuple[str | None, str | None]:
    """``(family, size)`` of a model name: ``google/gemma-2-2b-it`` -> ``("gemma", "2b")``."""
    last = name.lower().rstrip("/").split("/")[-1].removesuffix(".gguf")
    last = last.replace("gpt2-small", "gpt2").replace("gpt-oss", "gptoss")
    family = next((f for f in _FAMILIES if f in last), None)
    size = _SIZE.search(last.replace("_", "-"))
    return family, (f"{float(size.group(1)):g}{size.group(2)}" if size else None)


def check_model_name(sae_model: str | None, model_name: str | None, *, where: str) -> None:
    """A one-line SteerError when the SAE's config names another model than ``model_name``
    (``None``: not checked), with how to attach it anyway."""
    if model_names_differ(sae_model, model_name):
        raise SteerError(
            f"the SAE was trained on {sae_model!r}, not on {model_name!r} (set "
            "`allow_other_model: true` on the SAE entry to attach it anyway)",
            where=where,
        )


def check_fits_model(
    sae: SAE,
    *,
    d_model: int,
    n_layers: int,
    where: str,
    layer: int | None = None,
    model_name: str | None = None,
) -> None:
    """Raise a one-line SteerError (prefixed ``where``) unless ``sae`` fits the model: its
    config does not name another model (``model_name``: the loaded model's name; ``None``
    skips this), it reads the residual stream after a block, its ``d_in`` is that stream's
    width and its layer (``layer``, else the one its hook names give) is a block of the
    model."""
    cfg = sae.cfg
    check_model_name(cfg.model_name, model_name, where=where)
    if cfg.is_transcoder:
        raise SteerError(
            f"the SAE is a transcoder (reads {cfg.hook_name!r}, writes {cfg.hook_name_out!r}); "
            "steer attaches SAEs to the residual stream after a block only, so far",
            where=where,
        )
    hook = cfg.hf_hook_name or cfg.hook_name
    if cfg.layer is None and hook is not None:
        raise SteerError(
            f"the SAE reads {hook!r}, not the residual stream after a block", where=where
        )
    if cfg.d_in != d_model:
        raise SteerError(
            f"SAE d_in is {cfg.d_in} but the model's residual stream is {d_model}", where=where
        )
    layer = layer if layer is not None else cfg.layer
    if layer is None:
        raise SteerError("the SAE's cfg.json names no layer; give `layer:`", where=where)
    _check_site(SimpleNamespace(num_hidden_layers=n_layers), Hook.at("resid_post", layer), where)


def _check_site(config: Any, hook: Hook, where: str) -> None:
    """:func:`~steer.model.layouts.check_site`, its one line prefixed with ``where``."""
    try:
        check_site(config, hook)
    except SteerError as exc:
        raise SteerError(str(exc), where=where) from None


def sae_hook(sae: SAE, *, site: str | None, layer: int | None, where: str) -> Hook:
    """Where an SAE attaches: its config's site (hook names), or the recipe's ``site`` and
    ``layer`` where the config names none; where both say, they must agree. One-line
    SteerErrors name the recipe field (``saes[0].site``, ``saes[0].layer``)."""
    cfg = sae.cfg
    if cfg.is_transcoder:
        transcoder_write_hook(sae, where=where)  # both sites named, in forward order
    named = cfg.hook_name or cfg.hf_hook_name
    own = agreed_site(cfg, site=site, layer=layer, where=where)
    if own is not None:
        return own
    if named is not None and site is None:
        raise SteerError(
            f"the SAE reads {named!r}, a site steer does not know; give `site:` and `layer:`",
            where=where,
        )
    if layer is None:
        raise SteerError("the SAE's cfg.json names no layer; give `layer:`", where=where)
    return Hook.at(site or "resid_post", layer)


def transcoder_write_hook(sae: SAE, *, where: str = "") -> Hook | None:
    """The site a transcoder writes (``None`` for an SAE, which writes where it reads); a
    transcoder whose sites are unknown, or whose output comes before its input, is a one-line
    SteerError."""
    cfg = sae.cfg
    if not cfg.is_transcoder:
        return None
    read = hook_of(cfg.hook_name, cfg.hf_hook_name)
    write = hook_of(cfg.hook_name_out, cfg.hf_hook_name_out)
    if read is None or write is None:
        raise SteerError(
            f"the transcoder reads {cfg.hook_name or cfg.hf_hook_name!r} and writes "
            f"{cfg.hook_name_out or cfg.hf_hook_name_out!r}: steer needs both sites by name "
            "(e.g. blocks.N.hook_mlp_in and blocks.N.hook_mlp_out)",
            where=where,
        )
    if not write > read:
        raise SteerError(
            f"the transcoder writes {write}, which the forward pass reaches before {read}, "
            "where it reads",
            where=where,
        )
    return write


def check_fits_site(
    sae: SAE, hook: Hook, config: Any, *, where: str, model_name: str | None = None
) -> None:
    """Raise a one-line SteerError unless ``sae`` can attach at ``hook`` of a model with this
    HF ``config``: not an SAE of another model (``model_name``: the loaded model's; ``None``
    skips this), a site the family has, and ``d_in`` the site's width."""
    cfg = sae.cfg
    check_model_name(cfg.model_name, model_name, where=where)
    write = transcoder_write_hook(sae, where=where)
    sites = [(hook, cfg.d_in, "d_in")] + ([(write, cfg.output_width, "d_out")] if write else [])
    for site, size, name in sites:
        _check_site(config, site, where)
        width = site_width(config, site)
        if size != width:
            what = "residual stream" if site.is_residual else f"{site.kind} of block {site.layer}"
            raise SteerError(f"SAE {name} is {size} but the model's {what} is {width}", where=where)
