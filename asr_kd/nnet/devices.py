"""Which device a process trains on, and the few collective operations data-parallel training needs.

Under `torchrun` every process (rank) owns ONE device: `cuda:LOCAL_RANK` (NCCL), or the CPU with
the gloo backend (tests, and CPU-only clusters). Loading a set onto `cuda` before knowing the rank
would put every rank's copy on `cuda:0`, so the CLI asks `training_device` first and loads there.

Two ways to use several ranks, both launched the same way:
- ensemble members split across ranks (`train-ensemble`): members are independent, no collective
  beyond a final barrier;
- ONE model data-parallel (`train`, `distill`): `Ranks` says which share of each global batch this
  rank takes; gradients are averaged by `DistributedDataParallel`, metrics summed by `Ranks.sum`.
Written here rather than through a framework (Lightning, accelerate) because the training loop is
small and its resume/bit-identity contract is ours; these are the only distributed calls it makes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from asr_kd.errors import AsrKdError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AsrKdError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def world_size() -> int:
    """Number of processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_device() -> torch.device:
    """This torchrun process's device: its own GPU (LOCAL_RANK), or the CPU (gloo, for tests)."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def training_device(name: str) -> torch.device:
    """The configured device, or this rank's own device under torchrun."""
    return rank_device() if world_size() > 1 else resolve_device(name)


def distributed_rank() -> tuple[int, int]:
    """(rank, world size) under torchrun (initialising the process group), else (0, 1)."""
    world = world_size()
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(rank_device())
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def is_main_process() -> bool:
    """Rank 0 under torchrun (from RANK, without a process group: the stages end theirs), or a plain run."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass(frozen=True)
class Ranks:
    """This process's place among `world` data-parallel ranks (world 1 = plain single process)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> "Ranks":
        rank, world = distributed_rank()
        return cls(rank, world)

    @property
    def main(self) -> bool:
        """Rank 0 writes checkpoints, metrics and logs."""
        return self.rank == 0

    def share(self, idx: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous part of a (K, B) global batch of frame ids (near-equal parts)."""
        return idx if self.world == 1 else torch.tensor_split(idx, self.world, dim=-1)[self.rank]

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """`t` summed over ranks, in place (no-op on one rank)."""
        if self.world > 1:
            torch.distributed.all_reduce(t)
        return t

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


SINGLE = Ranks()
