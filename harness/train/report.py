"""The end-of-run summary of ``harness train`` for people: a rich table of the final metrics."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

# Metrics shown in the training summary, in order, when present.
_SUMMARY_KEYS = (
    "val_auc",
    "val_auc_ci_low",
    "val_auc_ci_high",
    "val_slice_auc",
    "val_threshold",
    "val_sensitivity",
    "val_specificity",
    "val_accuracy",
    "val_mannwhitney_p",
    "val_map50",
    "val_map",
    "val_voc_map50",
    "val_image_auc",
    "val_patient_auc",
    "val_froc",
    "test_auc",
    "test_map50",
)


def print_train_summary(config, result, console: Console) -> None:
    """A short human summary of a training run (the JSON line on stdout has everything)."""
    table = Table(title=f"{config.name}: {config.model} on {config.data.sequence} ({config.task})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in _SUMMARY_KEYS:
        if key in result.metrics:
            table.add_row(key, f"{result.metrics[key]:.4f}")
    console.print(table)
    epochs = len(result.history)
    stopped = " (stopped early)" if result.stopped_early else ""
    console.print(f"{epochs} epochs{stopped}; outputs in {result.output_dir}; model: {result.best_checkpoint}")
