"""The process group of a batch job: torchrun's environment, or one process without one.

Under ``torchrun --nproc-per-node N [--nnodes M ...]`` the launcher sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT; with WORLD_SIZE > 1 the job joins the default
process group (gloo on the CPU, nccl on CUDA devices). Without torchrun (or with
WORLD_SIZE=1) there is no process group and every collective is the identity.
"""

import datetime
import os
from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.distributed as dist

from pyinvert.batch.options import UsageError


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "") or str(default)
    try:
        value = int(text)
    except ValueError:
        raise UsageError(
            f"batch: expected ${name} to be an integer (as torchrun sets it), got {text!r}"
        ) from None
    if value < 0:
        raise UsageError(f"batch: expected ${name} >= 0, got {value}")
    return value


@dataclass
class Dist:
    """Rank, world size and the few collectives the job uses (object lists, CPU side)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False
    backend: Optional[str] = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device: str = "cpu", timeout_s: float = 86400.0) -> "Dist":
        """Join torchrun's process group when WORLD_SIZE > 1 (or reuse one already joined)."""
        if dist.is_available() and dist.is_initialized():
            return cls(
                rank=dist.get_rank(),
                world_size=dist.get_world_size(),
                local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                owns_group=False,
                backend=str(dist.get_backend()),
            )
        world, rank, local = (
            _env_int(name, default)
            for name, default in (("WORLD_SIZE", 1), ("RANK", 0), ("LOCAL_RANK", 0))
        )
        if world <= 1:
            return cls(rank=0, world_size=1, local_rank=local)
        if not dist.is_available():
            raise RuntimeError("batch: WORLD_SIZE > 1 but torch.distributed is not available")
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
        return cls(rank=rank, world_size=world, local_rank=local, owns_group=True, backend=backend)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_gather(self, obj: Any) -> List[Any]:
        """Every rank's ``obj``, in rank order."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.owns_group:
            if dist.is_initialized():
                dist.destroy_process_group()
            self.owns_group = False
