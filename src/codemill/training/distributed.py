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

from codemill.errors import UserError
from codemill.training.config import PARALLEL_MODES

DEVICE_ENV = "CODEMILL_DEVICE"  # auto | cpu | cuda: where training runs (auto: CUDA when torch sees one)


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(parallel: str = "ddp") -> DistEnv:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1). Alone with
    `parallel="fsdp"`, a one-process group is made, so that FSDP2 (its mixed precision, its
    sharded checkpoints) runs the same way on one device as on many."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    wanted = os.environ.get(DEVICE_ENV, "auto")
    if wanted not in ("auto", "cpu", "cuda"):
        raise UserError(f"{DEVICE_ENV} must be auto, cpu or cuda, got {wanted!r}")
    if wanted == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{DEVICE_ENV}=cuda but torch sees no CUDA device")
    if wanted != "cpu" and torch.cuda.is_available():
        # More ranks than GPUs on a node (a test on a one-GPU machine) share them round-robin.
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        device, backend = torch.device("cuda", index), "nccl" if torch.cuda.device_count() >= world else "gloo"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if world <= 1 and parallel != "fsdp":
        return DistEnv(device=device)
    if not dist.is_initialized():
        # device_id binds the group to this rank's GPU up front (NCCL then needs no lazy init).
        device_id = device if device.type == "cuda" else None
        if world <= 1:
            import socket

            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            dist.init_process_group(
                backend=backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1, device_id=device_id
            )
        else:
            dist.init_process_group(backend=backend, device_id=device_id)
    return DistEnv(rank, max(1, world), local_rank, device)


def shutdown(env: DistEnv) -> None:
    if dist.is_initialized():
        # Every rank waits here: without it FSDP2 under gloo aborted at exit 1 run in 4 (measured).
        dist.barrier()
        dist.destroy_process_group()


def parallelize(model: torch.nn.Module, env: DistEnv, mode: str, bf16: bool = False) -> torch.nn.Module:
    """DDP or FSDP2 when a process group exists (several ranks, or FSDP2 alone). With `bf16`,
    FSDP2 gathers parameters in bfloat16 and reduces gradients in float32 (its MixedPrecisionPolicy;
    the sharded master weights stay float32)."""
    if mode not in PARALLEL_MODES:
        raise UserError(f"parallel mode must be one of {PARALLEL_MODES}, got {mode!r}")
    if not dist.is_initialized():
        return model
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[env.local_rank] if env.device.type == "cuda" else None)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    )
    for block in model.layers:  # type: ignore[union-attr]  # HybridLM's blocks
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def apply_activation_checkpointing(model: torch.nn.Module) -> torch.nn.Module:
    """Recompute each block's activations in the backward pass instead of keeping them (torch's
    composable checkpoint: parameter names and checkpoints are unchanged). Peak memory falls to
    about one block's activations plus the residual stream per block, for ~1/3 more compute."""
    from torch.distributed._composable import checkpoint

    for block in model.layers:  # type: ignore[union-attr]  # HybridLM's blocks
        checkpoint(block)
    return model


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
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model.no_sync()
    from torch.distributed.fsdp import FSDPModule

    if isinstance(model, FSDPModule):

        @contextlib.contextmanager
        def paused():
            model.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                model.set_requires_gradient_sync(True)

        return paused()
    return contextlib.nullcontext()
