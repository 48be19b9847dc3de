"""torchrun support: process group set-up, rank helpers and the resumable distributed sampler."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn


def default_device() -> torch.device:
    """Where a command runs its model when no process group chose one: the GPU when the machine has one, else
    the CPU (training and ``dgseg eval`` go through :func:`init_distributed`, which picks the same)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def model_device(model: nn.Module) -> torch.device:
    """Where ``model``'s weights are (the CPU for a model without parameters)."""
    first = next(model.parameters(), None)
    return torch.device("cpu") if first is None else first.device


def init_distributed() -> tuple[int, int, torch.device]:
    """Start the process group when launched by torchrun (NCCL on GPUs, gloo on CPU).

    Returns (rank, world_size, device).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    return rank, world, device


def end_distributed() -> None:
    """Destroy the process group torchrun's command started, once the command finished on this rank.

    Without it a gloo process can abort at interpreter exit ("terminate called without an active exception":
    gloo's worker threads still hold work while Python tears down; pytorch/pytorch#190489) and NCCL warns
    that the group was never destroyed. Called after a command that returned, never after an error: a rank
    that failed alone would wait in the group's teardown for ranks still waiting in a collective (torchtitan's
    train.py destroys only on success for the same reason)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def end_command_group(command: str) -> None:
    """:func:`end_distributed` after ``dgseg <command>`` returned; a teardown error (an NCCL shutdown, say) is
    reported as a warning: the command's work is done and written, its exit code stands."""
    try:
        end_distributed()
    except RuntimeError as exc:
        print(f"dgseg {command}: warning: the process group did not shut down cleanly: {exc}", file=sys.stderr)


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` with its BatchNorm layers made SyncBatchNorm, when a process group of several ranks runs on GPUs
    (model.neck.norm: batch; VLTSeg's re-implementation normalises its FPN with a SyncBatchNorm, statistics over
    all GPUs' images). Same parameters and buffers (the optimizer keeps them), same state-dict keys; ``model``
    itself when there is no group, no BatchNorm, or the device is not a GPU (SyncBatchNorm needs GPU inputs: on
    CPU each rank normalises with its own batch's statistics)."""
    if not dist.is_initialized() or dist.get_world_size() < 2 or device.type != "cuda":
        return model
    plain = any(isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, nn.SyncBatchNorm)
                for m in model.modules())
    return nn.SyncBatchNorm.convert_sync_batchnorm(model) if plain else model


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast_flag(flag: bool) -> bool:
    """True on every rank when it is true on any rank (used for stop signals)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


class EpochSampler(torch.utils.data.Sampler):
    """Endless shuffled ``(index, epoch)`` pairs, split across ranks, resumable at any sample.

    Epoch ``e`` is a permutation from ``seed + e`` (the same on every rank); rank ``r`` of ``w``
    takes positions ``r, r + w, ...`` (the permutation padded to a multiple of ``w`` by repeating it, as
    ``torch.utils.data.DistributedSampler`` does: every rank gets samples even from fewer samples than ranks). ``start`` is
    the number of this rank's samples already consumed, so a resumed run sees the same stream.
    The epoch travels with the index so per-sample augmentation can be seeded by ``(seed, epoch, index)``.
    """

    def __init__(self, length: int, seed: int = 0, rank: int = 0, world: int = 1, start: int = 0) -> None:
        if length <= 0:
            raise ValueError("EpochSampler: the training set is empty")
        self.length = length
        self.seed = seed
        self.rank = rank
        self.world = world
        self.start = start
        self.per_rank = -(-length // world)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, offset = divmod(self.start, self.per_rank)
        while True:
            g = torch.Generator().manual_seed(self.seed + epoch)
            perm = torch.randperm(self.length, generator=g).tolist()
            pad = self.per_rank * self.world - self.length  # as DistributedSampler: the permutation repeated,
            perm += (perm * -(-pad // self.length))[:pad]  # also when it is shorter than the padding
            mine = perm[self.rank:: self.world]
            for idx in mine[offset:]:
                yield idx, epoch
            offset = 0
            epoch += 1

    def __len__(self) -> int:  # endless; DataLoader only needs it for progress estimates
        return 2**62
