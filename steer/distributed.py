"""Running under ``torchrun``: which rank this process is, and the few collectives steer needs.

``torchrun --nproc-per-node N steer train ...`` starts N copies of a command; each reads its
place from the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, and the
rendezvous in ``MASTER_ADDR``/``MASTER_PORT``). :func:`world` joins the process group once (gloo
on CPU, nccl when the process has a GPU; ``STEER_DIST_BACKEND`` overrides) and every helper here
is a no-op in a single process, so the same code runs with and without torchrun.

Ranks are assumed to share a file system (one machine, or a shared mount): the activation cache
and the feature index are merged through files, not sent over the process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from steer.errors import SteerError


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes shared files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


_SINGLE = World()


def world() -> World:
    """This process's :class:`World`; under torchrun the process group is joined on first call.

    A malformed torchrun environment (a ``WORLD_SIZE`` that is not a positive number, a rank
    out of range) is a one-line SteerError naming the variable.
    """
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1:
        return _SINGLE
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < size:
        raise SteerError(f"RANK={rank} is outside WORLD_SIZE={size}", where="environment")
    import torch.distributed as dist

    if not dist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if not os.environ.get(name):
                raise SteerError(
                    f"WORLD_SIZE={size} but {name} is not set: start the command with torchrun",
                    where="environment",
                )
        dist.init_process_group(backend=_backend(local))
    return World(rank=rank, size=size, local_rank=local)


def _backend(local_rank: int) -> str:
    chosen = os.environ.get("STEER_DIST_BACKEND")
    if chosen:
        return chosen
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return "nccl"
    return "gloo"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SteerError(f"{name}={raw!r} is not a whole number", where="environment") from None
    if value < 0 or (name == "WORLD_SIZE" and value == 0):
        raise SteerError(f"{name}={raw} is out of range", where="environment")
    return value


def quiet_unless_main(w: World) -> None:
    """On ranks other than 0, keep steer's warnings and transformers' loading bars to
    errors only: N copies of every line tell a user nothing more than one."""
    if w.is_main:
        return
    import logging

    logging.getLogger("steer").setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def barrier(w: World) -> None:
    """Wait until every rank gets here (no-op in one process)."""
    if w.distributed:
        import torch.distributed as dist

        dist.barrier()


def all_reduce_sum(w: World, tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the ranks, in place; returns it (unchanged in one process)."""
    if w.distributed:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_cat(w: World, tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` (one shape on every rank) joined along dim 0, in rank order
    (``tensor`` itself in one process)."""
    if not w.distributed:
        return tensor
    import torch.distributed as dist

    parts = [torch.empty_like(tensor) for _ in range(w.size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def all_gather_objects(w: World, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` in one process)."""
    if not w.distributed:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * w.size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(w: World, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not w.distributed:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree(w: World, ok: bool, message: str | None) -> None:
    """Fail on every rank when any rank failed a check, with the first rank's message, so one
    rank's bad input never leaves the others waiting forever in a collective."""
    results = all_gather_objects(w, (ok, message))
    for rank_ok, rank_message in results:
        if not rank_ok:
            raise SteerError(rank_message or "another rank failed")
