"""Indexing a dataset folder: manifest + annotations + every DICOM header, grouped into patients and sequences.

`index_dataset` reads every file once (header and pixel-data checks, no decoding) and caches the result keyed on
the files' paths, sizes and mtimes, so a training run that starts on an unchanged dataset does not parse DICOM.
Every problem found is kept as a `Problem`; `DatasetIndex.raise_for_errors` turns them into one error for callers
that need a clean dataset, and ``on_error="skip"`` turns file and patient errors into warnings that drop the file
or patient (and are counted in the summary) instead.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import track

from .cache import ArrayCache, file_fingerprint
from .dicom_io import SliceHeader, frames_of, read_dicom
from .errors import DataError, DicomFileError, Problem, Severity
from .image_volumes import VOLUMES_FOLDER, find_volume_files
from .manifest import Box, PatientRecord, load_annotations, load_manifest
from .sequences import SEQUENCES, SequenceRules, load_rules

log = logging.getLogger(__name__)

DICOM_DIR = "dicom"
ON_ERROR_CHOICES = ("error", "skip")


@dataclass
class SeriesInfo:
    """One series as found on disk (headers only)."""

    series_uid: str
    description: str
    patient_id: str
    sequence: str | None
    headers: list[SliceHeader]
    volume_file: Path | None = None  # an image volume (NIfTI, NRRD, MHA) in place of DICOM: image_volumes.py

    @property
    def files(self) -> list[Path]:
        if self.volume_file is not None:
            return [self.volume_file]
        return sorted({h.path for h in self.headers})

    @property
    def b_values(self) -> list[float]:
        return sorted({h.b_value for h in self.headers if h.b_value is not None})

    @property
    def n_frames(self) -> int:
        return len(self.headers)


@dataclass
class DatasetIndex:
    """Everything known about a dataset folder before any pixel is decoded."""

    root: Path
    rules: SequenceRules
    patients: dict[str, PatientRecord]
    boxes: list[Box]
    series: list[SeriesInfo]
    problems: list[Problem] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)  # hidden files and DICOMDIRs, listed in the summary
    skipped_files: list[str] = field(default_factory=list)  # unreadable files dropped under on_error="skip"
    excluded_patients: dict[str, str] = field(default_factory=dict)  # patient -> reason, under on_error="skip"
    on_error: str = "error"

    def exclude_or_raise(self, patient_id: str, error: DataError) -> None:
        """Under on_error="skip", exclude the patient with a logged warning; otherwise raise ``error``."""
        if self.on_error != "skip":
            raise error
        log.warning("excluding patient %r: %s", patient_id, error)
        self.excluded_patients[patient_id] = error.message

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.ERROR]

    def sequences_of(self, patient_id: str) -> dict[str, list[SeriesInfo]]:
        """The patient's mapped series by sequence name."""
        found: dict[str, list[SeriesInfo]] = defaultdict(list)
        for series in self.series:
            if series.patient_id == patient_id and series.sequence:
                found[series.sequence].append(series)
        return dict(found)

    def series_of(self, patient_id: str, sequence: str) -> SeriesInfo:
        """The one series of ``sequence`` for a patient.

        Raises:
            DataError: when the patient has none or several (naming them and what to do).
        """
        found = self.sequences_of(patient_id)
        candidates = found.get(sequence, [])
        if not candidates:
            have = ", ".join(sorted(found)) or "none"
            raise DataError(f"patient {patient_id!r}", f"no {sequence} series (sequences found: {have})")
        if len(candidates) > 1:
            listed = "; ".join(f"{s.description!r} {s.series_uid}" for s in candidates)
            raise DataError(
                f"patient {patient_id!r}",
                f"{len(candidates)} series map to {sequence} ({listed}): pick one in sequences.yaml (series: UID: "
                f"{sequence}) and map the other to another sequence, or change its rule",
            )
        return candidates[0]

    def boxes_of(self, patient_id: str, sequence: str, kind: str) -> list[Box]:
        """The patient's boxes of one kind on one sequence (ADC falls back to DWI boxes, same grid)."""
        found = [b for b in self.boxes if b.patient_id == patient_id and b.sequence == sequence and b.kind == kind]
        if not found and sequence == "ADC":
            found = [b for b in self.boxes if b.patient_id == patient_id and b.sequence == "DWI" and b.kind == kind]
        return found

    def usable_patients(self) -> list[str]:
        """Manifest patients not excluded, sorted."""
        return sorted(p for p in self.patients if p not in self.excluded_patients)

    def raise_for_errors(self) -> None:
        """Raise one `DataError` listing the error-level problems (the first 20), if there are any."""
        errors = self.errors
        if errors:
            shown = "\n  ".join(str(p) for p in errors[:20])
            more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
            raise DataError(
                str(self.root),
                f"{len(errors)} problem(s) make the dataset unusable (run `harness data check {self.root}` for the "
                f"full report, or use on_error=skip to drop the affected files and patients):\n  {shown}{more}",
            )


