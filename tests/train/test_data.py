"""`harness.train.data.ensure_dataset` when several sweeps with the same synthetic spec start at once."""

from harness.config import DataConfig
from harness.train.data import ensure_dataset
from tests.concurrency import all_at_once


def _ensure(raw: dict) -> str:
    return str(ensure_dataset(DataConfig.model_validate(raw)))


def test_two_processes_with_the_same_spec_generate_the_cohort_once_and_both_use_it(tmp_path):
    raw = {"synth": {"patients": 2, "centers": 1, "seed": 0, "out": str(tmp_path / "cohort")}}
    outcomes = all_at_once(_ensure, (raw,), 2)
    # Unserialised, the second found the folder half-made: "exists and is not empty; pass overwrite=True".
    assert outcomes == [("ok", str(tmp_path / "cohort"))] * 2, outcomes
    assert (tmp_path / "cohort" / "manifest.csv").is_file()
