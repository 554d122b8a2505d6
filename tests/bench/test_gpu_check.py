"""The GPU check's dry run (benchmarks/gpu_check.sh --dry-run): every step on the CPU at tiny sizes, so that the
script a session lent a GPU for a few minutes launches is known to work before it gets there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STEPS = ["environment", "gpu-tests", "bench", "end-to-end", "packed-trials", "ddp"]
TABLE_HEADER = "| model | path | equal | p50 ms | img/s | case s | speed-up |"


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """The wrapper's dry run (it picks .venv/bin/python), once for the module: (process, output folder, report)."""
    out = tmp_path_factory.mktemp("gpu-check")
    command = ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out)]
    process = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    report_file = out / "gpu_check.json"
    report = json.loads(report_file.read_text()) if report_file.is_file() else None
    return process, out, report


@pytest.mark.slow
def test_the_dry_run_passes_and_writes_its_two_files_and_the_bench_jsons(dry_run):
    process, out, report = dry_run
    assert process.returncode == 0, process.stdout[-4000:] + process.stderr[-4000:]
    names = sorted(p.name for p in out.iterdir())
    assert {"gpu_check.json", "gpu_check.md"} <= set(names) and len(names) <= 8, names
    assert {"bench-wu2020.json", "bench-fasterrcnn_lite_fpn.json"} <= set(names)
    assert report["passed"] and report["dry_run"] and report["device"] == "cpu"


@pytest.mark.slow
def test_every_step_has_a_status_and_every_skip_a_reason(dry_run):
    _, _, report = dry_run
    steps = report["steps"]
    assert [s["step"] for s in steps] == STEPS
    for step in steps:
        assert step["status"] in ("passed", "skipped"), step
        assert step["status"] == "passed" or step["reason"], step
        assert step["seconds"] >= 0
    environment = steps[0]
    assert environment["torch"] and environment["python"] and environment["cuda_available"] in (True, False)
    assert environment["modules"]["pydicom"]["ok"] and "ray" in environment["modules"]


@pytest.mark.slow
def test_the_bench_rows_have_an_equal_eager_reference_and_positive_numbers(dry_run):
    _, _, report = dry_run
    bench = next(s for s in report["steps"] if s["step"] == "bench")
    rows = [r for r in bench["rows"] if r["model"] == "wu2020"]
    reference = next(r for r in rows if r["path"] == "eager-fp32")
    assert reference["equal"] and reference["speedup"] == pytest.approx(1.0)
    timed = [r for r in rows if r["equal"]]
    assert {"eager-fp32", "fp32+uint8"} <= {r["path"] for r in timed}
    for row in timed:
        assert row["p50_ms"] > 0 and row["images_per_s"] > 0 and row["per_case_s"] > 0 and row["speedup"] > 0, row
    assert {r["model"] for r in bench["rows"]} == {"wu2020", "fasterrcnn_lite_fpn"}


@pytest.mark.slow
def test_the_training_steps_ran_on_the_cpu(dry_run):
    _, _, report = dry_run
    steps = {s["step"]: s for s in report["steps"]}
    assert steps["end-to-end"]["rows"] and all(r["p50_ms"] > 0 for r in steps["end-to-end"]["rows"])
    if steps["packed-trials"]["status"] == "passed":  # needs ray and mlflow, installed by the README's set-up
        assert steps["packed-trials"]["ratio"] > 0 and steps["packed-trials"]["trials"] >= 2
    ddp = steps["ddp"]
    assert ddp["status"] == "passed" and ddp["backend"] == "gloo" and ddp["world_size"] == 2, ddp


@pytest.mark.slow
def test_the_markdown_has_the_summary_and_the_tables(dry_run):
    _, out, report = dry_run
    text = (out / "gpu_check.md").read_text()
    assert text.startswith("# GPU check (dry run on cpu): passed")
    assert "| step | status | s | reason |" in text and TABLE_HEADER in text
    assert text.count(TABLE_HEADER) == 2  # bench and end-to-end
    assert "| wu2020 | eager-fp32 | True |" in text
    for step in STEPS:
        assert f"## {step}: " in text


def test_a_spent_budget_skips_every_step_with_the_reason(tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--budget-s", "0"]
    process = subprocess.run([*command, "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, process.stdout + process.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [s["status"] for s in report["steps"]] == ["skipped"] * len(STEPS)
    assert all(s["reason"].startswith("over budget") for s in report["steps"])
    assert "## bench: skipped" in (tmp_path / "gpu_check.md").read_text()
