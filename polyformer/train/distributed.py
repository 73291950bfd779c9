"""Data-parallel training with PyTorch's own engine: torchrun sets the environment, gloo on CPU.

``torchrun --nproc_per_node 2 -m polyformer.train ...`` starts one process per rank; each calls
:func:`init_distributed`, which reads ``RANK`` / ``WORLD_SIZE`` and joins a gloo process group.
Without those variables training runs in one process and every helper here is a no-op.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistInfo:
    """Join the process group that torchrun describes in the environment (gloo), if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size())


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_sum(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of ``value`` over processes (a copy; float64 keeps logged sums exact enough)."""
    out = value.detach().clone()
    if info.enabled:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """``obj`` of every process, in rank order (on every process)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def torchrun_command(nproc: int, module_args: Sequence[str], port: int | None = None) -> list[str]:
    """The command that runs ``python -m polyformer.train <module_args>`` on ``nproc`` local processes.

    Without ``port``, torchrun's standalone rendezvous binds a free port itself: picking one here
    and passing it on would race with any other process binding ports meanwhile.
    """
    where = (["--master_addr", "127.0.0.1", "--master_port", str(port)] if port is not None
             else ["--standalone"])
    return [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
        *where, "-m", "polyformer.train", *module_args,
    ]


def launch(nproc: int, module_args: Sequence[str], env: dict[str, str] | None = None) -> int:
    """Run training under torchrun and wait; returns its exit status."""
    environment = dict(os.environ if env is None else env)
    environment.setdefault("GLOO_SOCKET_IFNAME", "lo")  # one machine: talk over loopback only
    # Each process gets an equal share of the cores unless the caller chose.
    environment.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return subprocess.call(torchrun_command(nproc, module_args), env=environment)
