"""`harness data import` from label maps: round trips through SimpleITK's writers (not the importer's code) on the
synthetic cohort (axial and sagittal stacks, the latter stored against the DICOM normal) and on an oblique series
the test paints itself, in NIfTI, NRRD and MHA, reoriented and flipped; and the grids it must refuse."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import yaml
from pydicom.uid import generate_uid

from harness.cli import main
from harness.datasets.errors import DataError
from harness.datasets.importer import import_label_maps
from harness.datasets.label_maps import LabelMeaning
from harness.datasets.synthetic import generate_cohort
from tests.datasets.minidata import write_dataset
from tests.dicom_factory import unit_normal, write_series

BOX_COLUMNS = ("x_min", "y_min", "x_max", "y_max")
TABLE_MEANING_TUMOUR = LabelMeaning("tumour")


def box_set(rows, sequences=("T2WI", "CET1WI", "DWI")) -> dict[tuple, list[tuple[int, ...]]]:
    """Boxes by (patient, sequence, slice, kind, location, metastatic), each list sorted."""
    found: dict[tuple, list[tuple[int, ...]]] = {}
    for r in rows:
        if r["sequence"] in sequences:
            key = (r["patient_id"], r["sequence"], r["slice_position_mm"], r["kind"], r["location"], r["metastatic"])
            found.setdefault(key, []).append(tuple(int(float(r[c])) for c in BOX_COLUMNS))
    return {k: sorted(v) for k, v in found.items()}


def assert_same_boxes(expected: dict, got: dict, within: int = 1) -> None:
    assert sorted(expected) == sorted(got)
    for key, boxes in expected.items():
        assert len(got[key]) == len(boxes), key
        worst = max(
            abs(a - b) for box, other in zip(boxes, got[key], strict=True) for a, b in zip(box, other, strict=True)
        )
        assert worst <= within, (key, boxes, got[key])


# --- the synthetic cohort's own ground truth ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("labelmaps") / "cohort"
    generate_cohort(out, patients=3, centers=2, seed=5, truth_formats=("nifti", "seg", "rtstruct"))
    return out


def cohort_boxes(root: Path) -> dict:
    with (root / "annotations.csv").open() as handle:
        return box_set(csv.DictReader(handle))


def test_synth_label_maps_import_back_to_the_cohorts_boxes(cohort):
    report = import_label_maps(cohort)
    expected = cohort_boxes(cohort)
    assert_same_boxes(expected, box_set(report.rows))
    # Measured on this cohort: every box equal, not just within a pixel (the maps follow the boxes' own rule).
    assert box_set(report.rows) == expected
    assert {r["sequence"] for r in report.per_file} == {"T2WI", "CET1WI", "DWI"}


@pytest.mark.parametrize(
    "suffix,orientation", [(".nrrd", None), (".mha", None), (".nii.gz", "RAS"), (".nrrd", "PIL"), (".mha", "ASR")]
)
def test_other_formats_and_axis_orders_import_the_same(cohort, tmp_path, suffix, orientation):
    """The same masks saved as NRRD or MHA, and with their voxel axes reordered and flipped by SimpleITK's
    DICOMOrient (RAS-canonical as nibabel users store them, or any other order): the same boxes."""
    masks = tmp_path / "masks"
    for path in sorted((cohort / "labels").rglob("*.nii.gz")):
        image = sitk.ReadImage(str(path))
        if orientation is not None:
            image = sitk.DICOMOrient(image, orientation)
        target = masks / path.parent.name / path.name.replace(".nii.gz", suffix)
        target.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(target))
    report = import_label_maps(cohort, folder=masks)
    assert box_set(report.rows) == cohort_boxes(cohort)


# --- an oblique series painted by the test -----------------------------------------------------------------------

OBLIQUE = (1.0, 0.0, 0.0, 0.0, float(np.cos(0.35)), float(np.sin(0.35)))  # axial tilted 20 degrees about x
SHAPE = (7, 30, 36)  # slices, rows, columns
PIXEL, SLICE = (0.8, 0.9), 3.5  # (between rows, between columns), between slices
ORIGIN = np.array([-12.0, 7.5, 30.0])
TABLE = {
    "labels": {
        1: "tumour",
        4: {"kind": "node", "location": "mesorectal", "metastatic": 1},
        5: {"kind": "node", "location": "mesorectal", "metastatic": 0},
    }
}


def painted() -> np.ndarray:
    """A tumour on slices 1-3, two separate metastatic nodes (one value, two components), one benign node."""
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[1:4, 4:10, 5:13] = 1
    labels[2:4, 20:23, 3:6] = 4
    labels[3:6, 15:18, 28:33] = 4
    labels[5, 25:27, 10:12] = 5
    return labels


def expected_boxes(positions: list[float]) -> dict:
    rows = []
    objects = [("tumour", "", "", (1, 4), (4, 10), (5, 13))]
    objects += [
        ("node", "mesorectal", "1", (2, 4), (20, 23), (3, 6)),
        ("node", "mesorectal", "1", (3, 6), (15, 18), (28, 33)),
    ]
    objects += [("node", "mesorectal", "0", (5, 6), (25, 27), (10, 12))]
    for kind, location, metastatic, ks, rs, cs in objects:
        for k in range(*ks):
            rows.append(
                {
                    "patient_id": "P01",
                    "sequence": "T2WI",
                    "slice_position_mm": f"{positions[k]:.3f}",
                    "kind": kind,
                    "location": location,
                    "metastatic": metastatic,
                    **dict(zip(BOX_COLUMNS, (cs[0], rs[0], cs[1], rs[1]), strict=True)),
                }
            )
    return box_set(rows)


@pytest.fixture
def oblique(tmp_path) -> tuple[Path, dict]:
    """minidata's dataset with P01's T2WI replaced by an oblique series; its label table; the expected boxes."""
    root = write_dataset(tmp_path / "ds")
    folder = root / "dicom" / "P01" / "T2WI"
    uid = pydicom.dcmread(next(folder.iterdir())).SeriesInstanceUID
    shutil.rmtree(folder)
    write_series(
        folder,
        patient_id="P01",
        series_uid=uid,
        description="t2_tse_obl",
        n_slices=SHAPE[0],
        rows=SHAPE[1],
        cols=SHAPE[2],
        orientation=OBLIQUE,
        spacing=PIXEL,
        slice_spacing=SLICE,
        origin=ORIGIN,
    )
    (root / "labels.yaml").write_text(yaml.safe_dump(TABLE))
    normal = unit_normal(OBLIQUE)
    positions = [float(normal @ ORIGIN) + k * SLICE for k in range(SHAPE[0])]
    return root, expected_boxes(positions)


def sitk_mask(labels: np.ndarray, *, reversed_stack: bool = False, spacing=None, shift=(0.0, 0.0, 0.0)) -> sitk.Image:
    """The painted labels as an image on the series' grid, built from the DICOM geometry by the test itself."""
    row, col = np.array(OBLIQUE[:3]), np.array(OBLIQUE[3:])
    normal = unit_normal(OBLIQUE)
    origin = ORIGIN + np.asarray(shift)
    if reversed_stack:  # slices stored top-down: the first voxel plane is the series' last slice
        labels, origin, normal = labels[::-1], origin + (SHAPE[0] - 1) * SLICE * normal, -normal
    image = sitk.GetImageFromArray(np.ascontiguousarray(labels))
    image.SetOrigin(tuple(origin))
    image.SetSpacing(spacing or (PIXEL[1], PIXEL[0], SLICE))
    image.SetDirection(tuple(np.column_stack([row, col, normal]).ravel()))
    return image


