"""Image volumes that are not DICOM: NIfTI, NRRD or MHA files in place of a DICOM series (PI-CAI, the Medical
Segmentation Decathlon and nnU-Net datasets come this way).

A patient's sequence may be ``ROOT/volumes/<patient_id>/<SEQUENCE>.nii.gz`` (or ``.nii``, ``.nrrd``, ``.mha``).
SimpleITK reads it (a NIfTI's RAS affine becomes DICOM's LPS) and it becomes a `Volume` exactly as a DICOM series
does: slices stacked along cross(row direction, column direction), sorted by increasing position along it, pixels
float32. The same rules hold as for DICOM: finite, positive spacing; orthonormal directions; slices stacked along
their normal (a sheared grid is refused); one scalar 3-D image. A DWI volume is the high-b image itself (a file
holds no b-values), so ADC cannot be computed from it: give the ADC map as its own volume.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DataError, Problem, Severity
from .label_maps import LABEL_MAP_SUFFIXES, label_map_suffix
from .sequences import SEQUENCES
from .series import Volume

VOLUMES_FOLDER = "volumes"
DIRECTION_TOLERANCE = 1e-3


def find_volume_files(root: Path) -> tuple[list[tuple[str, str, Path]], list[Problem]]:
    """``(patient_id, sequence, path)`` of every image volume under ``root/volumes``, and a problem per file whose
    name is not ``<patient_id>/<SEQUENCE><suffix>`` or whose header fails `check_volume_header`."""
    folder = root / VOLUMES_FOLDER
    found, problems = [], []
    if not folder.is_dir():
        return found, problems
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        relative = path.relative_to(folder)
        suffix = label_map_suffix(path)
        sequence = path.name[: -len(suffix)] if suffix else None
        if len(relative.parts) != 2 or sequence not in SEQUENCES:
            message = (
                f"expected volumes/<patient_id>/<SEQUENCE> with SEQUENCE one of {', '.join(SEQUENCES)} and a suffix "
                f"of {', '.join(LABEL_MAP_SUFFIXES)}"
            )
            problems.append(Problem(Severity.ERROR, str(path), message))
            continue
        try:
            check_volume_header(path)
        except DataError as error:
            problems.append(Problem.from_error(error))
            continue
        found.append((relative.parts[0], sequence, path))
    return found, problems


def _geometry(path: Path, info, components: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(spacing, origin, direction 3x3) of an image or an image reader's header, checked (module docstring)."""
    if info.GetDimension() != 3 or components != 1:
        raise DataError(
            str(path),
            f"expected one 3-D scalar image, found {info.GetDimension()}-D with {components} "
            "component(s) per voxel (a 4-D DWI or a colour image: give each sequence as its own 3-D file)",
        )
    spacing = np.asarray(info.GetSpacing(), dtype=np.float64)
    origin = np.asarray(info.GetOrigin(), dtype=np.float64)
    direction = np.asarray(info.GetDirection(), dtype=np.float64).reshape(3, 3)
    if not (np.all(np.isfinite(spacing)) and np.all(np.isfinite(origin)) and np.all(np.isfinite(direction))):
        raise DataError(str(path), "spacing, origin or direction holds a non-finite value")
    if spacing.min() <= 0:
        raise DataError(str(path), f"spacing {spacing.tolist()} must be positive")
    if np.abs(direction.T @ direction - np.eye(3)).max() > DIRECTION_TOLERANCE:
        raise DataError(
            str(path), f"direction {direction.round(4).tolist()} is not orthonormal: a sheared or damaged header"
        )
    return spacing, origin, direction


def check_volume_header(path: Path) -> None:
    """Read only the header of an image volume and check it (cheap: what `harness data check` does for every file).

    Raises:
        DataError: naming the file (see `read_image_volume`).
    """
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise DataError(str(path), f"cannot read the image: {str(exc).strip().splitlines()[-1]}") from None
    _geometry(path, reader, reader.GetNumberOfComponents())


def read_image_volume(path: Path, series_uid: str, description: str) -> Volume:
    """A NIfTI / NRRD / MHA image as a `Volume` (see the module docstring).

    Raises:
        DataError: naming the file when it cannot be read, is not one scalar 3-D image, or its geometry is
            non-finite, not positive, not orthonormal or sheared.
    """
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise DataError(str(path), f"cannot read the image: {str(exc).strip().splitlines()[-1]}") from None
    spacing, origin, direction = _geometry(path, image, image.GetNumberOfComponentsPerPixel())
    row_dir, col_dir, stack_dir = direction[:, 0], direction[:, 1], direction[:, 2]
    normal = np.cross(row_dir, col_dir)
    pixels = sitk.GetArrayFromImage(image).astype(np.float32)  # [slice, row, column]
    if not np.all(np.isfinite(pixels)):
        raise DataError(str(path), "voxel values include NaN or inf")
    along = float(stack_dir @ normal)  # +1 or -1 for an orthonormal direction
    if along < 0:  # slices stored against the normal: reverse, so positions increase as in a DICOM Volume
        origin = origin + (pixels.shape[0] - 1) * spacing[2] * stack_dir
        pixels = np.ascontiguousarray(pixels[::-1])
    positions = float(normal @ origin) + spacing[2] * np.arange(pixels.shape[0])
    return Volume(
        pixels=pixels,
        positions=positions,
        row_dir=row_dir.copy(),
        col_dir=col_dir.copy(),
        normal=normal,
        origin=origin,
        pixel_spacing=(float(spacing[1]), float(spacing[0])),  # (between rows, between columns)
        slice_spacing=float(spacing[2]),
        series_uid=series_uid,
        series_description=description,
        b_value=None,
        source_files=[str(path)] * pixels.shape[0],
    )
