"""Every Ray call of the harness (docs/architecture.md), in this package: `driver` (the cluster, the Tuners of a sweep's
studies) and `trial` (the Tune trainable: one training run with MLflow logging and Tune reporting attached through
the training hooks, data-parallel with Ray Train's TorchTrainer when a trial asks for several workers).
"""

from .driver import TrialOutcome, check_resources, connect, disconnect, run_study
from .trial import train_trial

__all__ = ["TrialOutcome", "check_resources", "connect", "disconnect", "run_study", "train_trial"]
