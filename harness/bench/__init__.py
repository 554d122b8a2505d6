"""``harness bench``: per-image latency and throughput of registry models, MLPerf LoadGen style.

- `scenarios`: the driver that knows no model: the `Backend` protocol, `ModelBackend` and `NullBackend`, the
  single-stream / offline / per-case scenarios, the benchmark's input slices.
- `run`: one model on every requested path, each checked for equal outputs before it is timed.
- `command`: the whole ``harness bench``: models and checkpoints, paths, the report, JSON and MLflow.
- `weights`: seeded random weights, or a trained checkpoint's, and the inputs that suit them.
- `e2e`: a whole study end to end (DICOM read, volume assembly, preprocessing, inference; the preprocessed cache).
- `report`: the rich table and the MLflow records.

The inference paths (`harness.inference`) and the equality check (`harness.equality`) are not in this package:
they are a library layer that training's final evaluation, `harness predict` and `harness export` use as well as
the benchmark, so a fast path means the same thing, and is verified the same way, wherever it runs.
"""
