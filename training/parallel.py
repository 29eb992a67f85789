"""Process group, device and FSDP2 sharding."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

from holocine_model import WanDiT
from holocine_model.context_parallel import ContextParallel

log = logging.getLogger(__name__)


@dataclass
class World:
    rank: int
    size: int
    local_rank: int
    device: torch.device
    # Context-parallel groups are runs of ``context`` consecutive ranks sharing each sample.
    context: int = 1
    context_parallel: ContextParallel | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def data_rank(self) -> int:
        """Which share of the samples this rank reads: its context-parallel group's."""
        return self.rank // self.context

    @property
    def data_size(self) -> int:
        return self.size // self.context


def init_world(context: int = 1) -> World:
    """Join the process group torchrun or Ray Train describes (NCCL on GPU, gloo on CPU), if any,
    and the context-parallel group of this rank when ``context`` > 1."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if context < 1 or size % context:
        raise ValueError(f"parallel.context={context} must divide the world size {size}")
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None)
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = World(rank, dist.get_world_size() if dist.is_initialized() else 1, local_rank, device, context)
    if context > 1:
        mesh = init_device_mesh(device.type, (world.size // context, context), mesh_dim_names=("data", "context"))
        world.context_parallel = ContextParallel(mesh.get_group("context"))
    return world


def shard_model(model: WanDiT, mixed_precision: bool) -> WanDiT:
    """FSDP2: one unit per block, then the rest at the root.

    With bf16 the timestep MLPs get their own fp32 unit: Wan computes the timestep embedding and
    modulation in fp32, and ``cast_forward_inputs=False`` leaves the fp32 timesteps untouched.
    """
    bf16 = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=False)
    policy = bf16 if mixed_precision else MixedPrecisionPolicy()
    if mixed_precision:
        for module in (model.time_embedding, model.time_projection):
            fully_shard(module, mp_policy=MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32))
    for block in model.blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def barrier() -> None:
    """Wait for every rank (nothing to wait for without a process group)."""
    if dist.is_initialized():
        dist.barrier()


def all_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean over ranks (identity without a process group)."""
    if dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)  # gloo has no AVG
        value /= dist.get_world_size()
    return value


def all_sum(value: int) -> int:
    if not dist.is_initialized():
        return value
    tensor = torch.tensor([value], dtype=torch.long, device="cuda" if torch.cuda.is_available() else "cpu")
    dist.all_reduce(tensor)
    return int(tensor.item())
