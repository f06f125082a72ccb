"""`steer train` under torchrun: two processes on the tiny model give the cache and the SAE one
process gives (to float rounding), a run resumes under another world size, several sites are
collected in one pass, and a malformed torchrun environment is a one-line error."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from support.tiny import tiny_loaded_model

from steer.corpus.windows import build_windows
from steer.distributed import World, world
from steer.errors import SteerError
from steer.model.sites import Hook
from steer.training.cache import build_activation_cache
from steer.training.recipe import load_train_recipe
from steer.training.run import train_sae
from steer.training.shards import build_activation_caches

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "mat",
    "dog",
    "ran",
    "in",
    "park",
    "a",
    "small",
    "model",
    "learns",
    "words",
    "once",
    "upon",
    "time",
    "sun",
]
STEPS = 120
# Float sums over two halves of a batch instead of one: after 120 Adam steps the weights of a
# 2-process run differ from a 1-process run by ~3e-7 (measured); 1e-5 leaves room.
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The tiny model as a Hugging Face folder (other processes load it by path) and a text."""
    root = tmp_path_factory.mktemp("ddp")
    model = tiny_loaded_model()
    model.hf.save_pretrained(root / "tiny")
    model.tokenizer.save_pretrained(root / "tiny")
    rng = random.Random(0)
    paras = [
        " ".join(" ".join(rng.choice(WORDS) for _ in range(8)) + "." for _ in range(4))
        for _ in range(300)
    ]
    (root / "plain.txt").write_text("\n\n".join(paras))
    return root


def _recipe(root: Path, tag: str, **over) -> Path:
    settings = {
        "model": str(root / "tiny"),
        "layer": 2,
        "d_sae": 128,
        "k": 8,
        "ctx_len": 32,
        "data": [{"path": str(root / "plain.txt")}],
        "tokens": {"collect": 8192, "train": 128 * STEPS},
        "batch_size": 128,
        "dead_tokens": 4096,
        "checkpoint_every": 40,
        "buffer_rows": 1024,
        "batch_windows": 8,
        "out": str(root / tag / "sae"),
        "cache_dir": str(root / tag / "cache"),
        "checkpoint_dir": str(root / tag / "ckpt"),
        **over,
    }
    path = root / f"{tag}.yaml"
    path.write_text(json.dumps(settings))  # JSON is YAML
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _steer(args: list[str], nproc: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    launch = [sys.executable]
    if nproc > 1:
        launch += ["-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
        launch += ["--master-port", str(_free_port())]
    return subprocess.run(
        [*launch, "-m", "steer.cli", *args], capture_output=True, text=True, env=env, timeout=300
    )


def _weights(root: Path, tag: str) -> dict[str, torch.Tensor]:
    return load_file(root / tag / "sae" / "sae_weights.safetensors")


@pytest.fixture(scope="module")
def one_process(workdir):
    done = _steer(["train", str(_recipe(workdir, "one"))])
    assert done.returncode == 0, done.stderr[-2000:]
    return _weights(workdir, "one")


@pytest.mark.slow
def test_two_processes_build_the_same_cache_and_train_the_same_sae(workdir, one_process):
    done = _steer(["train", str(_recipe(workdir, "two"))], nproc=2)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("saved ") == 1  # rank 0 speaks for the run
    a, b = (np.load(workdir / t / "cache" / "acts.npy", mmap_mode="r") for t in ("one", "two"))
    meta_a, meta_b = (
        json.loads((workdir / t / "cache" / "meta.json").read_text()) for t in ("one", "two")
    )
    assert meta_a == meta_b  # same rows kept, same outlier medians, same counts
    n = meta_a["n_rows"]
    assert n > 5000 and np.array_equal(a[:n], b[:n])
    assert not (workdir / "two" / "cache" / "shards").exists()  # removed once merged
    two = _weights(workdir, "two")
    for name, tensor in one_process.items():
        gap = float((tensor.float() - two[name].float()).abs().max())
        assert gap < TOLERANCE, (name, gap)


@pytest.mark.slow
def test_a_run_resumes_under_another_world_size(workdir, one_process):
    recipe = _recipe(workdir, "resumed")
    config = load_train_recipe(recipe)

    class Crash(Exception):
        pass

    def crash(step, metrics):
        if step == 90:
            raise Crash

    with pytest.raises(Crash):  # one process, stopped after the checkpoint at step 80
        train_sae(config, model=_load(workdir), progress=False, callback=crash)
    done = _steer(["train", str(recipe), "--resume"], nproc=2)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = _weights(workdir, "resumed")
    for name, tensor in one_process.items():
        gap = float((tensor.float() - resumed[name].float()).abs().max())
        assert gap < TOLERANCE, (name, gap)


@pytest.mark.slow
def test_batchtopk_ranks_the_whole_batch_across_processes(workdir):
    # Each rank holds half the batch; the cut-off is the whole batch's (its ranks exchange
    # their largest values), so the 2-process SAE and its threshold are the 1-process ones.
    for tag, nproc in (("btk-one", 1), ("btk-two", 2)):
        recipe = _recipe(workdir, tag, architecture="batchtopk")
        done = _steer(["train", str(recipe)], nproc=nproc)
        assert done.returncode == 0, done.stderr[-2000:]
    one, two = _weights(workdir, "btk-one"), _weights(workdir, "btk-two")
    assert set(one) == {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"}
    assert float(one["threshold"][0]) > 0
    for name, tensor in one.items():
        gap = float((tensor.float() - two[name].float()).abs().max())
        assert gap < TOLERANCE, (name, gap)


def _load(root: Path):
    from steer.model import load_model

    return load_model(str(root / "tiny"), device="cpu")


@pytest.mark.slow
def test_a_batch_that_does_not_split_over_the_ranks_is_one_line(workdir):
    done = _steer(["train", str(_recipe(workdir, "odd", batch_size=127))], nproc=2)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if "batch_size 127" in line]
    assert lines and all("does not split evenly over 2 processes" in x for x in lines)
    # torchrun adds its own report of the failed workers; the workers print no traceback.
    assert "steer/" not in done.stderr.split("ChildFailedError")[0].split("Traceback")[-1]
    assert not (workdir / "odd" / "sae").exists()


def test_several_sites_in_one_pass_equal_one_site_at_a_time(tmp_path, workdir):
    model = tiny_loaded_model()
    windows = build_windows(model.tokenizer, [workdir / "plain.txt"], ctx_len=32, seed=0)[:40]
    hooks = [Hook.at("resid_post", 2), Hook.at("mlp_out", 1), Hook.at("resid_post", 0)]
    together = build_activation_caches(
        model, hooks, windows, [tmp_path / f"m{i}" for i in range(3)], world=World(),
        batch_windows=8,
    )  # fmt: skip
    for i, hook in enumerate(hooks):
        alone = build_activation_cache(model, hook, windows, tmp_path / f"s{i}", batch_windows=8)
        assert together[i].meta == alone.meta
        n = alone.n_rows
        assert np.array_equal(together[i].acts[:n], alone.acts[:n]), hook.name


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not a whole number"),
        ({"WORLD_SIZE": "2", "RANK": "5"}, "RANK=5 is outside WORLD_SIZE=2"),
        ({"WORLD_SIZE": "2", "RANK": "0"}, "WORLD_SIZE=2 but MASTER_ADDR is not set"),
    ],
)
def test_a_malformed_torchrun_environment_is_named(monkeypatch, env, message):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SteerError, match=message):
        world()


def test_one_process_is_a_world_of_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    w = world()
    assert (w.rank, w.size, w.is_main, w.distributed) == (0, 1, True, False)
