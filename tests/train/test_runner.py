"""`run_training` and `harness train` on the tiny dataset of tests/datasets/minidata.py (real files, real loops)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from harness.config import parse_config
from harness.train import Hooks, run_training
from harness.train.checkpoint import load_checkpoint, model_from_checkpoint
from tests.datasets.minidata import write_dataset


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("train") / "ds")


def classifier_config(root: Path, out: Path, **train) -> dict:
    return {
        "name": "tiny",
        "task": "classification",
        "model": "wu2020",
        "model_kwargs": {"width": 16},
        "data": {"root": str(root), "sequence": "T2WI", "augment": "flip", "split": {"val_centers": ["2"]}},
        "train": {"stage1_epochs": 1, "stage2_epochs": 2, "stage2_lr": 1e-3, "batch_size": 4, **train},
        "n_boot": 100,
        "output_dir": str(out),
    }


class Recorder(Hooks):
    def __init__(self, stop_after: int | None = None):
        self.steps, self.epochs, self.stop_after = [], [], stop_after

    def after_step(self, info):
        self.steps.append(info)

    def after_epoch(self, info):
        self.epochs.append(info)
        return self.stop_after is not None and info.epoch >= self.stop_after


def test_classifier_run_writes_checkpoints_metrics_and_calls_hooks(root, tmp_path):
    recorder = Recorder()
    config = parse_config(classifier_config(root, tmp_path))
    result = run_training(config, hooks=[recorder], progress=False, keep_last=True)  # to compare best with last
    assert [e.stage for e in recorder.epochs] == ["stage1", "stage2", "stage2"]
    assert [e.epoch for e in recorder.epochs] == [1, 2, 3]
    assert all("val_auc" in e.metrics and "train_loss" in e.metrics for e in recorder.epochs)
    assert len(recorder.steps) == 3 * 2  # 2 training patients x 4 tumour slices, batch 4 -> 2 steps per epoch
    for key in ("val_auc", "val_auc_ci_low", "val_auc_ci_high", "val_sensitivity", "val_specificity"):
        assert key in result.metrics
    out = result.output_dir
    assert json.loads((out / "metrics.json").read_text())["val_n_patients"] == 2
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["stage2_epochs"] == 2
    predictions = (out / "predictions.csv").read_text()
    assert "pt-" in predictions and "P0" not in predictions  # pseudonyms only
    assert (out / "roc.png").stat().st_size > 0 and (out / "history.csv").read_text().count("\n") == 4
    attention = sorted((out / "attention").glob("*.png"))
    assert len(attention) == 4 and all(p.name.startswith("pt-") for p in attention)  # 2 LNM+ and 2 LNM- slices
    payload = load_checkpoint(result.best_checkpoint)
    assert payload["model_name"] == "wu2020" and payload["model_kwargs"]["width"] == 16
    assert payload["config"]["data"]["sequence"] == "T2WI"
    model, _ = model_from_checkpoint(result.best_checkpoint)
    batch = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model.eval()(batch), run_model(result, batch))


def run_model(result, batch):
    model, _ = model_from_checkpoint(result.output_dir / "checkpoints" / "last.pt")
    return model.eval()(batch)


def test_a_completed_run_keeps_one_checkpoint_and_stores_no_path(root, tmp_path):
    config = parse_config(classifier_config(root, tmp_path / "out", stage1_epochs=0, stage2_epochs=1))
    result = run_training(config, progress=False)
    checkpoints = result.output_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.pt"]  # last.pt only resumes an interrupted run
    stored = yaml.safe_load((result.output_dir / "config.yaml").read_text())
    assert load_checkpoint(result.best_checkpoint)["config"] == stored
    assert stored["data"]["root"] == "<data>" and stored["output_dir"] == "<output>"
    for path in (result.output_dir / "config.yaml", result.best_checkpoint):
        assert str(tmp_path).encode() not in path.read_bytes(), path  # torch stores the pickles uncompressed
    # A stored config reruns once it is given real paths; the placeholders themselves are refused by name.
    with pytest.raises(ValueError, match="output_dir: <output> stands for a path"):
        parse_config(stored)
    again = parse_config({**stored, "output_dir": str(tmp_path / "again")})
    with pytest.raises(ValueError, match=r"data.root: <data> stands for .* --data ROOT"):
        run_training(again, progress=False)
    assert run_training(again, data_root=root, progress=False).metrics["val_n_patients"] == 2


def test_stage1_freezes_subnetwork1(root, tmp_path):
    config = parse_config(classifier_config(root, tmp_path, stage2_epochs=0))
    torch.manual_seed(0)
    from harness.models import create_model

    fresh = create_model("wu2020", width=16)
    result = run_training(config, progress=False)
    trained = load_checkpoint(result.best_checkpoint)["model_state"]
    sub1 = [k for k in trained if k.startswith("subnetwork1.") and k.endswith("weight")]
    sub2 = [k for k in trained if k.startswith("subnetwork2.") and k.endswith("weight")]
    assert all(torch.equal(trained[k], fresh.state_dict()[k]) for k in sub1)  # same seed, frozen: unchanged
    assert any(not torch.equal(trained[k], fresh.state_dict()[k]) for k in sub2)


def test_resume_continues_after_the_last_epoch(root, tmp_path):
    config = parse_config(classifier_config(root, tmp_path))
    first = Recorder(stop_after=2)  # a hook stop, like Tune's
    run_training(config, hooks=[first], progress=False)
    assert [e.epoch for e in first.epochs] == [1, 2]
    second = Recorder()
    result = run_training(config, hooks=[second], resume=True, progress=False)
    assert [e.epoch for e in second.epochs] == [3]
    assert [row["epoch"] for row in result.history] == [1, 2, 3]


class _KilledAfterCheckpoint(Hooks):
    """Dies in the hook of epoch 2, after that epoch's last.pt was written: a kill -9 between the two."""

    def after_epoch(self, info):
        if info.epoch == 2:
            raise KeyboardInterrupt


