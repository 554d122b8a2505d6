"""``harness bench``: its help, and the JSON it writes (p50/p90/p99 latency and images/s per model)."""

import json

import pytest

from harness.cli import build_parser, main


def test_bench_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["bench", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--model", "--scenario", "--device", "--dtype", "--channels-last", "--compile", "--queries",
                   "--json", "--tracking-uri", "--no-mlflow", "single-stream", "offline"):  # fmt: skip
        assert option in out


@pytest.mark.parametrize("scenario", ["single-stream", "offline"])
def test_bench_writes_json_per_model(tmp_path, scenario):
    out = tmp_path / "out.json"
    argv = ["bench", "--model", "wu2020", "--model", "fasterrcnn_mobilenet_v3_fpn", "--size", "64",
            "--scenario", scenario, "--channels-last", "--queries", "3", "--batch-sizes", "1,2", "--case-slices", "2",
            "--threads", "1", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    payload = json.loads(out.read_text())
    assert payload["scenario"] == scenario and payload["torch"]
    results = payload["results"]
    assert [(r["model"], r["path"]) for r in results] == [
        ("wu2020", "eager-fp32"), ("wu2020", "fp32+channels_last"),
        ("fasterrcnn_mobilenet_v3_fpn", "eager-fp32"), ("fasterrcnn_mobilenet_v3_fpn", "fp32+channels_last"),
    ]  # fmt: skip
    for record in results:
        assert record["equal"], record["equality"]
        assert 0 < record["p50_ms"] <= record["p90_ms"] <= record["p99_ms"]
        assert record["images_per_s"] > 0 and record["per_case_s"] > 0
        assert record["ratio_to_paper"] == pytest.approx(
            (record["p50_ms"] / 1e3 if scenario == "single-stream" and record["batch"] == 1
             else 1 / record["images_per_s"]) / 0.2)  # fmt: skip
        assert record["device"] == "cpu" and record["dtype"] == "fp32"
    if scenario == "offline":
        assert set(results[0]["offline_images_per_s_by_batch"]) == {"1", "2"}
    else:
        assert all(r["batch"] == 1 for r in results)
    assert payload["harness_overhead"]["p50_ms"] < results[0]["p50_ms"]
    _check_mlflow(f"sqlite:///{tmp_path / 'mlflow.db'}", scenario)


def _check_mlflow(uri: str, scenario: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("benchmarks").experiment_id])
    assert len(runs) == 4
    params = {run.data.params["path"] + " " + run.data.params["model"]: run.data.params for run in runs}
    wu = params["eager-fp32 wu2020"]
    assert wu["dtype"] == "fp32" and wu["scenario"] == scenario and wu["torch_version"] and wu["device_name"]
    assert wu["batch_size"] == ("1" if scenario == "single-stream" else wu["batch_size"])
    assert all({"p50_ms", "p99_ms", "images_per_s", "per_case_s"} <= set(run.data.metrics) for run in runs)


def test_bench_refuses_cuda_without_a_gpu(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(["bench", "--device", "cuda", "--no-mlflow"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
