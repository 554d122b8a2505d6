"""Error and problem types shared by the data layer.

Every error names *where* the problem is (a file, a patient, a manifest row, a config key) and says what to do.
`harness data check` collects `Problem`s instead of stopping at the first error, so that a user sees every problem
of a dataset in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class DataError(Exception):
    """A dataset cannot be used as it is.

    Args:
        where: what the problem is about: a file path, ``patient 'P001'``, ``manifest.csv row 7``...
        message: what is wrong and, where it helps, what to do about it.
    """

    def __init__(self, where: str, message: str):
        self.where = str(where)
        self.message = message
        super().__init__(f"{self.where}: {message}")

    def __reduce__(self):
        # Pickled with its two arguments (the default would pass the one formatted string), so that an error raised
        # in a worker process (a DataLoader's, a process pool's) reaches the parent with its type, where and message.
        return type(self), (self.where, self.message)


class DicomFileError(DataError):
    """One DICOM file cannot be read as an image slice (empty, not DICOM, truncated, no pixel data, no decoder)."""


class SeriesError(DataError):
    """The slices of one series do not form one regular volume (mixed orientation, duplicate positions...)."""


class ManifestError(DataError):
    """``manifest.csv`` or ``annotations.csv`` is malformed or disagrees with the images."""


class Severity(str, Enum):
    """How bad a problem is: an ``error`` makes the dataset (or a patient) unusable, a ``warning`` does not."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    """One problem found while indexing or checking a dataset."""

    severity: Severity
    where: str
    message: str

    @classmethod
    def from_error(cls, error: DataError, severity: Severity = Severity.ERROR) -> Problem:
        return cls(severity, error.where, error.message)

    def __str__(self) -> str:
        return f"[{self.severity.value}] {self.where}: {self.message}"

    def as_dict(self) -> dict[str, str]:
        return {"severity": self.severity.value, "where": self.where, "message": self.message}