def write_mask(root: Path, image: sitk.Image, name: str = "T2WI.nii.gz") -> Path:
    path = root / "labels" / "P01" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize("reversed_stack", [False, True], ids=["stacked along the normal", "reversed stack"])
def test_an_oblique_series_mask_gives_the_painted_boxes(oblique, reversed_stack):
    root, expected = oblique
    write_mask(root, sitk_mask(painted(), reversed_stack=reversed_stack))
    report = import_label_maps(root)
    assert box_set(report.rows) == expected
    (summary,) = report.per_file
    assert (summary["tumour_slices"], summary["nodes_metastatic"], summary["nodes_benign"]) == (3, 2, 1)


@pytest.mark.parametrize(
    "change,fragment",
    [
        (dict(spacing=(PIXEL[1] * 2, PIXEL[0], SLICE)), "voxel spacing differs"),
        (dict(shift=(0.4, 0.0, 0.0)), "between the series' voxels"),
        (dict(shift=tuple(2 * SLICE * unit_normal(OBLIQUE))), "covers series voxels"),
    ],
    ids=["resampled", "half-voxel shift", "shifted by two slices"],
)
def test_a_mask_off_the_series_grid_is_an_error_naming_both_files(oblique, change, fragment):
    root, _ = oblique
    path = write_mask(root, sitk_mask(painted(), **change))
    with pytest.raises(DataError) as info:
        import_label_maps(root)
    message = str(info.value)
    assert str(path) in message and "T2WI of patient 'P01'" in message and fragment in message, message


