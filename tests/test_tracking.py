"""`harness.tracking` under concurrency: several processes starting on a folder without ``mlflow.db``."""

from harness import tracking
from tests.concurrency import all_at_once


def test_four_drivers_creating_the_same_fresh_database_all_succeed(tmp_path):
    """The schema creation of a fresh sqlite store is serialised; unserialised, drivers started together crash with
    ``duplicate column name: step`` or corrupt the database (3 runs of 3 did, measured without the lock)."""
    outcomes = all_at_once(tracking.prepare_experiment, (tracking.default_tracking_uri(tmp_path), "same"), 4)
    assert all(kind == "ok" for kind, _ in outcomes), outcomes
    assert len({experiment_id for _, experiment_id in outcomes}) == 1  # one experiment, found by the other three