def _dicom_files(root: Path) -> tuple[list[Path], list[str], list[Problem]]:
    """Every regular file under ``root/dicom``, the ignored ones (hidden files, DICOMDIR), and one problem per
    folder that cannot be listed (an unreadable folder would otherwise look like a patient without that series)."""
    folder = root / DICOM_DIR
    if not folder.is_dir():
        if (root / VOLUMES_FOLDER).is_dir():  # a dataset of image volumes only (PI-CAI, Decathlon)
            return [], [], []
        raise DataError(
            str(folder),
            "no dicom/ folder: the DICOM tree goes there, or image volumes in volumes/ (docs/data-format.md)",
        )

    return _walk_tree(folder, root)


def _walk_tree(folder: Path, root: Path) -> tuple[list[Path], list[str], list[Problem]]:
    """Every regular file under ``folder``; the ignored ones (hidden files or folders, DICOMDIR) relative to
    ``root``; and one problem per folder that cannot be listed (an unreadable folder would otherwise look like a
    patient without that series)."""
    files, ignored, problems = [], [], []

    def unreadable(error: OSError) -> None:
        problems.append(
            Problem(
                Severity.ERROR,
                str(error.filename),
                f"folder cannot be read ({error.strerror}): its images are missing from the index; fix its "
                "permissions (chmod -R u+rX, or run as its owner) or move it elsewhere",
            )
        )

    for current, folders, names in os.walk(folder, onerror=unreadable):
        folders.sort()
        for name in names:
            path = Path(current) / name
            if not path.is_file():
                continue
            relative = path.relative_to(root)
            if any(part.startswith(".") for part in relative.parts) or path.name.upper() == "DICOMDIR":
                ignored.append(str(relative))
            else:
                files.append(path)
    return sorted(files), sorted(ignored), problems


def scan_series(folder: Path, rules: SequenceRules | None = None, progress: bool = False) -> list[SeriesInfo]:
    """The series of a DICOM folder that is not a dataset (one study from a PACS export, say), with sequences.

    Every regular file under ``folder`` except hidden files or folders and DICOMDIRs is read as DICOM.

    Raises:
        DataError: naming the first file or folder that cannot be read, or a series that mixes patients.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(str(folder), "not a folder")
    files, _, problems = _walk_tree(folder, folder)
    headers, file_problems = _read_headers(files, progress)
    series, series_problems = _group_series(headers, rules or SequenceRules())
    for problem in problems + file_problems + series_problems:
        raise DataError(problem.where, problem.message)
    if not series:
        raise DataError(str(folder), "holds no DICOM images")
    return series


def _read_headers(files: list[Path], progress: bool) -> tuple[list[SliceHeader], list[Problem]]:
    headers: list[SliceHeader] = []
    problems: list[Problem] = []
    for path in track(files, description="Reading DICOM headers", disable=not progress, transient=True):
        try:
            headers.extend(frames_of(read_dicom(path), path))
        except DicomFileError as error:
            problems.append(Problem.from_error(error))
    return headers, problems


def _headers_cached(root: Path, files: list[Path], progress: bool) -> tuple[list[SliceHeader], list[Problem]]:
    """Headers of ``files``, from the cache when no file changed since the last scan.

    Only good headers are served from the cache: files that failed are read again on every scan, because what
    fixes them (a permission change, an installed decoder plugin) changes neither their size nor their mtime.
    The key names `SliceHeader`'s fields, so headers cached before a field was added are read again."""
    cache = ArrayCache("headers")
    fields = [f.name for f in dataclasses.fields(SliceHeader)]
    key = {"root": str(root.resolve()), "files": file_fingerprint(files), "fields": fields}

    def build():
        headers, problems = _read_headers(files, progress)
        failed = sorted({str(p.where) for p in problems})
        meta = {"headers": [{**dataclasses.asdict(h), "path": str(h.path)} for h in headers], "failed": failed}
        return {}, meta

    _, meta = cache.get_or_build(key, build)
    headers = [_tuples(SliceHeader(**{**h, "path": Path(h["path"])})) for h in meta["headers"]]
    again, problems = _read_headers([Path(p) for p in meta["failed"]], progress=False)
    return headers + again, problems


def _tuples(header: SliceHeader) -> SliceHeader:
    """JSON turns tuples into lists; put them back so headers compare and hash as when first read."""
    return dataclasses.replace(
        header,
        orientation=tuple(header.orientation),
        position=tuple(header.position),
        pixel_spacing=tuple(header.pixel_spacing),
        image_type=tuple(header.image_type),
    )


