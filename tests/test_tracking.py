"""`harness.tracking` under concurrency: several processes starting on a folder without ``mlflow.db``."""

import multiprocessing

from harness import tracking


def _prepare(uri: str, name: str, start, results) -> None:
    start.wait()
    try:
        results.put(("ok", tracking.prepare_experiment(uri, name)))
    except Exception as error:  # reported to the parent, which fails with it
        results.put(("error", f"{type(error).__name__}: {error}"))


def test_four_drivers_creating_the_same_fresh_database_all_succeed(tmp_path):
    """The schema creation of a fresh sqlite store is serialised; unserialised, drivers started together crash with
    ``duplicate column name: step`` or corrupt the database."""
    uri = tracking.default_tracking_uri(tmp_path)
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    workers = [context.Process(target=_prepare, args=(uri, "same", start, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    start.set()
    outcomes = [results.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert all(kind == "ok" for kind, _ in outcomes), outcomes
    assert len({experiment_id for _, experiment_id in outcomes}) == 1  # one experiment, found by the other three
