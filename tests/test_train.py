"""SAE training pipeline on the tiny random Llama: text sources, activation collection,
shuffling, TopK training, checkpoint/resume and evaluation. Each test takes seconds."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from tiny import tiny_loaded_model

from steer.activation_cache import build_activation_cache
from steer.activations import (
    CollectStats,
    OutlierFilter,
    ShuffleBuffer,
    build_windows,
    iter_activations,
    read_documents,
    special_token_ids,
)
from steer.errors import SteerError
from steer.train import TrainConfig, evaluate_sae, train_sae

_VOCAB = (
    "the cat sat on mat dog ran in park Paris is capital of France small model learns words "
    "once upon a time there was little girl who liked to play sun"
)
WORDS = _VOCAB.split()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return tiny_loaded_model()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A plain-text file (paragraphs) and a dolly-style chat JSONL."""
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)

    def sentence() -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12))) + "."

    paras = [" ".join(sentence() for _ in range(4)) for _ in range(150)]
    (root / "plain.txt").write_text("\n\n".join(paras))
    with open(root / "chat.jsonl", "w") as fh:
        for _ in range(60):
            rec = {"text": f"### Human: {sentence()} ### Assistant: {sentence()}"}
            fh.write(json.dumps(rec) + "\n")
    return root


def _config(tmp_path, corpus, **over) -> TrainConfig:
    base = dict(
        out_dir=str(tmp_path / "sae"),
        data=(str(corpus / "plain.txt"), str(corpus / "chat.jsonl")),
        model="tiny-llama",
        layer=2,
        d_sae=128,
        k=8,
        ctx_len=32,
        collect_tokens=8192,
        train_tokens=128 * 300,
        batch_size=128,
        lr=2e-3,
        dead_tokens=4096,
        cache_dir=str(tmp_path / "cache"),
        checkpoint_dir=str(tmp_path / "ckpt"),
        checkpoint_every=50,
        buffer_rows=1024,
    )
    base.update(over)
    return TrainConfig(**base)


# ----------------------------------------------------------------------------- data


