"""Hand-made tumour features measured from a written cohort, one per planted sequence, and their AUCs for lnm.

They check what planted mode (planted.py) puts into the files, from the files alone (pydicom and annotations.csv;
nothing from the generator's internals but each centre's series numbers and descriptions, to find the series):

- ``t2_heterogeneity`` (T2WI): coefficient of variation (std / mean) of the T2WI pixels in the central half of the
  tumour box, over the slices whose box is at least half the largest;
- ``cet1_rim_ratio`` (CET1WI): on the slices whose tumour box is at least 70 % of the largest, the mean of the
  pixels in the box's elliptical ring (normalised radius 0.55-0.85) over the mean in its core (radius < 0.35);
  above 1 for rim enhancement;
- ``adc_median`` (ADC): median ADC (1e-6 mm^2/s, RescaleSlope applied) in the central half of the tumour boxes on
  the same slices as T2WI's rule; lower is more restricted. Its AUC is computed for ``-adc_median``.

``python -m harness.datasets.synthetic.features COHORT`` prints each feature's AUC (scikit-learn's roc_auc_score)
oriented so that the planted direction is above 0.5, and the ceiling ``Phi(strength / sqrt(2))`` of a planting given
with ``--signal-by-sequence``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom

from .patient import series_folder
from .planted import parse_planting
from .scanners import centre_protocol

FEATURES = {"T2WI": "t2_heterogeneity", "CET1WI": "cet1_rim_ratio", "ADC": "adc_median"}
SIGN = {"t2_heterogeneity": 1.0, "cet1_rim_ratio": 1.0, "adc_median": -1.0}  # planted direction -> higher AUC


def ceiling_auc(strength: float) -> float:
    """The best possible AUC of a feature a ~ N(strength * (lnm - 0.5), 1): Phi(strength / sqrt(2))."""
    return 0.5 * (1.0 + math.erf(strength / 2.0))


def _slices(folder: Path) -> dict[float, Path]:
    """{slice position (3 decimals): file} of a single-b-value series folder."""
    out = {}
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        o = np.asarray(ds.ImageOrientationPatient, float)
        position = float(np.dot(np.cross(o[:3], o[3:]), np.asarray(ds.ImagePositionPatient, float)))
        out[round(position, 3)] = path
    return out


def _boxes(annotations: list[dict[str, str]], sequence: str, keep: float) -> list[tuple[float, tuple[int, ...]]]:
    """(position, box) of the tumour boxes of one sequence whose area is at least `keep` x the largest."""
    rows = [a for a in annotations if a["sequence"] == sequence and a["kind"] == "tumour"]
    corners = ("x_min", "y_min", "x_max", "y_max")
    boxes = [(float(a["slice_position_mm"]), tuple(int(a[k]) for k in corners)) for a in rows]
    area = [(b[2] - b[0]) * (b[3] - b[1]) for _, b in boxes]
    return [item for item, s in zip(boxes, area, strict=True) if s >= keep * max(area)]


def _central_half(pixels: np.ndarray, box: tuple[int, ...]) -> np.ndarray:
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) / 4, (y1 - y0) / 4
    r0, c0 = round(y0 + dy), round(x0 + dx)
    return pixels[r0 : max(round(y1 - dy), r0 + 1), c0 : max(round(x1 - dx), c0 + 1)]  # at least one pixel


def _rim_and_core(pixels: np.ndarray, box: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    x0, y0, x1, y1 = box
    ys, xs = np.mgrid[y0:y1, x0:x1]
    r = np.hypot((xs + 0.5 - (x0 + x1) / 2) / ((x1 - x0) / 2), (ys + 0.5 - (y0 + y1) / 2) / ((y1 - y0) / 2))
    crop = pixels[y0:y1, x0:x1].astype(float)
    return crop[(r > 0.55) & (r < 0.85)], crop[r < 0.35]


def measure_patient(dicom: Path, center: str, annotations: list[dict[str, str]]) -> dict[str, float]:
    """The three features of one patient (see the module docstring).

    Args:
        dicom: the patient's folder ``COHORT/dicom/<patient_id>``.
        center: the patient's centre label (manifest.csv), to find its series.
        annotations: the patient's rows of annotations.csv.
    """
    protocol = centre_protocol(int(center))
    folders = {
        "T2WI": series_folder(protocol.t2.series_number, protocol.t2.description),
        "CET1WI": series_folder(protocol.cet1.series_number, protocol.cet1.description),
        "ADC": series_folder(protocol.adc_series_number, protocol.adc_description),
    }
    out = {}
    slices = _slices(dicom / folders["T2WI"])
    values = [
        _central_half(pydicom.dcmread(slices[round(p, 3)]).pixel_array.astype(float), box)
        for p, box in _boxes(annotations, "T2WI", 0.5)
    ]
    pooled = np.concatenate([v.ravel() for v in values])
    out["t2_heterogeneity"] = float(pooled.std() / max(pooled.mean(), 1e-6))
    slices = _slices(dicom / folders["CET1WI"])
    rims, cores = [], []
    for p, box in _boxes(annotations, "CET1WI", 0.7):
        rim, core = _rim_and_core(pydicom.dcmread(slices[round(p, 3)]).pixel_array, box)
        rims.append(rim)
        cores.append(core)
    out["cet1_rim_ratio"] = float(np.concatenate(rims).mean() / max(np.concatenate(cores).mean(), 1e-6))
    slices = _slices(dicom / folders["ADC"])
    adc = []
    for p, box in _boxes(annotations, "ADC", 0.5):
        ds = pydicom.dcmread(slices[round(p, 3)])
        adc.append(_central_half(ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept), box).ravel())
    out["adc_median"] = float(np.median(np.concatenate(adc)))
    return out


def measure_cohort(root: Path) -> list[dict[str, object]]:
    """One row per patient of a written cohort: patient_id, center, lnm and the three features."""
    root = Path(root)
    with (root / "manifest.csv").open(newline="") as f:
        manifest = list(csv.DictReader(f))
    with (root / "annotations.csv").open(newline="") as f:
        by_patient: dict[str, list[dict[str, str]]] = defaultdict(list)
        for row in csv.DictReader(f):
            by_patient[row["patient_id"]].append(row)
    rows: list[dict[str, object]] = []
    for m in manifest:
        pid = m["patient_id"]
        features = measure_patient(root / "dicom" / pid, m["center"], by_patient[pid])
        rows.append({"patient_id": pid, "center": m["center"], "lnm": int(m["lnm"]), **features})
    return rows


def feature_aucs(rows: Sequence[dict[str, object]]) -> dict[str, float]:
    """{sequence: AUC of its feature for lnm}, oriented so that the planted direction is above 0.5."""
    from sklearn.metrics import roc_auc_score

    y = [int(r["lnm"]) for r in rows]  # type: ignore[call-overload]
    return {
        sequence: float(roc_auc_score(y, [SIGN[name] * float(r[name]) for r in rows]))  # type: ignore[arg-type]
        for sequence, name in FEATURES.items()
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.datasets.synthetic.features COHORT [--signal-by-sequence ...] [--json]``."""
    parser = argparse.ArgumentParser(prog="python -m harness.datasets.synthetic.features", description=__doc__)
    parser.add_argument("cohort", type=Path, help="a cohort written by harness synth")
    parser.add_argument("--signal-by-sequence", help="the cohort's planting, to print the ceiling AUCs")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    aucs = feature_aucs(measure_cohort(args.cohort))
    ceilings = {}
    if args.signal_by_sequence:
        ceilings = {k: ceiling_auc(v) for k, v in parse_planting(args.signal_by_sequence).items()}
    if args.json:
        print(json.dumps({"auc": aucs, "ceiling": ceilings}, sort_keys=True))
        return 0
    for sequence, auc in aucs.items():
        ceiling = f"  ceiling {ceilings[sequence]:.3f}" if ceilings else ""
        print(f"{sequence:7s} {FEATURES[sequence]:17s} AUC {auc:.3f}{ceiling}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
