"""``harness export``: a trained checkpoint (or a registry model) to ONNX, checked against eager fp32 first."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

EXPORT_EPILOG = """\
examples:
  harness export runs/lu2018-dwi/checkpoints/best.pt                 -> runs/lu2018-dwi/checkpoints/best.onnx
  harness export runs/wu-t2/checkpoints/best.pt --batch 16 --out wu-b16.onnx   a fixed batch of 16
  harness export wu2020 --out wu2020.onnx                             a registry model, seeded random weights

What the file takes and gives (docs/benchmarks.md "Engines"):
  classifiers: input images (B, 3, S, S) float32 [+ clinical (B, F) for wu2020_hybrid], output probability (B,),
               the positive-class probability; B dynamic unless --batch fixes it.
  detectors:   input image (3, S, S) float32, one slice per call at the checkpoint's slice size; outputs boxes
               (N, 4) in input pixels (x0, y0, x1, y1), labels (N,), scores (N,); normalisation, resizing, box
               decoding and NMS are inside the graph.
The slices must be preprocessed as for training (the checkpoint's config, stored in the file's metadata).
Before writing, the export runs on ONNX Runtime on slices of the benchmark cohort and must give the same outputs as
the PyTorch model in fp32 (probabilities within 1e-4; detections above 0.5 matched at IoU >= 0.9); otherwise
nothing is written and the command fails.
"""


def add_export(commands) -> None:
    """Add the ``export`` sub-command to ``commands`` (the ``harness`` sub-parsers)."""
    parser = commands.add_parser(
        "export",
        help="export a checkpoint or registry model to ONNX (checked against PyTorch fp32 before it is written)",
        description="Export a trained checkpoint, or a registry model with seeded random weights, to an ONNX file "
        "that ONNX Runtime, OpenVINO and TensorRT read. The export is checked against the PyTorch model's fp32 "
        "outputs on cohort slices before the file is written.",
        epilog=EXPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", metavar="CHECKPOINT_OR_MODEL", help="a checkpoint (.pt) or a registry model name")
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="the file format (default: onnx)")
    parser.add_argument("--out", type=Path, help="the file to write (default: CHECKPOINT.onnx, or MODEL.onnx here)")
    parser.add_argument(
        "--batch", type=int, help="classifiers: a fixed batch size (default: dynamic); detectors take one slice"
    )
    parser.add_argument(
        "--size", type=int, help="slice side in pixels (default: the checkpoint's; 64 for classifiers, 256 detectors)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.set_defaults(handler=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from rich.console import Console

    from harness.bench.scenarios import CLASSIFIER_SIZE, DETECTOR_SIZE, load_samples
    from harness.bench.weights import benchmark_model, checkpoint_model, spread_detector_scores
    from harness.datasets.files import write_atomic
    from harness.engines.export import CHECK_IMAGES, default_out, export_checked
    from harness.models import list_models, model_task

    console = Console(stderr=True)
    out = args.out or default_out(args.source)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists: pass --overwrite to replace it, or --out another file")
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: the folder {out.parent} does not exist")
    if args.batch is not None and args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    path = Path(args.source)
    if path.suffix == ".pt" or path.exists():
        if not path.is_file():
            raise ValueError(f"{path}: no such checkpoint file")
        weights = checkpoint_model(path, image_size=args.size)
        metadata = {"source": path.name, "sequence": weights.sequence}
    elif args.source in list_models():
        weights = None
        metadata = {"source": "random weights (seed 0; a detector's scores spread as harness bench does)"}
    else:
        known = ", ".join(list_models())
        raise ValueError(f"{args.source!r} is neither a checkpoint file nor a registry model ({known})")
    name = weights.name if weights else args.source
    task = model_task(name)
    if args.batch and task == "detection":
        raise ValueError("--batch: a detector's export takes one slice per call (torchvision's ONNX support)")
    default_size = CLASSIFIER_SIZE if task == "classification" else DETECTOR_SIZE
    size = args.size or (weights.image_size if weights else None) or default_size
    model = weights.model if weights else benchmark_model(name, image_size=size)
    with console.status(f"exporting {name} at {size} px and checking it against PyTorch fp32"):
        samples = load_samples(task, image_size=size, sequence=weights.sequence if weights else "T2WI")
        count = max(CHECK_IMAGES[task], args.batch or 0)
        images, clinical = samples.batch(0, count)
        if weights is None and task == "detection":  # random scores all tie near 0.5: spread them, as bench does
            spread_detector_scores(model, images)
        result = export_checked(model, images, clinical, batch=args.batch, metadata=metadata)
    if not result.equality.ok:
        raise ValueError(
            f"the ONNX export of {name} does not give PyTorch's outputs on {result.checked_with} "
            f"({result.equality.detail}); nothing was written"
        )
    write_atomic(out, result.onnx.data)
    summary = {
        "out": str(out),
        "model": name,
        "task": task,
        "image_size": size,
        "inputs": list(result.onnx.inputs),
        "outputs": list(result.onnx.outputs),
        "batch": args.batch or ("dynamic" if task == "classification" else 1),
        "checked_with": result.checked_with,
        "equality": result.equality.detail,
        "megabytes": round(len(result.onnx.data) / 1e6, 2),
    }
    console.print(
        f"[green]wrote[/] {out} ({summary['megabytes']} MB); equal to PyTorch fp32 on "
        f"{result.checked_with}: {result.equality.detail}"
    )
    print(json.dumps(summary))
    return 0
