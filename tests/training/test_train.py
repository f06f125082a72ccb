"""SAE training pipeline on the tiny random Llama: text sources, activation collection,
shuffling, TopK training, checkpoint/resume and evaluation. Each test takes seconds."""

from __future__ import annotations

import json
import math

import pytest
import torch
from support.train_runs import small_config

from steer.corpus.documents import read_documents
from steer.corpus.windows import build_windows
from steer.errors import SteerError
from steer.model.positions import CollectStats, OutlierFilter, special_token_ids
from steer.training.activations import ShuffleBuffer, iter_activations
from steer.training.cache import build_activation_cache
from steer.training.config import TrainConfig
from steer.training.evaluate import evaluate_sae
from steer.training.run import train_sae

_config = small_config


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


def test_storage_dtype_writes_a_half_size_file_that_computes_in_float32(model, corpus, tmp_path):
    import safetensors

    from steer.sae.formats import load_sae

    cfg = _config(tmp_path, corpus, train_tokens=128 * 20, storage_dtype="float16")
    out = train_sae(cfg, model=model, progress=False)
    with safetensors.safe_open(out / "sae_weights.safetensors", "pt") as f:
        assert f.get_slice("W_enc").get_dtype() == "F16"
    cfg_json = json.loads((out / "cfg.json").read_text())
    assert cfg_json["dtype"] == "float32"
    assert cfg_json["metadata"]["weights_stored_as"] == "float16"
    assert load_sae(out).W_dec.dtype == torch.float32


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
    ckpt = json.loads((tmp_path / "b" / "ckpt" / "checkpoint" / "state.json").read_text())
    assert ckpt["step"] == 80
    steps: list[int] = []
    resumed_cfg = _config(tmp_path / "b", corpus, **over)
    resumed = load_sae(
        train_sae(
            resumed_cfg,
            model=model,
            resume=True,
            progress=False,
            callback=lambda s, m: steps.append(s),
        )
    )
    assert steps[0] == 81 and steps[-1] == 120
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.allclose(getattr(straight, name), getattr(resumed, name), atol=1e-6), name


# ----------------------------------------------------------------------------- evaluation


def test_evaluate_identity_sae_recovers_everything(model, corpus):
    from support.handmade import orthonormal_sae

    sae = orthonormal_sae(d_in=model.d_model, d_sae=model.d_model, layer=2)
    texts = read_documents(corpus / "plain.txt", model.tokenizer)
    m = evaluate_sae(model, sae, 2, texts, ctx_len=32, max_tokens=2048, ce_tokens=1024)
    assert m["explained_variance"] == pytest.approx(1.0, abs=1e-4)
    assert m["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-3)
    assert m["kl_sae"] == pytest.approx(0.0, abs=1e-4)
    assert m["ce_loss_zero_ablation"] > m["ce_loss_clean"]
    assert m["l0"] == model.d_model and m["dead_fraction"] == 0.0
    assert m["positions"]["kept"] == m["tokens"]


# ----------------------------------------------------------------------------- standard (ReLU + L1)


def test_standard_training_reduces_the_loss_and_saves_a_standard_sae(model, corpus, tmp_path):
    from steer.sae.formats import load_sae

    metrics: list[dict] = []
    cfg = _config(tmp_path, corpus, architecture="standard", l1_coefficient=0.3)
    out = train_sae(cfg, model=model, progress=False, callback=lambda s, m: metrics.append(m))
    assert len(metrics) == cfg.total_steps
    assert all(math.isfinite(m["loss"]) for m in metrics)
    first = sum(m["loss"] for m in metrics[:20]) / 20
    last = sum(m["loss"] for m in metrics[-20:]) / 20
    assert last < 0.75 * first
    assert metrics[-1]["ev"] > 0.5 and set(metrics[-1]) == {"loss", "ev", "l0", "dead"}

    sae = load_sae(out)
    assert sae.cfg.architecture == "standard" and sae.cfg.k is None
    assert all(torch.isfinite(t).all() for t in (sae.W_enc, sae.W_dec, sae.b_enc, sae.b_dec))
    # Decoder norms are folded into the encoder, so the saved decoder rows are unit vectors.
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(cfg.d_sae), atol=1e-4)
    meta = json.loads((out / "cfg.json").read_text())["metadata"]
    assert meta["train_config"]["architecture"] == "standard"
    assert isinstance(meta["resampling"], list)

    # On raw activations the saved SAE reconstructs as well as it did in the scaled space.
    texts = read_documents(corpus / "plain.txt", model.tokenizer)
    m = evaluate_sae(model, sae, 2, texts, ctx_len=32, max_tokens=2048, ce_tokens=512)
    assert m["explained_variance"] == pytest.approx(metrics[-1]["ev"], abs=0.1)
    assert 0 < m["l0"] < cfg.d_sae


