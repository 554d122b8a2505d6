"""Data-parallel training with torch.distributed (DDP): what a run needs to know when it is one of several workers.

Whoever starts the workers sets up the process group (Ray Train's TorchTrainer in a sweep: gloo on CPU, nccl on
GPU); the loops only see a `Distributed` and stay free of Ray.

Conventions (docs/sweeps.md):
- ``train.batch_size`` is the global batch: each of N workers takes ``batch_size // N`` samples per step, so a
  2-worker trial makes the same number of optimiser steps with the same learning rate as a single-worker one.
- Every worker validates on the whole validation set (the same weights give the same metrics, so early stopping
  agrees everywhere); the train loss is averaged over workers; only rank 0 writes checkpoints, files and the
  final evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler


@dataclass(frozen=True)
class Distributed:
    """This worker's place among the data-parallel workers of one run."""

    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def per_worker_batch(self, global_batch: int) -> int:
        if global_batch < self.world_size:
            raise ValueError(f"train.batch_size={global_batch} is smaller than the {self.world_size} workers")
        return global_batch // self.world_size

    def sampler(self, dataset: Dataset, shuffle: bool, seed: int) -> DistributedSampler:
        return DistributedSampler(dataset, num_replicas=self.world_size, rank=self.rank, shuffle=shuffle, seed=seed)

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """DDP over the parameters that train now (wrap again when a stage changes what is frozen)."""
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the workers (on the GPU under NCCL, which reduces CUDA tensors only)."""
        nccl = dist.get_backend() == "nccl"
        device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world_size

    def barrier(self) -> None:
        dist.barrier()


def set_epoch(loader, epoch: int) -> None:
    """Reshuffle a distributed sampler's shards for ``epoch`` (a plain loader is left alone)."""
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
