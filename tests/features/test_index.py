"""``steer features index``: the statistics, top contexts and quantile samples match a
brute-force pass, a killed build resumes to the same result, an index from before the samples
still opens, and bad input is one line with exit code 2."""

from __future__ import annotations

import json
import sqlite3

import pytest
import torch
from support.feature_index import CORPUS, D_SAE, build_index_without_samples, build_small_index
from support.sae_factory import make_sae

from steer.corpus.windows import build_windows
from steer.errors import SteerError
from steer.features.encode import BatchEncoder
from steer.features.index import HIST_EDGES, build_index
from steer.features.logits import output_logits, token_strings
from steer.features.running import sample_keys
from steer.features.store import FeatureIndex
from steer.sae import save_sae

ALL_ROWS = (
    "SELECT * FROM features ORDER BY id",
    "SELECT * FROM contexts ORDER BY 1, 2",
    "SELECT * FROM samples ORDER BY 1, 2",
)


def _table(path, sql):
    con = sqlite3.connect(path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_statistics_and_contexts_match_brute_force(tmp_path, tiny_model):
    folder, sae, data, result = build_small_index(tmp_path, tiny_model, context_tokens=10)
    assert result.status == "built"
    windows = build_windows(tiny_model.tokenizer, [str(data)], ctx_len=32).long()
    encoder = BatchEncoder(tiny_model, sae)
    acts = torch.cat([encoder(windows[i : i + 3])[0] for i in range(0, len(windows), 3)])
    flat = acts.reshape(-1, D_SAE)
    n_tokens = encoder.stats.kept

    with FeatureIndex.open(folder) as index:
        assert index.complete and index.d_sae == D_SAE
        assert index.meta["tokens_indexed"] == n_tokens
        assert index.meta["windows_done"] == len(windows)
        alive = 0
        for f in range(D_SAE):
            rec = index.feature(f)
            fired = flat[:, f] > 0
            assert rec.n_fired == int(fired.sum())
            assert rec.density == pytest.approx(int(fired.sum()) / n_tokens)
            assert rec.max_act == pytest.approx(float(flat[:, f].max()), abs=1e-3)
            if fired.any():
                alive += 1
                assert rec.mean_act == pytest.approx(float(flat[fired, f].mean()), abs=1e-3)
            assert sum(rec.hist) == rec.n_fired
            # Best windows: one context per window, at the window's max token.
            per_window = acts[:, :, f].max(dim=1).values
            expected = per_window[per_window > 0].sort(descending=True).values[:4]
            got = torch.tensor([c.act for c in rec.contexts])
            assert torch.allclose(got, expected, atol=1e-3)
            for c in rec.contexts:
                assert c.acts[c.focus] == pytest.approx(c.act, abs=0.01)
                assert max(c.acts) == pytest.approx(c.act, abs=0.01)
                assert len(c.tokens) == len(c.acts) == 10
        assert alive > D_SAE // 2  # the test means something only if most features fire


def test_context_tokens_are_the_corpus_text_around_the_max(tmp_path, tiny_model):
    folder, *_ = build_small_index(tmp_path, tiny_model, context_tokens=12)
    with FeatureIndex.open(folder) as index:
        rec = next(index.feature(f) for f in range(D_SAE) if index.feature(f).contexts)
    text = "".join(rec.contexts[0].tokens)
    # A window of the packed corpus, read back from the index, is a slice of the corpus (the
    # separator between documents reads as the eos token).
    pieces = [p for p in text.split("<|im_end|>") if p.strip()]
    flat_corpus = CORPUS.replace("\n\n", "")
    assert pieces and all(p.strip() in flat_corpus * 2 for p in pieces)


def test_histogram_bins_are_the_recorded_log_edges(tmp_path, tiny_model):
    folder, sae, data, _ = build_small_index(tmp_path, tiny_model)
    windows = build_windows(tiny_model.tokenizer, [str(data)], ctx_len=32).long()
    encoder = BatchEncoder(tiny_model, sae)
    acts = torch.cat([encoder(windows[i : i + 3])[0] for i in range(0, len(windows), 3)])
    with FeatureIndex.open(folder) as index:
        assert index.meta["hist_edges"] == HIST_EDGES
        f = max(range(D_SAE), key=lambda i: index.feature(i).n_fired)
        vals = acts[..., f][acts[..., f] > 0]
        inner = torch.tensor(HIST_EDGES[1:-1])
        expected = torch.bincount(torch.bucketize(vals, inner), minlength=len(HIST_EDGES) - 1)
        assert index.feature(f).hist == expected.tolist()


def _encoded(tiny_model, sae, data):
    windows = build_windows(tiny_model.tokenizer, [str(data)], ctx_len=32).long()
    encoder = BatchEncoder(tiny_model, sae)
    acts = torch.cat([encoder(windows[i : i + 3])[0] for i in range(0, len(windows), 3)])
    return windows, acts


def test_quantile_samples_are_the_smallest_keys_of_all_firing_tokens(tmp_path, tiny_model):
    folder, sae, data, result = build_small_index(
        tmp_path, tiny_model, context_tokens=10, samples=5
    )
    assert result.meta["quantile_samples"] == 5
    windows, acts = _encoded(tiny_model, sae, data)
    vocab = token_strings(tiny_model.tokenizer, len(tiny_model.tokenizer))
    with FeatureIndex.open(folder) as index:
        assert index.has_samples
        many = 0
        for f in range(D_SAE):
            win, pos = (acts[:, :, f] > 0).nonzero(as_tuple=True)
            keys = sample_keys(win * 32 + pos, torch.full_like(win, f))
            chosen = keys.argsort()[:5]
            want = sorted(
                (round(float(acts[w, p, f]), 3), vocab[int(windows[w, p])])
                for w, p in zip(win[chosen], pos[chosen], strict=True)
            )
            samples = index.feature(f).samples
            assert [s.act for s in samples] == sorted((s.act for s in samples), reverse=True)
            got = sorted((s.act, s.tokens[s.focus]) for s in samples)
            assert [t for _, t in got] == [t for _, t in want]
            assert [a for a, _ in got] == pytest.approx([a for a, _ in want], abs=1e-3)
            for s in samples:
                assert s.acts[s.focus] == pytest.approx(s.act, abs=0.01)
                assert len(s.tokens) == len(s.acts) == 10
            many += len(win) > 5
        assert many > D_SAE // 4  # most features had more firing tokens than slots: sampled


def test_samples_spread_over_the_activations_not_only_the_top(tmp_path, tiny_model):
    folder, *_ = build_small_index(tmp_path, tiny_model, samples=12)
    with FeatureIndex.open(folder) as index:
        f = max(range(D_SAE), key=lambda i: index.feature(i).n_fired)
        record = index.feature(f)
    top = record.contexts[0].act
    assert len(record.samples) == 12
    assert min(s.act for s in record.samples) < 0.5 * top  # moderate activations are there


def test_an_index_without_the_samples_table_still_opens(tmp_path, tiny_model):
    folder = build_index_without_samples(tmp_path, tiny_model)
    with FeatureIndex.open(folder) as index:
        assert not index.has_samples
        record = index.feature(1)
        assert record.samples is None and record.contexts is not None


def test_a_killed_build_resumes_to_the_same_index(tmp_path, tiny_model):
    fresh_dir = tmp_path / "fresh"
    fresh_dir.mkdir()
    *_, fresh = build_small_index(fresh_dir, tiny_model)
    part_dir = tmp_path / "part"
    part_dir.mkdir()
    *_, partial = build_small_index(part_dir, tiny_model, stop_after=5, flush_every=2)
    assert partial.status == "partial"
    assert partial.path.name == "features.sqlite.partial"
    assert not (part_dir / "sae" / "features.sqlite").exists()
    meta = dict(_table(partial.path, "SELECT key, value FROM meta"))
    assert json.loads(meta["status"]) == "partial"
    assert json.loads(meta["windows_done"]) == 6  # batches of 3 windows
    with pytest.raises(SteerError, match="not finished"):
        FeatureIndex.open(part_dir / "sae")

    *_, resumed = build_small_index(part_dir, tiny_model)
    assert resumed.status == "resumed"
    assert not partial.path.exists()
    for sql in ALL_ROWS:
        assert _table(resumed.path, sql) == _table(fresh.path, sql)
    assert _table(resumed.path, ALL_ROWS[-1])  # the samples were compared, not two empty tables
    tables = {name for (name,) in _table(resumed.path, "SELECT name FROM sqlite_master")}
    assert "resume" not in tables


def test_rerun_is_up_to_date_and_a_mismatch_is_refused(tmp_path, tiny_model):
    build_small_index(tmp_path, tiny_model)
    *_, again = build_small_index(tmp_path, tiny_model)
    assert again.status == "up-to-date"
    with pytest.raises(SteerError, match=r"different top_k; pass --rebuild"):
        build_small_index(tmp_path, tiny_model, top_k=3)
    *_, rebuilt = build_small_index(tmp_path, tiny_model, top_k=3, rebuild=True)
    assert rebuilt.status == "built"
    with FeatureIndex.open(tmp_path / "sae") as index:
        assert index.meta["top_k"] == 3


def test_db_option_builds_elsewhere(tmp_path, tiny_model):
    db = tmp_path / "deep" / "folder" / "f.sqlite"
    folder, *_ = build_small_index(tmp_path, tiny_model, db=db)
    assert db.is_file() and not (folder / "features.sqlite").exists()
    with FeatureIndex.open(db) as index:
        assert index.d_sae == D_SAE


def test_output_logits_go_through_the_final_norm_weight(tiny_model):
    sae = make_sae("topk", d_in=tiny_model.d_model, d_sae=8, k=2, layer=2, seed=3)
    hf = tiny_model.hf
    vocab = token_strings(tiny_model.tokenizer, hf.get_output_embeddings().weight.shape[0])
    norm = hf.model.norm.weight
    saved = norm.detach().clone()
    try:
        with torch.no_grad():
            norm.copy_(torch.linspace(0.1, 3.0, norm.numel()))
        top, bottom = output_logits(sae, tiny_model, vocab, n=5)
        w_u = hf.get_output_embeddings().weight.detach()
        logits = (sae.W_dec.detach() * norm.detach()) @ w_u.T
    finally:
        with torch.no_grad():
            norm.copy_(saved)
    for f in range(8):
        want = logits[f].topk(5).indices.tolist()
        assert [t for t, _ in top[f]] == [vocab[i] for i in want]
        assert top[f][0][1] == pytest.approx(float(logits[f].max()), abs=0.006)
        assert bottom[f][0][1] == pytest.approx(float(logits[f].min()), abs=0.006)
    plain = sae.W_dec.detach() @ w_u.T
    assert any(
        plain[f].topk(5).indices.tolist() != logits[f].topk(5).indices.tolist() for f in range(8)
    )


def test_empty_data_file_is_refused(tmp_path, tiny_model):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    sae = make_sae("topk", d_in=tiny_model.d_model, d_sae=8, k=2, layer=2)
    save_sae(sae, tmp_path / "sae")
    with pytest.raises(SteerError, match="empty"):
        build_index(tiny_model, sae, tmp_path / "sae", [empty], progress=False)


def test_a_build_killed_before_its_first_flush_starts_again(tmp_path, tiny_model, monkeypatch):
    from steer.features.running import RunningIndex

    original = RunningIndex.update

    def interrupted(self, ids, acts, start=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(RunningIndex, "update", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_small_index(tmp_path, tiny_model)
    work = tmp_path / "sae" / "features.sqlite.partial"
    assert work.is_file()
    monkeypatch.setattr(RunningIndex, "update", original)
    *_, result = build_small_index(tmp_path, tiny_model)
    assert result.status == "built" and not work.exists()
    assert result.windows == result.meta["windows_total"]


# ----------------------------------------------------------------------------- resume state


def _partial(tmp_path, model):
    *_, partial = build_small_index(tmp_path, model, stop_after=5, flush_every=2)
    assert partial.status == "partial"
    return partial.path


def test_the_resume_state_is_safetensors_and_json(tmp_path, tiny_model):
    import safetensors.torch

    work = _partial(tmp_path, tiny_model)
    ((blob, text),) = _table(work, "SELECT value, state_json FROM resume WHERE key = 'state'")
    assert blob[:2] not in (b"\x80\x02", b"PK")  # neither a pickle nor a torch zip
    tensors = safetensors.torch.load(blob)
    assert tensors["top_tokens"].shape[0] == D_SAE and tensors["sum_act"].dtype == torch.float64
    values = json.loads(text)
    assert values["windows_done"] == 6 and isinstance(values["medians"], list)
    assert values["stats"]["kept"] > 0


def _set_resume(work, value=None, state_json=None):
    con = sqlite3.connect(work)
    with con:
        if value is not None:
            con.execute("UPDATE resume SET value = ? WHERE key = 'state'", (value,))
        if state_json is not None:
            con.execute("UPDATE resume SET state_json = ? WHERE key = 'state'", (state_json,))
    con.close()


def _retensor(blob, name, tensor):
    import safetensors.torch

    tensors = safetensors.torch.load(blob)
    tensors[name] = tensor
    return safetensors.torch.save(tensors)


CORRUPTIONS = {
    "truncated tensors": (lambda b, j: (b[: len(b) // 2], None), "incomplete metadata"),
    "not safetensors": (lambda b, j: (b"\x80\x04junk", None), "corrupt resume state"),
    "broken JSON": (lambda b, j: (None, j[:-3]), "corrupt resume state"),
    "JSON of another shape": (lambda b, j: (None, "[1, 2]"), "not an object"),
    "bad windows_done": (
        lambda b, j: (None, json.dumps({**json.loads(j), "windows_done": "6"})),
        "windows_done is '6'",
    ),
    "unknown stat": (
        lambda b, j: (None, json.dumps({**json.loads(j), "stats": {"__class__": 1}})),
        "stats is not a map",
    ),
    "wrong shape": (
        lambda b, j: (_retensor(b, "n_fired", torch.zeros(3, dtype=torch.int64)), None),
        "tensor 'n_fired' is torch.int64 [3], expected torch.int64 [48]",
    ),
    "wrong dtype": (
        lambda b, j: (_retensor(b, "hist", torch.zeros(D_SAE, len(HIST_EDGES) - 1)), None),
        "tensor 'hist' is torch.float32",
    ),
    "extra tensor": (
        lambda b, j: (_retensor(b, "d_sae", torch.zeros(1)), None),
        "tensor 'd_sae' is unexpected",
    ),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_corrupt_resume_state_is_one_line(tmp_path, tiny_model, corruption):
    work = _partial(tmp_path, tiny_model)
    ((blob, text),) = _table(work, "SELECT value, state_json FROM resume")
    spoil, fragment = CORRUPTIONS[corruption]
    _set_resume(work, *spoil(blob, text))
    with pytest.raises(SteerError) as info:
        build_small_index(tmp_path, tiny_model)
    message = str(info.value)
    assert "\n" not in message and str(work) in message and "resume state" in message
    assert fragment in message


class _Payload:
    """Unpickling this creates the folder ``marker``: what an attacker's code would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.mkdir, (self.marker,))


def test_an_old_pickled_resume_state_is_never_loaded(tmp_path, tiny_model):
    import io

    fresh_dir = tmp_path / "fresh"
    fresh_dir.mkdir()
    *_, fresh = build_small_index(fresh_dir, tiny_model)
    part_dir = tmp_path / "part"
    part_dir.mkdir()
    work = _partial(part_dir, tiny_model)
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save(_Payload(marker), buf)
    con = sqlite3.connect(work)
    with con:  # the resume table as an older steer wrote it, holding a pickle
        con.execute("DROP TABLE resume")
        con.execute("CREATE TABLE resume(key TEXT PRIMARY KEY, value BLOB)")
        con.execute("INSERT INTO resume VALUES ('state', ?)", (buf.getvalue(),))
    con.close()

    *_, rebuilt = build_small_index(part_dir, tiny_model)
    assert not marker.exists()
    assert rebuilt.status == "built"  # started over, not resumed from the unread state
    for sql in ALL_ROWS:
        assert _table(rebuilt.path, sql) == _table(fresh.path, sql)
    torch.load(io.BytesIO(buf.getvalue()), weights_only=False)  # the control: a real attack
    assert marker.is_dir()


def test_a_resume_state_from_before_top_windows_starts_over(tmp_path, tiny_model):
    import safetensors.torch

    fresh_dir = tmp_path / "fresh"
    fresh_dir.mkdir()
    *_, fresh = build_small_index(fresh_dir, tiny_model)
    part_dir = tmp_path / "part"
    part_dir.mkdir()
    work = _partial(part_dir, tiny_model)
    ((blob, _),) = _table(work, "SELECT value, state_json FROM resume")
    tensors = safetensors.torch.load(blob)
    del tensors["top_window"]  # what an older steer saved
    _set_resume(work, safetensors.torch.save(tensors))
    *_, rebuilt = build_small_index(part_dir, tiny_model)
    assert rebuilt.status == "built"  # started over: old slots cannot say their windows
    for sql in ALL_ROWS:
        assert _table(rebuilt.path, sql) == _table(fresh.path, sql)
