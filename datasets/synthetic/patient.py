"""One synthetic patient: draw the phantom, render the centre's series, write the DICOM files, list the boxes."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.datasets.manifest import ANNOTATION_COLUMNS

from . import tissues as T
from .dicom_writer import PatientHeader, SeriesHeader, series_template, uid, write_slice
from .label_export import (
    TRUTH_FOLDERS,
    TUMOUR_VALUE,
    node_value,
    object_mask,
    segment_name,
    write_label_map,
    write_rtstruct,
    write_seg,
)
from .phantom import Phantom, draw_phantom
from .render import (
    SliceGrid,
    bias_field,
    make_grid,
    object_boxes,
    render_contrast,
    render_dwi,
    render_labels,
    render_overlays,
    rician,
    scanner_adc,
)
from .scanners import CentreProtocol, SeriesProtocol

# MR-LN status (the radiologist's read of the nodes) against pathology: typical of size-criterion MRI nodal staging.
MR_LN_SENSITIVITY = 0.60
MR_LN_SPECIFICITY = 0.85
# Appending a stream never changes the others (each is keyed by its position): "planted" is used in planted mode only.
STREAMS = ("anatomy", "tumour", "nodes", "reader", "meta", "noise", "planted")


@dataclass(frozen=True)
class PatientPlan:
    """Who a patient is before anything is drawn: centre, number within the centre, id and nodal status."""

    centre: CentreProtocol
    centre_number: int
    index: int  # 1-based within the centre
    patient_id: str
    lnm: int


@dataclass
class PatientResult:
    manifest_row: dict[str, str]
    annotations: list[dict[str, str]]
    n_files: int
    n_bytes: int


def patient_streams(seed: int, centre_number: int, index: int) -> dict[str, np.random.Generator]:
    """Independent random streams of one patient, keyed by (seed, centre, index, purpose) and nothing else.

    The tumour stream is used by the tumour alone, so the tumour does not change when lnm (which only the node
    stream and the lnm shift see) changes.
    """
    return {
        name: np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(centre_number, index, i)))
        for i, name in enumerate(STREAMS)
    }


def axial_half_window(centre: CentreProtocol) -> float:
    """Half the cranio-caudal range covered by every axial series (slice centres), mm."""
    return min((p.n_slices - 1) * p.spacing_mm / 2 for p in centre.series if p.plane == "axial")


def series_folder(number: int, description: str) -> str:
    return f"{number}_{re.sub(r'[^A-Za-z0-9._-]+', '_', description).strip('_')}"


def _instance_order(n: int, plane: str, head_first: bool) -> list[int]:
    """Position in acquisition order (0-based) of each slice index k (ascending position)."""
    if plane == "axial" and head_first:
        return [n - 1 - k for k in range(n)]
    return list(range(n))


class _Writer:
    """Writes the series of one patient and collects the annotation rows."""

    def __init__(
        self,
        root: Path,
        plan: PatientPlan,
        header: PatientHeader,
        cohort_key: str,
        truth: Mapping[str, Path] | None = None,
    ) -> None:
        self.root, self.plan, self.header, self.key = root, plan, header, cohort_key
        # Where the ground truth also goes, by format: "nifti" (label maps) and "seg" (DICOM-SEG) folders.
        self.truth = dict(truth or {})
        self.n_files = 0
        self.n_bytes = 0
        self.annotations: list[dict[str, str]] = []

    def series(
        self,
        protocol: SeriesProtocol,
        description: str,
        number: int,
        image_type: tuple[str, ...],
        slope: float,
        window: tuple[float, float],
    ) -> tuple[SeriesHeader, Path]:
        pid = self.plan.patient_id
        header = SeriesHeader(
            protocol, description, number, uid(self.key, pid, "series", number), image_type, slope, window
        )
        folder = self.root / pid / series_folder(number, description)
        folder.mkdir(parents=True, exist_ok=True)
        return header, folder

    def write(
        self,
        header: SeriesHeader,
        folder: Path,
        grid: SliceGrid,
        volumes: list[np.ndarray],
        b_values: list[int | None],
        interleaved: bool,
    ) -> list[Path]:
        """Write every slice of every b-value; InstanceNumber follows the vendor's acquisition order.

        Returns:
            The first b-value's files in grid order (what a reader draws on)."""
        n = grid.positions.size
        order = _instance_order(n, grid.plane, self.plan.centre.axial_head_first)
        nb = len(volumes)
        first: list[Path] = []
        for bi, (vol, b) in enumerate(zip(volumes, b_values, strict=True)):
            template = series_template(
                centre=self.plan.centre, patient=self.header, series=header, grid=grid, b_value=b
            )
            for k in range(n):
                instance = (order[k] * nb + bi if interleaved else bi * n + order[k]) + 1
                sop = uid(self.key, self.plan.patient_id, "image", header.number, instance)
                self.n_bytes += write_slice(
                    folder / f"{instance}.dcm", template, grid=grid, k=k, instance=instance, pixels=vol[k], sop_uid=sop
                )
                self.n_files += 1
                if bi == 0:
                    first.append(folder / f"{instance}.dcm")
        return first

    def boxes(
        self,
        sequences: tuple[str, ...],
        grid: SliceGrid,
        labels: np.ndarray,
        phantom: Phantom,
        series: tuple[SeriesHeader, list[Path]],
    ) -> None:
        """Tumour boxes on every series; node boxes on axial series only. ``series``: the annotated series' header
        and first b-value files, for the ground truth as DICOM-SEG."""
        objects: list[tuple[str, str, str, tuple[int, ...], tuple]] = [
            ("tumour", "", "", (T.TUMOUR, T.TUMOUR_NECROSIS), phantom.tumour.shape.aabb())
        ]
        if grid.plane == "axial":
            for node in phantom.nodes:
                labels_of = (node.label, T.node_necrosis_label(node.index))
                objects.append(("node", node.location, str(int(node.metastatic)), labels_of, node.shape.aabb()))
        pid = self.plan.patient_id
        # The DWI's label map and SEG serve ADC too (same grid), as its boxes do.
        if "nifti" in self.truth:
            self._label_map(self.truth["nifti"] / pid / f"{sequences[0]}.nii.gz", grid, labels, objects)
        if "seg" in self.truth or "rtstruct" in self.truth:
            self._dicom_truth(pid, sequences[0], grid, labels, objects, series)
        for kind, location, metastatic, label_set, aabb in objects:
            for k, x0, y0, x1, y1 in object_boxes(labels, grid, label_set, aabb):
                position = f"{grid.slice_position(k):.3f}"
                box = (str(x0), str(y0), str(x1), str(y1))
                for sequence in sequences:
                    values = (pid, sequence, position, kind, location, metastatic, *box)
                    self.annotations.append(dict(zip(ANNOTATION_COLUMNS, values, strict=True)))

    @staticmethod
    def _label_map(path: Path, grid: SliceGrid, labels: np.ndarray, objects: list) -> None:
        values = np.zeros((labels.shape[0], labels.shape[2], labels.shape[3]), dtype=np.uint8)
        for kind, location, metastatic, label_set, _ in objects:  # tumour first: a node keeps a shared voxel
            value = TUMOUR_VALUE if kind == "tumour" else node_value(location, metastatic == "1")
            values[object_mask(labels, label_set)] = value
        write_label_map(path, grid, values)

    def _dicom_truth(
        self, pid: str, sequence: str, grid: SliceGrid, labels: np.ndarray, objects: list, series: tuple
    ) -> None:
        """The series' truth as a DICOM-SEG and / or an RTSTRUCT, one segment / ROI per class."""
        masks: dict[str, np.ndarray] = {}
        for kind, location, metastatic, label_set, _ in objects:
            name = segment_name(kind, location, metastatic == "1")
            mask = object_mask(labels, label_set)
            masks[name] = masks[name] | mask if name in masks else mask
        header, sources = series
        date = self.header.study_date
        if "seg" in self.truth:
            write_seg(
                self.truth["seg"] / pid / f"{sequence}.dcm",
                sources,
                masks,
                series_uid=uid(self.key, pid, "seg-series", header.number),
                sop_uid=uid(self.key, pid, "seg", header.number),
                series_number=1000 + header.number,
                content_date=date,
            )
        if "rtstruct" in self.truth:
            write_rtstruct(
                self.truth["rtstruct"] / pid / f"{sequence}.dcm",
                sources,
                grid,
                masks,
                series_uid=uid(self.key, pid, "rtstruct-series", header.number),
                sop_uid=uid(self.key, pid, "rtstruct", header.number),
                content_date=date,
            )


