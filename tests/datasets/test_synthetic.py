"""The synthetic cohort generator (`harness synth`): format, protocols, determinism, annotations, effect sizes, safety.

The cohort is read back with plain pydicom (not the harness's readers) and checked against the papers' tables and
docs/data-format.md, which the test encodes independently of the generator's own constants.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage
from sklearn.metrics import roc_auc_score

from harness.datasets.synthetic import DEFAULT_SIGNAL, centre_protocol, generate_cohort
from harness.datasets.synthetic import tissues as T
from harness.datasets.synthetic.cohort import plan_cohort
from harness.datasets.synthetic.nodes import LOCATIONS
from harness.datasets.synthetic.patient import axial_half_window, patient_streams
from harness.datasets.synthetic.phantom import draw_phantom, draw_tumour
from harness.datasets.synthetic.render import make_grid, object_boxes, render_labels

# docs/data-format.md default rules, first match wins.
RULES = (
    ("ADC", r"adc|apparent diffusion"),
    ("DWI", r"dwi|diff|trace|\bb\s*=?\s*\d{2,4}\b"),
    ("CET1WI", r"cet1|ce[-_ ]?t1|t1.*(\+\s*c\b|post|gd|gad|contrast|enh)"),
    ("T2WI", r"t2"),
)
# From the papers: Wu 2020 eMethods 1 (centres 1-3), Lu 2018 Table 1 (centre 4).
# centre: manufacturer, field (T), high b, {sequence: (thickness, thickness + gap, FOV width range, DWI matrix)}
PAPERS = {
    "1": (
        "SIEMENS",
        1.5,
        800,
        {
            "T2WI": (3.0, 3.3, (200, 200), None),
            "CET1WI": (3.6, 4.3, (260, 260), None),
            "DWI": (3.0, 3.4, (200, 200), (256, 256)),
        },
    ),
    "2": (
        "GE MEDICAL SYSTEMS",
        3.0,
        800,
        {
            "T2WI": (5.0, 6.0, (360, 360), None),
            "CET1WI": (3.0, 3.0, (280, 280), None),
            "DWI": (3.0, 3.3, (240, 240), (160, 112)),
        },
    ),
    "3": (
        "SIEMENS",
        3.0,
        800,
        {
            "T2WI": (6.0, 7.0, (340, 340), None),
            "CET1WI": (4.0, 5.0, (360, 360), None),
            "DWI": (6.0, 7.0, (300, 300), (200, 196)),
        },
    ),
    "4": (
        "GE MEDICAL SYSTEMS",
        3.0,
        700,
        {"T2WI": (6.0, 7.5, (360, 440), (320, 192)), "DWI": (6.0, 7.5, (360, 520), (130, 96))},
    ),
}
UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


def sequence_of(description: str) -> str | None:
    for sequence, pattern in RULES:
        if re.search(pattern, description, re.IGNORECASE):
            return sequence
    return None


def b_value_of(ds: pydicom.Dataset) -> int | None:
    """The harness's documented b-value rule, written independently of the generator."""
    if "DiffusionBValue" in ds:
        return int(ds.DiffusionBValue)
    for group, creator, offset in ((0x0019, "SIEMENS MR HEADER", 0x0C), (0x0043, "GEMS_PARM_01", 0x39)):
        try:
            value = ds.private_block(group, creator)[offset].value
        except KeyError:
            continue
        first = value[0] if isinstance(value, pydicom.multival.MultiValue) else value
        return int(first) % 1_000_000_000
    return None


def position_of(ds: pydicom.Dataset) -> float:
    o = np.asarray(ds.ImageOrientationPatient, float)
    return float(np.dot(np.cross(o[:3], o[3:]), np.asarray(ds.ImagePositionPatient, float)))


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


COHORT_ARGS = dict(patients=6, centers=4, seed=11)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "cohort"
    summary = generate_cohort(root, **COHORT_ARGS)
    return root, summary


@pytest.fixture(scope="module")
def series(cohort):
    """{patient_id: {sequence: [(path, dataset), ...]}} with pixels read."""
    root, _ = cohort
    out: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for path in sorted((root / "dicom").rglob("*")):
        if path.is_file():
            ds = pydicom.dcmread(path)  # never force=True
            out[ds.PatientID][sequence_of(ds.SeriesDescription)].append((path, ds))
    return out


