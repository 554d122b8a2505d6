"""The plain parts every training run shares: device and AMP choice, seeding, optimisers, one training epoch,
early stopping. In the spirit of torchvision's ``references/detection/engine.py``: a loop you can read."""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .hooks import Hooks, StepInfo

log = logging.getLogger(__name__)


def select_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU. Anything else is passed to torch.device (``cuda:1``...)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} asked for, but torch sees no CUDA device; use 'auto' or 'cpu'")
    return device


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: ``auto`` is bf16 on a GPU that supports it (else fp16) and off on the CPU."""
    if setting == "off" or (setting == "auto" and device.type != "cuda"):
        return None
    if setting == "fp16" or (setting == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """An autocast context, or a no-op when AMP is off."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; return a generator for DataLoader shuffling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: numpy and random follow torch's per-worker seed (augmentations use them)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_optimizer(name: str, params: Iterable, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
    """``sgd``, ``rmsprop`` (Keras' default rho 0.9), ``adam`` or ``rprop`` over ``params`` (tensors or groups)."""
    params = list(params)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-7, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "rprop":
        return torch.optim.Rprop(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; known: sgd, rmsprop, adam, rprop")


def progress_bar(enabled: bool) -> Progress:
    """A rich progress bar (a disabled one when ``enabled`` is False: Ray trials, tests, pipes)."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        disable=not enabled,
        transient=True,
    )


@dataclass
class LoopState:
    """What one run carries from epoch to epoch (and what a checkpoint restores)."""

    epoch: int = 0  # epochs completed, over all stages
    global_step: int = 0
    stage_epochs: dict[str, int] = field(default_factory=dict)  # epochs completed per stage
    finished_stages: list[str] = field(default_factory=list)  # stages run to their end (or stopped early)
    best_metric: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def train_one_epoch(
    *,
    stage: str,
    state: LoopState,
    loader: Iterable,
    loss_fn: Callable[[object], tuple[torch.Tensor, dict[str, float]]],
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    dtype: torch.dtype | None,
    scaler: torch.amp.GradScaler | None,
    hooks: Hooks,
    lr_at: Callable[[int], float] | None = None,
    grad_clip: float | None = None,
    progress: Progress | None = None,
) -> float:
    """One pass over ``loader``: forward (``loss_fn(batch)`` under autocast), backward, step; hooks after each step.

    Args:
        lr_at: the learning rate for a global step (per-iteration schedules such as Lu's drop), or None.

    Returns:
        The mean training loss of the epoch.

    Raises:
        FloatingPointError: when the loss becomes NaN or infinite (a diverging run should stop, not log NaNs).
    """
    total, count = 0.0, 0
    task = progress.add_task(f"{stage} epoch {state.epoch + 1}", total=len(loader), status="") if progress else None
    for step, batch in enumerate(loader, start=1):
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(state.global_step)
        with autocast(device, dtype):
            loss, parts = loss_fn(batch)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"{stage}: loss is {loss.item()} at epoch {state.epoch + 1}, step {step}")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        state.global_step += 1
        total, count = total + loss.item(), count + 1
        lr = optimizer.param_groups[0]["lr"]
        hooks.after_step(StepInfo(stage, state.epoch + 1, step, state.global_step, loss.item(), lr, parts))
        if progress is not None:
            progress.update(task, advance=1, status=f"loss {total / count:.4f}")
    if progress is not None:
        progress.remove_task(task)
    return total / max(count, 1)


def improved(state: LoopState, value: float, mode: str, min_delta: float) -> bool:
    """Whether ``value`` beats the best so far (and so is the new best)."""
    if value is None or not math.isfinite(value):
        return False
    if state.best_metric is None:
        return True
    return value > state.best_metric + min_delta if mode == "max" else value < state.best_metric - min_delta
