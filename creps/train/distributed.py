"""One process or several (torchrun): rank, device, gradient and statistic reduction."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from creps.device import pick_device

log = logging.getLogger(__name__)


@dataclass
class Processes:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce a tensor in place (sum over processes); a no-op for one process."""
        if self.world > 1:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def sum_floats(self, *values: float) -> list[float]:
        return self.sum_(torch.tensor(values, dtype=torch.float64, device=self.device)).tolist()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def world_size() -> int:
    """The number of processes torchrun started (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def start(device_name: str) -> Processes:
    """Join the torchrun group when launched by torchrun (WORLD_SIZE > 1), else one process."""
    world = world_size()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name)
    if device.type == "cuda":
        device = pick_device(f"cuda:{local_rank if device.index is None else device.index}")
        torch.cuda.set_device(device)
    if world > 1:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        log.info("process %d of %d on %s (%s)", rank, world, device, backend)
    return Processes(rank=rank, world=world, device=device)


def reduce_gradients(module: torch.nn.Module, procs: Processes) -> None:
    """Sum the gradients over processes (each loss is already divided by the global batch)."""
    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.flatten() for p in params])
    procs.sum_(flat)
    torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad.copy_(g.reshape(p.shape))