@pytest.fixture(scope="module")
def tables(cohort):
    root, _ = cohort
    return read_csv(root / "manifest.csv"), read_csv(root / "annotations.csv")


def test_every_file_is_dicom_and_decodes(cohort, series):
    root, summary = cohort
    files = [p for p in (root / "dicom").rglob("*") if p.is_file()]
    assert len(files) == summary.n_files and sum(p.stat().st_size for p in files) == summary.n_bytes
    for patient, by_sequence in series.items():
        for items in by_sequence.values():
            for path, ds in items:
                assert path.read_bytes()[128:132] == b"DICM"
                assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
                assert ds.SOPClassUID == MRImageStorage == ds.file_meta.MediaStorageSOPClassUID
                assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
                assert (ds.BitsAllocated, ds.PixelRepresentation, ds.SamplesPerPixel) == (16, 0, 1)
                pixels = ds.pixel_array
                assert pixels.shape == (ds.Rows, ds.Columns) and pixels.dtype == np.uint16
                assert pixels.max() > 0
                assert path.parent.parent.name == patient == ds.PatientID
                assert ds.StudyDate == ds.ContentDate and re.fullmatch(r"\d{8}", ds.StudyDate)


def test_four_sequences_with_vendor_b_values(cohort, series):
    _, summary = cohort
    assert len(series) == summary.patients == COHORT_ARGS["patients"]
    for patient, by_sequence in series.items():
        assert set(by_sequence) == {"T2WI", "CET1WI", "DWI", "ADC"}, patient
        centre = patient.split("-")[1][1:]
        for sequence, items in by_sequence.items():
            assert len({ds.SeriesInstanceUID for _, ds in items}) == 1
            axis = [round(v) for v in items[0][1].ImageOrientationPatient]
            assert axis == ([0, 1, 0, 0, 0, -1] if sequence == "CET1WI" else [1, 0, 0, 0, 1, 0])
            by_b = defaultdict(list)
            for _, ds in items:
                by_b[b_value_of(ds)].append(position_of(ds))
            if sequence == "DWI":
                assert set(by_b) == {0, PAPERS[centre][2]}
                assert sorted(by_b[0]) == sorted(by_b[PAPERS[centre][2]])  # same positions for both b-values
            else:
                assert set(by_b) == {None}
            for positions in by_b.values():
                steps = np.diff(sorted(positions))
                assert steps.min() > 0 and np.allclose(steps, steps.mean(), atol=2e-3)  # regular, no duplicates
            instances = sorted(int(ds.InstanceNumber) for _, ds in items)
            assert instances == list(range(1, len(items) + 1))


def test_b_values_are_written_the_vendor_way(series):
    tags = {}
    for patient, by_sequence in series.items():
        ds = by_sequence["DWI"][0][1]
        centre = patient.split("-")[1][1:]
        tags[centre] = ("DiffusionBValue" in ds, (0x0019, 0x100C) in ds, (0x0043, 0x1039) in ds)
        if (0x0043, 0x1039) in ds:
            assert len(ds[0x0043, 0x1039].value) == 4 and ds.private_block(0x0043, "GEMS_PARM_01")
    assert tags == {
        "1": (False, True, False),
        "2": (False, False, True),
        "3": (True, False, False),
        "4": (False, False, True),
    }
    b800 = [ds for _, ds in series["SYN-C2-0001"]["DWI"] if b_value_of(ds)]
    assert int(b800[0][0x0043, 0x1039].value[0]) == 1_000_000_800


