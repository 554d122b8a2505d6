"""Annotation boxes from label maps (NIfTI, NRRD, MHA): what 3D Slicer, ITK-SNAP, PI-CAI and nnU-Net datasets hold.

A label map annotates one DICOM series and must lie on that series' voxel grid: SimpleITK reads the file (NIfTI's
RAS affine becomes ITK's LPS, as DICOM's), then `align_to_series` finds the index map from mask voxels to series
voxels. Only a signed permutation of the axes plus a whole-voxel shift that stays inside the series is accepted:
a mask stored in another axis order or with flipped axes (RAS-canonical NIfTI, a reversed stack) is reordered, one
cropped to its content on the series' grid (3D Slicer's default) is placed where it lies, and anything else
(another spacing, a rotation, a resampled grid, voxels beyond the series) is an error naming both files and what
differs. Nothing is resampled: a box must come from the voxels the radiologist painted.

Boxes: a tumour label gives, on every slice it touches, the bounding box of its voxels; a node label is split into
3-D connected components (26-connectivity: voxels that share a face, an edge or a corner are one node, because
nodes drift in-plane between thick slices), and each component gives one box on every slice it crosses. Boxes are
half-open XYXY in pixels (x = column), as annotations.csv holds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from .errors import DataError
from .series import Volume

LABEL_MAP_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")  # single-file formats (no detached headers)
# Mask voxel centres must land on series voxel centres within this fraction of a voxel, and the mask's axes on the
# series' axes within this (cosine): scanners and viewers write geometry in single precision or to 3-6 decimals.
GRID_TOLERANCE_VOXELS = 0.05
AXIS_TOLERANCE = 1e-3
NODE_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)  # 26-connectivity


@dataclass(frozen=True)
class LabelMeaning:
    """What one label value (or segment / ROI name) annotates."""

    kind: str  # "tumour" | "node"
    location: str = ""
    metastatic: int | None = None


def label_map_suffix(path: Path) -> str | None:
    """The label-map suffix of ``path`` (``.nii.gz`` included), or None when it is not a label-map file."""
    name = path.name.lower()
    return next((suffix for suffix in LABEL_MAP_SUFFIXES if name.endswith(suffix)), None)


def series_affine(volume: Volume) -> np.ndarray:
    """4x4 map from a series voxel index (slice k, row i, column j, 1) to patient coordinates (LPS, mm).

    Raises:
        DataError: for a single slice without SliceThickness (no extent along the normal to match a mask against).
    """
    if not volume.slice_spacing > 0:
        raise DataError(
            f"series '{volume.series_description}' ({volume.series_uid})",
            "a single slice without SliceThickness: annotations cannot be placed along its normal",
        )
    affine = np.eye(4)
    affine[:3, 0] = volume.normal * volume.slice_spacing
    affine[:3, 1] = volume.col_dir * volume.pixel_spacing[0]
    affine[:3, 2] = volume.row_dir * volume.pixel_spacing[1]
    affine[:3, 3] = volume.origin
    return affine


def image_affine(image) -> np.ndarray:
    """4x4 map from a SimpleITK image's numpy index (z, y, x, 1) to patient coordinates (LPS, mm)."""
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    affine = np.eye(4)
    for numpy_axis, itk_axis in enumerate((2, 1, 0)):  # GetArrayFromImage returns [z, y, x]
        affine[:3, numpy_axis] = direction[:, itk_axis] * spacing[itk_axis]
    affine[:3, 3] = image.GetOrigin()
    return affine


def _describe_mismatch(mask: np.ndarray, series: np.ndarray) -> str:
    """Which of spacing and axes differ between two index-to-patient affines, in words."""
    mask_spacing = sorted(np.linalg.norm(mask[:3, :3], axis=0))
    series_spacing = sorted(np.linalg.norm(series[:3, :3], axis=0))
    if not np.allclose(mask_spacing, series_spacing, rtol=AXIS_TOLERANCE, atol=1e-4):
        return (
            f"voxel spacing differs: mask {np.round(mask_spacing, 4).tolist()} mm, series "
            f"{np.round(series_spacing, 4).tolist()} mm (resampled? the mask must be drawn on the series itself)"
        )
    axes = np.round(mask[:3, :3] / np.linalg.norm(mask[:3, :3], axis=0), 4).T.tolist()
    series_axes = np.round(series[:3, :3] / np.linalg.norm(series[:3, :3], axis=0), 4).T.tolist()
    return f"axes differ: mask axes {axes}, series axes {series_axes} (LPS): another orientation of the patient"


