"""`steer check` compares a recipe's site and layer with the SAE's own hook names, without torch,
as loading does: one line, exit 2."""

from __future__ import annotations

import pytest
from support.cli_helpers import assert_one_line_error, call
from support.sae_factory import make_sae

from steer.sae import save_sae


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (
            "    site: resid_post\n",
            "saes[0].site: site resid_post does not match the SAE, trained on mlp_out of block 2",
        ),
        ("    layer: 3\n", "saes[0].layer: layer 3 does not match the SAE, trained on layer 2"),
    ],
)
def test_a_recipe_site_that_is_not_the_saes_is_one_line(tmp_path, capsys, extra, fragment):
    save_sae(
        make_sae(d_in=16, d_sae=32, layer=None, hook_name="blocks.2.hook_mlp_out"), tmp_path / "sae"
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"saes:\n  - id: s\n    path: {tmp_path / 'sae'}\n{extra}prompts: [hi]\n")
    code, _, err = call(["check", str(recipe)], capsys)
    assert_one_line_error(code, err, fragment)


def test_the_matching_site_passes(tmp_path, capsys):
    save_sae(
        make_sae(d_in=16, d_sae=32, layer=None, hook_name="blocks.2.hook_mlp_out"), tmp_path / "sae"
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"saes:\n  - id: s\n    path: {tmp_path / 'sae'}\n    site: mlp_out\n    layer: 2\nprompts: [hi]\n"
    )
    code, _, err = call(["check", str(recipe)], capsys)
    assert code == 0, err