def test_centres_follow_the_papers_tables(series):
    seen = defaultdict(dict)
    for patient, by_sequence in series.items():
        centre = patient.split("-")[1][1:]
        manufacturer, field, _, protocol = PAPERS[centre]
        for sequence, (thickness, spacing, fov, matrix) in protocol.items():
            ds = by_sequence[sequence][0][1]
            assert ds.Manufacturer == manufacturer and float(ds.MagneticFieldStrength) == field
            assert float(ds.SliceThickness) == thickness and float(ds.SpacingBetweenSlices) == pytest.approx(spacing)
            positions = sorted({position_of(d) for _, d in by_sequence[sequence]})
            assert np.median(np.diff(positions)) == pytest.approx(spacing, abs=2e-3)  # the geometry, not just the tag
            row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
            assert row_mm == col_mm and fov[0] - 1 <= ds.Columns * col_mm <= fov[1] + 1
            if matrix is not None:
                assert tuple(ds.AcquisitionMatrix[1:3]) == matrix
                if centre == "4":  # Lu's matrices are the image matrices (square pixels)
                    assert (ds.Columns, ds.Rows) == matrix
            seen[sequence][centre] = (ds.Rows, ds.Columns, row_mm, float(ds.SliceThickness))
    for sequence in ("T2WI", "DWI"):
        assert len(set(seen[sequence].values())) == 4, f"{sequence} geometry should differ between all 4 centres"


def test_adc_is_the_scanners_map_of_the_noisy_dwi_and_rescale_slope_matters(series, tables):
    _, annotations = tables
    slopes = {}
    for patient, by_sequence in series.items():
        dwi = defaultdict(dict)
        for _, ds in by_sequence["DWI"]:
            dwi[b_value_of(ds)][round(position_of(ds), 3)] = ds.pixel_array.astype(float)
        b = max(dwi)
        adc_slices = {round(position_of(ds), 3): ds for _, ds in by_sequence["ADC"]}
        slope = float(next(iter(adc_slices.values())).RescaleSlope)
        slopes[patient.split("-")[1]] = slope
        for position, ds in adc_slices.items():
            adc = ds.pixel_array * slope + float(ds.RescaleIntercept)
            s0, sb = dwi[0][position], dwi[b][position]
            inside = (adc > 0) & (adc < 4000 - slope)
            expected = np.log(s0[inside] / sb[inside]) / b * 1e6
            assert np.abs(adc[inside] - expected).max() <= slope / 2 + 1e-6
            assert np.all(adc[s0 == 0] == 0)  # background is 0, never NaN/inf
        tumour = [
            a for a in annotations if a["patient_id"] == patient and a["sequence"] == "ADC" and a["kind"] == "tumour"
        ]
        values = []
        for a in tumour:
            ds = adc_slices[round(float(a["slice_position_mm"]), 3)]
            x0, y0, x1, y1 = (int(a[k]) for k in ("x_min", "y_min", "x_max", "y_max"))
            values.append((ds.pixel_array[y0:y1, x0:x1] * slope).ravel())
        assert 400 < np.median(np.concatenate(values)) < 1500, patient  # restricted diffusion, in 1e-6 mm^2/s
    assert slopes["C3"] == 0.5 and slopes["C1"] == 1.0


def test_manifest_and_annotations_match_the_dicom(cohort, series, tables):
    _, summary = cohort
    manifest, annotations = tables
    assert list(manifest[0]) == ["patient_id", "center", "lnm", "mr_ln_status", "age"]
    assert {r["patient_id"] for r in manifest} == set(series)
    for row in manifest:
        assert re.fullmatch(r"[A-Za-z0-9._-]+", row["patient_id"]) and row["patient_id"].startswith(
            f"SYN-C{row['center']}-"
        )
        assert row["lnm"] in "01" and row["mr_ln_status"] in "01" and 25 <= int(row["age"]) <= 80
    assert summary.lnm_positive == sum(int(r["lnm"]) for r in manifest)
    positions = {
        (p, s): {round(position_of(ds), 3): ds for _, ds in items} for p, d in series.items() for s, items in d.items()
    }
    kinds = defaultdict(set)
    for a in annotations:
        slices = positions[(a["patient_id"], a["sequence"])]
        ds = slices[round(float(a["slice_position_mm"]), 3)]  # an exact written slice of that series
        x0, y0, x1, y1 = (int(a[k]) for k in ("x_min", "y_min", "x_max", "y_max"))
        assert 0 <= x0 < x1 <= ds.Columns and 0 <= y0 < y1 <= ds.Rows
        if a["kind"] == "tumour":
            assert a["location"] == a["metastatic"] == ""
        else:
            assert a["kind"] == "node" and a["location"] in LOCATIONS and a["metastatic"] in ("0", "1")
            assert a["sequence"] != "CET1WI"  # node boxes on axial T2WI, DWI, ADC only
        kinds[a["patient_id"]].add((a["sequence"], a["kind"]))
    for patient in series:
        assert {s for s, k in kinds[patient] if k == "tumour"} == {"T2WI", "CET1WI", "DWI", "ADC"}
    dwi = sorted(tuple(a[k] for k in a if k != "sequence") for a in annotations if a["sequence"] == "DWI")
    adc = sorted(tuple(a[k] for k in a if k != "sequence") for a in annotations if a["sequence"] == "ADC")
    assert dwi == adc  # an ADC map shares the DWI grid


