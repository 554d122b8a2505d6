"""Training: plain loops with a few hooks (``harness.train.engine``), the Wu 2020 classifier schedule
(``classifier``), the Lu 2018 detector schedule (``detector``), checkpoints, and `run_training` (``runner``)."""

from .hooks import EpochInfo, Hooks, StepInfo
from .runner import TrainResult, run_training

__all__ = ["EpochInfo", "Hooks", "StepInfo", "TrainResult", "run_training"]