def test_chat_records_use_the_chat_template(model, corpus):
    docs = read_documents(corpus / "chat.jsonl", model.tokenizer)
    assert len(docs) == 60
    assert docs[0].startswith("<|im_start|>user\n") and "<|im_start|>assistant\n" in docs[0]
    assert "### Human" not in docs[0]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", "  \n", "empty"),
        ("bad.jsonl", '{"text": 3}\n', "not text"),
        ("nofield.jsonl", '{"body": "x"}\n', "no 'text' field"),
        ("broken.json", "[{", "invalid JSON"),
    ],
)
def test_bad_data_files_raise_one_line_errors(model, tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(SteerError, match=message) as info:
        read_documents(tmp_path / name, model.tokenizer)
    assert "\n" not in str(info.value)


def test_missing_file_is_a_steer_error(model, tmp_path):
    with pytest.raises(SteerError, match="not found"):
        build_windows(model.tokenizer, [tmp_path / "nope.txt"])


def test_collection_excludes_special_tokens_and_first_position(model, corpus):
    windows = build_windows(
        model.tokenizer, [corpus / "plain.txt", corpus / "chat.jsonl"], ctx_len=32, seed=1
    )
    special = torch.tensor(special_token_ids(model.tokenizer))
    assert torch.isin(windows, special).any()  # there is something to exclude
    stats = CollectStats()
    n = 0
    for batch in iter_activations(model, 2, windows, batch_windows=8, stats=stats):
        ids = windows[batch.window, batch.position].long()
        assert not torch.isin(ids, special).any()
        assert (batch.position > 0).all()
        assert batch.acts.shape[1] == model.d_model
        n += len(batch.acts)
    assert n == stats.kept > 0
    assert stats.kept + stats.special + stats.first_position + stats.outliers == stats.tokens
    assert stats.special > 0
    assert stats.first_position + int(torch.isin(windows[:, 0], special).sum()) == len(windows)


def test_outlier_filter_drops_and_counts_far_norms():
    filt = OutlierFilter(factor=10.0)
    norms = torch.full((2, 50), 140.0)
    norms[0, 3] = 5000.0
    keep = filt.keep(norms, torch.ones(2, 50, dtype=torch.bool))
    assert int((~keep).sum()) == 1 and not keep[0, 3]


def test_shuffle_buffer_emits_every_row_once_in_a_seeded_order():
    rows = torch.arange(1000, dtype=torch.float32)[:, None].repeat(1, 3)
    stream = [rows[i : i + 70] for i in range(0, 1000, 70)]
    out = torch.cat(list(ShuffleBuffer(256, 3, seed=0).batches(stream, 32)))
    assert len(out) == 992  # the last partial batch is dropped
    assert len(set(out[:, 0].tolist())) == 992
    assert not torch.equal(out[:, 0], torch.sort(out[:, 0]).values)
    again = torch.cat(list(ShuffleBuffer(256, 3, seed=0).batches(stream, 32)))
    assert torch.equal(out, again)


def test_cache_resumes_an_interrupted_collection(model, corpus, tmp_path):
    windows = build_windows(model.tokenizer, [corpus / "plain.txt"], ctx_len=32, seed=0)[:40]
    full = build_activation_cache(model, 2, windows, tmp_path / "a", batch_windows=8)

    def stop(done, total, stats):
        if done >= 16:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_activation_cache(
            model, 2, windows, tmp_path / "b", batch_windows=8, flush_every=1, progress=stop
        )
    part = build_activation_cache(model, 2, windows, tmp_path / "b", batch_windows=8)
    assert part.n_rows == full.n_rows
    assert (part.acts[: part.n_rows] == full.acts[: full.n_rows]).all()


# ----------------------------------------------------------------------------- training


def test_training_reduces_the_loss_and_saves_a_working_sae(model, corpus, tmp_path):
    from steer.sae.formats import load_sae

    losses: list[float] = []
    cfg = _config(tmp_path, corpus)
    out = train_sae(
        cfg, model=model, progress=False, callback=lambda s, m: losses.append(m["loss"])
    )
    assert len(losses) == cfg.total_steps
    assert all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.75 * first

    sae = load_sae(out)
    assert all(torch.isfinite(t).all() for t in (sae.W_enc, sae.W_dec, sae.b_enc, sae.b_dec))
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(cfg.d_sae), atol=1e-4)
    cfg_json = json.loads((out / "cfg.json").read_text())
    meta = cfg_json["metadata"]
    assert meta["hook_name"] == "blocks.2.hook_resid_post"
    assert len(meta["data_files"]) == 2 and len(meta["data_files"][0]["sha256"]) == 64
    assert meta["layer"] == 2 and meta["model_name"] == "tiny-llama"
    assert (out / "sparsity.safetensors").is_file()

    # The input scale is folded into the saved weights: on raw activations the saved SAE is as
    # good as it was in training.
    texts = read_documents(corpus / "plain.txt", model.tokenizer)
    metrics = evaluate_sae(model, sae, 2, texts, ctx_len=32, max_tokens=2048, ce_tokens=512)
    assert metrics["explained_variance"] > 1 - 2 * last
    assert metrics["l0"] <= cfg.k


def test_resume_continues_from_the_checkpoint_with_the_same_result(model, corpus, tmp_path):
    from steer.sae.formats import load_sae

    over = dict(train_tokens=128 * 120, checkpoint_every=40)
    straight = load_sae(
        train_sae(_config(tmp_path / "a", corpus, **over), model=model, progress=False)
    )

    class Crash(Exception):
        pass

    def crash(step, metrics):
        if step == 90:
            raise Crash

    cfg_b = _config(tmp_path / "b", corpus, **over)
    with pytest.raises(Crash):
        train_sae(cfg_b, model=model, progress=False, callback=crash)
    ckpt = torch.load(tmp_path / "b" / "ckpt" / "checkpoint.pt", weights_only=False)
    assert ckpt["step"] == 80
    steps: list[int] = []
    resumed_cfg = _config(tmp_path / "b", corpus, resume=True, **over)
    resumed = load_sae(
        train_sae(resumed_cfg, model=model, progress=False, callback=lambda s, m: steps.append(s))
    )
    assert steps[0] == 81 and steps[-1] == 120
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.allclose(getattr(straight, name), getattr(resumed, name), atol=1e-6), name


# ----------------------------------------------------------------------------- evaluation


def test_evaluate_identity_sae_recovers_everything(model, corpus):
    from handmade import orthonormal_sae

    sae = orthonormal_sae(d_in=model.d_model, d_sae=model.d_model, layer=2)
    texts = read_documents(corpus / "plain.txt", model.tokenizer)
    m = evaluate_sae(model, sae, 2, texts, ctx_len=32, max_tokens=2048, ce_tokens=1024)
    assert m["explained_variance"] == pytest.approx(1.0, abs=1e-4)
    assert m["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-3)
    assert m["kl_sae"] == pytest.approx(0.0, abs=1e-4)
    assert m["ce_loss_zero_ablation"] > m["ce_loss_clean"]
    assert m["l0"] == model.d_model and m["dead_fraction"] == 0.0
    assert m["positions"]["kept"] == m["tokens"]
