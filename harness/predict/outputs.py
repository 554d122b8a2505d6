"""What `harness predict` writes per patient: predictions.json and .csv, overlay PNGs, and a DICOM-SEG.

``OUT/<patient_id>/predictions.json`` holds everything (score, and for a detector every box in pixels and patient
coordinates with its slice, score and class); ``predictions.csv`` one row per box (detector) or per slice
(classifier); ``overlays/slice_<k>.png`` each slice with a box at or above the overlay threshold; with ``--dicom``,
``detections.dcm``, a DICOM-SEG (highdicom) of those boxes filled as rectangles, referencing the source images, so
that a viewer shows them over the series and `harness data import` reads them back. ``OUT/patients.csv`` lists one
row per patient. Every file is written to a temporary name and renamed, so an interrupted run leaves whole files.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from harness.datasets.files import csv_text, write_atomic
from harness.datasets.series import Volume

from .run import PatientPrediction

DETECTION_COLUMNS = (
    "patient_id",
    "slice_index",
    "slice_position_mm",
    "x_min",
    "y_min",
    "x_max",
    "y_max",
    "centre_x_mm",
    "centre_y_mm",
    "centre_z_mm",
    "score",
    "label",
    "class_name",
)
SEGMENT_LABEL = "detected node"


def write_predictions(folder: Path, prediction: PatientPrediction) -> None:
    """predictions.json and predictions.csv of one patient."""
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "predictions.json", json.dumps(prediction.as_dict(), indent=1).encode())
    if prediction.task == "detection":
        rows = [
            {
                "patient_id": prediction.patient_id,
                "slice_index": d.slice_index,
                "slice_position_mm": f"{d.slice_position_mm:.3f}",
                **dict(zip(("x_min", "y_min", "x_max", "y_max"), d.box_px, strict=True)),
                **dict(zip(("centre_x_mm", "centre_y_mm", "centre_z_mm"), d.centre_mm, strict=True)),
                "score": f"{d.score:.4f}",
                "label": d.label,
                "class_name": d.class_name,
            }
            for d in prediction.detections
        ]
        write_atomic(folder / "predictions.csv", csv_text(DETECTION_COLUMNS, rows))
    else:
        rows = [
            {"patient_id": prediction.patient_id, "slice_position_mm": position, "probability": f"{p:.4f}"}
            for position, p in prediction.slice_probabilities.items()
        ]
        write_atomic(folder / "predictions.csv", csv_text(("patient_id", "slice_position_mm", "probability"), rows))


def write_overlays(folder: Path, prediction: PatientPrediction, volume: Volume, threshold: float) -> int:
    """One PNG per slice with a detection at or above ``threshold``; returns how many were written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    by_slice: dict[int, list] = {}
    for d in prediction.detections:
        if d.score >= threshold:
            by_slice.setdefault(d.slice_index, []).append(d)
    if not by_slice:
        return 0
    out = folder / "overlays"
    out.mkdir(parents=True, exist_ok=True)
    low, high = np.percentile(volume.pixels, [1, 99.5])
    for k, found in sorted(by_slice.items()):
        fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
        ax.imshow(volume.pixels[k], cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        for d in found:
            x0, y0, x1, y1 = d.box_px
            # Pixel j covers [j, j+1) in box coordinates and is drawn centred on j: shift by half a pixel.
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="yellow", lw=1.2))
            ax.text(x0 - 0.5, y0 - 1.5, f"{d.score:.2f}", color="yellow", fontsize=7)
        ax.set_title(
            f"{prediction.patient_id} {prediction.sequence} slice {k} ({d.slice_position_mm:.1f} mm)", fontsize=8
        )
        ax.axis("off")
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", bbox_inches="tight")
        plt.close(fig)
        write_atomic(out / f"slice_{k:03d}.png", buffer.getvalue())
    return len(by_slice)


def box_mask(prediction: PatientPrediction, shape: tuple[int, int, int], threshold: float) -> np.ndarray:
    """The detections at or above ``threshold`` filled as rectangles on the series grid (slices, rows, columns):
    a pixel is inside when its square [j, j+1) overlaps the box."""
    mask = np.zeros(shape, dtype=bool)
    for d in prediction.detections:
        if d.score >= threshold:
            x0, y0, x1, y1 = d.box_px
            r0, c0 = int(np.floor(y0)), int(np.floor(x0))
            mask[d.slice_index, r0 : max(int(np.ceil(y1)), r0 + 1), c0 : max(int(np.ceil(x1)), c0 + 1)] = True
    return mask


def write_seg(folder: Path, prediction: PatientPrediction, volume: Volume, threshold: float, model: str) -> bool:
    """detections.dcm: a DICOM-SEG of the boxes at or above ``threshold``; False (nothing written) without any."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    mask = box_mask(prediction, volume.pixels.shape, threshold)
    if not mask.any():
        return False
    sources = [pydicom.dcmread(path) for path in volume.source_files]
    algorithm = hd.AlgorithmIdentificationSequence(name=model, version="1", family=codes.cid7162.ArtificialIntelligence)
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.LymphNode,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=mask[..., None],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=hd.UID(),
        series_number=9001,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="lnm-harness",
        manufacturer_model_name=model,
        software_versions="1",
        device_serial_number="0",
        series_description=f"lnm-harness detections (score >= {threshold:g})",
    )
    buffer = io.BytesIO()
    seg.save_as(buffer)
    write_atomic(folder / "detections.dcm", buffer.getvalue())
    return True


def write_summary(out: Path, predictions: list[PatientPrediction], threshold: float) -> None:
    rows = [
        {
            "patient_id": p.patient_id,
            "sequence": p.sequence,
            "task": p.task,
            "score": f"{p.score:.4f}",
            "detections_at_threshold": sum(d.score >= threshold for d in p.detections),
        }
        for p in predictions
    ]
    columns = ("patient_id", "sequence", "task", "score", "detections_at_threshold")
    write_atomic(out / "patients.csv", csv_text(columns, rows))
