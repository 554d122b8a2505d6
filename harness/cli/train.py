"""``harness train``: one training run from a trial YAML (`harness.train.run_training`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_train(commands) -> None:
    """Add the ``train`` sub-command."""
    parser = commands.add_parser(
        "train",
        help="one training run (a classifier or a detector) from a trial YAML",
        description="Train and evaluate one model: the same keys as one point of a sweep (see examples/"
        "train_classifier.yaml and examples/train_detector.yaml). Writes the resolved config, checkpoints, "
        "history.csv, predictions.csv, plots and metrics.json under OUTPUT_DIR/NAME, prints a summary, and prints "
        "the final metrics as one JSON object on the last line of stdout.",
    )
    parser.add_argument("config", type=Path, help="trial YAML")
    parser.add_argument("--data", type=Path, help="dataset folder; overrides data.root / data.synth of the config")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable), e.g. --set train.stage2_epochs=5 --set data.sequence=ADC",
    )
    parser.add_argument(
        "--fold",
        type=int,
        metavar="K",
        help="train fold K of the patient-level cross-validation (sets data.split.by=cv and data.split.fold=K; "
        "the number of folds is data.split.folds): one trial of a sweep with cv, rerun by hand",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        metavar="R",
        help="training repeat R: the same split, training seed = seed + R (one repeat of a sweep's trial)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/NAME/checkpoints/last.pt")
    parser.add_argument(
        "--keep-last",
        action="store_true",
        help="keep checkpoints/last.pt when the run completes (deleted by default: only an interrupted run resumes "
        "from it; keep it to extend the schedule later with --resume)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs, CI)")
    parser.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console

    from harness.config import load_config
    from harness.train import run_training
    from harness.train.evaluation import finite
    from harness.train.report import print_train_summary

    config = load_config(args.config, train_overrides(args))
    console = Console(stderr=True)
    result = run_training(
        config, data_root=args.data, resume=args.resume, progress=not args.no_progress, keep_last=args.keep_last
    )
    print_train_summary(config, result, console)
    print(json.dumps(finite(result.metrics), sort_keys=True))
    return 0


def train_overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` overrides plus what ``--fold`` and ``--repeat`` mean (one trial of a cross-validated sweep)."""
    overrides = list(args.overrides)
    if args.fold is not None:
        overrides += ["data.split.by=cv", f"data.split.fold={args.fold}"]
    if args.repeat is not None:
        overrides.append(f"repeat={args.repeat}")
    return overrides
