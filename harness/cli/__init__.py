"""The ``harness`` command line: one sub-command per job. Heavy imports (torch, pydicom) happen inside each command,
so ``harness --help`` answers at once."""

from __future__ import annotations

import argparse
import logging
import sys

from harness import __version__

from .bench import add_bench
from .data import add_data, add_synth
from .export import add_export
from .predict import add_predict
from .sweep import add_compare, add_run
from .train import add_train

EPILOG = """\
examples:
  harness synth data/demo --patients 60 --centers 3 --seed 0   write a synthetic multi-centre DICOM cohort
  harness data check data/demo                                 validate a dataset and summarise it
  harness data check data/demo --json > report.json            the same, as one JSON object
  harness train examples/train_classifier.yaml                 train and evaluate the Wu 2020 classifier
  harness train examples/train_detector.yaml --set train.epochs=2   a Lu 2018 detector, with an override
  harness run examples/sweep.yaml                              a sweep with Ray Tune, tracked in ./mlflow.db
  harness compare                                              the latest sweep's comparison table and report
  harness predict runs/lu2018-dwi/checkpoints/best.pt STUDY/ --out preds/ --dicom   a detector on a new study
  harness export runs/lu2018-dwi/checkpoints/best.pt           the detector as ONNX (checked against PyTorch first)
  harness bench --model wu2020 --engine openvino --interleave  PyTorch and OpenVINO side by side

The dataset layout (manifest.csv, annotations.csv, dicom/) is described in README.md and docs/data-format.md.
"""


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
    add_synth(commands)
    add_data(commands)
    add_train(commands)
    add_run(commands)
    add_compare(commands)
    add_bench(commands)
    add_predict(commands)
    add_export(commands)
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
    from harness.engines import EngineMissing
    from harness.models.registry import UnknownModelError
    from harness.sweep import SweepError

    usage_errors = (DataError, ValueError, FileExistsError, FloatingPointError, SweepError, UnknownModelError)
    try:
        return args.handler(args)
    except (*usage_errors, EngineMissing) as error:
        print(f"harness {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resume = f" (continue with: harness run {args.sweep} --resume)" if args.command == "run" else ""
        print(f"\ninterrupted{resume}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