def generate_patient(
    dicom_root: Path,
    plan: PatientPlan,
    *,
    seed: int,
    signal: float,
    cohort_key: str,
    planting: Mapping[str, float] | None = None,
    truth_formats: tuple[str, ...] = (),
) -> PatientResult:
    """Render and write one patient under ``dicom_root / patient_id``.

    Args:
        dicom_root: the cohort's ``dicom/`` folder.
        plan: centre, id and nodal status.
        seed: the cohort seed (with the centre and index it keys the patient's random streams).
        signal: tumour-lnm effect size of the shared features (in planted mode the shared strength).
        cohort_key: text that makes the UIDs of this cohort unique.
        planting: planted mode: canonical per-sequence strengths (see planted.py); None for the default mode.
        truth_formats: also write the ground truth as ``nifti`` label maps (``dicom_root/../labels``) and / or
            ``seg`` DICOM-SEGs (``dicom_root/../labels-seg``), see label_export.py.

    Returns:
        A `PatientResult` with the manifest row, the annotation rows, and the number and size of the files.
    """
    centre = plan.centre
    rngs = patient_streams(seed, plan.centre_number, plan.index)
    phantom = draw_phantom(
        rngs,
        site=centre.tumour_site,
        lnm=plan.lnm,
        signal=signal,
        z_half_window=axial_half_window(centre),
        planting=planting,
    )
    meta, noise = rngs["meta"], rngs["noise"]
    age = int(np.clip(round(meta.normal(52, 10)), 25, 80))
    study_date = (dt.date(2019, 1, 1) + dt.timedelta(days=int(meta.integers(0, 1000)))).strftime("%Y%m%d")
    draw = rngs["reader"].random()
    mr_ln = int(draw < MR_LN_SENSITIVITY) if plan.lnm else int(draw >= MR_LN_SPECIFICITY)
    pid = plan.patient_id
    header = PatientHeader(pid, age, uid(cohort_key, pid, "study"), uid(cohort_key, pid, "frame"), study_date)
    truth = {f: dicom_root.parent / TRUTH_FOLDERS[f] for f in truth_formats}
    out = _Writer(dicom_root, plan, header, cohort_key, truth)
    for protocol in centre.series:
        grid = make_grid(protocol, phantom)
        labels, mod = render_labels(phantom, grid)
        factors = render_overlays(phantom, grid, labels)
        gain = bias_field(grid, phantom.focus, centre.bias, noise) * protocol.scale
        sigma = protocol.noise * protocol.scale
        scale = protocol.scale
        if protocol.sequence == "DWI":
            signals = render_dwi(labels, mod, phantom.lut, centre.b_values, factors)
            stored = [rician(s * gain, sigma, noise) for s in signals]
            h, folder = out.series(
                protocol,
                protocol.description,
                protocol.series_number,
                ("ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"),
                1.0,
                (0.4 * scale, 0.8 * scale),
            )
            dwi = (h, out.write(h, folder, grid, stored, list(centre.b_values), centre.dwi_interleaved))
            slope = centre.adc_rescale_slope
            adc = scanner_adc(stored[0], stored[-1], centre.b_values[-1], sigma, slope)
            h, folder = out.series(
                protocol,
                centre.adc_description,
                centre.adc_series_number,
                ("DERIVED", "PRIMARY", "DIFFUSION", "ADC"),
                slope,
                (1500 / slope, 3000 / slope),
            )
            out.write(h, folder, grid, [adc], [None], False)
            out.boxes(("DWI", "ADC"), grid, labels, phantom, dwi)
        else:
            noiseless = render_contrast(labels, mod, phantom.lut, protocol.contrast, factors)
            image = rician(noiseless * gain, sigma, noise)
            h, folder = out.series(
                protocol,
                protocol.description,
                protocol.series_number,
                ("ORIGINAL", "PRIMARY", "M", "ND"),
                1.0,
                (0.45 * scale, 0.9 * scale),
            )
            written = out.write(h, folder, grid, [image], [None], False)
            out.boxes((protocol.sequence,), grid, labels, phantom, (h, written))
    row = {"patient_id": pid, "center": centre.label, "lnm": str(plan.lnm), "mr_ln_status": str(mr_ln), "age": str(age)}
    return PatientResult(row, out.annotations, out.n_files, out.n_bytes)
