"""``harness data check``: validate a dataset down to its pixels and summarise it.

Beyond `index_dataset` (manifest, annotations, headers), the check loads every volume a study would use (which
also fills the cache) and places every annotation box on its slice, so geometry problems, undecodable pixels and
boxes that match no slice are all found in one pass.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from rich.progress import track

from .errors import DataError, Problem, Severity
from .index import DatasetIndex, index_dataset
from .manifest import NODE_LOCATIONS
from .sequences import SEQUENCES, load_rules
from .volumes import load_sequence, place_boxes


@dataclass
class CheckReport:
    """What `check_dataset` found: a summary (JSON-able) and every problem."""

    root: str
    summary: dict
    problems: list[Problem] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        """No error-level problem, and at least one usable patient."""
        return not any(p.severity is Severity.ERROR for p in self.problems) and self.summary["patients"]["usable"] > 0

    def as_dict(self) -> dict:
        return {
            "root": self.root,
            "usable": self.usable,
            **self.summary,
            "problems": [p.as_dict() for p in self.problems],
        }


def _validate_pixels(
    index: DatasetIndex, required: Iterable[str], progress: bool
) -> tuple[list[tuple[str, Problem]], dict]:
    """Load every required volume and place its boxes: (patient, problem) pairs, and slices per sequence."""
    problems: list[tuple[str, Problem]] = []
    slices: dict[str, int] = Counter()
    jobs = [
        (patient_id, sequence)
        for patient_id in index.usable_patients()
        for sequence in required
        if sequence in index.sequences_of(patient_id) or sequence == "ADC"
    ]
    for patient_id, sequence in track(jobs, description="Checking volumes", disable=not progress, transient=True):
        try:
            volume = load_sequence(index, patient_id, sequence)
            slices[sequence] += volume.pixels.shape[0]
            boxes = [b for kind in ("tumour", "node") for b in index.boxes_of(patient_id, sequence, kind)]
            place_boxes(
                volume.positions,
                volume.slice_spacing,
                volume.pixels.shape[1:],
                boxes,
                f"{sequence} of patient {patient_id!r}",
            )
        except DataError as error:
            problems.append((patient_id, Problem.from_error(error)))
    return problems, dict(slices)


def _summary(index: DatasetIndex, slices: dict) -> dict:
    usable = index.usable_patients()
    centers: dict[str, dict[str, int]] = defaultdict(lambda: {"lnm_positive": 0, "lnm_negative": 0})
    per_patient = []
    sequence_counts: Counter = Counter()
    for patient_id in usable:
        record = index.patients[patient_id]
        centers[record.center]["lnm_positive" if record.lnm else "lnm_negative"] += 1
        found = index.sequences_of(patient_id)
        names = sorted(found)
        if "ADC" not in found and any(len(s.b_values) >= 2 for s in found.get("DWI", [])):
            names.append("ADC (computed)")
        sequence_counts.update(n.split(" ")[0] for n in names)
        per_patient.append({"patient_id": patient_id, "center": record.center, "lnm": record.lnm, "sequences": names})
    boxes: dict[str, dict] = {"tumour": dict(Counter(b.sequence for b in index.boxes if b.kind == "tumour"))}
    for location in NODE_LOCATIONS:
        nodes = [b for b in index.boxes if b.kind == "node" and b.location == location]
        boxes[location] = {
            "metastatic": sum(b.metastatic for b in nodes),
            "benign": sum(not b.metastatic for b in nodes),
        }
    unmapped = Counter(s.description for s in index.series if s.sequence is None)
    return {
        "patients": {
            "manifest": len(index.patients),
            "usable": len(usable),
            "excluded": dict(sorted(index.excluded_patients.items())),
        },
        "centers": {c: centers[c] for c in sorted(centers)},
        "sequences": {s: sequence_counts.get(s, 0) for s in SEQUENCES},
        "per_patient": per_patient,
        "slices": {s: slices.get(s, 0) for s in SEQUENCES},
        "boxes": boxes,
        "series": len(index.series),
        "files_ignored": index.ignored_files,
        "files_skipped": index.skipped_files,
        "unmapped_series": dict(unmapped),
    }


def check_dataset(
    root: Path | str,
    *,
    required: Iterable[str] = SEQUENCES,
    on_error: str = "error",
    rules_path: Path | None = None,
    progress: bool = False,
) -> CheckReport:
    """Index and fully validate a dataset; never raises for a problem of the data, reports it instead.

    Args:
        root: the dataset folder.
        required: sequences every patient must have.
        on_error: ``error`` or ``skip`` (problems become warnings and drop the files / patients concerned).
        rules_path: a sequence-rules YAML other than ``root/sequences.yaml``.
        progress: show progress bars.
    """
    root = Path(root)
    required = tuple(required)
    try:
        rules = load_rules(root, rules_path)
        index = index_dataset(root, rules=rules, required=required, on_error=on_error, progress=progress)
    except DataError as error:  # no manifest, no dicom/ folder, bad rules file: nothing more to check
        empty = {"patients": {"manifest": 0, "usable": 0, "excluded": {}}}
        return CheckReport(str(root), empty, [Problem.from_error(error)])
    pixel_problems, slices = _validate_pixels(index, required, progress)
    problems = list(index.problems)
    for patient_id, problem in pixel_problems:
        if on_error == "skip":
            index.excluded_patients.setdefault(patient_id, problem.message)
            problem = dataclasses.replace(problem, severity=Severity.WARNING)
        problems.append(problem)
    return CheckReport(str(root), _summary(index, slices), problems)
