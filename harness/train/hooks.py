"""The fixed points where code outside the loop attaches: after each optimisation step, after each epoch, and once
when a run resumes from its checkpoint.

The loops know nothing of Ray or MLflow: Tune reporting and MLflow logging are `Hooks` subclasses. A hook that
raises stops the run (Tune stops a trial this way); `after_epoch` returning True asks the loop to stop cleanly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class StepInfo:
    """One optimisation step."""

    stage: str  # "stage1", "stage2", "hybrid_mlp", "hybrid_finetune", "detector"
    epoch: int  # global epoch counter, from 1
    step: int  # step within the epoch, from 1
    global_step: int
    loss: float
    lr: float
    losses: dict[str, float] = field(default_factory=dict)  # detector: the loss terms


@dataclass(frozen=True)
class EpochInfo:
    """The end of one epoch, with its metrics (train loss and, when evaluated, validation metrics)."""

    stage: str
    epoch: int
    metrics: dict[str, float]
    is_best: bool = False
    checkpoint: str | None = None  # path of the checkpoint written after this epoch


class Hooks:
    """Override what you need; the defaults do nothing."""

    def after_step(self, info: StepInfo) -> None:
        """Called after every optimisation step."""

    def after_epoch(self, info: EpochInfo) -> bool | None:
        """Called after every epoch (its checkpoint is on disk). Return True to stop training early."""
        return None

    def after_resume(self, history: list[dict]) -> None:
        """Called once when a run resumes from ``last.pt``, with the epochs it already holds: one dict per epoch
        (``stage`` plus the metrics that epoch's `EpochInfo` carried). A process killed after an epoch's checkpoint
        was written but before its hooks ran never delivered that epoch; a hook that must see every epoch once
        (MLflow logging) catches up here."""


class HookList(Hooks):
    """Several hooks called in order."""

    def __init__(self, hooks: Iterable[Hooks] = ()):
        self.hooks = list(hooks)

    def after_step(self, info: StepInfo) -> None:
        for hook in self.hooks:
            hook.after_step(info)

    def after_resume(self, history: list[dict]) -> None:
        for hook in self.hooks:
            hook.after_resume(history)

    def after_epoch(self, info: EpochInfo) -> bool:
        stop = False
        for hook in self.hooks:
            stop = bool(hook.after_epoch(info)) or stop
        return stop
