"""SAE architectures from plugins, through pluggy."""

from __future__ import annotations

import pytest
import torch

from steer.errors import SteerError
from steer.plugins.hookspecs import hookimpl
from steer.plugins.manager import get_plugin_manager
from steer.sae import SAE, SAEConfig, get_architectures, load_sae, read_sae_config, save_sae
from steer.sae.registry import BUILTIN_ARCHITECTURES


class DoubleReLUSAE(SAE):
    """A toy architecture: twice the ReLU, with an extra per-feature gain parameter."""

    architecture = "double-relu"

    def __init__(self, cfg: SAEConfig):
        super().__init__(cfg)
        self.gain = torch.nn.Parameter(torch.ones(cfg.d_sae, dtype=cfg.torch_dtype))

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        return 2 * torch.relu(pre) * self.gain


class DoublePlugin:
    @hookimpl
    def steer_register_sae_architectures(self, register):
        register(DoubleReLUSAE)


def _pm(*plugins):
    pm = get_plugin_manager(load_entry_points=False)
    for name, plugin in plugins:
        pm.register(plugin, name=name)
    return pm


def _double_sae(seed=0):
    sae = DoubleReLUSAE(SAEConfig(architecture="double-relu", d_in=8, d_sae=32))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return sae


def test_builtins_only_without_pm():
    archs = get_architectures()
    assert archs == {cls.architecture: cls for cls in BUILTIN_ARCHITECTURES}
    assert sorted(archs) == [
        "gated", "jumprelu", "jumprelu_skip_transcoder", "jumprelu_transcoder", "skip_transcoder", "standard", "topk", "topk_skip_transcoder", "topk_transcoder",
        "transcoder",
    ]  # fmt: skip


def test_plugin_architecture_loads(tmp_path):
    pm = _pm(("doubler", DoublePlugin()))
    assert get_architectures(pm)["double-relu"] is DoubleReLUSAE
    sae = _double_sae()
    save_sae(sae, tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae", pm=pm)
    assert isinstance(loaded, DoubleReLUSAE)
    assert torch.equal(loaded.gain, sae.gain)
    x = torch.randn(3, 8)
    assert torch.equal(loaded.encode(x), sae.encode(x))
    # not columnwise: encode_features runs the full encode and picks columns
    assert torch.equal(loaded.encode_features(x, [4, 1]), loaded.encode(x)[..., [4, 1]])
    assert read_sae_config(tmp_path / "sae", pm=pm).architecture == "double-relu"
    with pytest.raises(SteerError, match="unknown SAE architecture 'double-relu'"):
        load_sae(tmp_path / "sae")  # built-ins only


def test_duplicate_architecture_names_both_plugins():
    pm = _pm(("first", DoublePlugin()), ("second", DoublePlugin()))
    assert get_architectures(pm)["double-relu"] is DoubleReLUSAE
    message = pm.failures[0].error
    assert pm.failures[0].name == "second"
    assert "'double-relu' is registered twice" in message
    assert "'first'" in message and "'second'" in message


def test_plugin_cannot_shadow_a_builtin():
    class Shadow(DoubleReLUSAE):
        architecture = "standard"

    class ShadowPlugin:
        @hookimpl
        def steer_register_sae_architectures(self, register):
            register(Shadow)

    pm = _pm(("shadow", ShadowPlugin()))
    assert get_architectures(pm)["standard"] is not Shadow
    assert "by plugin 'steer' and by 'shadow'" in pm.failures[0].error


@pytest.mark.parametrize("bad", [object(), SAE, int])
def test_plugin_registering_a_non_architecture(bad):
    class BadPlugin:
        @hookimpl
        def steer_register_sae_architectures(self, register):
            register(bad)

    pm = _pm(("bad", BadPlugin()))
    assert set(get_architectures(pm)) == {cls.architecture for cls in BUILTIN_ARCHITECTURES}
    assert "plugin 'bad' registered a bad SAE architecture" in pm.failures[0].error
