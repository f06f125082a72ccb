"""``steer features contrast``: exact AUROC, effect sizes, and a hand-made SAE on the tiny
model whose one feature fires only on a token of the positive texts."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from support.cli_helpers import call
from support.sae_factory import make_sae

from steer.corpus.texts import read_texts
from steer.errors import SteerError
from steer.features.contrast import auroc, cohens_d, contrast, pooled_activations
from steer.model.trace import layer_output

POS = [
    "The dog ran in the park.",
    "A little dog sat on the mat.",
    "Once upon a time the dog liked to play in the sun.",
    "Paris is where the dog ran.",
    "The cat and the dog ran.",
    "The girl liked the dog.",
]
NEG = [
    "The cat sat on the mat.",
    "Paris is the capital of France.",
    "Once upon a time there was a little girl.",
    "A small model learns words.",
    "The cat ran in the park.",
    "The girl liked to play in the sun.",
]
LAYER = 1


def brute_force_auroc(pos: list[float], neg: list[float]) -> float:
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auroc_matches_pair_counting_with_ties():
    gen = torch.Generator().manual_seed(0)
    # Small integers: many ties within and across the two sets; some all-zero columns.
    pos = torch.randint(0, 4, (23, 9), generator=gen).float()
    neg = torch.randint(0, 3, (17, 9), generator=gen).float()
    pos[:, 0] = 0
    neg[:, 0] = 0
    got = auroc(pos, neg)
    for f in range(9):
        assert got[f].item() == pytest.approx(
            brute_force_auroc(pos[:, f].tolist(), neg[:, f].tolist())
        )
    assert got[0].item() == 0.5  # never fires: no separation


def test_auroc_extremes_and_cohens_d():
    pos = torch.tensor([[3.0, 0.0], [4.0, 1.0]])
    neg = torch.tensor([[1.0, 5.0], [2.0, 6.0]])
    assert auroc(pos, neg).tolist() == [1.0, 0.0]
    # d = (3.5 - 1.5) / sqrt(0.5) for column 0
    assert cohens_d(pos, neg)[0].item() == pytest.approx(2.0 / 0.5**0.5)
    assert cohens_d(torch.ones(3, 1), torch.ones(2, 1)).item() == 0.0  # constant: no effect


def test_contrast_ranks_by_separation_with_direction():
    pos = torch.tensor([[0.0, 5.0, 1.0], [0.0, 6.0, 0.0], [1.0, 7.0, 1.0]])
    neg = torch.tensor([[2.0, 0.0, 1.0], [3.0, 0.0, 0.0], [4.0, 0.0, 0.0]])
    rows = contrast(pos, neg)
    assert [r.feature for r in rows][:2] in ([1, 0], [0, 1])
    by_id = {r.feature: r for r in rows}
    assert by_id[1].auroc == 1.0 and by_id[1].direction == "+"
    assert by_id[0].auroc == 0.0 and by_id[0].direction == "-"
    assert by_id[1].fire_pos == 1.0 and by_id[1].fire_neg == 0.0
    assert by_id[2].mean_pos == pytest.approx(2 / 3) and rows[-1].feature == 2


def test_read_texts_lines_and_jsonl(tmp_path, tiny_model):
    txt = tmp_path / "a.txt"
    txt.write_text("first text\n\n  second text  \n")
    assert read_texts(txt, tiny_model.tokenizer) == ["first text", "second text"]
    assert read_texts(txt, tiny_model.tokenizer, max_texts=1) == ["first text"]
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text('{"text": "one"}\n{"text": "two"}\n')
    assert read_texts(jsonl, tiny_model.tokenizer) == ["one", "two"]


@pytest.mark.parametrize("content", ["", "\n  \n"])
def test_empty_file_is_one_line_error(tmp_path, tiny_model, content):
    empty = tmp_path / "neg.txt"
    empty.write_text(content)
    with pytest.raises(SteerError, match=r"neg\.txt: no texts in the file"):
        read_texts(empty, tiny_model.tokenizer)


def _token_sae(tiny_model, word: str, *, d_sae: int = 24):
    """A standard SAE: feature 0 fires exactly on the token ``word`` (a direction and a bias
    fitted on the layer's hidden states of POS + NEG), the others are random."""
    tok = tiny_model.tokenizer
    (target,) = tok(word, add_special_tokens=False)["input_ids"]
    on, off = [], []
    for text in POS + NEG:
        ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
        hidden = layer_output(tiny_model, LAYER, ids)[0]
        for pos in range(1, ids.shape[1]):
            (on if ids[0, pos] == target else off).append(hidden[pos])
    on_h, off_h = torch.stack(on), torch.stack(off)
    # A least-squares linear probe (+1 on the token, -1 elsewhere) gives the direction.
    h = torch.cat([on_h, off_h])
    y = torch.cat([torch.ones(len(on_h)), -torch.ones(len(off_h))])
    h1 = torch.cat([h, torch.ones(len(h), 1)], dim=1).double()
    direction = torch.linalg.lstsq(h1, y.double().unsqueeze(1)).solution[:-1, 0].float()
    lo, hi = (off_h @ direction).max(), (on_h @ direction).min()
    assert hi > lo, "the tiny model's hidden states do not separate the token"
    sae = make_sae(
        d_in=tiny_model.d_model, d_sae=d_sae, layer=LAYER, seed=3, apply_b_dec_to_input=False
    )
    with torch.no_grad():
        sae.W_enc[:, 0] = direction
        sae.b_enc[0] = -(lo + hi) / 2
    return sae.eval()


def test_token_feature_separates_perfectly_on_the_tiny_model(tiny_model):
    sae = _token_sae(tiny_model, " dog")
    pos = pooled_activations(tiny_model, sae, POS, batch=4, progress=False)
    neg = pooled_activations(tiny_model, sae, NEG, batch=4, progress=False)
    assert pos.shape == (len(POS), 24)
    rows = contrast(pos, neg)
    assert rows[0].feature == 0
    assert rows[0].auroc == 1.0 and rows[0].direction == "+"
    assert rows[0].fire_pos == 1.0 and rows[0].fire_neg == 0.0
    others = [r.auroc for r in rows if r.feature != 0]
    # random features: no perfect separators, and on average near chance
    assert max(abs(a - 0.5) for a in others) < 0.5
    assert abs(sum(others) / len(others) - 0.5) < 0.15


# --- steer features contrast (CLI, tiny model) ---------------------------------------------


@pytest.fixture
def cli_setup(tmp_path, tiny_model, monkeypatch):
    """An SAE folder with the token SAE, pos/neg files, and the CLI wired to the tiny model."""
    import steer.sae.loading as loading
    from steer.sae import save_sae

    folder = tmp_path / "dog-sae"
    save_sae(_token_sae(tiny_model, " dog"), folder)
    (tmp_path / "pos.txt").write_text("\n".join(POS) + "\n")
    (tmp_path / "neg.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in NEG))

    def fake_load(name, *, model=None, device=None):
        folder_, sae = loading.load_sae_only(name)
        return folder_, sae, tiny_model

    monkeypatch.setattr(loading, "load_sae_and_model", fake_load)
    return folder, tmp_path / "pos.txt", tmp_path / "neg.jsonl"


def test_contrast_cli_json_and_save_labels(cli_setup, capsys):
    from steer.sae.labels import load_labels

    folder, pos, neg = cli_setup
    argv = ["features", "contrast", str(folder), "--pos", str(pos), "--neg", str(neg)]
    code, out, err = call([*argv, "--json", "--top", "5", "--save-labels", "dog"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert (data["n_pos"], data["n_neg"]) == (len(POS), len(NEG))
    assert len(data["features"]) == 5
    best = data["features"][0]
    assert (best["feature"], best["auroc"], best["direction"]) == (0, 1.0, "+")
    labels = load_labels(folder)
    assert labels[0].name == "dog-pos-1" and labels[0].source == "contrast"
    assert "AUROC 1.000" in labels[0].description
    # the table names the feature by its label now
    code, out, err = call([*argv, "--top", "3"], capsys)
    assert code == 0, err
    assert "dog-pos-1" in out and "1.000" in out


def test_contrast_cli_empty_file(cli_setup, capsys, tmp_path):
    folder, pos, _ = cli_setup
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    code, _, err = call(
        ["features", "contrast", str(folder), "--pos", str(pos), "--neg", str(empty)], capsys
    )
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "empty.txt: no texts in the file" in lines[0], err


def test_contrast_cli_empty_file_fails_before_loading_the_model(tmp_path, capsys, monkeypatch):
    import steer.sae.loading as loading

    def must_not_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(loading, "load_sae_and_model", must_not_load)
    (tmp_path / "pos.txt").write_text("a text\n")
    (tmp_path / "neg.txt").write_text("  \n\n")
    argv = ["features", "contrast", "any-sae", "--pos", str(tmp_path / "pos.txt")]
    code, _, err = call([*argv, "--neg", str(tmp_path / "neg.txt")], capsys)
    assert code == 2 and "neg.txt: no texts in the file" in err
    code, _, err = call([*argv, "--neg", str(tmp_path / "missing.txt")], capsys)
    assert code == 2 and "missing.txt: file not found" in err