class _ResumeRecorder(Recorder):
    def __init__(self):
        super().__init__()
        self.resumed_with: list[dict] | None = None

    def after_resume(self, history):
        self.resumed_with = history


def test_a_resumed_run_hands_its_hooks_the_epochs_it_holds(root, tmp_path):
    """The epoch whose hooks never ran (killed after its checkpoint) reaches the hooks of the resumed run once."""
    config = parse_config(classifier_config(root, tmp_path))
    first = Recorder()
    with pytest.raises(KeyboardInterrupt):
        run_training(config, hooks=[first, _KilledAfterCheckpoint()], progress=False)
    assert [e.epoch for e in first.epochs] == [1, 2]  # Recorder ran first; a logger after it would have missed 2
    second = _ResumeRecorder()
    run_training(config, hooks=[second], resume=True, progress=False)
    assert [entry["epoch"] for entry in second.resumed_with] == [1, 2]
    assert [e.epoch for e in second.epochs] == [3]
    assert second.resumed_with[1]["train_loss"] == first.epochs[1].metrics["train_loss"]  # the values it had


def test_early_stopping_restores_the_best_epoch(root, tmp_path):
    raw = classifier_config(root, tmp_path, stage1_epochs=0, stage2_epochs=8)
    raw["early_stopping"] = {"metric": "train_loss", "mode": "min", "patience": 1, "min_delta": 10.0}
    result = run_training(parse_config(raw), progress=False)
    assert result.stopped_early and len(result.history) == 2  # epoch 1 is best; epoch 2 fails to improve by 10
    best = load_checkpoint(result.best_checkpoint)
    assert best["loop"]["best_epoch"] == 1 and best["loop"]["epoch"] == 1


def test_hybrid_trains_all_stages(root, tmp_path):
    raw = classifier_config(root, tmp_path, hybrid_mlp_epochs=5, hybrid_finetune_epochs=1)
    raw["model"] = "wu2020_hybrid"
    recorder = Recorder()
    result = run_training(parse_config(raw), hooks=[recorder], progress=False)
    assert [e.stage for e in recorder.epochs] == ["stage1", "stage2", "stage2", "hybrid_mlp", "hybrid_finetune"]
    assert "val_mrln_pos_auc" in result.metrics