def align_to_series(labels: np.ndarray, mask_affine: np.ndarray, volume: Volume, where: str) -> np.ndarray:
    """The label array reordered onto the series grid: shape (slices, rows, columns) of ``volume``.

    Args:
        labels: the mask's voxels in its own index order.
        mask_affine: its index-to-LPS affine (`image_affine`).
        volume: the series it annotates.
        where: the two files, for errors.

    Raises:
        DataError: the grids differ in spacing, axes, voxel positions or extent (the message says which).
    """
    to_series = np.linalg.solve(series_affine(volume), mask_affine)  # mask index -> series index
    linear, shift = to_series[:3, :3], to_series[:3, 3]
    permutation = np.round(linear)
    is_signed_permutation = (np.abs(permutation).sum(axis=0) == 1).all() and (
        np.abs(permutation).sum(axis=1) == 1
    ).all()
    if not is_signed_permutation or np.abs(linear - permutation).max() > AXIS_TOLERANCE:
        raise DataError(
            where,
            "the label map is not on the series' voxel grid: " + _describe_mismatch(mask_affine, series_affine(volume)),
        )
    if np.abs(shift - np.round(shift)).max() > GRID_TOLERANCE_VOXELS:
        raise DataError(
            where,
            f"the label map's voxels sit between the series' voxels (offset {np.round(shift - np.round(shift), 3)} "
            "voxels along slices, rows, columns): its origin differs from the series' (resampled or shifted?)",
        )
    source_axis = np.abs(permutation).argmax(axis=1)  # series axis s takes mask axis source_axis[s]
    aligned = np.transpose(labels, source_axis)
    for axis in range(3):
        if permutation[axis, source_axis[axis]] < 0:
            aligned = np.flip(aligned, axis=axis)
    corners = np.array([[0, 0, 0], np.array(labels.shape) - 1])
    mapped = corners @ permutation.T + np.round(shift)
    low, high = mapped.min(axis=0).astype(int), mapped.max(axis=0).astype(int)
    if (low < 0).any() or (high >= np.array(volume.pixels.shape)).any():
        raise DataError(
            where,
            f"the label map covers series voxels {low.tolist()}..{high.tolist()} (slice, row, column), beyond the "
            f"series' {list(volume.pixels.shape)}: drawn on another series, or shifted",
        )
    # A mask cropped to its content on the series' own grid (3D Slicer saves segmentations so) is placed in full.
    full = np.zeros(volume.pixels.shape, dtype=aligned.dtype)
    full[low[0] : high[0] + 1, low[1] : high[1] + 1, low[2] : high[2] + 1] = aligned
    return full


def read_label_map(path: Path, volume: Volume, series_where: str) -> np.ndarray:
    """Read a label map with SimpleITK and return its integer labels on ``volume``'s grid (`align_to_series`).

    Raises:
        DataError: naming the file when it cannot be read, is not a single-component integer 3-D image, or does not
            lie on the series' grid.
    """
    import SimpleITK as sitk

    where = f"{path} (for {series_where})"
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise DataError(str(path), f"cannot read the label map: {str(exc).strip().splitlines()[-1]}") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(
            str(path),
            f"a label map is one 3-D integer image; this is {image.GetDimension()}-D with "
            f"{image.GetNumberOfComponentsPerPixel()} component(s) per voxel",
        )
    labels = sitk.GetArrayFromImage(image)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise DataError(str(path), f"voxel values are {labels.dtype} with fractions: a label map holds integers")
        labels = labels.astype(np.int64)
    return align_to_series(labels, image_affine(image), volume, where)


def _slice_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    """(slice, x_min, y_min, x_max, y_max) of ``mask`` on every slice it touches, half-open."""
    out = []
    for k in np.nonzero(mask.any(axis=(1, 2)))[0]:
        rows = np.nonzero(mask[k].any(axis=1))[0]
        cols = np.nonzero(mask[k].any(axis=0))[0]
        out.append((int(k), int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1))
    return out


def objects_in(
    labels: np.ndarray, meanings: dict[int | str, LabelMeaning], where: str
) -> list[tuple[LabelMeaning, np.ndarray]]:
    """The annotated objects of a label array: (meaning, boolean mask) per tumour label and per node component.

    Raises:
        DataError: when the array holds a non-zero value that ``meanings`` does not list.
    """
    present = sorted(int(v) for v in np.unique(labels) if v != 0)
    unknown = [v for v in present if v not in meanings]
    if unknown:
        listed = ", ".join(str(k) for k in meanings if isinstance(k, int)) or "none"
        raise DataError(where, f"label value(s) {unknown} are not in labels.yaml (values listed there: {listed})")
    return split_nodes([(meanings[value], labels == value) for value in present])


def split_nodes(masks: list[tuple[LabelMeaning, np.ndarray]]) -> list[tuple[LabelMeaning, np.ndarray]]:
    """Tumour masks as they are; each node mask split into its 3-D connected components, one per node."""
    objects = []
    for meaning, mask in masks:
        if meaning.kind == "tumour":
            objects.append((meaning, mask))
            continue
        components, count = ndimage.label(mask, structure=NODE_CONNECTIVITY)
        objects += [(meaning, components == c) for c in range(1, count + 1)]
    return objects


def boxes_of_objects(objects: list[tuple[LabelMeaning, np.ndarray]], positions: np.ndarray) -> list[dict[str, str]]:
    """annotations.csv rows (without patient and sequence) for every object on every slice it touches."""
    rows = []
    for meaning, mask in objects:
        for k, x0, y0, x1, y1 in _slice_boxes(mask):
            rows.append(
                {
                    "slice_position_mm": f"{positions[k]:.3f}",
                    "kind": meaning.kind,
                    "location": meaning.location,
                    "metastatic": "" if meaning.metastatic is None else str(meaning.metastatic),
                    "x_min": str(x0),
                    "y_min": str(y0),
                    "x_max": str(x1),
                    "y_max": str(y1),
                }
            )
    return rows
