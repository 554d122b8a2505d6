"""``harness bench``: its help, and the JSON it writes (p50/p90/p99 latency and images/s per model)."""

import json
import shlex

import pytest

from harness.cli import build_parser, main


def test_bench_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["bench", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in (
        "--model",
        "--scenario",
        "--device",
        "--dtype",
        "--channels-last",
        "--compile",
        "--queries",
        "--json",
        "--tracking-uri",
        "--no-mlflow",
        "single-stream",
        "offline",
    ):
        assert option in out


@pytest.mark.parametrize("scenario", ["single-stream", "offline"])
def test_bench_writes_json_per_model(tmp_path, scenario):
    out = tmp_path / "out.json"
    argv = [
        "bench",
        "--model",
        "wu2020",
        "--model",
        "fasterrcnn_mobilenet_v3_fpn",
        "--size",
        "64",
        "--scenario",
        scenario,
        "--channels-last",
        "--queries",
        "3",
        "--batch-sizes",
        "1,2",
        "--case-slices",
        "2",
        "--threads",
        "1",
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--json",
        str(out),
    ]
    assert main(argv) == 0
    payload = json.loads(out.read_text())
    assert payload["scenario"] == scenario and payload["torch"]
    results = payload["results"]
    assert [(r["model"], r["path"]) for r in results] == [
        ("wu2020", "eager-fp32"),
        ("wu2020", "fp32+channels_last"),
        ("fasterrcnn_mobilenet_v3_fpn", "eager-fp32"),
        ("fasterrcnn_mobilenet_v3_fpn", "fp32+channels_last"),
    ]
    for record in results:
        assert record["equal"], record["equality"]
        assert 0 < record["p50_ms"] <= record["p90_ms"] <= record["p99_ms"]
        assert record["images_per_s"] > 0 and record["per_case_s"] > 0
        assert record["ratio_to_paper"] == pytest.approx(
            (
                record["p50_ms"] / 1e3
                if scenario == "single-stream" and record["batch"] == 1
                else 1 / record["images_per_s"]
            )
            / 0.2
        )
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


def _silent_detector_checkpoint(path):
    """A detector checkpoint whose box classifier always says background: no detection scores above 0.5."""
    import torch

    from harness.bench.weights import benchmark_model
    from harness.train.checkpoint import save_checkpoint

    model = benchmark_model("fasterrcnn_mobilenet_v3_fpn", image_size=64)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.zero_()
        model.roi_heads.box_predictor.cls_score.bias.copy_(torch.tensor([20.0] + [0.0] * 5))
    config = {"model": "fasterrcnn_mobilenet_v3_fpn", "data": {"sequence": "DWI", "image_size": 64}}
    return save_checkpoint(path, model=model, config=config)


def test_bench_times_a_checkpoint_with_its_weights_and_inputs(tmp_path):
    out = tmp_path / "out.json"
    checkpoint = _silent_detector_checkpoint(tmp_path / "best.pt")
    quick = shlex.split("--queries 2 --case-slices 1 --threads 1 --no-mlflow")
    argv = ["bench", "--checkpoint", str(checkpoint), "--channels-last", *quick, "--json", str(out)]
    assert main(argv) == 0
    reference, fast = json.loads(out.read_text())["results"]
    assert reference["model"] == "fasterrcnn_mobilenet_v3_fpn" and reference["weights"] == str(checkpoint)
    assert reference["inputs"] == "DWI 64x64 px"  # the slices the model was trained on
    assert reference["p50_ms"] > 0
    # Its weights are the checkpoint's, not seeded random ones (which score many detections above 0.5 here, see
    # test_bench_writes_json_per_model): nothing to compare, so the fast path is not trusted.
    assert not fast["equal"] and "vacuous" in fast["equality"] and fast["p50_ms"] is None


def test_bench_names_a_missing_checkpoint(tmp_path, capsys):
    assert main(["bench", "--checkpoint", str(tmp_path / "nope.pt"), "--no-mlflow"]) == 2
    assert "nope.pt" in capsys.readouterr().err


def test_bench_interleaves_paths_query_by_query(tmp_path, monkeypatch):
    import harness.bench.run as bench_run

    calls = []  # the real scheduler, watched: `interleaved` itself is tested in test_scenarios.py
    real = bench_run.interleaved
    monkeypatch.setattr(
        bench_run, "interleaved", lambda backends, *a, **k: calls.append((len(backends), k)) or real(backends, *a, **k)
    )
    out = tmp_path / "out.json"
    argv = shlex.split("bench --model wu2020 --path fp32+channels_last --path fp32+uint8 --interleave --queries 5")
    argv += ["--case-slices", "2", "--threads", "1", "--no-mlflow", "--json", str(out)]
    assert main(argv) == 0
    results = json.loads(out.read_text())["results"]
    assert [r["path"] for r in results] == ["eager-fp32", "fp32+channels_last", "fp32+uint8"]
    for record in results:
        assert record["equal"], record["equality"]
        assert record["queries"] == 5 and 0 < record["p50_ms"] <= record["p99_ms"]
    assert results[2]["uint8"] and "max |dp|" in results[2]["equality"]
    assert calls == [(3, {"batch": 1, "rounds": 5, "warmup": 2})]  # all three paths, in turns, one query each


def test_bench_times_engines_beside_torch_and_records_them(tmp_path, capsys):
    from mlflow import MlflowClient

    out, uri = tmp_path / "out.json", f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = shlex.split("bench --model wu2020 --engine torch --engine onnxruntime --engine openvino --interleave")
    argv += ["--queries", "4", "--case-slices", "2", "--threads", "1", "--tracking-uri", uri, "--json", str(out)]
    assert main(argv) == 0
    table = capsys.readouterr().out
    results = json.loads(out.read_text())["results"]
    paths = [r["path"] for r in results]
    assert paths[:3] == ["eager-fp32", "onnxruntime:fp32", "openvino:fp32"]
    assert set(paths[3:]) <= {"openvino:bf16"}  # bf16 where the CPU has it natively
    for record in results:
        assert record["threads"] == 1 and record["engine_version"].startswith(record["engine"] + " ")
        if record["engine"] != "torch":
            assert record["equal"] and record["p50_ms"] > 0, record["equality"]
            assert f"{record['path']}: equal: max |dp|" in table  # the verdict is printed under the table
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("benchmarks").experiment_id])
    engines = sorted(run.data.params["engine"] for run in runs)
    assert engines == sorted(r["engine"] for r in results)
    assert all(run.data.params["threads"] == "1" for run in runs)