def test_metastatic_nodes_only_in_node_positive_patients_and_bright_on_dwi(series, tables):
    manifest, annotations = tables
    lnm = {r["patient_id"]: int(r["lnm"]) for r in manifest}
    assert set(lnm.values()) == {0, 1}
    peaks = {"0": [], "1": []}
    for patient, positive in lnm.items():
        nodes = [a for a in annotations if a["patient_id"] == patient and a["kind"] == "node"]
        metastatic = {a["sequence"] for a in nodes if a["metastatic"] == "1"}
        assert metastatic == ({"T2WI", "DWI", "ADC"} if positive else set()), patient
        dwi = {round(position_of(ds), 3): ds for _, ds in series[patient]["DWI"] if b_value_of(ds)}
        for a in nodes:
            if a["sequence"] == "DWI":
                x0, y0, x1, y1 = (int(a[k]) for k in ("x_min", "y_min", "x_max", "y_max"))
                ds = dwi[round(float(a["slice_position_mm"]), 3)]
                peaks[a["metastatic"]].append(ds.pixel_array[y0:y1, x0:x1].max() / float(ds.WindowWidth))
    assert np.mean(peaks["1"]) > 1.3 * np.mean(peaks["0"])


def test_node_draws_follow_the_criteria():
    for i in range(40):
        lnm = i % 2
        site = "rectum" if i % 3 == 0 else "cervix"
        phantom = draw_phantom(patient_streams(i, 1, 1), site=site, lnm=lnm, signal=DEFAULT_SIGNAL, z_half_window=34)
        nodes = phantom.nodes
        assert 2 <= len(nodes) <= T.MAX_NODES
        metastatic = [n for n in nodes if n.metastatic]
        assert (len(metastatic) >= 1) if lnm else not metastatic
        for n in nodes:
            assert n.location in LOCATIONS
            assert abs(n.shape.center[2] - phantom.focus[2]) <= 34  # inside every axial series
            if n.metastatic:
                assert 5.0 <= n.short_axis_mm <= 15.0 and n.shape.lobe_amps and n.texture is not None
                assert n.values[T.ADC] < 0.9  # restricted diffusion
            else:
                assert n.short_axis_mm < 5.0 and not n.shape.lobe_amps and n.texture is None
                assert n.values[T.ADC] > 1.05


def test_boxes_are_the_exact_bounding_boxes_of_the_rendered_masks():
    centre = centre_protocol(2)
    phantom = draw_phantom(patient_streams(5, 2, 1), site="cervix", lnm=1, signal=1.0, z_half_window=40)
    for protocol in (centre.t2, centre.cet1):  # axial and sagittal grids
        grid = make_grid(protocol, phantom)
        labels, _ = render_labels(phantom, grid)
        objects = [((T.TUMOUR, T.TUMOUR_NECROSIS), phantom.tumour.shape.aabb())]
        objects += [((n.label, n.label + 1), n.shape.aabb()) for n in phantom.nodes]
        for label_set, aabb in objects:
            fast = object_boxes(labels, grid, label_set, aabb)
            mask = np.isin(labels, label_set).any(axis=1)  # brute force over the whole volume
            slow = []
            for k in range(mask.shape[0]):
                rows, cols = np.nonzero(mask[k].any(axis=1))[0], np.nonzero(mask[k].any(axis=0))[0]
                if rows.size:
                    slow.append((k, cols[0], rows[0], cols[-1] + 1, rows[-1] + 1))
            assert fast == slow
        assert object_boxes(labels, grid, objects[0][0], objects[0][1])  # the tumour is in every series


