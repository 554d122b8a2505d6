"""Test-wide fixtures: every test gets its own cache folder, so no test reads another's (or the user's) cache."""

import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(folder))
    return folder
