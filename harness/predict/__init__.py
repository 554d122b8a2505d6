"""``harness predict``: a trained checkpoint on new studies (`studies`), run (`run`), written out (`outputs`).

Nothing goes to MLflow: predictions stay on the user's machine, under ``--out``, named by the input's patient ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.inference import InferenceOptions

from .outputs import write_overlays, write_predictions, write_seg, write_summary
from .run import PatientPrediction, Runner, roi_boxes
from .studies import dataset_index, studies_of

__all__ = ["PredictOptions", "predict"]


@dataclass(frozen=True)
class PredictOptions:
    """How `predict` runs and what it writes."""

    inference: InferenceOptions = InferenceOptions()
    batch_size: int = 8
    threshold: float = 0.5  # detections at or above it get overlays and go into the DICOM-SEG
    overlays: bool = True
    dicom: bool = False
    patients: list[str] | None = None
    roi: list[float] | None = None  # classifier: the tumour ROI in patient mm (X0,Y0,Z0,X1,Y1,Z1) for every study


def _check_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty: choose another --out, or empty it")


def predict(
    checkpoint: Path, source: Path, out: Path, options: PredictOptions, progress=None
) -> list[PatientPrediction]:
    """Run ``checkpoint`` on every study of ``source`` (a dataset root or a DICOM folder) and write the outputs.

    Args:
        checkpoint: a ``best.pt`` (its config says the task, the sequence and the preprocessing).
        source: the input (`studies.studies_of`).
        out: an empty or new folder.
        options: see `PredictOptions`.
        progress: optional callback, called with each patient id when its outputs are written.

    Raises:
        FileExistsError: ``out`` holds files. DataError / ValueError: bad input or checkpoint, or a fast path that
            fails its equality check; raised before anything is written under ``out`` for the first study.
    """
    from harness.train.checkpoint import model_from_checkpoint

    _check_out(out)
    model, payload = model_from_checkpoint(checkpoint, map_location="cpu")
    config = payload.get("config")
    if not config or "data" not in config:
        raise ValueError(f"{checkpoint}: the checkpoint carries no training config: cannot preprocess like training")
    runner = Runner(model, config, options.inference, options.batch_size)
    sequence = config["data"]["sequence"]
    index = dataset_index(source, sequence)
    if runner.task != "detection" and index is None and options.roi is None:
        raise ValueError(
            f"{source}: the classifier reads the tumour ROI: give a dataset root (manifest.csv, annotations.csv, "
            "dicom/), or the ROI in patient mm with --roi X0,Y0,Z0,X1,Y1,Z1"
        )
    predictions = []
    for study in studies_of(source, sequence, index, patients=options.patients):
        where = f"{sequence} of patient {study.patient_id!r}"
        if options.dicom and study.series is not None and study.series.volume_file is not None:
            raise ValueError(
                f"--dicom: {where} is an image volume ({study.series.volume_file}), not DICOM images a SEG could "
                "reference; run without --dicom"
            )
        if runner.task == "detection":
            detections = runner.detect(study.volume)
            score = max((d.score for d in detections), default=0.0)
            result = PatientPrediction(
                study.patient_id,
                sequence,
                study.volume.series_uid,
                study.volume.series_description,
                "detection",
                score,
                detections=detections,
            )
        else:
            if options.roi is not None:
                boxes = roi_boxes(study.volume, options.roi, study.patient_id, sequence)
            else:
                boxes = index.boxes_of(study.patient_id, sequence, "tumour")
            record = index.patients.get(study.patient_id) if index is not None else None
            slices = runner.classify(study.volume, boxes, record.mr_ln_status if record else None, where)
            score = sum(slices.values()) / len(slices)
            result = PatientPrediction(
                study.patient_id,
                sequence,
                study.volume.series_uid,
                study.volume.series_description,
                "classification",
                score,
                slice_probabilities=slices,
            )
        folder = out / study.patient_id
        write_predictions(folder, result)
        if runner.task == "detection":
            if options.overlays:
                write_overlays(folder, result, study.volume, options.threshold)
            if options.dicom:
                write_seg(folder, result, study.volume, options.threshold, payload["model_name"])
        predictions.append(result)
        if progress is not None:
            progress(study.patient_id)
    write_summary(out, predictions, options.threshold)
    return predictions
