"""``harness data import``: annotations.csv from the label maps radiologists draw (docs/data-format.md).

A dataset's label maps sit in ``ROOT/labels/<patient_id>/<SEQUENCE>.nii.gz`` (or ``.nii``, ``.nrrd``, ``.mha``...),
one per annotated series, and ``ROOT/labels.yaml`` says what each label value means. Everything is read and
checked before anything is written: an unknown patient or sequence, a mask off its series' grid or an unlisted
label value is an error naming the file, and the output is written whole (temporary file, then rename) or not at
all.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from .dicom_annotations import read_rtstruct, read_seg
from .errors import DataError
from .files import csv_text, write_atomic
from .index import index_dataset
from .label_maps import (
    LABEL_MAP_SUFFIXES,
    LabelMeaning,
    boxes_of_objects,
    label_map_suffix,
    objects_in,
    read_label_map,
    split_nodes,
)
from .manifest import ANNOTATION_COLUMNS, NODE_LOCATIONS
from .sequences import SEQUENCES
from .series import Volume
from .volumes import load_sequence

LABELS_FOLDER = "labels"
LABELS_FILE = "labels.yaml"


class _Meaning(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["tumour", "node"]
    location: str = ""
    metastatic: Literal[0, 1] | None = None

    @model_validator(mode="after")
    def _node_fields(self) -> _Meaning:
        if self.kind == "node":
            if self.location not in NODE_LOCATIONS:
                raise ValueError(f"a node needs a location, one of {', '.join(NODE_LOCATIONS)}; got {self.location!r}")
            if self.metastatic is None:
                raise ValueError("a node needs metastatic: 0 or 1")
        elif self.location or self.metastatic is not None:
            raise ValueError("a tumour label takes no location or metastatic")
        return self


class _LabelsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    labels: dict[int | str, Literal["tumour"] | _Meaning]


def load_label_table(path: Path) -> dict[int | str, LabelMeaning]:
    """``labels.yaml``: label values (label maps) or segment / ROI names to what they annotate.

    Raises:
        DataError: naming the file and the key when it is missing or malformed.
    """
    if not path.is_file():
        raise DataError(str(path), f"not found: {LABELS_FILE} says what each label value means (docs/data-format.md)")
    try:
        parsed = _LabelsFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except yaml.YAMLError as exc:
        raise DataError(str(path), f"not valid YAML: {exc}") from None
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise DataError(str(path), details) from None
    table: dict[int | str, LabelMeaning] = {}
    for key, value in parsed.labels.items():
        if isinstance(key, int) and key <= 0:
            raise DataError(str(path), f"labels.{key}: label values are positive integers (0 is background)")
        meaning = _Meaning(kind="tumour") if value == "tumour" else value
        table[key] = LabelMeaning(meaning.kind, meaning.location, meaning.metastatic)
    return table


@dataclass(frozen=True)
class LabelMapFile:
    """One annotation file: a label map (its sequence from its name) or a DICOM file (SEG; sequence None)."""

    patient_id: str
    sequence: str | None
    path: Path


def find_label_maps(folder: Path) -> list[LabelMapFile]:
    """Every ``<patient_id>/<SEQUENCE>.<label-map suffix>`` under ``folder``, sorted.

    Raises:
        DataError: naming the file when a name is not a sequence or a suffix is not a label map, and when the folder
            holds none (two files for one series are refused by `import_label_maps`, SEGs included).
    """
    if not folder.is_dir():
        raise DataError(str(folder), "no label-map folder: put masks in <patient_id>/<SEQUENCE>.nii.gz under it")
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        relative = path.relative_to(folder)
        suffix = label_map_suffix(path)
        if len(relative.parts) == 2 and path.suffix.lower() == ".dcm":
            found.append(LabelMapFile(relative.parts[0], None, path))  # SEG or RTSTRUCT: its series says the sequence
            continue
        if len(relative.parts) != 2 or suffix is None:
            raise DataError(
                str(path),
                f"expected <patient_id>/<SEQUENCE> with one of {', '.join(LABEL_MAP_SUFFIXES)}, or "
                f"<patient_id>/<name>.dcm (DICOM-SEG), under {folder}",
            )
        sequence = path.name[: -len(suffix)]
        if sequence not in SEQUENCES:
            raise DataError(str(path), f"{sequence!r} is not a sequence; name the file one of {', '.join(SEQUENCES)}")
        found.append(LabelMapFile(relative.parts[0], sequence, path))
    if not found:
        raise DataError(str(folder), "holds no label maps (<patient_id>/<SEQUENCE>.nii.gz, .nrrd or .mha)")
    return found


@dataclass
class ImportReport:
    """What an import found: annotations.csv rows and a per-file summary."""

    rows: list[dict[str, str]] = field(default_factory=list)
    per_file: list[dict] = field(default_factory=list)

    def as_csv(self) -> str:
        return csv_text(ANNOTATION_COLUMNS, self.rows)


def _modality(path: Path) -> str:
    import pydicom

    try:
        return str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality"]).get("Modality", ""))
    except Exception as exc:  # pydicom raises assorted types on a file that is not DICOM
        raise DataError(str(path), f"not a readable DICOM file ({type(exc).__name__}: {exc})") from None


def _objects_of(index, table, item: LabelMapFile) -> tuple[str, Volume, list[tuple[LabelMeaning, np.ndarray]]]:
    """(sequence, the series' volume, the annotated objects) of one file."""
    if item.sequence is None:
        reader = read_rtstruct if _modality(item.path) == "RTSTRUCT" else read_seg
        sequence, volume, masks = reader(item.path, index, item.patient_id, table)
        return sequence, volume, split_nodes(masks)
    volume = load_sequence(index, item.patient_id, item.sequence)
    series = f"{item.sequence} of patient {item.patient_id!r}, series '{volume.series_description}'"
    labels = read_label_map(item.path, volume, series)
    return item.sequence, volume, objects_in(labels, table, str(item.path))


def _import_one(index, table, item: LabelMapFile) -> tuple[list[dict[str, str]], dict]:
    if item.patient_id not in index.patients:
        raise DataError(str(item.path), f"patient {item.patient_id!r} is not in manifest.csv")
    sequence, volume, objects = _objects_of(index, table, item)
    rows = [
        {"patient_id": item.patient_id, "sequence": sequence, **row}
        for row in boxes_of_objects(objects, volume.positions)
    ]
    kinds = Counter(m.kind if m.kind == "tumour" else f"node_{m.metastatic}" for m, _ in objects)
    summary = {
        "patient_id": item.patient_id,
        "sequence": sequence,
        "file": str(item.path),
        "tumour_slices": sum(1 for r in rows if r["kind"] == "tumour"),
        "nodes_metastatic": kinds.get("node_1", 0),
        "nodes_benign": kinds.get("node_0", 0),
        "boxes": len(rows),
    }
    return rows, summary


def import_label_maps(
    root: Path,
    *,
    labels_file: Path | None = None,
    folder: Path | None = None,
    progress: bool = False,
) -> ImportReport:
    """Read every label map and DICOM-SEG of a dataset into annotations.csv rows (nothing is written; see
    `write_annotations`).

    Args:
        root: the dataset folder (manifest.csv and dicom/ are read; annotations.csv is not).
        labels_file: the label table; default ``root/labels.yaml``.
        folder: the label maps; default ``root/labels``.
        progress: show a progress bar.

    Raises:
        DataError: the first problem, naming the file.
    """
    from rich.progress import track

    table = load_label_table(labels_file or root / LABELS_FILE)
    items = find_label_maps(folder or root / LABELS_FOLDER)
    index = index_dataset(root, required=(), with_annotations=False, progress=progress)
    index.raise_for_errors()
    report = ImportReport()
    annotated: dict[tuple[str, str], str] = {}
    for item in track(items, description="Importing annotations", disable=not progress, transient=True):
        rows, summary = _import_one(index, table, item)
        first = annotated.setdefault((item.patient_id, summary["sequence"]), str(item.path))
        if first != str(item.path):  # boxes of one series from two files would be counted twice
            raise DataError(str(item.path), f"annotates {summary['sequence']} of {item.patient_id!r}, as {first} does")
        report.rows += rows
        report.per_file.append(summary)
    return report


def write_annotations(report: ImportReport, out: Path, *, overwrite: bool) -> None:
    """Write ``report`` as ``out`` in one piece (temporary file, then rename).

    Raises:
        FileExistsError: ``out`` exists and ``overwrite`` is false.
    """
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it (or --out to write elsewhere)")
    write_atomic(out, report.as_csv())
