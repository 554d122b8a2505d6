"""A tiny but complete dataset written with tests/dicom_factory.py: manifest, annotations, four sequences.

Each patient: axial T2WI (6 slices, 40x32), sagittal CET1WI (5 slices), axial DWI with b0 and b800 in one series
(no ADC series, so ADC is computed), a tumour box on slices 1-4 of T2WI and DWI and 1-3 of CET1WI, and one
metastatic (lnm=1) or benign (lnm=0) mesorectal node on T2WI and DWI slice 2.
"""

from __future__ import annotations

import csv
import zlib
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from harness.datasets.manifest import ANNOTATION_COLUMNS
from tests.dicom_factory import AXIAL, SAGITTAL, unit_normal, write_series

T2_SHAPE = (6, 32, 40)  # slices, rows, columns


def _positions(orientation, origin, spacing, n):
    normal = unit_normal(orientation)
    return [float(np.dot(normal, np.asarray(origin) + k * spacing * normal)) for k in range(n)]


def write_patient(root: Path, patient_id: str, lnm: int, *, skip: tuple[str, ...] = ()) -> list[dict]:
    """Write one patient's series under root/dicom/<patient_id>; return its annotation rows."""
    folder = root / "dicom" / patient_id
    rows = []
    rng = np.random.default_rng(zlib.crc32(patient_id.encode()))
    specs = {
        "T2WI": dict(description="t2_tse_tra", orientation=AXIAL, n=6, shape=(32, 40), spacing=4.0, origin=(0, 0, -10)),
        "CET1WI": dict(
            description="t1_vibe_sag_post", orientation=SAGITTAL, n=5, shape=(36, 30), spacing=3.0, origin=(-6, -50, 40)
        ),
        "DWI": dict(
            description="ep2d_diff_tra",
            orientation=AXIAL,
            n=6,
            shape=(24, 24),
            spacing=4.0,
            origin=(0, 0, -10),
            b_values=(0, 800),
        ),
    }
    for sequence, spec in specs.items():
        if sequence in skip:
            continue
        n, (r, c) = spec["n"], spec["shape"]
        b_values = spec.get("b_values", (None,))
        pixels = rng.integers(50, 400, size=(len(b_values), n, r, c)).astype(np.uint16)
        if len(b_values) == 2:
            pixels[1] = (pixels[0] * 0.5).astype(np.uint16)  # b800 below b0 -> positive ADC
        write_series(
            folder / sequence,
            patient_id=patient_id,
            series_uid=generate_uid(entropy_srcs=[patient_id, sequence]),
            description=spec["description"],
            n_slices=n,
            rows=r,
            cols=c,
            orientation=spec["orientation"],
            slice_spacing=spec["spacing"],
            origin=spec["origin"],
            b_values=b_values,
            pixels=pixels,
            b_value_tag="siemens",
        )
        positions = _positions(spec["orientation"], spec["origin"], spec["spacing"], n)
        tumour_slices = range(1, min(n - 1, 5))
        for k in tumour_slices:
            rows.append([patient_id, sequence, f"{positions[k]:.3f}", "tumour", "", "", 8, 6, 20, 18])
        if sequence in {"T2WI", "DWI"}:
            rows.append([patient_id, sequence, f"{positions[2]:.3f}", "node", "mesorectal", lnm, 2, 3, 7, 9])
    return rows


def write_dataset(root: Path, patients: dict[str, tuple[str, int]] | None = None) -> Path:
    """A dataset of ``{patient_id: (center, lnm)}`` (default: four patients over two centres)."""
    patients = patients or {"P01": ("1", 1), "P02": ("1", 0), "P03": ("2", 1), "P04": ("2", 0)}
    root.mkdir(parents=True, exist_ok=True)
    annotations = []
    for patient_id, (_, lnm) in patients.items():
        annotations += write_patient(root, patient_id, lnm)
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient_id", "center", "lnm", "mr_ln_status"])
        for patient_id, (center, lnm) in patients.items():
            writer.writerow([patient_id, center, lnm, lnm])
    with (root / "annotations.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(ANNOTATION_COLUMNS)
        writer.writerows(annotations)
    return root
