"""The plugin system: built-ins through entry points, a third-party plugin installed the way a
user installs one, broken plugins reported and skipped, duplicate names refused."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from support.plugin_project import pip_install, write_plugin_project

from steer.errors import SteerError
from steer.plugins.hookspecs import hookimpl
from steer.plugins.manager import get_plugin_manager
from steer.plugins.registry import registry
from steer.steering.interventions import INTERVENTIONS, InterventionType

REPO = Path(__file__).resolve().parents[2]


def test_builtins_come_through_the_entry_point_group(pm):
    found = registry(pm, INTERVENTIONS)
    assert {"ablate", "clamp", "scale", "add"} <= set(found)
    assert found["clamp"].plugin == "clamp"  # registered by the plugin, not by the host
    assert pm.failures == []


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("ablate", None, [0.0, 0.0]),
        ("clamp", 4.0, [4.0, 4.0]),
        ("scale", 2.0, [2.0, 0.0]),
        ("add", 1.5, [2.5, 1.5]),
    ],
)
def test_builtin_semantics(pm, name, value, expected):
    acts = torch.tensor([[1.0, 0.0]])
    out = registry(pm, INTERVENTIONS)[name].obj.apply(acts, value)
    assert out.tolist() == [expected]
    assert acts.tolist() == [[1.0, 0.0]]  # not modified in place


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """A third-party plugin installed with pip: a module plus one entry-point line."""
    project = tmp_path / "project"
    project.mkdir()
    write_plugin_project(
        project,
        """
        import torch
        from steer import hookimpl, InterventionType

        def negate(acts, value):
            return -acts

        @hookimpl
        def steer_register_interventions(register):
            register(InterventionType("negate", negate, "flip the sign of the features"))
        """,
        'myplugin = "myplugin"',
        "myplugin",
    )
    target = tmp_path / "site"
    pip_install(project, target)
    monkeypatch.syspath_prepend(str(target))
    return target


def test_third_party_plugin_installed_with_pip_is_used_from_a_recipe(
    installed_plugin, tiny_model, tmp_path
):
    from support.sae_factory import make_sae

    from steer.sae import save_sae
    from steer.steering.engine import Steerer
    from steer.steering.recipe import parse_recipe

    pm = get_plugin_manager()
    assert registry(pm, INTERVENTIONS)["negate"].plugin == "myplugin"
    save_sae(make_sae(d_in=tiny_model.d_model, d_sae=48, layer=1, seed=2), tmp_path / "sae")
    recipe = parse_recipe(
        {
            "saes": [{"id": "s", "path": str(tmp_path / "sae")}],
            "prompts": ["The cat sat on the mat"],
            "generation": {"max_new_tokens": 8},
            "interventions": [{"plugin": "negate", "sae": "s", "features": list(range(48))}],
        }
    )
    result = Steerer(recipe, pm=pm, model=tiny_model).run().results[0]
    assert result.steered != result.baseline


def test_a_plugin_that_fails_to_import_is_reported_and_skipped(tmp_path, monkeypatch, caplog):
    project = tmp_path / "project"
    project.mkdir()
    write_plugin_project(
        project, "raise ImportError('needs libfoo')\n", 'broken = "brokenplugin"', "brokenplugin"
    )
    pip_install(project, tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    pm = get_plugin_manager()
    assert [f.name for f in pm.failures] == ["broken"]
    assert "needs libfoo" in pm.failures[0].error
    assert "clamp" in registry(pm, INTERVENTIONS)  # the others still work
    assert "broken" in caplog.text


def test_a_misspelled_hook_is_refused():
    pm = get_plugin_manager(load_entry_points=False)
    plugin = types.SimpleNamespace(steer_register_interventionz=hookimpl(lambda register: None))
    pm.register(plugin, name="typo")
    import pluggy

    from steer.plugins.manager import _check_plugin

    with pytest.raises(pluggy.PluginValidationError, match="steer_register_interventionz"):
        _check_plugin(pm, plugin)


def test_a_duplicate_name_is_reported_and_the_first_plugin_kept():
    pm = get_plugin_manager()

    class Copycat:
        @hookimpl
        def steer_register_interventions(self, register):
            register(InterventionType("clamp", lambda a, v: a))
            register(InterventionType("mine", lambda a, v: a))

    pm.register(Copycat(), name="copycat")
    found = registry(pm, INTERVENTIONS)
    assert found["clamp"].plugin == "clamp" and found["mine"].plugin == "copycat"
    (failure,) = pm.failures
    assert failure.name == "copycat"
    assert "'clamp' is registered twice: by plugin 'clamp' and by 'copycat'" in failure.error
    with pytest.raises(SteerError, match="failed to load: copycat"):
        found.get("nope", where="interventions[0].plugin")


def test_register_checks_what_it_is_given():
    pm = get_plugin_manager(load_entry_points=False)

    class Wrong:
        @hookimpl
        def steer_register_interventions(self, register):
            register(lambda acts, value: acts)

    pm.register(Wrong(), name="wrong")
    assert len(registry(pm, INTERVENTIONS)) == 0  # refused, and nothing else broke
    assert "plugin 'wrong' registered a bad intervention" in pm.failures[0].error


def test_a_conflicting_plugin_never_breaks_the_cli(tmp_path, monkeypatch, capsys):
    from support.cli_helpers import call
    from support.plugin_project import install_plugin

    install_plugin(
        tmp_path,
        monkeypatch,
        "clampclash",
        "from steer import InterventionType, hookimpl\n\n"
        "@hookimpl\ndef steer_register_interventions(register):\n"
        "    register(InterventionType('clamp', lambda a, v: a))\n",
    )
    code, out, err = call(["plugins"], capsys)
    assert code == 0 and "clamp" in out
    assert "clampclash" in err and "registered twice" in err
    code, out, _ = call(["check", str(REPO / "recipes" / "demo.yaml")], capsys)
    assert code == 0 and out.startswith("ok:")


def test_importing_steer_has_no_side_effects():
    code = "import sys, steer; assert 'torch' not in sys.modules and 'steer.plugins.manager' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