def test_early_stopping_ends_a_stage_not_the_hybrid_schedule(root, tmp_path):
    raw = classifier_config(root, tmp_path, stage2_epochs=5, hybrid_mlp_epochs=3, hybrid_finetune_epochs=3)
    raw["model"] = "wu2020_hybrid"
    raw["early_stopping"] = {"metric": "train_loss", "mode": "min", "patience": 1, "min_delta": 10.0}
    recorder = Recorder()
    result = run_training(parse_config(raw), hooks=[recorder], progress=False, keep_last=True)
    stages = [e.stage for e in recorder.epochs]
    assert stages == ["stage1", "stage2", "stage2", "hybrid_mlp", "hybrid_finetune"]
    assert result.stopped_early
    again = run_training(parse_config(raw), hooks=[Recorder()], resume=True, progress=False)
    assert len(again.history) == 5  # every stage is finished: resuming trains nothing more


def detector_config(root: Path, out: Path) -> dict:
    return {
        "name": "tiny-det",
        "task": "detection",
        "model": "fasterrcnn_mobilenet_v3_fpn",
        "model_kwargs": {
            "min_size": 64,
            "max_size": 64,
            "anchor_sizes": [[8, 16], [16, 32], [32, 64]],
            "aspect_ratios": [1.0],
            "rpn_post_nms_top_n_train": 50,
            "rpn_post_nms_top_n_test": 50,
            "box_batch_size_per_image": 16,
        },
        "data": {"root": str(root), "sequence": "T2WI", "image_size": 64, "split": {"val_centers": ["2"]}},
        "train": {"epochs": 2, "batch_size": 4, "lr": 0.01, "eval_every": 1},
        "output_dir": str(out),
    }


def test_detector_run_reports_lu_and_coco_metrics(root, tmp_path):
    recorder = Recorder()
    result = run_training(parse_config(detector_config(root, tmp_path)), hooks=[recorder], progress=False)
    assert [e.epoch for e in recorder.epochs] == [1, 2]
    assert {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"} <= set(recorder.steps[0].losses)
    lrs = [s.lr for s in recorder.steps]
    assert lrs[0] == pytest.approx(0.01) and lrs[-1] == pytest.approx(0.001)  # Lu's drop for the last quarter
    for key in ("val_map50", "val_map", "val_voc_map50", "val_froc", "val_image_auc", "val_ap50_mesorectal"):
        assert key in result.metrics
    assert (result.output_dir / "froc.png").stat().st_size > 0 and (result.output_dir / "pr.png").stat().st_size > 0
    assert len(list((result.output_dir / "detections").glob("*.png"))) == 2  # 1 val slice with a target + 1 without
    with (result.output_dir / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    truth = {row["patient"]: row["lnm"] for row in rows}  # the manifest's status: P03 lnm 1, P04 lnm 0 (pseudonyms)
    assert sorted(truth.values()) == ["0", "1"] and all(p.startswith("pt-") for p in truth)


def test_train_cli_prints_metrics_json_last(root, tmp_path):
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(classifier_config(root / "missing", tmp_path)))
    harness = str(Path(sys.executable).parent / "harness")
    result = subprocess.run(
        [harness, "train", str(path), "--data", str(root), "--set", "train.stage2_epochs=1", "--no-progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert "val_auc" in metrics and metrics["val_n_patients"] == 2
    bad = subprocess.run([harness, "train", str(path), "--set", "train.stage2_lr=fast"], capture_output=True, text=True)
    assert bad.returncode == 2 and "train.stage2_lr" in bad.stderr


def test_data_spacing_mm_reaches_the_detector_samples(root, tmp_path):
    from harness.train.data import build_data

    raw = detector_config(root, tmp_path)
    raw["data"]["spacing_mm"] = 2.0
    data = build_data(parse_config(raw))
    assert data.train.spacing_mm == 2.0 and data.val.spacing_mm == 2.0
    assert data.train[0]["image"].shape[-2:] == (64, 64)  # resampled, then cropped or padded to image_size
    raw["data"]["spacing_mm"] = 0
    with pytest.raises(ValueError, match="data.spacing_mm"):
        parse_config(raw)
