"""``steer features index`` under ``torchrun``: the ranks' states merge exactly, so a 2-process
index equals the 1-process one table by table (a partial 2-process build resumes to it too, with
another number of processes), and a failure on one rank ends every rank with its message
instead of a hang."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch
from support.feature_index import CORPUS
from support.sae_factory import make_sae

from steer.corpus.windows import build_windows
from steer.distributed import World
from steer.errors import SteerError
from steer.features import sharding
from steer.features.encode import BatchEncoder
from steer.features.running import STATE_NAMES, RunningIndex
from steer.features.sharding import exchange, fold_round, rounds
from steer.sae import save_sae

ROOT = Path(__file__).resolve().parents[2]
# Written by float sums in another order: the mean activation (sum / count, stored to 4
# decimals) may differ by one unit of its last place. Everything else must be identical.
MEAN_TOL = 1e-4
TABLES = {
    "features": "SELECT * FROM features ORDER BY id",
    "contexts": "SELECT * FROM contexts ORDER BY feature, rank",
    "samples": "SELECT * FROM samples ORDER BY feature, rank",
    "meta": "SELECT * FROM meta WHERE key != 'build_seconds' ORDER BY key",
    "tables": "SELECT type, name, sql FROM sqlite_master ORDER BY name",
}


# ----------------------------------------------------------------------------- merge (fast)


def _index():
    return RunningIndex(12, top_k=4, context_tokens=6, n_bins=20, samples=5)


def test_merged_states_equal_one_state_fed_everything():
    torch.manual_seed(0)
    n, batch = 24, 3
    acts = torch.relu(torch.randn(n, 10, 12) - 0.5)
    acts = (acts * 4).round() / 4  # coarse values: many ties between windows
    ids = torch.randint(0, 50, (n, 10))
    for copy in (5, 17):  # identical windows in batches that go to different states
        acts[copy], ids[copy] = acts[2], ids[2]
    one = _index()
    for b in range(0, n, batch):
        one.update(ids[b : b + batch], acts[b : b + batch])
    parts = [_index() for _ in range(3)]
    for i, b in enumerate(range(0, n, batch)):
        parts[i % 3].update(ids[b : b + batch], acts[b : b + batch], start=b)
    merged = parts[2]  # merged out of order: the result may not depend on it
    merged.merge(parts[0])
    merged.merge(parts[1])
    assert int((one.top_vals[:, :, None] == one.top_vals[:, None, :]).sum()) > 12 * 4
    for name in STATE_NAMES:
        want, got = one.state_dict()[name], merged.state_dict()[name]
        if name == "sum_act":
            assert torch.allclose(got, want, rtol=1e-12, atol=0), name
        else:
            assert torch.equal(got, want), name


def test_states_of_other_settings_are_not_merged():
    with pytest.raises(SteerError, match="different settings"):
        _index().merge(RunningIndex(12, top_k=3, context_tokens=6, n_bins=20, samples=5))


class _Group:
    """Ranks as threads of this process: ``all_gather_objects`` through a barrier."""

    def __init__(self, size):
        self.barrier, self.slots = threading.Barrier(size, timeout=60), [None] * size

    def all_gather_objects(self, w, obj):
        self.slots[w.rank] = obj
        self.barrier.wait()
        out = list(self.slots)
        self.barrier.wait()  # every rank has read before any writes again
        return out


def _as_ranks(size, work):
    """``work(world)`` for each rank, in threads; returns each rank's result or exception."""
    out = [None] * size

    def one(rank):
        try:
            out[rank] = work(World(rank=rank, size=size))
        except Exception as exc:
            out[rank] = exc

    threads = [threading.Thread(target=one, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return out


def test_rounds_keep_what_one_process_keeps_under_the_outlier_rule(
    tiny_model, monkeypatch, tmp_path
):
    """With an outlier factor of 1 every position above the running median (of the batches'
    medians, in corpus order) is dropped, so any other reference changes what is kept: ranks
    that swap their batches' medians keep exactly the positions one process keeps."""
    sae = make_sae("topk", d_in=tiny_model.d_model, d_sae=16, k=4, layer=2, seed=1)
    data = tmp_path / "corpus.txt"
    data.write_text(CORPUS * 4, encoding="utf-8")
    windows = build_windows(tiny_model.tokenizer, [str(data)], ctx_len=32).long()
    batch, starts = 3, list(range(0, len(windows), 3))
    # The forward passes once, up front: the "ranks" below are threads, and the model's
    # trace is not meant to run in two threads at once. A batch is a view of `windows`.
    hidden = {
        windows[b:].data_ptr(): BatchEncoder(tiny_model, sae).hidden(windows[b : b + batch])
        for b in starts
    }

    def encoder():
        enc = BatchEncoder(tiny_model, sae, outlier_factor=1.0)
        enc.hidden = lambda ids: hidden[ids.data_ptr()]
        return enc

    one, ref = encoder(), RunningIndex(16, top_k=3, context_tokens=8, n_bins=20, samples=4)
    for b in starts:
        ref.update(windows[b : b + batch], one(windows[b : b + batch])[0], start=b)
    assert one.stats.outliers > one.stats.kept // 10  # the rule is at work

    group = _Group(2)
    monkeypatch.setattr(sharding, "all_gather_objects", group.all_gather_objects)

    def rank_work(w):
        enc, state = encoder(), ref.fresh()
        for round_starts in rounds(0, len(windows), batch, w.size):
            mine = round_starts[w.rank] if w.rank < len(round_starts) else None
            ids = None if mine is None else windows[mine : mine + batch]
            fold_round(w, enc, state, ids, mine)
        return enc, state

    (enc0, merged), (enc1, other) = _as_ranks(2, rank_work)
    merged.merge(other)
    assert enc0.outliers.state_dict() == enc1.outliers.state_dict() == one.outliers.state_dict()
    assert enc0.stats.kept + enc1.stats.kept == one.stats.kept
    assert enc0.stats.outliers + enc1.stats.outliers == one.stats.outliers
    for name in STATE_NAMES:
        want, got = ref.state_dict()[name], merged.state_dict()[name]
        assert torch.allclose(got.double(), want.double(), rtol=1e-12, atol=0), name


def test_a_failure_on_one_rank_fails_every_rank(monkeypatch):
    group = _Group(2)
    monkeypatch.setattr(sharding, "all_gather_objects", group.all_gather_objects)

    def work(w):
        def step():
            if w.rank == 1:
                raise RuntimeError("out of memory\nmore detail")
            return "fine"

        return exchange(w, step)

    zero, one = _as_ranks(2, work)
    assert isinstance(one, RuntimeError)  # the failing rank: its own error
    assert isinstance(zero, SteerError) and str(zero) == "rank 1: RuntimeError: out of memory"
    user_error = _as_ranks(2, lambda w: exchange(w, lambda: (_ for _ in ()).throw(SteerError("x"))))
    assert [str(e) for e in user_error] == ["x", "x"]  # the user's error: one line everywhere


# ----------------------------------------------------------------------- torchrun (slow)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model):
    """The tiny model as a Hugging Face folder (for other processes), a TopK SAE of it and a
    corpus of ~100 windows of 128 tokens (several rounds of 2 batches of 16)."""
    root = tmp_path_factory.mktemp("dist-index")
    tiny_model.hf.save_pretrained(root / "tiny")
    tiny_model.tokenizer.save_pretrained(root / "tiny")
    save_sae(
        make_sae("topk", d_in=tiny_model.d_model, d_sae=48, k=6, layer=2, seed=1), root / "sae"
    )
    data = root / "corpus.txt"
    data.write_text(CORPUS * 120, encoding="utf-8")
    return root


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "STEER_DIST_BACKEND": "gloo",
    }


def _launch(nproc: int | None, args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """``args`` (``-m module ...`` or a script) in one process or under torchrun."""
    head = [sys.executable]
    if nproc is not None:
        head += ["-m", "torch.distributed.run", "--nproc-per-node", str(nproc)]
        head += ["--master-port", str(_port())]
    return subprocess.run(
        head + args, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout
    )


def _index_cli(root: Path, db: Path, nproc: int | None, *extra: str):
    args = ["-m", "steer.cli", "features", "index", str(root / "sae")]
    args += ["--data", str(root / "corpus.txt"), "--model", str(root / "tiny"), "--db", str(db)]
    return _launch(nproc, [*args, "--flush-every", "32", *extra])


def _rows(db: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def assert_same_index(got: Path, want: Path) -> None:
    """Every table row for row; the mean activation (column 3) to MEAN_TOL."""
    for name, sql in TABLES.items():
        a, b = _rows(got, sql), _rows(want, sql)
        assert len(a) == len(b) > 0, name
        for ra, rb in zip(a, b, strict=True):
            if name == "features":
                assert ra[3] == pytest.approx(rb[3], abs=MEAN_TOL), (name, ra[0])
                ra, rb = ra[:3] + ra[4:], rb[:3] + rb[4:]
            assert ra == rb, (name, ra[:2])


@pytest.fixture(scope="module")
def single(setup):
    db = setup / "one.sqlite"
    done = _index_cli(setup, db, None)
    assert done.returncode == 0, done.stderr[-3000:]
    return db


@pytest.mark.slow
def test_two_processes_build_the_one_process_index(setup, single):
    db = setup / "two.sqlite"
    done = _index_cli(setup, db, 2)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_index(db, single)
    meta = dict(_rows(db, "SELECT key, value FROM meta"))
    assert json.loads(meta["windows_done"]) == json.loads(meta["windows_total"]) > 4 * 16
    assert done.stdout.count("built:") == 1  # rank 0 alone reports
    assert done.stderr.count("index:   0%") == 1  # and shows progress
    assert not Path(f"{db}.partial").exists()


SCRIPT = """
import os
import sys
from pathlib import Path
from steer.features.index import build_index
from steer.sae.loading import load_sae_and_model

root, db, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
folder, sae, model = load_sae_and_model(root / "sae", model=str(root / "tiny"))
result = build_index(model, sae, folder, [root / "corpus.txt"], db=db, stop_after=40,
                     flush_every=32, progress=False)
# One file per rank: the ranks' stdout lines interleave (seen in CI as "statusstatus").
(out / f"rank{os.environ['RANK']}.txt").write_text(f"status {result.status} {result.windows}")
"""


@pytest.mark.slow
def test_a_stopped_two_process_build_resumes_to_the_same_index(setup, single, tmp_path):
    # Stopped at a batch boundary after a flush: the work file as a kill after that flush
    # leaves it (the resume state is written in the flush's transaction).
    script = tmp_path / "partial.py"
    script.write_text(textwrap.dedent(SCRIPT))
    db = setup / "resumed.sqlite"
    stopped = _launch(2, [str(script), str(setup), str(db), str(tmp_path)])
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    # Every rank returns rank 0's result.
    said = [(tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1)]
    assert said == ["status partial 48"] * 2
    assert Path(f"{db}.partial").is_file() and not db.exists()
    # Resumed with another number of processes: the saved state is one merged state.
    done = _index_cli(setup, db, 3)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed:" in done.stdout
    assert_same_index(db, single)


@pytest.mark.slow
def test_an_error_on_one_rank_ends_every_rank_with_its_message(setup, single, tmp_path):
    # An index of other settings: rank 0 alone reads the index files, so it alone finds that.
    db = tmp_path / "other.sqlite"
    db.write_bytes(single.read_bytes())
    done = _index_cli(setup, db, 2, "--top-k", "3")
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2, done.stderr[-3000:]  # both ranks, one message
    assert all("different top_k; pass --rebuild" in line for line in errors)
