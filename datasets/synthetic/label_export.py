"""The cohort's ground truth as a radiologist's masks would be: label maps (``harness synth --label-maps``),
DICOM-SEG (``--seg``, highdicom) and RT structure sets (``--rtstruct``, pydicom; contours by contourpy's marching
squares at level 0.5 of each slice's mask, so that filling them by the pixel-centre rule gives the mask back).

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
TRUTH_FOLDERS = {"nifti": "labels", "seg": "labels-seg", "rtstruct": "labels-rtstruct"}  # format -> cohort folder
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
STUDY_COMPONENT_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"


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


def mask_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed contours (N x 2, row and column in pixel indices) around a 2-D mask, holes as separate contours."""
    import contourpy

    padded = np.pad(mask.astype(np.float64), 1)  # closed lines even where the mask touches the border
    generator = contourpy.contour_generator(z=padded, line_type="Separate")
    return [line[:, ::-1] - 1.0 for line in generator.lines(0.5)]  # (x=column, y=row) -> (row, column), unpad


def _item(**attributes):
    from pydicom.dataset import Dataset

    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def write_rtstruct(
    path: Path,
    sources: list[Path],
    grid: SliceGrid,
    masks: dict[str, np.ndarray],
    *,
    series_uid: str,
    sop_uid: str,
    content_date: str,
) -> None:
    """Write an RT Structure Set with one ROI per name of ``masks`` ((slices, rows, columns) in the order of
    ``sources``), the masks' contours (`mask_contours`) in patient mm on each slice's plane."""
    row_dir, col_dir = np.asarray(grid.orientation[:3]), np.asarray(grid.orientation[3:])
    contours: dict[str, list[tuple[int, np.ndarray]]] = {}
    for name, mask in masks.items():
        for k in np.nonzero(mask.any(axis=(1, 2)))[0]:
            origin = np.asarray(grid.ipp(int(k)))
            for line in mask_contours(mask[k]):
                columns_mm, rows_mm = line[:, 1] * grid.pixel_mm, line[:, 0] * grid.pixel_mm
                points = origin + np.outer(columns_mm, row_dir) + np.outer(rows_mm, col_dir)
                contours.setdefault(name, []).append((int(k), points))
    write_rtstruct_contours(path, sources, contours, series_uid=series_uid, sop_uid=sop_uid, content_date=content_date)


def write_rtstruct_contours(
    path: Path,
    sources: list[Path],
    contours: dict[str, list[tuple[int, np.ndarray]]],
    *,
    series_uid: str,
    sop_uid: str,
    content_date: str,
) -> None:
    """Write an RT Structure Set (pydicom): per ROI name, closed planar contours ``(index of the source image,
    N x 3 points in patient mm)``, each referencing its image; nothing when there are no contours."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    if not any(contours.values()):
        return
    images = [pydicom.dcmread(source, stop_before_pixels=True) for source in sources]
    first = images[0]
    frame_of_reference = first.get("FrameOfReferenceUID", "")
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = RT_STRUCTURE_SET_STORAGE, sop_uid, "RTSTRUCT"
    copied = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate")
    copied += ("StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName", "FrameOfReferenceUID")
    for keyword in copied:
        setattr(ds, keyword, first.get(keyword, ""))
    ds.SeriesInstanceUID, ds.SeriesNumber = series_uid, 1
    ds.StructureSetLabel, ds.StructureSetDate, ds.StructureSetTime = "truth", content_date, "120000"
    ds.Manufacturer = "lnm-harness"
    references = [_item(ReferencedSOPClassUID=i.SOPClassUID, ReferencedSOPInstanceUID=i.SOPInstanceUID) for i in images]
    series = _item(SeriesInstanceUID=first.SeriesInstanceUID, ContourImageSequence=references)
    study = _item(
        ReferencedSOPClassUID=STUDY_COMPONENT_MANAGEMENT,
        ReferencedSOPInstanceUID=first.StudyInstanceUID,
        RTReferencedSeriesSequence=[series],
    )
    ds.ReferencedFrameOfReferenceSequence = [
        _item(FrameOfReferenceUID=frame_of_reference, RTReferencedStudySequence=[study])
    ]
    rois, rt_contours, observations = [], [], []
    for number, (name, lines) in enumerate(((n, c) for n, c in contours.items() if c), start=1):
        rois.append(
            _item(
                ROINumber=number,
                ReferencedFrameOfReferenceUID=frame_of_reference,
                ROIName=name,
                ROIGenerationAlgorithm="MANUAL",
            )
        )
        items = [
            _item(
                ContourGeometricType="CLOSED_PLANAR",
                NumberOfContourPoints=len(points),
                ContourData=[f"{v:.4f}" for v in np.asarray(points).ravel()],
                ContourImageSequence=[references[k]],
            )
            for k, points in lines
        ]
        rt_contours.append(_item(ReferencedROINumber=number, ROIDisplayColor=[255, 0, 0], ContourSequence=items))
        kind = "GTV" if name == "tumour" else "ORGAN"
        observations.append(
            _item(ObservationNumber=number, ReferencedROINumber=number, RTROIInterpretedType=kind, ROIInterpreter="")
        )
    ds.StructureSetROISequence, ds.ROIContourSequence = rois, rt_contours
    ds.RTROIObservationsSequence = observations
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
