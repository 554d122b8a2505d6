"""Test-wide fixtures: every test gets its own cache folder, so no test reads another's (or the user's) cache."""

import os
import shutil

import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """A fresh ``HARNESS_CACHE_DIR`` per test, deleted after it: a session would otherwise pile up hundreds of MB of
    decoded volumes until it ends (pyproject's tmp_path retention removes the rest once every test passed)."""
    folder = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


SESSION_TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI")


@pytest.fixture(autouse=True)
def no_tracking_uri_leak():
    """`mlflow.set_tracking_uri` (a trial's run, opened in-process by some tests and module fixtures) also sets
    ``MLFLOW_TRACKING_URI`` in the environment, which the CLI reads: a later test would find another test's
    database. Each test starts with the session's value."""
    if SESSION_TRACKING_URI is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = SESSION_TRACKING_URI
    yield
