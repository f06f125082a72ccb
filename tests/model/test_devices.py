"""``check_device``: a device this machine lacks is one line, not a CUDA traceback."""

from __future__ import annotations

import pytest
import torch

from steer.errors import SteerError
from steer.model.gguf import ConversionProgress
from steer.model.load import check_device


def test_cpu_is_accepted_however_it_is_typed():
    assert check_device("cpu") == "cpu"
    assert check_device("CPU") == "cpu"
    assert check_device(" cpu:0 ") == "cpu:0"


@pytest.mark.parametrize(
    ("device", "fragment"),
    [("tpu", "unknown device 'tpu'"), ("", "unknown device ''"), ("gpu", "unknown device"),
     ("meta", "not supported")],
)  # fmt: skip
def test_unknown_devices_are_refused(device, fragment):
    with pytest.raises(SteerError, match=fragment):
        check_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused():
    with pytest.raises(SteerError, match="device 'cuda': this machine has no CUDA GPU"):
        check_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_gpu_index_past_the_last_is_refused():
    n = torch.cuda.device_count()
    assert check_device("cuda:0") == "cuda:0"
    with pytest.raises(SteerError, match=f"this machine has {n} CUDA GPU"):
        check_device(f"cuda:{n}")


def test_conversion_progress_names_each_stage_and_ends_full(capsys):
    with ConversionProgress("model.gguf") as stages:
        assert "tokenizer" in stages.bar.desc and stages.bar.n == 0
        stages.next("weights")
        assert "weights" in stages.bar.desc
        assert stages.bar.n == ConversionProgress.SHARES["tokenizer"]
        stages.next("cache")
    assert stages.bar.n == stages.bar.total == 100
    assert "converting model.gguf (once)" in capsys.readouterr().err