def test_signal_zero_makes_the_tumour_independent_of_lnm():
    for seed in range(4):
        for centre, site in ((1, "cervix"), (4, "rectum")):
            drawn = {}
            for signal in (0.0, DEFAULT_SIGNAL):
                for lnm in (0, 1):
                    drawn[signal, lnm] = draw_phantom(
                        patient_streams(seed, centre, 3), site=site, lnm=lnm, signal=signal, z_half_window=34
                    )
            assert drawn[0.0, 0].tumour == drawn[0.0, 1].tumour  # bit-for-bit, not just in distribution
            assert drawn[0.0, 0].lut[T.TUMOUR].tolist() == drawn[0.0, 1].lut[T.TUMOUR].tolist()
            high = drawn[DEFAULT_SIGNAL, 1].tumour.aggressiveness - drawn[DEFAULT_SIGNAL, 0].tumour.aggressiveness
            assert drawn[DEFAULT_SIGNAL, 0].tumour != drawn[DEFAULT_SIGNAL, 1].tumour
            assert high == pytest.approx(DEFAULT_SIGNAL)
            objs0, objs1 = drawn[0.0, 0].objects, drawn[0.0, 1].objects
            upto = next(i for i, o in enumerate(objs0) if o.label == T.TUMOUR) + 1
            assert objs0[:upto] == objs1[:upto]  # anatomy and tumour identical; only the nodes differ


def test_signal_sets_the_tumour_effect_size():
    rng = np.random.default_rng(0)
    lnm = rng.integers(0, 2, size=600)
    for signal in (0.0, DEFAULT_SIGNAL):
        tumours = [
            draw_tumour(np.random.default_rng([7, i]), "cervix", (0.0, 0.0, 0.0), int(y), signal)
            for i, y in enumerate(lnm)
        ]
        auc_size = roc_auc_score(lnm, [t.mean_radius_mm for t in tumours])
        auc_adc = roc_auc_score(lnm, [-t.adc for t in tumours])
        expected = 0.5 * (1 + math.erf(0.8 * signal / 2))  # Phi(loading * signal / sqrt(2)), loading 0.8
        assert abs(auc_size - expected) < 0.06 and abs(auc_adc - expected) < 0.06, (signal, auc_size, auc_adc)


