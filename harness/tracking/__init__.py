"""Every MLflow call of the harness, writes and reads (docs/sweeps.md, "MLflow layout"); a test keeps this package
the only one that imports ``mlflow``.

Layout: one experiment per sweep name (in MLflow's model-training view); one parent run per execution of the sweep;
under it one run per configuration (a grid point: the aggregate metrics over its folds and repeats), and under each
configuration its trials (one per fold and repeat), tagged with the trial's key so that a retried or restored trial
finds and continues its own run. Every run of an execution carries its parent's id (`SWEEP_RUN_TAG`).

Rules this package keeps:
- The driver creates the experiment (and so a fresh sqlite database's schema) before any trial starts: several
  processes creating a sqlite database at once corrupt it.
- Trials log with plain ``mlflow`` (not Ray's MLflow callbacks, which ignore the experiment, leave runs RUNNING and
  duplicate restored runs) and end their run with its true status: FINISHED, KILLED (stopped by the scheduler),
  FAILED (error). A run left RUNNING by a killed process is marked by the driver.
- No patient names, ids or file paths in params, tags or metrics: paths are dropped from logged configs; patients in
  artifacts are pseudonyms.

Modules: `store` (URI, experiment, tags), `params` (what params and metrics look like), `runs` (writes), `reads`
(``harness compare``).
"""

from .params import MAX_PARAM_LENGTH, PATH_KEYS, SHORT_NAMES, UNUSED_KEYS, finite_metrics, flatten, trial_params
from .reads import EXCLUDED_EXPERIMENTS, ExperimentNotFoundError, RunRecord, SweepRuns, latest_sweep_runs, read_artifact
from .runs import SweepTracking, TrialRun, end_trial_run, log_benchmark_run, record_comparison
from .store import (
    CONFIGURATION_TAG,
    CONFIGURATIONS_VIEW,
    EPOCH_METRIC,
    EXPERIMENT_KIND,
    KIND_TAG,
    PARENT_TAG,
    POINT_TAG,
    STUDY_TAG,
    SWEEP_RUN_TAG,
    SWEEP_TAG,
    TRIAL_TAG,
    artifact_root_for,
    default_tracking_uri,
    prepare_experiment,
    tracking_uri_from,
)

__all__ = [
    "CONFIGURATIONS_VIEW",
    "artifact_root_for",
    "CONFIGURATION_TAG",
    "default_tracking_uri",
    "end_trial_run",
    "EPOCH_METRIC",
    "EXCLUDED_EXPERIMENTS",
    "EXPERIMENT_KIND",
    "ExperimentNotFoundError",
    "finite_metrics",
    "flatten",
    "KIND_TAG",
    "latest_sweep_runs",
    "log_benchmark_run",
    "MAX_PARAM_LENGTH",
    "PARENT_TAG",
    "PATH_KEYS",
    "POINT_TAG",
    "prepare_experiment",
    "read_artifact",
    "record_comparison",
    "RunRecord",
    "SHORT_NAMES",
    "STUDY_TAG",
    "SWEEP_RUN_TAG",
    "SWEEP_TAG",
    "SweepRuns",
    "SweepTracking",
    "tracking_uri_from",
    "trial_params",
    "TRIAL_TAG",
    "TrialRun",
    "UNUSED_KEYS",
]