def test_a_mask_cropped_to_its_content_is_placed_where_it_lies(oblique):
    """3D Slicer saves a segmentation cropped to its extent: same grid, smaller box, origin at its first voxel."""
    root, expected = oblique
    labels = painted()
    row, col, normal = np.array(OBLIQUE[:3]), np.array(OBLIQUE[3:]), unit_normal(OBLIQUE)
    k0, r0, c0 = 1, 4, 3  # the first slice, row and column that hold a label
    cropped = labels[k0:, r0:, c0:]
    offset = k0 * SLICE * normal + r0 * PIXEL[0] * col + c0 * PIXEL[1] * row
    image = sitk.GetImageFromArray(np.ascontiguousarray(cropped))
    image.SetOrigin(tuple(ORIGIN + offset))
    image.SetSpacing((PIXEL[1], PIXEL[0], SLICE))
    image.SetDirection(tuple(np.column_stack([row, col, normal]).ravel()))
    write_mask(root, image, "T2WI.nrrd")
    assert box_set(import_label_maps(root).rows) == expected


def test_another_orientation_is_refused(oblique):
    root, _ = oblique
    path = write_mask(root, sitk_mask(painted()))
    image = sitk_mask(painted())
    image.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))  # plain axial: not the oblique series
    sitk.WriteImage(image, str(path))
    with pytest.raises(DataError, match="axes differ"):
        import_label_maps(root)


def test_unlisted_values_unknown_names_and_patients_are_errors(oblique):
    root, _ = oblique
    labels = painted()
    labels[0, 0, 0] = 9
    path = write_mask(root, sitk_mask(labels))
    with pytest.raises(DataError, match=r"label value\(s\) \[9\] are not in labels.yaml"):
        import_label_maps(root)
    path.unlink()
    write_mask(root, sitk_mask(painted()), "T1.nii.gz")
    with pytest.raises(DataError, match="'T1' is not a sequence"):
        import_label_maps(root)
    shutil.rmtree(root / "labels")
    stranger = root / "labels" / "P99" / "T2WI.nii.gz"
    stranger.parent.mkdir(parents=True)
    sitk.WriteImage(sitk_mask(painted()), str(stranger))
    with pytest.raises(DataError, match="'P99' is not in manifest.csv"):
        import_label_maps(root)


@pytest.mark.parametrize(
    "table,fragment",
    [
        ({"labels": {1: {"kind": "node", "location": "mesorectal"}}}, "metastatic"),
        ({"labels": {1: {"kind": "node", "location": "armpit", "metastatic": 1}}}, "location"),
        ({"labels": {0: "tumour"}}, "positive integers"),
        ({"labels": {1: "tumor"}}, "labels.1"),
    ],
)
def test_a_malformed_label_table_names_the_key(oblique, table, fragment):
    root, _ = oblique
    write_mask(root, sitk_mask(painted()))
    (root / "labels.yaml").write_text(yaml.safe_dump(table))
    with pytest.raises(DataError) as info:
        import_label_maps(root)
    assert "labels.yaml" in str(info.value) and fragment in str(info.value), str(info.value)


def test_cli_dry_run_writes_nothing_and_an_existing_file_is_kept(oblique, capsys):
    root, expected = oblique
    write_mask(root, sitk_mask(painted()))
    before = (root / "annotations.csv").read_bytes()
    harness = ["data", "import", str(root)]

    def run(args):  # in this process: a subprocess per call would cost a torch import each
        capsys.readouterr()
        returncode = main(args)
        return SimpleNamespace(returncode=returncode, stderr=capsys.readouterr().err)

    refused = run(harness)
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    dry = run(harness + ["--dry-run"])
    assert dry.returncode == 0 and "nothing written" in dry.stderr and "P01" in dry.stderr, dry.stderr
    assert (root / "annotations.csv").read_bytes() == before
    done = run(harness + ["--overwrite"])
    assert done.returncode == 0, done.stderr
    with (root / "annotations.csv").open() as handle:
        assert box_set(csv.DictReader(handle)) == expected
    assert not list(root.glob(".annotations.csv.partial-*"))


# --- DICOM-SEG ---------------------------------------------------------------------------------------------------


def test_synth_segs_import_back_to_the_cohorts_boxes(cohort):
    """highdicom's SEGs, DWI ones drawn on the b0 images: the boxes land on the same slices of the b800 image."""
    report = import_label_maps(cohort, folder=cohort / "labels-seg")
    assert box_set(report.rows) == cohort_boxes(cohort)


