"""The cohort's ground truth as label maps (``harness synth --label-maps``): what a radiologist's masks would be.

Each annotated series gets ``labels/<patient_id>/<SEQUENCE>.nii.gz``, written by SimpleITK on the series' own grid
in the order the slices were rendered (sagittal stacks run against the DICOM slice normal, so an importer must
reorder them), with ``labels.yaml`` saying what each value means: 1 the tumour, and per node location one value
for benign and one for metastatic nodes. A voxel holds an object when the object is painted in at least one of the
slice's sub-samples, the rule the cohort's own boxes follow (render.object_boxes), so importing these maps must give
back the cohort's boxes; where a tumour and a node share a voxel, the node keeps it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from harness.datasets.manifest import NODE_LOCATIONS

from .render import SliceGrid

TUMOUR_VALUE = 1


def node_value(location: str, metastatic: bool) -> int:
    """The label value of a node class: 2, 3 for the first location (benign, metastatic), 4, 5 for the next..."""
    return 2 + 2 * NODE_LOCATIONS.index(location) + int(metastatic)


def label_table() -> dict[int, object]:
    """labels.yaml's ``labels`` mapping for `node_value`'s scheme."""
    table: dict[int, object] = {TUMOUR_VALUE: "tumour"}
    for location in NODE_LOCATIONS:
        for metastatic in (0, 1):
            table[node_value(location, bool(metastatic))] = {
                "kind": "node",
                "location": location,
                "metastatic": metastatic,
            }
    return table


def write_label_table(path: Path) -> None:
    header = "# What each value of the label maps under labels/ means (harness data import; docs/data-format.md).\n"
    path.write_text(header + yaml.safe_dump({"labels": label_table()}, sort_keys=False))


def object_mask(labels: np.ndarray, label_set: tuple[int, ...]) -> np.ndarray:
    """(slices, rows, columns): where the object is painted in at least one sub-sample of the slice."""
    return np.isin(labels, label_set).any(axis=1)


def write_label_map(path: Path, grid: SliceGrid, values: np.ndarray) -> None:
    """Write ``values`` (slices, rows, columns in the grid's order) as a NIfTI label map on the series' grid."""
    import SimpleITK as sitk

    first, second = np.asarray(grid.ipp(0)), np.asarray(grid.ipp(1))
    step = second - first
    row_dir, col_dir = np.asarray(grid.orientation[:3]), np.asarray(grid.orientation[3:])
    image = sitk.GetImageFromArray(values.astype(np.uint8))  # numpy [slice, row, column] = ITK (x=column, y, z)
    image.SetOrigin(tuple(float(v) for v in first))
    image.SetSpacing((grid.pixel_mm, grid.pixel_mm, float(np.linalg.norm(step))))
    direction = np.column_stack([row_dir, col_dir, step / np.linalg.norm(step)])
    image.SetDirection(tuple(float(v) for v in direction.ravel()))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)