def test_the_l1_penalty_buys_sparsity(model, corpus, tmp_path):
    l0 = {}
    for coef in (0.3, 5.0):
        seen: list[dict] = []
        cfg = _config(tmp_path / str(coef), corpus, architecture="standard", l1_coefficient=coef)
        train_sae(cfg, model=model, progress=False, callback=lambda s, m, seen=seen: seen.append(m))
        l0[coef] = sum(m["l0"] for m in seen[-10:]) / 10
    assert l0[5.0] < 0.5 * l0[0.3]


def _standard_trainer(d_sae=32, d_in=8, **over):
    from steer.training.standard import StandardTrainer

    gen = torch.Generator().manual_seed(0)
    data = torch.randn(4096, d_in, generator=gen) * 3
    data[7] *= 40  # one input the SAE cannot reconstruct: resampling should pick it
    cfg = TrainConfig(
        out="unused",
        data=[{"path": "unused"}],
        architecture="standard",
        d_sae=d_sae,
        batch_size=64,
        tokens={"train": 64 * 100},
        dead_tokens=64 * 5,
        resample_rows=len(data),
        **over,
    )
    trainer = StandardTrainer(cfg, d_in, data[:512], resample_source=lambda n, seed: data[:n])
    return trainer, data


def test_resampling_reinitialises_dead_features_toward_high_loss_inputs():
    trainer, data = _standard_trainer(resample_every=0)
    for i in range(3):
        trainer.train_step(data[i * 64 + 100 : (i + 1) * 64 + 100])
    p = trainer.params
    dead = torch.tensor([3, 11, 20])
    trainer.since_fired[dead] = 10**6  # these never fired
    alive = torch.ones(32, dtype=torch.bool)
    alive[dead] = False
    before = {n: t.detach().clone() for n, t in p.items()}
    adam_before = trainer.opt.state[p["W_enc"]]["exp_avg"].clone()
    enc_norm = p["W_enc"][alive].norm(dim=1).mean()
    dec_norm = p["W_dec"][alive].norm(dim=1).mean()

    assert trainer.resample() == 3
    x7 = data[7] * trainer.scale - p["b_dec"]
    direction = x7 / x7.norm()
    for i in dead.tolist():  # the outlier input carries nearly all the squared-loss mass
        assert torch.allclose(p["W_dec"][i], direction * dec_norm, atol=1e-5)
        assert torch.allclose(p["W_enc"][i], direction * 0.2 * enc_norm, atol=1e-5)
        assert p["b_enc"][i] == 0
    assert torch.equal(p["W_enc"][alive], before["W_enc"][alive])
    assert torch.equal(p["b_enc"][alive], before["b_enc"][alive])
    state = trainer.opt.state[p["W_enc"]]
    assert (state["exp_avg"][dead] == 0).all() and (state["exp_avg_sq"][dead] == 0).all()
    assert torch.equal(state["exp_avg"][alive], adam_before[alive])
    assert (trainer.since_fired[dead] == 0).all()
    assert trainer.resampled == [{"step": 3, "features": 3}]
    assert trainer.resample() == 0  # nothing is dead any more


def test_resampling_runs_on_schedule_only_in_the_first_part_of_training():
    trainer, data = _standard_trainer(resample_every=10, resample_until=0.5)
    calls: list[int] = []
    trainer.resample = lambda: calls.append(trainer.step) or 0
    for i in range(100):
        trainer.train_step(data[(i % 60) * 64 : (i % 60 + 1) * 64])
    assert calls == [10, 20, 30, 40, 50]


def test_standard_resume_is_exact_across_a_resampling(model, corpus, tmp_path):
    from steer.sae.formats import load_sae

    # dead_tokens = one batch: features silent for a batch get resampled every 20 steps.
    over = dict(
        architecture="standard",
        train_tokens=128 * 120,
        checkpoint_every=40,
        dead_tokens=128,
        resample_every=20,
        resample_until=1.0,
        resample_rows=2048,
    )
    out_a = train_sae(_config(tmp_path / "a", corpus, **over), model=model, progress=False)
    straight = load_sae(out_a)
    history = json.loads((out_a / "cfg.json").read_text())["metadata"]["resampling"]
    assert [h["step"] for h in history if h["step"] > 80]  # a resampling after the crash point
    assert sum(h["features"] for h in history) > 0

    class Crash(Exception):
        pass

    def crash(step, metrics):
        if step == 90:
            raise Crash

    with pytest.raises(Crash):
        train_sae(
            _config(tmp_path / "b", corpus, **over), model=model, progress=False, callback=crash
        )
    resumed_cfg = _config(tmp_path / "b", corpus, **over)
    out_b = train_sae(resumed_cfg, model=model, resume=True, progress=False)
    resumed = load_sae(out_b)
    assert json.loads((out_b / "cfg.json").read_text())["metadata"]["resampling"] == history
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(straight, name), getattr(resumed, name)), name