def test_default_signal_is_learnable_from_the_written_images(tmp_path):
    """A simple image feature (tumour box volume on T2WI) separates lnm at the default signal."""
    root = tmp_path / "auc"
    generate_cohort(root, patients=36, centers=3, seed=2, workers=2)
    manifest, annotations = read_csv(root / "manifest.csv"), read_csv(root / "annotations.csv")
    spacing = {}
    for path in (root / "dicom").rglob("1.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if sequence_of(ds.SeriesDescription) == "T2WI":
            spacing[ds.PatientID] = float(ds.PixelSpacing[0]) ** 2 * float(ds.SpacingBetweenSlices)
    volume = defaultdict(float)
    for a in annotations:
        if a["sequence"] == "T2WI" and a["kind"] == "tumour":
            area = (int(a["x_max"]) - int(a["x_min"])) * (int(a["y_max"]) - int(a["y_min"]))
            volume[a["patient_id"]] += area * spacing[a["patient_id"]]
    y = [int(r["lnm"]) for r in manifest]
    assert 0.2 < np.mean(y) < 0.5
    assert roc_auc_score(y, [volume[r["patient_id"]] for r in manifest]) > 0.65


def test_uids_are_valid_unique_and_deterministic(series):
    sops = []
    for by_sequence in series.values():
        studies, frames = set(), set()
        for items in by_sequence.values():
            for _, ds in items:
                for value in (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID):
                    assert len(value) <= 64 and UID_RE.match(value), value
                sops.append(ds.SOPInstanceUID)
                studies.add(ds.StudyInstanceUID)
                frames.add(ds.FrameOfReferenceUID)
        assert len(studies) == len(frames) == 1
    assert len(sops) == len(set(sops))


def test_same_arguments_give_identical_files_and_another_seed_does_not(cohort, tmp_path):
    root, _ = cohort
    again = tmp_path / "again"
    generate_cohort(again, **COHORT_ARGS, workers=2)  # the number of processes does not matter either
    assert tree_hashes(again) == tree_hashes(root)
    a, b = tmp_path / "seed1", tmp_path / "seed2"
    generate_cohort(a, patients=1, centers=1, seed=1)
    generate_cohort(b, patients=1, centers=1, seed=2)
    files = sorted(p.relative_to(a) for p in a.rglob("*.dcm"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.dcm"))
    for rel in files[:: max(1, len(files) // 8)]:
        assert not np.array_equal(pydicom.dcmread(a / rel).pixel_array, pydicom.dcmread(b / rel).pixel_array)


def test_each_centre_has_both_classes_and_the_prevalence_is_about_a_third():
    for seed in range(30):
        plans = plan_cohort(60, 3, seed)
        for centre in (1, 2, 3):
            classes = [p.lnm for p in plans if p.centre_number == centre]
            assert len(classes) == 20 and set(classes) == {0, 1}
    for seed in range(10):  # 7 patients over 3 centres: 3, 2 and 2 patients, each with both classes
        plans = plan_cohort(7, 3, seed)
        assert [sum(p.centre_number == c for p in plans) for c in (1, 2, 3)] == [3, 2, 2]
        assert all({p.lnm for p in plans if p.centre_number == c} == {0, 1} for c in (1, 2, 3))
    assert 0.28 < np.mean([p.lnm for seed in range(50) for p in plan_cohort(40, 4, seed)]) < 0.42


def test_centres_beyond_four_reuse_the_protocols_perturbed():
    base, fifth = centre_protocol(1), centre_protocol(5)
    assert fifth.label == "5" and fifth.manufacturer == base.manufacturer
    assert fifth.t2.description == base.t2.description and fifth.t2 != base.t2
    assert centre_protocol(5) == fifth  # deterministic
    assert axial_half_window(fifth) > 20
    with pytest.raises(ValueError):
        centre_protocol(0)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(patients=0, centers=1, seed=0),
        dict(patients=2, centers=0, seed=0),
        dict(patients=2, centers=3, seed=0),
        dict(patients=2, centers=1, seed=-1),
        dict(patients=2, centers=1, seed=0, signal=-0.5),
        dict(patients=2, centers=1, seed=0, signal=float("nan")),
        dict(patients=2, centers=1, seed=0, workers=0),
    ],
)
def test_invalid_arguments_are_refused(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate_cohort(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_refuses_to_overwrite_and_replaces_only_a_cohort(cohort, tmp_path):
    root, _ = cohort
    before = tree_hashes(root)
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_cohort(root, **COHORT_ARGS)
    assert tree_hashes(root) == before
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="does not look like a cohort"):
        generate_cohort(other, patients=1, centers=1, seed=0, overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(FileExistsError):
        generate_cohort(a_file, patients=1, centers=1, seed=0)
    out = tmp_path / "replace"
    out.mkdir()  # an empty folder is fine without overwrite
    generate_cohort(out, patients=1, centers=1, seed=0)
    (out / "stale.txt").write_text("old")
    generate_cohort(out, patients=1, centers=1, seed=1, overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "manifest.csv").is_file()
    (tmp_path / "plain").mkdir()
    assert out.stat().st_mode == (tmp_path / "plain").stat().st_mode  # not a private temporary folder's 0700
    (tmp_path / "plain").rmdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "notes", "replace"]  # no temporary folders left


@pytest.mark.parametrize("workers", [1, 2])
def test_an_interrupted_run_leaves_nothing_at_out(tmp_path, workers):
    out = tmp_path / "cohort"
    seen = []

    def stop(done: int, total: int) -> None:
        partial = [p for p in tmp_path.iterdir() if p.name.startswith(".cohort.partial-")]
        seen.append((done, total, out.exists(), len(partial), (partial[0] / "dicom").is_dir() if partial else False))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_cohort(out, patients=3, centers=1, seed=0, progress=stop, workers=workers)
    assert seen == [(1, 3, False, 1, True)]  # the work goes to a hidden sibling, never to `out`
    assert list(tmp_path.iterdir()) == []  # and is removed on the way out, worker processes stopped first
