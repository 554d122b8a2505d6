"""``harness predict``: run a trained checkpoint on new studies (`harness.predict`)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def add_predict(commands) -> None:
    """Add the ``predict`` sub-command."""
    parser = commands.add_parser(
        "predict",
        help="run a trained checkpoint on new studies (a DICOM folder or a dataset)",
        description="Run a trained checkpoint (checkpoints/best.pt of `harness train` or a sweep trial) on INPUT: "
        "a folder of DICOM files of one or more studies (a PACS export), or a dataset root (every patient, or "
        "--patients). The detector runs on every slice of its sequence; the classifier on the tumour ROI of "
        "annotations.csv, or of --roi. Preprocessing is the training's own. Writes OUT/<patient_id>/"
        "predictions.json and predictions.csv (score; every box in pixels and patient mm with slice, score and "
        "class), overlays/ PNGs of slices with boxes at or above --threshold, with --dicom a DICOM-SEG of those "
        "boxes referencing the series (detections.dcm), and OUT/patients.csv. Nothing goes to MLflow.",
    )
    parser.add_argument("checkpoint", type=Path, help="a checkpoint (best.pt) written by harness train or a sweep")
    parser.add_argument("input", type=Path, help="a DICOM folder (one or more studies) or a dataset root")
    parser.add_argument("--out", type=Path, required=True, help="output folder (new or empty)")
    parser.add_argument("--dicom", action="store_true", help="also write each patient's boxes as a DICOM-SEG")
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="detections at or above this score get overlays and go into the DICOM-SEG; every detection is in "
        "the JSON and CSV (default: 0.5)",
    )
    parser.add_argument("--no-overlays", action="store_true", help="skip the overlay PNGs")
    parser.add_argument("--patients", help="comma-separated patient ids of a dataset root (default: all)")
    parser.add_argument(
        "--roi",
        metavar="X0,Y0,Z0,X1,Y1,Z1",
        help="classifier: the tumour ROI as two opposite corners in patient coordinates (DICOM LPS, mm), used for "
        "every study instead of annotations.csv (needed for a bare DICOM folder)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="slices per forward pass (default: 8)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument(
        "--path",
        default="eager-fp32",
        help="inference path as in harness bench (eager-fp32, bf16+channels_last, openvino:bf16, onnxruntime:fp32, "
        "...): used only after its "
        "outputs pass the equality check against eager fp32 on this model and the first study (default: eager-fp32)",
    )
    parser.set_defaults(handler=_run_predict)


def _run_predict(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from harness.inference import parse_paths
    from harness.predict import PredictOptions, predict

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not 0 <= args.threshold <= 1:
        raise ValueError(f"--threshold must be within 0..1, got {args.threshold}")
    roi = None
    if args.roi is not None:
        try:
            roi = [float(v) for v in args.roi.split(",")]
        except ValueError:
            roi = []
        if len(roi) != 6 or not all(math.isfinite(v) for v in roi):
            raise ValueError(f"--roi {args.roi!r}: expected six numbers X0,Y0,Z0,X1,Y1,Z1 (patient mm)")
    inference = parse_paths(args.path, args.device)
    options = PredictOptions(
        inference=inference,
        batch_size=args.batch_size,
        threshold=args.threshold,
        overlays=not args.no_overlays,
        dicom=args.dicom,
        patients=[p.strip() for p in args.patients.split(",") if p.strip()] if args.patients else None,
        roi=roi,
    )
    console = Console(stderr=True)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("Predicting", total=None)
        results = predict(args.checkpoint, args.input, args.out, options, progress=lambda patient: bar.advance(task))
    for result in results:
        found = sum(d.score >= args.threshold for d in result.detections)
        extra = f", {found} box(es) >= {args.threshold:g}" if result.task == "detection" else ""
        console.print(f"{result.patient_id}: {result.task} score {result.score:.3f}{extra}")
    console.print(f"[green]wrote[/] {args.out} ({len(results)} patient(s); path {inference.label})")
    return 0
