"""Data-parallel training helpers: one process per device, launched by ``torchrun``.

Every stage runs the same code whether it is one process or many::

    info = init_distributed("auto")            # reads RANK / WORLD_SIZE / LOCAL_RANK (torchrun)
    model = wrap(model.to(info.device))         # DistributedDataParallel when world > 1
    loader = make_loader(ds, batch_size, shuffle=True, seed=0, drop_last=True, num_workers=0)
    batches = loop_batches(loader)              # endless; DistributedSampler.set_epoch per epoch
    ...
    cleanup()

Without torchrun's variables (or with WORLD_SIZE=1) nothing is initialised and every helper
degrades to the single-process no-op. Backends: ``gloo`` on the CPU, ``nccl`` on CUDA.
``--batch-size`` is *per process*: the global batch is ``batch_size * world``.

Rank 0 (``info.is_main``) alone writes checkpoints, bundle parts and logs; the others only
compute. :func:`all_gather_with_grad` gathers embeddings for contrastive losses so that the
local shard keeps its gradient (the pattern of OpenCLIP's ``gather_with_grad=False`` path).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler

log = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda")


class DistributedSetupError(RuntimeError):
    """The process group could not be set up (bad torchrun environment, missing GPU...)."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int  # Global rank (0..world-1).
    world: int  # Number of processes.
    local_rank: int  # Rank on this machine (selects the GPU).
    device: torch.device  # Device this process trains on.
    is_main: bool  # rank == 0: writes checkpoints, bundle parts and logs.

    @property
    def distributed(self) -> bool:
        return self.world > 1


def resolve_device(pref: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` → CUDA if available else CPU; ``cuda`` without a GPU is an error."""
    if pref not in DEVICE_CHOICES:
        raise ValueError(f"device must be one of {DEVICE_CHOICES}, got {pref!r}")
    if pref == "cpu" or (pref == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DistributedSetupError("--device cuda was asked for but no CUDA GPU is available")
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise DistributedSetupError(f"LOCAL_RANK {local_rank} but only {count} CUDA device(s) are visible")
    return torch.device("cuda", local_rank)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise DistributedSetupError(f"environment variable {name}={raw!r} is not an integer") from exc


def world_info_from_env() -> tuple[int, int, int]:
    """``(rank, world, local_rank)`` from torchrun's variables (``(0, 1, 0)`` when absent)."""
    rank, world, local = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise DistributedSetupError(f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={world} LOCAL_RANK={local}")
    return rank, world, local


def init_distributed(device_pref: str = "auto") -> DistInfo:
    """Join the process group torchrun describes (if any) and pick this process's device."""
    rank, world, local = world_info_from_env()
    device = resolve_device(device_pref, local if world > 1 else 0)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        try:
            dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world,
                                    device_id=device if device.type == "cuda" else None)
        except (RuntimeError, ValueError) as exc:
            raise DistributedSetupError(f"could not join the {backend} process group: {exc}") from exc
        log.info("rank %d/%d on %s (%s)", rank, world, device, backend)
    return DistInfo(rank=rank, world=world, local_rank=local, device=device, is_main=rank == 0)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def wrap(module: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
    """``DistributedDataParallel(module)`` when world > 1, else the module itself.

    The module must already be on this process's device. Modules without trainable
    parameters (frozen networks) are returned unwrapped.
    """
    if not is_distributed() or not any(p.requires_grad for p in module.parameters()):
        return module
    device = next(module.parameters()).device
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused_parameters)


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper (what is saved and evaluated)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = True,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> DataLoader:
    """A DataLoader that shards ``dataset`` over the ranks (DistributedSampler) when world > 1."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    n = len(dataset)  # type: ignore[arg-type]
    world = get_world_size()
    if n < 1:
        raise ValueError("the dataset is empty")
    if drop_last and n // world < batch_size:
        raise ValueError(
            f"the dataset has {n} items: too few for batch size {batch_size} on {world} process(es) "
            f"(need at least {batch_size * world}); lower --batch-size"
        )
    sampler: Any
    if world > 1:
        sampler = DistributedSampler(dataset, num_replicas=world, rank=get_rank(), shuffle=shuffle, seed=seed,
                                     drop_last=drop_last)
    elif shuffle:
        g = torch.Generator()
        g.manual_seed(seed)
        sampler = RandomSampler(dataset, generator=g)
    else:
        sampler = SequentialSampler(dataset)
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, num_workers=num_workers,
        collate_fn=collate_fn, persistent_workers=num_workers > 0, pin_memory=torch.cuda.is_available(),
    )


def loop_batches(loader: DataLoader, start_epoch: int = 0) -> Iterator[Any]:
    """Yield batches forever, epoch after epoch (calling ``sampler.set_epoch`` when it has one)."""
    epoch = start_epoch
    while True:
        sampler = loader.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        got = False
        for batch in loader:
            got = True
            yield batch
        if not got:
            raise ValueError("the data loader yields no batches (dataset smaller than one batch?)")
        epoch += 1


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """Mean of ``tensor`` over the ranks (a new tensor; the input itself when world == 1)."""
    if not is_distributed():
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def all_reduce_max(value: float) -> float:
    """Largest ``value`` over the ranks (for agreeing on stop decisions)."""
    if not is_distributed():
        return value
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    t = torch.tensor([float(value)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` ``[B, ...]`` from every rank along dim 0 (rank order).

    The other ranks' pieces arrive detached; this rank's own slot is the input itself, so its
    gradient flows. (Each rank then computes the loss over the whole gathered batch, and DDP's
    gradient averaging gives the same gradient as a single process with the global batch.)
    """
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.detach().contiguous())
    parts[dist.get_rank()] = tensor
    return torch.cat(parts, dim=0)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group (safe to call when none was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
