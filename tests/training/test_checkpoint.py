"""Training checkpoints: safetensors + JSON, an exact round trip, nothing ever unpickled (a
planted ``checkpoint.pt`` is ignored), and a damaged checkpoint is one line through the CLI."""

from __future__ import annotations

import json
import logging
import os
import random
import shutil

import pytest
import safetensors.torch
import torch
import yaml
from support.cli_helpers import assert_one_line_error, call

from steer.training.checkpoint import (
    TrainState,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from steer.training.config import TrainConfig
from steer.training.run import train_sae

_VOCAB = "the cat sat on a mat and the dog ran in the park while a little girl played"
WORDS = _VOCAB.split()


@pytest.fixture(scope="module")
def plain_text(tmp_path_factory):
    rng = random.Random(0)
    sentences = [
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 40))) + "." for _ in range(80)
    ]
    path = tmp_path_factory.mktemp("data") / "plain.txt"
    path.write_text("\n\n".join(sentences))
    return path


def _config(tmp_path, plain_text, **over) -> TrainConfig:
    base = dict(
        out=str(tmp_path / "sae"),
        data=[{"path": str(plain_text)}],
        model="tiny-llama",
        layer=2,
        d_sae=64,
        k=4,
        ctx_len=32,
        tokens={"collect": 4096, "train": 128 * 60},
        batch_size=128,
        cache_dir=str(tmp_path / "cache"),
        checkpoint_dir=str(tmp_path / "ckpt"),
        checkpoint_every=20,
        buffer_rows=1024,
    )
    base.update(over)
    return TrainConfig(**base)


def _crash_at(step_to_crash: int):
    class Crash(Exception):
        pass

    def callback(step, metrics):
        if step == step_to_crash:
            raise Crash

    return Crash, callback


# ----------------------------------------------------------------------------- the format


def test_a_checkpoint_is_a_safetensors_file_and_a_json_file(tiny_model, plain_text, tmp_path):
    train_sae(_config(tmp_path, plain_text), model=tiny_model, progress=False)
    folder = tmp_path / "ckpt" / "checkpoint"
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["checkpoint"]
    assert sorted(p.name for p in folder.iterdir()) == ["state.json", "tensors.safetensors"]
    for path in folder.iterdir():  # neither a pickle (protocol byte) nor a torch zip
        assert path.read_bytes()[:2] not in (b"\x80\x02", b"\x80\x04", b"PK")

    tensors = safetensors.torch.load_file(folder / "tensors.safetensors")
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert tensors[f"params.{name}"].dtype == torch.float32
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert f"adam.{name}.{key}" in tensors
        assert tensors[f"adam.{name}.exp_avg"].shape == tensors[f"params.{name}"].shape
    assert tensors["rng"].dtype == torch.uint8
    assert tensors["since_fired"].shape == tensors["fire_counts"].shape == (64,)

    values = json.loads((folder / "state.json").read_text())
    assert values["format"] == 1 and values["step"] == 60
    assert set(values) >= {"scale", "metrics", "count_tokens", "data_position", "run_key"}
    (group,) = values["adam_groups"]
    assert group["betas"] == [0.9, 0.999] and group["params"] == [0, 1, 2, 3]


def _standard_trainer():
    from steer.training.standard import StandardTrainer

    data = torch.randn(2048, 8, generator=torch.Generator().manual_seed(0)) * 3
    cfg = TrainConfig(
        out="unused",
        data=[{"path": "unused"}],
        architecture="standard",
        d_sae=32,
        batch_size=64,
        tokens={"train": 64 * 40},
        dead_tokens=64 * 3,
        resample_every=5,
        resample_until=1.0,
        resample_rows=512,
    )
    trainer = StandardTrainer(cfg, 8, data[:512], resample_source=lambda n, s: data[:n])
    return trainer, data


def test_the_trainer_state_round_trips_exactly(tmp_path):
    trainer, data = _standard_trainer()
    with torch.no_grad():
        trainer.params["b_enc"][:4] = -1e4  # never fire: resampled at step 5
    for i in range(12):
        trainer.train_step(data[i * 64 : (i + 1) * 64])
    assert trainer.resampled  # the generator and the history are part of the state
    save_checkpoint(tmp_path / "checkpoint", trainer.state())

    other, _ = _standard_trainer()
    for i in range(3):  # elsewhere now: everything must come from the file
        other.train_step(data[-(i + 1) * 64 :][:64])
    other.load(load_checkpoint(tmp_path / "checkpoint"))
    want, got = trainer.opt.state_dict(), other.opt.state_dict()
    assert got["param_groups"] == want["param_groups"]
    assert isinstance(got["param_groups"][0]["betas"], tuple)
    for index, entries in want["state"].items():
        for key, tensor in entries.items():
            assert torch.equal(got["state"][index][key], tensor), (index, key)
    assert other.resampled == trainer.resampled and other.step == trainer.step
    assert torch.equal(other.resample_gen.get_state(), trainer.resample_gen.get_state())
    history = list(trainer.resampled)
    for t in (trainer, other):
        with torch.no_grad():
            t.params["b_enc"][4:8] = -1e4  # more to resample at step 15: the generator goes on
    for i in range(12, 20):  # the same future, bit for bit (a resampling at 15 included)
        batch = data[i * 64 : (i + 1) * 64]
        state = torch.get_rng_state()
        trainer.train_step(batch)
        torch.set_rng_state(state)
        other.train_step(batch)
    assert trainer.resampled[len(history) :] and other.resampled == trainer.resampled
    for name, param in trainer.params.items():
        assert torch.equal(param, other.params[name]), name


