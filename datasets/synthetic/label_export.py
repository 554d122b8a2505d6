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
TRUTH_FOLDERS = {"nifti": "labels", "seg": "labels-seg"}  # format -> folder in the cohort


def node_value(location: str, metastatic: bool) -> int:
    """The label value of a node class: 2, 3 for the first location (benign, metastatic), 4, 5 for the next..."""
    return 2 + 2 * NODE_LOCATIONS.index(location) + int(metastatic)


def segment_name(kind: str, location: str = "", metastatic: bool = False) -> str:
    """The SegmentLabel of a class in the cohort's DICOM-SEGs, e.g. ``node mesorectal metastatic``."""
    return "tumour" if kind == "tumour" else f"node {location} {'metastatic' if metastatic else 'benign'}"


def label_table() -> dict[int | str, object]:
    """labels.yaml's ``labels`` mapping: label-map values (`node_value`) and SEG segment names (`segment_name`)."""
    table: dict[int | str, object] = {TUMOUR_VALUE: "tumour", segment_name("tumour"): "tumour"}
    for location in NODE_LOCATIONS:
        for metastatic in (0, 1):
            meaning = {"kind": "node", "location": location, "metastatic": metastatic}
            table[node_value(location, bool(metastatic))] = meaning
            table[segment_name("node", location, bool(metastatic))] = dict(meaning)
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


def write_seg(
    path: Path,
    sources: list[Path],
    masks: dict[str, np.ndarray],
    *,
    series_uid: str,
    sop_uid: str,
    series_number: int,
    content_date: str,
) -> None:
    """Write a DICOM-SEG (highdicom) of ``masks`` (segment name -> (slices, rows, columns) in the order of
    ``sources``, the series' files), one binary segment per name; frames reference their source images."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    images = [pydicom.dcmread(source) for source in sources]
    names = [name for name, mask in masks.items() if mask.any()]
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm if name == "tumour" else codes.SCT.LymphNode,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for number, name in enumerate(names, start=1)
    ]
    pixels = np.stack([masks[name] for name in names], axis=-1) if names else None
    if pixels is None:
        return  # nothing annotated on this series: no SEG, as a reader would not save an empty one
    seg = hd.seg.Segmentation(
        source_images=images,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer="lnm-harness",
        manufacturer_model_name="harness synth",
        software_versions="1",
        device_serial_number="0",
    )
    seg.ContentDate, seg.ContentTime = content_date, "120000"  # the same arguments give the same files
    for keyword in ("SeriesDate", "SeriesTime", "InstanceCreationDate", "InstanceCreationTime"):
        if keyword in seg:
            setattr(seg, keyword, content_date if keyword.endswith("Date") else "120000")
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