def _group_series(headers: Iterable[SliceHeader], rules: SequenceRules) -> tuple[list[SeriesInfo], list[Problem]]:
    by_uid: dict[str, list[SliceHeader]] = defaultdict(list)
    for header in headers:
        by_uid[header.series_uid].append(header)
    series, problems = [], []
    for uid, members in sorted(by_uid.items()):
        patients = Counter(h.patient_id for h in members)
        description = members[0].series_description
        if len(patients) > 1:
            problems.append(
                Problem(
                    Severity.ERROR,
                    f"series {description!r} {uid}",
                    f"holds images of several patients: {dict(patients)} (first file {members[0].path})",
                )
            )
            continue
        sequence = rules.classify(uid, description)
        adc = [h for h in members if "ADC" in h.image_type]
        if adc and len(adc) < len(members) and sequence != "ADC":
            # A scanner's ADC map filed under its DWI's SeriesInstanceUID (ImageType ...\ADC): its own series.
            members = [h for h in members if "ADC" not in h.image_type]
            series.append(SeriesInfo(uid, f"{description} (ADC frames)", members[0].patient_id, "ADC", adc))
        series.append(SeriesInfo(uid, description, members[0].patient_id, sequence, members))
    return series, problems


def _cross_check(index: DatasetIndex, required: Iterable[str]) -> list[tuple[str | None, Problem]]:
    """Problems between manifest, images and annotations, each with the patient it excludes (or None)."""
    out: list[tuple[str | None, Problem]] = []
    with_images = {s.patient_id for s in index.series}
    for patient_id in sorted(with_images - set(index.patients)):
        files = next(s.files for s in index.series if s.patient_id == patient_id)
        out.append(
            (
                None,
                Problem(
                    Severity.ERROR,
                    f"patient {patient_id!r}",
                    f"has images (e.g. {files[0]}) but no row in manifest.csv",
                ),
            )
        )
    for patient_id, record in sorted(index.patients.items()):
        where = f"manifest.csv line {record.line} (patient {patient_id!r})"
        if patient_id not in with_images:
            out.append((patient_id, Problem(Severity.ERROR, where, "no images with this PatientID under dicom/")))
            continue
        found = index.sequences_of(patient_id)
        adc_computable = any(len(s.b_values) >= 2 for s in found.get("DWI", []))
        for sequence in required:
            if sequence == "ADC" and "ADC" not in found and adc_computable:
                continue  # computed from DWI when loaded
            try:
                index.series_of(patient_id, sequence)
            except DataError as error:
                out.append((patient_id, Problem.from_error(error)))
    for box in index.boxes:
        if box.patient_id not in index.patients:
            out.append(
                (
                    None,
                    Problem(
                        Severity.ERROR,
                        f"annotations.csv line {box.line}",
                        f"patient {box.patient_id!r} is not in manifest.csv",
                    ),
                )
            )
    return out


def index_dataset(
    root: Path | str,
    *,
    rules: SequenceRules | None = None,
    required: Iterable[str] = SEQUENCES,
    on_error: str = "error",
    progress: bool = False,
    with_annotations: bool = True,
) -> DatasetIndex:
    """Index a dataset folder (see docs/data-format.md) and record every problem found.

    Args:
        root: the dataset folder.
        rules: series-to-sequence rules; ``root/sequences.yaml`` or the defaults when None.
        required: sequences every patient must have (ADC counts as present when DWI has two b-values).
        on_error: ``"error"`` keeps problems as errors (call `DatasetIndex.raise_for_errors`); ``"skip"`` makes them
            warnings, drops unreadable files and excludes the patients concerned.
        progress: show a progress bar while reading headers.
        with_annotations: read ``annotations.csv`` (False for a dataset whose annotations are being imported).
    """
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    root = Path(root)
    if not root.is_dir():
        raise DataError(str(root), "dataset folder not found")
    rules = rules or load_rules(root)
    patients, problems = load_manifest(root)
    boxes, box_problems = load_annotations(root) if with_annotations else ([], [])
    files, ignored, folder_problems = _dicom_files(root)
    headers, file_problems = _headers_cached(root, files, progress)
    file_problems = folder_problems + file_problems
    series, series_problems = _group_series(headers, rules)
    volume_files, volume_problems = find_volume_files(root)
    for patient_id, sequence, path in volume_files:
        relative = path.relative_to(root).as_posix()
        series.append(SeriesInfo(f"volume:{relative}", relative, patient_id, sequence, [], volume_file=path))
    series_problems += volume_problems
    index = DatasetIndex(root, rules, patients, boxes, series, ignored_files=ignored, on_error=on_error)
    index.problems = problems + box_problems + series_problems
    index.problems += file_problems
    cross = _cross_check(index, required)
    index.problems += [problem for _, problem in cross]
    if on_error == "skip":
        # Keep every problem visible, as a warning, and drop what it concerns.
        index.skipped_files = [p.where for p in file_problems]
        index.excluded_patients = {pid: problem.message for pid, problem in cross if pid is not None}
        for problem in index.problems:
            log.warning("skipping: %s", problem)
        index.problems = [dataclasses.replace(p, severity=Severity.WARNING) for p in index.problems]
    return index
