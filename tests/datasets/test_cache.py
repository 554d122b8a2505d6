import multiprocessing
import os

import numpy as np

from harness.datasets.cache import ArrayCache, cache_key, file_fingerprint


def test_get_or_build_builds_once_and_loads_memory_mapped(tmp_path):
    cache = ArrayCache("t", tmp_path)
    calls = []

    def build():
        calls.append(1)
        return {"a": np.arange(6).reshape(2, 3)}, {"note": "x"}

    first, meta = cache.get_or_build({"k": 1}, build)
    second, _ = cache.get_or_build({"k": 1}, build)
    assert calls == [1]
    assert meta == {"note": "x"}
    np.testing.assert_array_equal(second["a"], np.arange(6).reshape(2, 3))
    assert isinstance(second["a"], np.memmap)


def test_key_changes_when_a_source_file_changes(tmp_path):
    source = tmp_path / "f.dcm"
    source.write_bytes(b"abc")
    key1 = cache_key({"files": file_fingerprint([source]), "size": 64})
    assert key1 == cache_key({"size": 64, "files": file_fingerprint([source])})  # order-free
    source.write_bytes(b"abcd")
    assert cache_key({"files": file_fingerprint([source]), "size": 64}) != key1
    assert cache_key({"files": file_fingerprint([source]), "size": 32}) != key1


def test_unreadable_entry_is_rebuilt(tmp_path):
    cache = ArrayCache("t", tmp_path)
    cache.save("k", {"a": np.ones(3)}, {})
    (entry,) = [p for p in (tmp_path / "t").rglob("a.npy")]
    entry.write_bytes(b"garbage")
    assert cache.load("k") is None
    arrays, _ = cache.get_or_build("k", lambda: ({"a": np.zeros(2)}, {}))
    np.testing.assert_array_equal(arrays["a"], np.zeros(2))


def _writer(root, n):
    cache = ArrayCache("race", root)
    for _ in range(n):
        cache.save("same", {"a": np.full(10_000, 7.0)}, {"pid": os.getpid()})


def test_concurrent_writers_of_one_entry_leave_one_complete_entry(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(tmp_path, 20)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    arrays, meta = ArrayCache("race", tmp_path).load("same")
    np.testing.assert_array_equal(arrays["a"], np.full(10_000, 7.0))
    leftovers = [p for p in (tmp_path / "race").rglob(".tmp-*")]
    assert leftovers == []
