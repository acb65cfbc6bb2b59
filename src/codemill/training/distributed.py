"""Data parallelism, applied from outside the model (the torchtitan habit: model.py knows nothing
of it). Under `torchrun`, each process joins the group (gloo on CPU, NCCL on GPU) and the model is
wrapped by DDP or sharded by FSDP2 (`fully_shard` per block, then the root). Alone, nothing happens.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

PARALLEL_MODES = ("ddp", "fsdp")


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistEnv:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        return DistEnv(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistEnv(rank, world, local_rank, device)


def shutdown(env: DistEnv) -> None:
    if env.world > 1 and dist.is_initialized():
        # Every rank waits here: without it FSDP2 under gloo aborted at exit 1 run in 4 (measured).
        dist.barrier()
        dist.destroy_process_group()


def parallelize(model: torch.nn.Module, env: DistEnv, mode: str) -> torch.nn.Module:
    if env.world <= 1:
        return model
    if mode not in PARALLEL_MODES:
        raise ValueError(f"parallel mode must be one of {PARALLEL_MODES}, got {mode!r}")
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[env.local_rank] if env.device.type == "cuda" else None)
    from torch.distributed.fsdp import fully_shard

    for block in model.layers:
        fully_shard(block)
    fully_shard(model)
    return model


def apply_activation_checkpointing(model: torch.nn.Module) -> torch.nn.Module:
    """Recompute each block's activations in the backward pass instead of keeping them (torch's
    composable checkpoint: parameter names and checkpoints are unchanged). Peak memory falls to
    about one block's activations plus the residual stream per block, for ~1/3 more compute."""
    from torch.distributed._composable import checkpoint

    for block in model.layers:
        checkpoint(block)
    return model


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def all_mean(value: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.world > 1:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= env.world
    return value


def gather_objects(value, env: DistEnv) -> list:
    if env.world <= 1:
        return [value]
    out: list = [None] * env.world
    dist.all_gather_object(out, value)
    return out


def no_gradient_sync(model: torch.nn.Module):
    """Context for the micro-batches before the last of a step: skip the gradient all-reduce."""
    if hasattr(model, "no_sync"):  # DDP
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        @contextlib.contextmanager
        def paused():
            model.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                model.set_requires_gradient_sync(True)
        return paused()
    return contextlib.nullcontext()