def test_a_swap_cut_between_its_two_renames_resumes_from_the_previous_checkpoint(tmp_path):
    trainer, _ = _standard_trainer()
    folder = tmp_path / "checkpoint"
    save_checkpoint(folder, trainer.state())
    aside = tmp_path / ".checkpoint.old-4242"
    os.replace(folder, aside)  # the kill came after the old one was moved aside
    assert find_checkpoint(folder) == aside
    assert load_checkpoint(aside).values["step"] == 0
    save_checkpoint(folder, trainer.state())
    assert find_checkpoint(folder) == folder and not aside.exists()


# ----------------------------------------------------------------------------- no pickle


class _Payload:
    """Unpickling this creates the folder ``marker``: what an attacker's code would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.parametrize("where", ["alone", "beside", "inside"])
def test_a_planted_pickle_is_never_loaded(tiny_model, plain_text, tmp_path, caplog, where):
    cfg = _config(tmp_path, plain_text)
    if where != "alone":
        crash, callback = _crash_at(30)
        with pytest.raises(crash):
            train_sae(cfg, model=tiny_model, progress=False, callback=callback)
    ckpt = tmp_path / "ckpt"
    planted = (ckpt / "checkpoint" if where == "inside" else ckpt) / "checkpoint.pt"
    planted.parent.mkdir(parents=True, exist_ok=True)
    marker = tmp_path / "pwned"
    torch.save(_Payload(marker), tmp_path / "payload.pt")
    shutil.copy(tmp_path / "payload.pt", planted)

    steps: list[int] = []
    with caplog.at_level(logging.WARNING):
        train_sae(
            cfg,
            model=tiny_model,
            resume=True,
            progress=False,
            callback=lambda s, m: steps.append(s),
        )
    assert not marker.exists()
    assert steps[0] == (1 if where == "alone" else 21)
    if where == "alone":  # the run says why it starts afresh
        assert "checkpoint.pt is in the old format" in caplog.text
    # The control: the planted file is a real attack when unpickled.
    torch.load(tmp_path / "payload.pt", weights_only=False)
    assert marker.is_dir()


# ----------------------------------------------------------------------------- damage


def _retensor(folder, change):
    path = folder / "tensors.safetensors"
    tensors = safetensors.torch.load_file(path)
    change(tensors)
    safetensors.torch.save_file(tensors, path)


def _revalue(folder, change):
    path = folder / "state.json"
    values = json.loads(path.read_text())
    change(values)
    path.write_text(json.dumps(values))


def _truncate(folder):
    path = folder / "tensors.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {
    "truncated tensors": (_truncate, ["tensors.safetensors", "unreadable checkpoint tensors"]),
    "broken JSON": (
        lambda f: (f / "state.json").write_text('{"step": 3,'),
        ["state.json", "unreadable checkpoint state"],
    ),
    "JSON not a checkpoint": (
        lambda f: (f / "state.json").write_text("[1, 2]"),
        ["state.json", "not a steer checkpoint"],
    ),
    "missing file": (
        lambda f: (f / "state.json").unlink(),
        ["state.json", "checkpoint is incomplete"],
    ),
    "wrong shape": (
        lambda f: _retensor(f, lambda t: t.update({"params.W_enc": torch.zeros(3, 3)})),
        ["checkpoint does not fit this run", "tensor 'params.W_enc' has shape [3, 3]"],
    ),
    "missing tensor": (
        lambda f: _retensor(f, lambda t: t.pop("adam.W_dec.exp_avg_sq")),
        ["checkpoint does not fit this run", "'adam.W_dec.exp_avg_sq' is missing"],
    ),
    "extra tensor": (
        lambda f: _retensor(f, lambda t: t.update({"evil": torch.zeros(1)})),
        ["unexpected tensor 'evil'"],
    ),
    "bad RNG state": (
        lambda f: _retensor(f, lambda t: t["rng"].fill_(255)),
        ["tensor 'rng' is not a generator state"],
    ),
    "bad value": (
        lambda f: _revalue(f, lambda v: v.update(step="80")),
        ["'step' is not of type int"],
    ),
    "bad Adam group": (
        lambda f: _revalue(f, lambda v: v["adam_groups"][0].update(params=[0, 9])),
        ["'adam_groups' 'params'"],
    ),
    "another config": (
        lambda f: _revalue(f, lambda v: v.update(run_key="0123456789abcdef")),
        ["checkpoint is from a different config"],
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_is_one_line_through_the_cli(
    tiny_everywhere, tmp_path, plain_text, capsys, damage
):
    ckpt = tmp_path / "ckpt"
    recipe = {
        "model": "tiny-llama",
        "layer": 2,
        "d_sae": 64,
        "k": 4,
        "data": [{"path": str(plain_text)}],
        "tokens": {"collect": 4096, "train": 4096},
        "batch_size": 256,
        "out": str(tmp_path / "sae-out"),
        "checkpoint_dir": str(ckpt),
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(recipe))
    code, _, err = call(["train", str(path)], capsys)
    assert code == 0, err
    spoil, fragments = DAMAGE[damage]
    spoil(ckpt / "checkpoint")
    code, _, err = call(["train", str(path), "--resume"], capsys)
    assert_one_line_error(code, err, str(ckpt / "checkpoint"), *fragments)


def test_an_empty_state_saves_and_loads(tmp_path):
    save_checkpoint(tmp_path / "c", TrainState(values={"step": 0}))
    state = load_checkpoint(tmp_path / "c")
    assert state.tensors == {} and state.values == {"step": 0}