def seg_of(series_files: list[Path], masks: dict[str, np.ndarray], path: Path) -> Path:
    """A SEG written by highdicom from the test's masks, frames in the order of ``series_files``."""
    from harness.datasets.synthetic.label_export import write_seg

    write_seg(
        path,
        series_files,
        masks,
        series_uid=generate_uid(),
        sop_uid=generate_uid(),
        series_number=99,
        content_date="20260101",
    )
    return path


def oblique_files(root: Path) -> list[Path]:
    """P01's oblique T2WI files in slice order (write_series names them by slice)."""
    return sorted((root / "dicom" / "P01" / "T2WI").iterdir())


def test_a_seg_on_the_oblique_series_gives_the_painted_boxes(oblique):
    root, expected = oblique
    labels = painted()
    masks = {"tumour": labels == 1, "node mesorectal metastatic": labels == 4, "node mesorectal benign": labels == 5}
    (root / "labels.yaml").write_text(
        yaml.safe_dump(
            {
                "labels": {
                    **TABLE["labels"],
                    **{
                        "tumour": "tumour",
                        "node mesorectal metastatic": TABLE["labels"][4],
                        "node mesorectal benign": TABLE["labels"][5],
                    },
                }
            }
        )
    )
    seg_of(oblique_files(root), masks, root / "labels" / "P01" / "drawn-in-ohif.dcm")
    report = import_label_maps(root)
    assert box_set(report.rows) == expected
    assert report.per_file[0]["sequence"] == "T2WI"  # from the series the SEG references


def test_seg_errors_name_the_file(oblique):
    root, _ = oblique
    path = seg_of(oblique_files(root), {"lesion": painted() == 1}, root / "labels" / "P01" / "s.dcm")
    with pytest.raises(DataError, match=r"segment label\(s\) \['lesion'\] are not in labels.yaml"):
        import_label_maps(root)
    (root / "labels" / "P02").mkdir()
    path.rename(root / "labels" / "P02" / "s.dcm")  # filed under another patient
    (root / "labels.yaml").write_text(yaml.safe_dump({"labels": {"lesion": "tumour"}}))
    with pytest.raises(DataError, match="is in the folder of 'P02' but segments a series of 'P01'"):
        import_label_maps(root)
    shutil.move(root / "labels" / "P02" / "s.dcm", root / "labels" / "P01" / "s.dcm")
    write_mask(root, sitk_mask((painted() == 1).astype(np.uint8)))
    (root / "labels.yaml").write_text(yaml.safe_dump({"labels": {"lesion": "tumour", 1: "tumour"}}))
    with pytest.raises(DataError, match="annotates T2WI of 'P01', as .* does"):
        import_label_maps(root)


# --- RTSTRUCT ----------------------------------------------------------------------------------------------------


def test_synth_rtstructs_import_back_to_the_cohorts_boxes(cohort):
    """Contours by marching squares (contourpy) around the truth, filled back by the pixel-centre rule."""
    report = import_label_maps(cohort, folder=cohort / "labels-rtstruct")
    assert box_set(report.rows) == cohort_boxes(cohort)


def to_patient_mm(k: int, rows_cols: np.ndarray) -> np.ndarray:
    """(row, column) pixel coordinates on slice k of the oblique series -> patient mm (the DICOM geometry)."""
    row_dir, col_dir, normal = np.array(OBLIQUE[:3]), np.array(OBLIQUE[3:]), unit_normal(OBLIQUE)
    origin = ORIGIN + k * SLICE * normal
    return origin + np.outer(rows_cols[:, 1] * PIXEL[1], row_dir) + np.outer(rows_cols[:, 0] * PIXEL[0], col_dir)


def pil_mask(rows_cols: np.ndarray) -> np.ndarray:
    """The polygon rasterised by Pillow (an independent rasteriser; it also takes pixels its edges cross)."""
    from PIL import Image, ImageDraw

    image = Image.new("1", (SHAPE[2], SHAPE[1]), 0)
    ImageDraw.Draw(image).polygon([(float(c), float(r)) for r, c in rows_cols], fill=1, outline=1)
    return np.array(image, dtype=bool)


def ellipse(centre_row: float, centre_col: float, radius_rows: float, radius_cols: float) -> np.ndarray:
    angles = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    return np.c_[centre_row + radius_rows * np.sin(angles), centre_col + radius_cols * np.cos(angles)]


def write_rt(root: Path, contours: dict[str, list[tuple[int, np.ndarray]]]) -> Path:
    from harness.datasets.synthetic.label_export import write_rtstruct_contours

    path = root / "labels" / "P01" / "rt.dcm"
    write_rtstruct_contours(
        path, oblique_files(root), contours, series_uid=generate_uid(), sop_uid=generate_uid(), content_date="20260101"
    )
    return path


