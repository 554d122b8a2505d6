"""``harness synth`` and ``harness data``: the synthetic cohort generator and the dataset tools (`harness.datasets`)."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path


def add_synth(commands) -> None:
    """Add the ``synth`` sub-command."""
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
        "--signal-by-sequence",
        metavar="SEQ=X[,SEQ=X...]",
        help="planted mode: each sequence carries its own tumour feature with this strength, e.g. "
        "T2WI=2.5,ADC=1.0,CET1WI=0 (keys T2WI, CET1WI, ADC; DWI = ADC; missing keys 0); not with --signal",
    )
    parser.add_argument(
        "--shared-signal",
        type=float,
        metavar="X",
        help="planted mode: strength of the features every sequence sees (size, shape, necrosis, texture); default 0",
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
    parser.add_argument(
        "--label-maps",
        action="store_true",
        help="also write the ground truth as NIfTI label maps (labels/<patient>/<SEQUENCE>.nii.gz) with labels.yaml, "
        "the input `harness data import` reads",
    )
    parser.add_argument(
        "--seg",
        action="store_true",
        help="also write the ground truth as DICOM-SEGs referencing their series (labels-seg/<patient>/<SEQUENCE>.dcm)"
        " with labels.yaml; import with `harness data import OUT --masks OUT/labels-seg`",
    )
    parser.add_argument(
        "--rtstruct",
        action="store_true",
        help="also write the ground truth as RT structure sets of contours (labels-rtstruct/<patient>/<SEQUENCE>.dcm) "
        "with labels.yaml; import with `harness data import OUT --masks OUT/labels-rtstruct`",
    )
    parser.set_defaults(handler=_run_synth)


def _run_synth(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from harness.datasets.synthetic import generate_cohort
    from harness.datasets.synthetic.planted import parse_planting

    planting = None
    if args.signal_by_sequence is not None:
        if args.signal is not None:
            raise ValueError("--signal and --signal-by-sequence are exclusive; in planted mode use --shared-signal")
        try:
            planting = parse_planting(args.signal_by_sequence)
        except ValueError as error:  # the message names the allowed keys
            raise ValueError(f"--signal-by-sequence {args.signal_by_sequence!r}: {error}") from None
        shared = args.shared_signal
        if shared is not None and not (math.isfinite(shared) and shared >= 0):
            raise ValueError(f"--shared-signal: expected a finite number >= 0, got {shared}")
    elif args.shared_signal is not None:
        raise ValueError("--shared-signal only applies with --signal-by-sequence")
    console = Console(stderr=True)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("Writing patients", total=args.patients)
        summary = generate_cohort(
            args.out,
            patients=args.patients,
            centers=args.centers,
            seed=args.seed,
            signal=args.signal,
            signal_by_sequence=planting,
            shared_signal=args.shared_signal,
            overwrite=args.overwrite,
            workers=args.workers,
            truth_formats=tuple(
                f for f, on in (("nifti", args.label_maps), ("seg", args.seg), ("rtstruct", args.rtstruct)) if on
            ),
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    centres = ", ".join(f"centre {c}: {n} ({pos} LNM+)" for c, (n, pos) in summary.per_center.items())
    strengths = f"signal {summary.signal}"
    if summary.signal_by_sequence is not None:
        planted = ", ".join(f"{k} {v:g}" for k, v in summary.signal_by_sequence.items())
        strengths = f"planted {planted}, shared signal {summary.signal:g}"
    console.print(
        f"[green]wrote[/] {summary.out}: {summary.patients} patients ({summary.lnm_positive} LNM+; {centres}), "
        f"{summary.n_files} DICOM files, {summary.n_bytes / 1e6:.0f} MB, seed {summary.seed}, {strengths}"
    )
    return 0


def add_data(commands) -> None:
    """Add the ``data`` sub-commands (``data check``, ``data import``)."""
    parser = commands.add_parser("data", help="dataset tools (check, import)", description="Dataset tools.")
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
    importer = data_commands.add_parser(
        "import",
        help="write annotations.csv from the label maps or DICOM-SEGs radiologists draw",
        description="Read the label maps of a dataset (NIfTI, NRRD or MHA: 3D Slicer, ITK-SNAP, PI-CAI, nnU-Net), "
        "one per annotated series as ROOT/labels/<patient_id>/<SEQUENCE>.nii.gz, and DICOM-SEGs (OHIF, PACS "
        "viewers) or RT structure sets (contours) as ROOT/labels/<patient_id>/<name>.dcm, placed on the series "
        "they reference; check that each label map lies on its DICOM series' voxel grid (another axis order, "
        "flipped axes or a mask cropped to its content are handled; a resampled or shifted mask is an error), "
        "and turn them into annotations.csv: per slice, one box around the tumour label and one around "
        "each node (3-D connected components of a node label). ROOT/labels.yaml says what each label value means "
        "and each SEG segment label or RTSTRUCT ROI name means (docs/data-format.md). Everything is checked before "
        "anything is written.",
    )
    importer.add_argument("root", type=Path, help="dataset folder (manifest.csv, dicom/, labels/, labels.yaml)")
    importer.add_argument("--labels", type=Path, help="the label table (default: ROOT/labels.yaml)")
    importer.add_argument("--masks", type=Path, help="label maps, SEGs, RTSTRUCTs (default: ROOT/labels)")
    importer.add_argument("--out", type=Path, help="where to write (default: ROOT/annotations.csv)")
    importer.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    importer.add_argument("--dry-run", action="store_true", help="read, check and summarise; write nothing")
    importer.set_defaults(handler=_run_import)


def _run_import(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from harness.datasets.importer import import_label_maps, write_annotations

    out = args.out or args.root / "annotations.csv"
    if out.exists() and not (args.overwrite or args.dry_run):  # refused before the slow part
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it (or --out to write elsewhere)")
    console = Console(stderr=True)
    report = import_label_maps(args.root, labels_file=args.labels, folder=args.masks, progress=True)
    table = Table(title=f"Annotations imported from {args.masks or args.root / 'labels'}")
    for column in ("patient", "sequence", "tumour slices", "nodes (met.)", "nodes (benign)", "boxes"):
        table.add_column(column, justify="left" if column in ("patient", "sequence") else "right")
    for row in report.per_file:
        table.add_row(
            row["patient_id"],
            row["sequence"],
            str(row["tumour_slices"]),
            str(row["nodes_metastatic"]),
            str(row["nodes_benign"]),
            str(row["boxes"]),
        )
    console.print(table)
    if args.dry_run:
        console.print(f"dry run: {len(report.rows)} boxes from {len(report.per_file)} files; nothing written")
        return 0
    write_annotations(report, out, overwrite=args.overwrite)
    console.print(f"[green]wrote[/] {out}: {len(report.rows)} boxes from {len(report.per_file)} files")
    return 0


def _run_check(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console

    from harness.datasets.check import check_dataset
    from harness.datasets.report import print_check_report
    from harness.datasets.sequences import SEQUENCES

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
