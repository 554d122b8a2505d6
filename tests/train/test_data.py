"""`harness.train.data.ensure_dataset` when several sweeps with the same synthetic spec start at once."""

import multiprocessing

from harness.config import DataConfig
from harness.train.data import ensure_dataset


def _ensure(raw: dict, start, results) -> None:
    start.wait()
    try:
        results.put(("ok", str(ensure_dataset(DataConfig.model_validate(raw)))))
    except Exception as error:  # reported to the parent, which fails with it
        results.put(("error", f"{type(error).__name__}: {error}"))


def test_two_processes_with_the_same_spec_generate_the_cohort_once_and_both_use_it(tmp_path):
    raw = {"synth": {"patients": 2, "centers": 1, "seed": 0, "out": str(tmp_path / "cohort")}}
    context = multiprocessing.get_context("spawn")
    start, results = context.Event(), context.Queue()
    workers = [context.Process(target=_ensure, args=(raw, start, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    start.set()
    outcomes = [results.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    # Unserialised, the second found the folder half-made: "exists and is not empty; pass overwrite=True".
    assert outcomes == [("ok", str(tmp_path / "cohort"))] * 2, outcomes
    assert (tmp_path / "cohort" / "manifest.csv").is_file()
