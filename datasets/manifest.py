"""``manifest.csv`` (one row per patient) and ``annotations.csv`` (tumour ROI and lymph-node boxes).

Both are validated row by row; every problem names the file and line. Patient ids are untrusted input: they must be
plain names (letters, digits, ``.``, ``_``, ``-``; not ``.`` or ``..``) so that no path built from one can escape the
folder it is meant for (`safe_child` enforces the same where paths are built).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import hmac
import io
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DataError, ManifestError, Problem
from .sequences import SEQUENCES

MANIFEST_FILE = "manifest.csv"
ANNOTATIONS_FILE = "annotations.csv"

# Lu 2018's five node locations; the detector's class index is the position here + 1 (0 is background).
NODE_LOCATIONS = ("superior_rectal", "mesorectal", "internal_iliac", "external_iliac", "inguinal")

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_MANIFEST_REQUIRED = ("patient_id", "center", "lnm")
# The columns of annotations.csv, in order (docs/data-format.md); the synthetic cohort writes them, the loader reads.
ANNOTATION_COLUMNS = (
    "patient_id", "sequence", "slice_position_mm", "kind", "location", "metastatic", "x_min", "y_min", "x_max", "y_max",
)  # fmt: skip


def check_patient_id(patient_id: str, where: str) -> str:
    """Return ``patient_id`` if it is a safe plain name; raise `ManifestError` naming ``where`` otherwise."""
    if not _SAFE_ID.match(patient_id) or patient_id in {".", ".."}:
        raise ManifestError(
            where,
            f"patient_id {patient_id!r} is not a plain name (letters, digits, '.', '_', '-'; at most 64): "
            "ids are used to build file names, so '../x' or '/abs' are refused. Rename the patient.",
        )
    return patient_id


def safe_child(root: Path, name: str) -> Path:
    """``root / name``, refusing any name that would resolve outside ``root`` (``../x``, ``/abs``, symlinks out)."""
    root = root.resolve()
    child = (root / name).resolve()
    if child == root or root not in child.parents:
        raise DataError(str(root), f"refusing to build a path from {name!r}: it escapes the folder")
    return child


@dataclass(frozen=True)
class PatientRecord:
    """One manifest row."""

    patient_id: str
    center: str
    lnm: int
    mr_ln_status: int | None
    clinical: dict[str, str] = field(default_factory=dict)
    line: int = 0


@dataclass(frozen=True)
class Box:
    """One annotated box on one slice (see docs/data-format.md)."""

    patient_id: str
    sequence: str
    slice_position: float
    kind: str  # "tumour" | "node"
    location: str | None
    metastatic: bool | None
    xyxy: tuple[float, float, float, float]
    line: int


def _decoded(path: Path) -> str:
    """The text of a CSV file in UTF-8 (with or without a byte-order mark) or UTF-16 with a byte-order mark (Excel's
    "Unicode Text"); anything else is a `ManifestError` that names the file and how to save it."""
    data = path.read_bytes()
    encoding = "utf-16" if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ManifestError(
            str(path),
            f"not {'UTF-16' if encoding == 'utf-16' else 'UTF-8'} text (byte {exc.object[exc.start]:#04x} on line "
            f"{line}; cp1252 or Latin-1, as older Excel versions save CSV?): save it as UTF-8 (Excel: 'CSV UTF-8 "
            "(Comma delimited)'; or iconv -f cp1252 -t utf-8)",
        ) from None


def _read_csv(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    if not path.is_file():
        raise ManifestError(str(path), "file not found (see docs/data-format.md for the dataset layout)")
    text = _decoded(path)
    first_line = text.split("\n", 1)[0]
    # Excel's "Unicode Text" export is UTF-16 with tabs between the columns.
    delimiter = "\t" if "\t" in first_line and "," not in first_line else ","
    with io.StringIO(text, newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [name for name in required if name not in header]
        if missing:
            raise ManifestError(str(path), f"missing column(s) {', '.join(missing)}; found: {', '.join(header)}")
        rows = []
        for line, row in enumerate(reader, start=2):
            rows.append((line, {(k or "").strip(): (v or "").strip() for k, v in row.items()}))
        return rows


def _binary(value: str, where: str, column: str) -> int:
    if value not in {"0", "1"}:
        raise ManifestError(where, f"{column} must be 0 or 1, got {value!r}")
    return int(value)


def load_manifest(root: Path) -> tuple[dict[str, PatientRecord], list[Problem]]:
    """Parse ``root/manifest.csv``.

    Returns:
        The valid rows by patient id, and one `Problem` per invalid or duplicate row (such rows are left out).

    Raises:
        ManifestError: when the file is missing or lacks a required column.
    """
    path = root / MANIFEST_FILE
    patients: dict[str, PatientRecord] = {}
    problems: list[Problem] = []
    rows = _read_csv(path, _MANIFEST_REQUIRED)
    counts = Counter(row["patient_id"] for _, row in rows)
    for line, row in rows:
        where = f"{MANIFEST_FILE} line {line}"
        try:
            patient_id = check_patient_id(row["patient_id"], where)
            if counts[patient_id] > 1:
                raise ManifestError(where, f"duplicate patient_id {patient_id!r} ({counts[patient_id]} rows)")
            if not row["center"]:
                raise ManifestError(where, "empty center")
            lnm = _binary(row["lnm"], where, "lnm")
            mr_ln = row.get("mr_ln_status", "")
            mr_ln_status = _binary(mr_ln, where, "mr_ln_status") if mr_ln != "" else None
        except ManifestError as error:
            problems.append(Problem.from_error(error))
            continue
        clinical = {k: v for k, v in row.items() if k not in {"patient_id", "center", "lnm", "mr_ln_status"}}
        patients[patient_id] = PatientRecord(patient_id, row["center"], lnm, mr_ln_status, clinical, line)
    if not rows:
        problems.append(Problem.from_error(ManifestError(str(path), "no patients")))
    return patients, problems


def _parse_box(line: int, row: dict[str, str]) -> Box:
    where = f"{ANNOTATIONS_FILE} line {line}"
    sequence, kind = row["sequence"], row["kind"]
    if sequence not in SEQUENCES:
        raise ManifestError(where, f"unknown sequence {sequence!r}; known: {', '.join(SEQUENCES)}")
    if kind not in {"tumour", "node"}:
        raise ManifestError(where, f"kind must be 'tumour' or 'node', got {kind!r}")
    location, metastatic = None, None
    if kind == "node":
        location = row["location"]
        if location not in NODE_LOCATIONS:
            raise ManifestError(where, f"unknown node location {location!r}; known: {', '.join(NODE_LOCATIONS)}")
        metastatic = bool(_binary(row["metastatic"], where, "metastatic"))
    try:
        position = float(row["slice_position_mm"])
        xyxy = tuple(float(row[c]) for c in ("x_min", "y_min", "x_max", "y_max"))
    except ValueError:
        raise ManifestError(where, "slice_position_mm and the box corners must be numbers") from None
    if not (xyxy[0] < xyxy[2] and xyxy[1] < xyxy[3]) or min(xyxy) < 0:
        raise ManifestError(where, f"box {xyxy} is empty or negative: need 0 <= x_min < x_max and 0 <= y_min < y_max")
    return Box(row["patient_id"], sequence, position, kind, location, metastatic, xyxy, line)  # type: ignore[arg-type]


def load_annotations(root: Path) -> tuple[list[Box], list[Problem]]:
    """Parse ``root/annotations.csv`` into boxes; invalid rows become `Problem`s and are left out."""
    boxes: list[Box] = []
    problems: list[Problem] = []
    for line, row in _read_csv(root / ANNOTATIONS_FILE, ANNOTATION_COLUMNS):
        try:
            boxes.append(_parse_box(line, row))
        except ManifestError as error:
            problems.append(Problem.from_error(error))
    return boxes, problems


def pseudonym_key(root: Path) -> bytes:
    """The key of the patient pseudonyms: ``HARNESS_PSEUDONYM_KEY`` if set, else a digest of the manifest.

    A digest of the manifest is the same on every node of a cluster (so trials agree on who is who) and cannot be
    inverted by someone who has only the pseudonyms: a dictionary attack on short ids needs the key, and the key
    needs the manifest, which holds the ids anyway.
    """
    env = os.environ.get("HARNESS_PSEUDONYM_KEY")
    if env:
        return env.encode()
    return hashlib.sha256((root / MANIFEST_FILE).read_bytes()).digest()


def pseudonymize(patient_id: str, key: bytes) -> str:
    """A stable pseudonym for ``patient_id``: what goes into samples, logs and MLflow instead of the id."""
    return "pt-" + hmac.new(key, patient_id.encode(), hashlib.sha256).hexdigest()[:12]
