"""Writing output files whole: a temporary name in the same folder, then an atomic rename."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` so that a reader (or a crash) never sees a half-written file."""
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def csv_text(columns: Sequence[str], rows: Iterable[dict]) -> str:
    """CSV with a header row, ``\\n`` line ends."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
