"""A content-keyed cache of numpy arrays on disk, so that training epochs never parse DICOM again.

An entry is a folder of ``.npy`` files plus ``meta.json``, named after the SHA-256 of its key (the source files'
paths, sizes and mtimes, and every parameter that shaped the arrays). Any change of either gives a new key, so a
stale entry is never read. Entries are built in a private temporary folder and renamed into place: rename is
atomic, so two processes building the same entry at once both succeed (the loser discards its copy) and a crash
leaves only a temporary folder that is ignored and swept later. Arrays load memory-mapped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

CACHE_ENV = "HARNESS_CACHE_DIR"
FORMAT_VERSION = 1  # bump when the layout or the meaning of cached arrays changes
_TMP_PREFIX = ".tmp-"
_STALE_TMP_SECONDS = 24 * 3600


def default_cache_root() -> Path:
    """``$HARNESS_CACHE_DIR``, else ``~/.cache/lnm-harness``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lnm-harness"


def file_fingerprint(paths: Iterable[Path]) -> list[tuple[str, int, int]]:
    """(absolute path, size, mtime in ns) of each file: what a cache key needs to notice an edited source file."""
    out = []
    for path in sorted(Path(p) for p in paths):
        stat = path.stat()
        out.append((str(path.resolve()), stat.st_size, stat.st_mtime_ns))
    return out


def cache_key(key: Any) -> str:
    """SHA-256 hex digest of a JSON-able key (sorted, so dict order does not matter)."""
    blob = json.dumps({"v": FORMAT_VERSION, "key": key}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


class ArrayCache:
    """Named groups of arrays on disk, keyed by content (see the module docstring).

    Args:
        namespace: a sub-folder per kind of entry (``volumes``, ``wu2020-samples``...).
        root: the cache root; `default_cache_root` when None.
    """

    def __init__(self, namespace: str, root: Path | None = None):
        self.folder = (root or default_cache_root()) / namespace
        self.folder.mkdir(parents=True, exist_ok=True)

    def _entry(self, digest: str) -> Path:
        return self.folder / digest[:2] / digest

    def load(self, key: Any) -> tuple[dict[str, np.ndarray], dict] | None:
        """The arrays (memory-mapped, read-only) and metadata of ``key``, or None if absent or unreadable."""
        entry = self._entry(cache_key(key))
        if not (entry / "meta.json").is_file():
            return None
        try:
            meta = json.loads((entry / "meta.json").read_text())
            arrays = {name: np.load(entry / f"{name}.npy", mmap_mode="r") for name in meta["arrays"]}
        except (OSError, ValueError, KeyError) as exc:
            # A disk that filled up or a hand-edited entry: rebuild rather than fail or return garbage.
            log.warning("cache entry %s unreadable (%s); rebuilding it", entry, exc)
            shutil.rmtree(entry, ignore_errors=True)
            return None
        return arrays, meta["meta"]

    def save(self, key: Any, arrays: dict[str, np.ndarray], meta: dict | None = None) -> None:
        """Write an entry atomically; if another process wrote it first, keep theirs."""
        entry = self._entry(cache_key(key))
        entry.parent.mkdir(parents=True, exist_ok=True)
        self._sweep_stale_tmp(entry.parent)
        tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=entry.parent))
        try:
            for name, array in arrays.items():
                np.save(tmp / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
            # meta.json last: its presence is what marks an entry complete.
            (tmp / "meta.json").write_text(json.dumps({"arrays": sorted(arrays), "meta": meta or {}, "key": key}))
            try:
                os.rename(tmp, entry)
            except OSError:
                if not (entry / "meta.json").is_file():
                    raise
                # Another process won the race with the same content: ours is redundant.
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def get_or_build(
        self, key: Any, build: Callable[[], tuple[dict[str, np.ndarray], dict]]
    ) -> tuple[dict[str, np.ndarray], dict]:
        """Load ``key``, or call ``build()`` -> (arrays, meta), save and return the saved (memory-mapped) copy."""
        hit = self.load(key)
        if hit is not None:
            return hit
        arrays, meta = build()
        self.save(key, arrays, meta)
        hit = self.load(key)
        if hit is None:  # pragma: no cover - only if the disk lost the entry between save and load
            raise OSError(f"cache entry for {key!r} vanished right after it was written in {self.folder}")
        return hit

    @staticmethod
    def _sweep_stale_tmp(folder: Path) -> None:
        """Remove temporary folders left by crashed writers (old enough that no live writer owns them)."""
        now = time.time()
        for tmp in folder.glob(f"{_TMP_PREFIX}*"):
            try:
                if now - tmp.stat().st_mtime > _STALE_TMP_SECONDS:
                    shutil.rmtree(tmp, ignore_errors=True)
            except OSError:
                pass
