"""What produced a result: the harness's version and commit, and a fingerprint of the dataset it saw. Recorded with
sweeps (MLflow tags) and benchmarks, so that a number can be traced to the code and the data behind it."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path


def git_commit() -> str:
    """The harness checkout's commit (``unknown`` outside a git checkout), ``+dirty`` with uncommitted changes."""
    repo = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def dataset_fingerprint(root: Path) -> str:
    """A short digest of a dataset's manifest and annotations (what defines patients, labels and boxes)."""
    digest = hashlib.sha256()
    for name in ("manifest.csv", "annotations.csv"):
        path = Path(root) / name
        digest.update(name.encode())
        digest.update(path.read_bytes() if path.is_file() else b"-")
    return digest.hexdigest()[:16]


def harness_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lnm-harness")
    except PackageNotFoundError:
        return "unknown"