def test_rtstruct_contours_on_an_oblique_series_match_an_independent_rasteriser(oblique):
    root, _ = oblique
    (root / "labels.yaml").write_text(yaml.safe_dump({"labels": {"tumour": "tumour", "node": TABLE["labels"][4]}}))
    tumour = {k: ellipse(12.3, 15.7, 5.2 + k, 7.4) for k in (1, 2, 3)}
    node = ellipse(22.0, 30.0, 2.5, 3.1)
    write_rt(
        root,
        {
            "tumour": [(k, to_patient_mm(k, ring)) for k, ring in tumour.items()],
            "node": [(4, to_patient_mm(4, node)), (5, to_patient_mm(5, node))],
        },
    )
    report = import_label_maps(root)
    got = {(r["kind"], float(r["slice_position_mm"])): [int(r[c]) for c in BOX_COLUMNS] for r in report.rows}
    base = float(unit_normal(OBLIQUE) @ ORIGIN)
    for k, ring in [*tumour.items(), (4, node), (5, node)]:
        mask = pil_mask(ring)
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        expected = [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
        kind = "tumour" if k in tumour else "node"
        box = got[(kind, round(base + k * SLICE, 3))]
        assert max(abs(a - b) for a, b in zip(box, expected, strict=True)) <= 1, (k, box, expected)
    assert sum(r["kind"] == "node" for r in report.rows) == 2 and report.per_file[0]["nodes_metastatic"] == 1


def test_a_contour_inside_another_is_a_hole(oblique):
    from harness.datasets.dicom_annotations import read_rtstruct
    from harness.datasets.index import index_dataset

    root, _ = oblique
    outer, inner = ellipse(15, 18, 10, 12), ellipse(15, 18, 4, 5)
    path = write_rt(root, {"tumour": [(2, to_patient_mm(2, outer)), (2, to_patient_mm(2, inner))]})
    index = index_dataset(root, required=(), with_annotations=False)
    _, _, [(_, mask)] = read_rtstruct(path, index, "P01", {"tumour": TABLE_MEANING_TUMOUR})
    assert mask[2, 15, 18] == 0 and mask[2, 15, 8] == 1  # the centre is the hole, the ring is filled
    ring = pil_mask(outer) & ~pil_mask(inner)
    assert abs(int(mask[2].sum()) - int(ring.sum())) <= 0.15 * ring.sum()  # Pillow also takes the edge pixels


def test_a_contour_off_the_slice_planes_is_an_error(oblique):
    root, _ = oblique
    (root / "labels.yaml").write_text(yaml.safe_dump({"labels": {"tumour": "tumour"}}))
    points = to_patient_mm(2, ellipse(12, 15, 4, 4)) + 0.4 * SLICE * unit_normal(OBLIQUE)  # between slices 2 and 3
    path = write_rt(root, {"tumour": [(2, points)]})
    with pytest.raises(DataError, match="not in a slice plane of the series") as info:
        import_label_maps(root)
    assert str(path) in str(info.value)
    (root / "labels.yaml").write_text(yaml.safe_dump({"labels": {"GTV": "tumour"}}))
    with pytest.raises(DataError, match=r"ROI name\(s\) \['tumour'\] are not in labels.yaml"):
        import_label_maps(root)


def test_a_single_slice_without_thickness_cannot_take_a_mask():
    from harness.datasets.label_maps import series_affine
    from harness.datasets.series import Volume

    volume = Volume(
        pixels=np.zeros((1, 4, 4), np.float32),
        positions=np.zeros(1),
        row_dir=np.array([1.0, 0, 0]),
        col_dir=np.array([0, 1.0, 0]),
        normal=np.array([0, 0, 1.0]),
        origin=np.zeros(3),
        pixel_spacing=(1.0, 1.0),
        slice_spacing=0.0,
        series_uid="1.2.3",
        series_description="scout",
    )
    with pytest.raises(DataError, match="single slice without SliceThickness"):
        series_affine(volume)


def test_a_seg_that_references_no_image_is_refused_not_read_as_empty(oblique):
    root, _ = oblique
    path = seg_of(oblique_files(root), {"lesion": painted() == 1}, root / "labels" / "P01" / "s.dcm")
    (root / "labels.yaml").write_text(yaml.safe_dump({"labels": {"lesion": "tumour"}}))
    seg = pydicom.dcmread(path)
    seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence = []
    seg.save_as(path)
    with pytest.raises(DataError, match="reference no source image"):
        import_label_maps(root)
