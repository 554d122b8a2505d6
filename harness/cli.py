"""The ``harness`` command line: one sub-command per job. Heavy imports (torch, pydicom) happen inside each command,
so ``harness --help`` answers at once."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .cli_bench import add_bench
from .cli_sweep import add_compare, add_run

EPILOG = """\
examples:
  harness synth data/demo --patients 60 --centers 3 --seed 0   write a synthetic multi-centre DICOM cohort
  harness data check data/demo                                 validate a dataset and summarise it
  harness data check data/demo --json > report.json            the same, as one JSON object
  harness train examples/train_classifier.yaml                 train and evaluate the Wu 2020 classifier
  harness train examples/train_detector.yaml --set train.epochs=2   a Lu 2018 detector, with an override
  harness run examples/sweep.yaml                              a sweep with Ray Tune, tracked in ./mlflow.db
  harness compare                                              the latest sweep's comparison table and report

The dataset layout (manifest.csv, annotations.csv, dicom/) is described in README.md and docs/data-format.md.
"""


def _add_synth(commands) -> None:
    from_doc = "Write a synthetic multi-centre pelvic MRI cohort as real DICOM, with manifest.csv and annotations.csv."
    parser = commands.add_parser(
        "synth",
        help="generate a synthetic multi-centre DICOM cohort",
        description=from_doc + " The phantom, the centre protocols and the effect sizes are in docs/synthetic.md. "
        "The same arguments always give byte-identical files.",
    )
    parser.add_argument("out", type=Path, help="output folder (must not exist or be empty, unless --overwrite)")
    parser.add_argument("--patients", type=int, default=60, help="number of patients (default: 60)")
    parser.add_argument("--centers", type=int, default=3, help="number of centres, each its own scanner (default: 3)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--signal",
        type=float,
        default=None,
        help="strength of the association between the primary tumour's appearance and nodal status: 0 = none; "
        "the default gives a learnable, not trivial, task (see docs/synthetic.md)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing cohort (a folder with a manifest.csv)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="processes that render patients in parallel; the files are identical for any value (default: %(default)s)",
    )
    parser.set_defaults(handler=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from harness.datasets.synthetic import DEFAULT_SIGNAL, generate_cohort

    signal = DEFAULT_SIGNAL if args.signal is None else args.signal
    console = Console(stderr=True)
    with Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task("Writing patients", total=args.patients)
        summary = generate_cohort(
            args.out,
            patients=args.patients,
            centers=args.centers,
            seed=args.seed,
            signal=signal,
            overwrite=args.overwrite,
            workers=args.workers,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    centres = ", ".join(f"centre {c}: {n} ({pos} LNM+)" for c, (n, pos) in summary.per_center.items())
    console.print(
        f"[green]wrote[/] {summary.out}: {summary.patients} patients ({summary.lnm_positive} LNM+; {centres}), "
        f"{summary.n_files} DICOM files, {summary.n_bytes / 1e6:.0f} MB, seed {summary.seed}, signal {summary.signal}"
    )
    return 0


def _add_data(commands) -> None:
    parser = commands.add_parser("data", help="dataset tools (check)", description="Dataset tools.")
    data_commands = parser.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    check = data_commands.add_parser(
        "check",
        help="validate a dataset and summarise it",
        description="Validate a dataset down to its pixels (manifest, annotations, every DICOM file, every volume's "
        "geometry, every box on its slice) and print a summary: patients per centre and label, sequences per "
        "patient, slices, boxes per class, and every problem found. Exits 1 when the dataset cannot be used. "
        "Decoded volumes land in the cache ($HARNESS_CACHE_DIR), so training starts faster afterwards.",
    )
    check.add_argument("root", type=Path, help="dataset folder (manifest.csv, annotations.csv, dicom/)")
    check.add_argument("--json", action="store_true", help="print the report as one JSON object on stdout")
    check.add_argument(
        "--require",
        default="T2WI,CET1WI,DWI,ADC",
        help="comma-separated sequences every patient must have (default: all four; ADC counts as present when "
        "the DWI series has two b-values)",
    )
    check.add_argument(
        "--on-error",
        choices=("error", "skip"),
        default="error",
        help="error (default): any problem makes the dataset unusable; skip: report problems as warnings, drop the "
        "files and patients concerned, and count them",
    )
    check.add_argument("--rules", type=Path, help="sequence rules YAML (default: ROOT/sequences.yaml if present)")
    check.set_defaults(handler=_run_check)


def _run_check(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console

    from harness.datasets.check import check_dataset
    from harness.datasets.sequences import SEQUENCES

    from .report import print_check_report

    required = [s.strip() for s in args.require.split(",") if s.strip()]
    unknown = [s for s in required if s not in SEQUENCES]
    if unknown:
        raise SystemExit(f"--require: unknown sequence(s) {unknown}; known: {', '.join(SEQUENCES)}")
    report = check_dataset(
        args.root, required=required, on_error=args.on_error, rules_path=args.rules, progress=not args.json
    )
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print_check_report(report, Console())
    return 0 if report.usable else 1


def _add_train(commands) -> None:
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
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/NAME/checkpoints/last.pt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (logs, CI)")
    parser.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console

    from harness.config import load_config
    from harness.train import run_training
    from harness.train.evaluation import finite

    from .report import print_train_summary

    config = load_config(args.config, args.overrides)
    console = Console(stderr=True)
    result = run_training(config, data_root=args.data, resume=args.resume, progress=not args.no_progress)
    print_train_summary(config, result, console)
    print(json.dumps(finite(result.metrics), sort_keys=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``harness`` command."""
    parser = argparse.ArgumentParser(
        prog="harness",
        description="lnm-harness: train, compare and benchmark lymph-node metastasis models on pelvic MRI "
        "(Wu 2020 classifier, Lu 2018 Faster R-CNN) on real DICOM or a synthetic multi-centre cohort.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_synth(commands)
    _add_data(commands)
    _add_train(commands)
    add_run(commands)
    add_compare(commands)
    add_bench(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``harness`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    from rich.console import Console
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, console=Console(stderr=True))],
    )
    from harness.datasets.errors import DataError
    from harness.sweep import SweepError

    try:
        return args.handler(args)
    except (DataError, ValueError, FileExistsError, FloatingPointError, SweepError) as error:
        print(f"harness {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resume = f" (continue with: harness run {args.sweep} --resume)" if args.command == "run" else ""
        print(f"\ninterrupted{resume}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