def test_topk_run_keys_ignore_the_standard_only_settings(tmp_path, corpus):
    from steer.training.run import run_key

    base = _config(tmp_path, corpus)
    # A topk config cannot be given l1_coefficient; one that holds it anyway (no validation)
    # keys the same: the standard-only settings are not part of a topk run's identity.
    odd = base.model_copy(update={"l1_coefficient": 1.0, "resample_every": 7})
    assert run_key(base) == run_key(odd)
    assert run_key(base) == run_key(base.model_copy(update={"checkpoint_every": 7}))
    std = _config(tmp_path, corpus, architecture="standard")
    assert run_key(std) != run_key(
        _config(tmp_path, corpus, architecture="standard", l1_coefficient=1.0)
    )
    assert run_key(std) != run_key(base)


# ----------------------------------------------------------------------------- full disk


def _enospc() -> OSError:
    import errno
    import os

    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _hidden_leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("failure", ["write", "fsync"])
def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(
    model, corpus, tmp_path, monkeypatch, failure
):
    import os

    disk_full = False
    if failure == "write":  # the writer gets part of the file out, then the disk is full
        import safetensors.torch

        real_save = safetensors.torch.save_file

        def save(tensors, path, *args, **kwargs):
            if not disk_full:
                return real_save(tensors, path, *args, **kwargs)
            with open(path, "wb") as fh:
                fh.write(b"\x08\x00\x00\x00\x00\x00\x00\x00{")  # a header, then no room
            raise _enospc()

        monkeypatch.setattr(safetensors.torch, "save_file", save)
    else:  # the data sat in the page cache; flushing it to disk fails
        real_fsync = os.fsync

        def fsync(fd):
            if disk_full:
                raise _enospc()
            return real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)

    def fill_disk(step, metrics):
        nonlocal disk_full
        disk_full = disk_full or step > 40

    cfg = _config(tmp_path, corpus, train_tokens=128 * 100, checkpoint_every=40)
    with pytest.raises(SteerError, match="No space left on device") as info:
        train_sae(cfg, model=model, progress=False, callback=fill_disk)
    assert "\n" not in str(info.value) and "checkpoint" in str(info.value)
    ckpt_dir = tmp_path / "ckpt"
    assert [p.name for p in ckpt_dir.iterdir()] == ["checkpoint"]
    monkeypatch.undo()
    assert json.loads((ckpt_dir / "checkpoint" / "state.json").read_text())["step"] == 40
    assert not (tmp_path / "sae").exists()
    # The tensors beside it are whole and of the same step: the run resumes from them.
    steps: list[int] = []
    train_sae(cfg, model=model, resume=True, progress=False, callback=lambda s, m: steps.append(s))
    assert steps[0] == 41


@pytest.mark.parametrize("fail_on", [1, 2])  # the weights file, or the sparsity file after it
def test_a_full_disk_during_the_final_save_keeps_the_earlier_sae(
    model, corpus, tmp_path, monkeypatch, fail_on
):
    import safetensors.torch

    out = tmp_path / "saes" / "sae"
    first = train_sae(
        _config(tmp_path, corpus, out=str(out), train_tokens=128 * 20),
        model=model,
        progress=False,
    )
    before = {p.name: p.read_bytes() for p in first.iterdir()}

    real_save_file = safetensors.torch.save_file
    calls = []

    def save_file(tensors, filename, *args, **kwargs):
        if filename.endswith("tensors.safetensors"):  # a checkpoint: the disk has room for it
            return real_save_file(tensors, filename, *args, **kwargs)
        calls.append(filename)
        if len(calls) < fail_on:
            return real_save_file(tensors, filename, *args, **kwargs)
        with open(filename, "wb") as fh:
            fh.write(b"\x08\x00\x00\x00\x00\x00\x00\x00{")  # a header, then the disk was full
        raise _enospc()

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    cfg = _config(tmp_path / "second", corpus, out=str(out), train_tokens=128 * 20, seed=1)
    with pytest.raises(SteerError, match="cannot save the SAE: No space left on device") as info:
        train_sae(cfg, model=model, progress=False)
    assert "\n" not in str(info.value) and str(out) in str(info.value)
    assert len(calls) == fail_on
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _hidden_leftovers(out.parent) == []


def test_a_text_shorter_than_one_window_is_used_not_refused(model, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("The cat sat on the mat.")
    windows = build_windows(model.tokenizer, [short], ctx_len=64)
    assert windows.shape == (1, 64)
    real = model.tokenizer("The cat sat on the mat.", add_special_tokens=False)["input_ids"]
    assert windows[0, : len(real)].tolist() == real
    special = torch.tensor(special_token_ids(model.tokenizer))
    assert torch.isin(windows[0, len(real) :], special).all()  # padding no SAE step reads


def test_evaluation_on_few_tokens_warns_about_the_dead_fraction(model):
    from support.handmade import orthonormal_sae

    sae = orthonormal_sae(d_in=model.d_model, d_sae=model.d_model, layer=2)
    m = evaluate_sae(model, sae, 2, ["The cat sat on the mat."], ctx_len=32, ce_tokens=0)
    assert 0 < m["tokens"] < 32  # one padded window: the short text is measured
    assert "dead_fraction is from" in m["warnings"][0]
