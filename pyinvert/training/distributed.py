"""Data-parallel training under ``torchrun`` for the training loops: the process group from
the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...),
gloo on the CPU and nccl on CUDA, and the rank's share of a global batch.

Outside torchrun (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) everything is a single process and
nothing is initialized.
"""

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place: ``rank`` of ``size`` processes, on ``device``; ``owner``: it set
    up the process group (and tears it down)."""

    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")
    owner: bool = False

    @property
    def main(self) -> bool:
        """The process that writes checkpoints and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def launched() -> bool:
    """True inside a ``torchrun`` launch of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device=None, fn: str = "train") -> World:
    """The :class:`World` of this process, initializing the process group when launched by
    torchrun with several processes (gloo for a CPU device, nccl for CUDA; each rank takes the
    GPU of its ``LOCAL_RANK``).

    Args:
        device: None or "cpu" (gloo), or "cuda" (nccl, the GPU of ``LOCAL_RANK``).
        fn: the function named in errors.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if not launched():
        return World(device=dev)
    rank = int(os.environ["RANK"])
    size = int(os.environ["WORLD_SIZE"])
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{fn}: device cuda requested but CUDA is not available")
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    owner = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
        owner = True
    return World(rank=rank, size=size, device=dev, owner=owner)


def share(global_batch: int, world: World, fn: str = "train") -> int:
    """This rank's samples of a global batch (a ValueError unless it divides evenly)."""
    if global_batch % world.size:
        raise ValueError(
            f"{fn}: expected batch_size (the global batch) divisible by the {world.size} "
            f"processes, got {global_batch}"
        )
    return global_batch // world.size


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def mean(value: torch.Tensor, world: World) -> torch.Tensor:
    """The mean of a tensor over the processes (itself for one)."""
    if not world.distributed:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / world.size


def teardown(world: Optional[World]) -> None:
    """Destroy the process group if ``world`` created it."""
    if world is not None and world.owner and dist.is_initialized():
        dist.destroy_process_group()
