"""Data-parallel evaluation under the launchers users already have.

``torchrun --nproc_per_node K script.py ...`` and ``accelerate launch script.py ...`` both set
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init_distributed` reads them, joins the
process group (NCCL on CUDA, gloo on CPU) and gives each rank its device. Each rank takes a
disjoint, strided shard of the sample indices; rank 0 merges what all ranks wrote. Without
those variables everything runs in one process, unchanged.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Sequence

import torch
import torch.distributed as dist

__all__ = ["DistContext", "init_distributed", "resolve_device"]


def resolve_device(device: str | None, local_rank: int = 0) -> torch.device:
    """The one device resolver of every driver: ``None``/"auto" -> CUDA when available else
    CPU; a bare "cuda" under a launcher -> the rank's own GPU. A name torch does not know, CUDA
    where there is none, or a GPU index beyond the visible ones stops with one line."""
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise SystemExit(f"error: device {device!r} is not a torch device; use cpu, cuda or "
                         f"cuda:N") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"error: device {device} was asked for but CUDA is not available; "
                             "use cpu")
        count = torch.cuda.device_count()
        if resolved.index is None:
            resolved = torch.device("cuda", local_rank % count)
        elif resolved.index >= count:
            raise SystemExit(f"error: device {device}: only {count} CUDA device(s) are "
                             f"visible (cuda:0..cuda:{count - 1}); pass one of them")
    elif resolved.type not in ("cpu", "mps", "xpu"):
        raise SystemExit(f"error: device {device!r} is not supported here; use cpu, cuda or "
                         f"cuda:N")
    return resolved


@dataclass
class DistContext:
    """This process's place in a (possibly one-process) data-parallel run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def shard(self, indices: Sequence[int]) -> list[int]:
        """This rank's disjoint share: every ``world_size``-th index from ``rank``."""
        return list(indices)[self.rank::self.world_size]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def total(self, value: float) -> float:
        """The sum of ``value`` over all ranks (itself in a one-process run)."""
        return self._reduce(value, dist.ReduceOp.SUM)

    def maximum(self, value: float) -> float:
        """The largest ``value`` of all ranks (itself in a one-process run)."""
        return self._reduce(value, dist.ReduceOp.MAX)

    def _reduce(self, value: float, op) -> float:
        if not self.active:
            return value
        tensor = torch.tensor([float(value)], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            tensor = tensor.to(self.device)
        dist.all_reduce(tensor, op=op)
        return float(tensor.item())

    def all_ok(self, ok: bool) -> bool:
        """True on every rank only if ``ok`` on every rank (an error on one rank stops all)."""
        if not self.active:
            return ok
        flag = torch.tensor([0 if ok else 1], dtype=torch.int64)
        if dist.get_backend() == "nccl":
            flag = flag.to(self.device)
        dist.all_reduce(flag)
        return int(flag.item()) == 0

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: str | None = None) -> DistContext:
    """Join the launcher's process group if there is one (``WORLD_SIZE`` > 1)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        dist.init_process_group(backend=backend, timeout=timedelta(hours=2))
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=resolved)
