"""``harness run`` and ``harness compare``: sweeps of training runs and their comparison.

- `schema`: the sweep file's keys as strict pydantic models; `plan`: the file validated and expanded into the exact
  list of trials (configurations x folds x repeats) before anything runs.
- `run`: the driver's flow (data prepared once, the MLflow parent run, one Ray Tune run per study through
  `harness.tune`, the end state of every trial).
- `view`: the plan and the live board of trials on the terminal.
- `comparison`: a sweep's configurations read back from MLflow (through `harness.tracking`), their pooled
  out-of-fold predictions and aggregates; `factors`: the paired tests per factor, Holm, the best set.
- `report`: the comparison as a terminal table, Markdown and HTML; `compare`: the ``harness compare`` flow.
"""

from .plan import SweepError, SweepPlan, TrialSpec, load_sweep, plan_sweep

__all__ = ["SweepError", "SweepPlan", "TrialSpec", "load_sweep", "plan_sweep"]
