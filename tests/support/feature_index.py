"""A small feature index built on the tiny model, for the index, dashboard and CLI tests."""

from __future__ import annotations

from steer.features.index import build_index
from steer.sae import save_sae
from support.sae_factory import make_sae

CORPUS = (
    "The cat sat on the mat. The dog ran in the park & the sun was <hot>.\n\n"
    'Paris is the capital of France. She said "once upon a time" and played.\n\n'
    "Numbers 0 1 2 3 4 5 6 7 8 9, and punctuation: , . ! ? ; a little girl liked the sun.\n\n"
)
D_SAE = 48


def build_small_index(tmp_path, model, *, top_k=4, ctx_len=32, d_sae=D_SAE, **kwargs):
    """A hand-made TopK SAE saved under ``tmp_path/sae``, indexed over a small corpus on the
    tiny model. Returns ``(sae_folder, sae, data_file, BuildResult)``."""
    sae = make_sae("topk", d_in=model.d_model, d_sae=d_sae, k=6, layer=2, seed=1)
    folder = tmp_path / "sae"
    if not folder.exists():
        save_sae(sae, folder)
    data = tmp_path / "corpus.txt"
    if not data.exists():
        data.write_text(CORPUS * 12, encoding="utf-8")
    kwargs.setdefault("batch_windows", 3)
    kwargs.setdefault("progress", False)
    result = build_index(model, sae, folder, [data], top_k=top_k, ctx_len=ctx_len, **kwargs)
    return folder, sae, data, result


def build_index_without_samples(tmp_path, model):
    """A small index as indexes were before quantile samples: no ``samples`` table. Returns
    the SAE folder."""
    import sqlite3

    folder, *_ = build_small_index(tmp_path, model)
    con = sqlite3.connect(folder / "features.sqlite")
    with con:
        con.execute("DROP TABLE samples")
    con.close()
    return folder
