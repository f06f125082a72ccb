"""BatchTopK training on the tiny random Llama: the batch keeps k x batch activations (a
token may keep more or fewer than k), the SAE is saved as a JumpReLU SAE whose threshold
gives about k on new text, and resume is exact (its settings are checked in
test_recipe.py, its torchrun run in test_distributed.py)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from support.train_runs import small_config as _config

from steer.corpus.documents import read_documents
from steer.training.batchtopk import BatchTopKTrainer
from steer.training.config import TrainConfig
from steer.training.evaluate import evaluate_sae
from steer.training.run import train_sae


def _trainer(d_sae=64, d_in=8, k=4, **over) -> BatchTopKTrainer:
    cfg = TrainConfig(
        architecture="batchtopk", d_sae=d_sae, k=k, out="/unused", data=[{"path": "/unused"}],
        tokens={"collect": 1, "train": 64 * 40}, batch_size=64, **over,
    )  # fmt: skip
    return BatchTopKTrainer(cfg, d_in, torch.randn(256, d_in, generator=torch.Generator()))


def _encode(trainer, seed):
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(seed)) * trainer.scale
    xc = x - trainer.params["b_dec"]
    vals, cols, offsets, _, _ = trainer.encode(xc, torch.zeros(0).long(), 0)
    p = trainer.params
    pre = torch.addmm(p["b_enc"], xc, p["W_enc"].t()).detach()
    return vals, cols, offsets, pre


def test_the_batch_keeps_its_k_times_batch_largest_spread_unevenly_over_tokens():
    trainer = _trainer()
    vals, cols, offsets, pre = _encode(trainer, 1)
    assert len(vals) == 4 * 64  # k x batch in all (no ties in random data)
    per_token = torch.diff(offsets, append=torch.tensor([len(vals)]))
    assert per_token.min() == 0 and per_token.max() > 8  # not k per token
    # Exactly the batch's 256 largest pre-activations, each at its token and feature.
    expected = pre.flatten().topk(4 * 64).values.sort().values
    assert torch.allclose(vals.detach().sort().values, expected)
    rows = torch.repeat_interleave(torch.arange(64), per_token)
    assert torch.equal(pre[rows, cols], vals.detach())
    # Some token held more than its 8 candidates above the first cut: it was ranked whole.
    assert trainer.ranked_whole > 0


def test_gradients_reach_only_the_kept_activations_and_match_a_dense_reference():
    trainer = _trainer()
    vals, cols, offsets, _ = _encode(trainer, 2)
    weights = torch.linspace(1, 2, len(vals))
    (vals * weights).sum().backward()
    p = trainer.params
    got = {name: p[name].grad.clone() for name in ("W_enc", "b_enc", "b_dec")}
    # The same gradient by autograd through a dense mask of the kept entries.
    for param in p.values():
        param.grad = None
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(2)) * trainer.scale
    dense = torch.addmm(p["b_enc"], x - p["b_dec"], p["W_enc"].t())
    rows = torch.repeat_interleave(
        torch.arange(64), torch.diff(offsets, append=torch.tensor([len(vals)]))
    )
    (dense[rows, cols] * weights).sum().backward()
    for name, grad in got.items():
        assert torch.allclose(grad, p[name].grad, atol=1e-5), name
    assert set(torch.nonzero(got["b_enc"]).flatten().tolist()) == set(cols.tolist())


def test_batchtopk_training_saves_a_jumprelu_sae_with_about_k_active(model, corpus, tmp_path):
    from steer.sae.formats import load_sae

    metrics: list[dict] = []
    cfg = _config(tmp_path, corpus, architecture="batchtopk")
    out = train_sae(cfg, model=model, progress=False, callback=lambda s, m: metrics.append(m))
    assert all(math.isfinite(m["loss"]) for m in metrics)
    first = sum(m["loss"] for m in metrics[:20]) / 20
    last = sum(m["loss"] for m in metrics[-20:]) / 20
    assert last < 0.75 * first
    assert all(abs(m["l0"] - cfg.k) < 1e-6 for m in metrics)  # exactly k per token on average
    sae = load_sae(out)
    assert sae.cfg.architecture == "jumprelu"
    threshold = sae.threshold.detach()
    assert float(threshold[0]) > 0 and torch.all(threshold == threshold[0])
    meta = json.loads((out / "cfg.json").read_text())["metadata"]
    assert meta["trained_as"] == "batchtopk" and meta["k"] == cfg.k
    assert meta["threshold_from_steps"] == cfg.total_steps - int(cfg.total_steps * 0.75)
    # On text it never trained on, the threshold keeps about k features per token.
    texts = read_documents(corpus / "chat.jsonl", model.tokenizer)
    res = evaluate_sae(model, sae, 2, texts, ctx_len=32, max_tokens=2048, ce_tokens=512)
    assert 0.5 * cfg.k < res["l0"] < 2 * cfg.k
    assert res["explained_variance"] > 1 - 3 * last


def test_a_resumed_batchtopk_run_gives_the_same_sae_and_threshold(model, corpus, tmp_path):
    from steer.sae.formats import load_sae

    over = dict(architecture="batchtopk", train_tokens=128 * 120, checkpoint_every=40)
    straight = load_sae(
        train_sae(_config(tmp_path / "a", corpus, **over), model=model, progress=False)
    )

    class Crash(Exception):
        pass

    def crash(step, metrics):
        if step == 100:  # past the start of the threshold's last quarter (step 90)
            raise Crash

    with pytest.raises(Crash):
        train_sae(_config(tmp_path / "b", corpus, **over), model=model, progress=False,
                  callback=crash)  # fmt: skip
    state = json.loads((tmp_path / "b" / "ckpt" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 80
    resumed = load_sae(
        train_sae(_config(tmp_path / "b", corpus, **over), model=model, resume=True, progress=False)
    )
    for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"):
        assert torch.allclose(getattr(straight, name), getattr(resumed, name), atol=1e-6), name
