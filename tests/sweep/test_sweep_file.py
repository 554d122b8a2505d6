"""The sweep file: expansion into trials, and bad files failing before anything runs, naming the key."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness.config import ConfigError
from harness.sweep import SweepError, load_sweep, plan_sweep
from harness.tune import check_resources
from tests.datasets.minidata import write_dataset

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("sweepfile") / "ds")


def classifier_study(root: Path, **extra) -> dict:
    return {
        "name": "cls",
        "task": "classification",
        "model": "wu2020",
        "model_kwargs": {"width": 16},
        "data": {"root": str(root), "split": {"val_centers": ["2"]}},
        "train": {"stage1_epochs": 0, "stage2_epochs": 2, "batch_size": 4},
        **extra,
    }


def detector_study(root: Path, **extra) -> dict:
    return {
        "name": "det",
        "task": "detection",
        "model": "fasterrcnn_mobilenet_v3_fpn",
        "data": {"root": str(root), "sequence": "DWI", "split": {"val_centers": ["2"]}},
        "train": {"epochs": 1},
        **extra,
    }


def sweep(tmp_path: Path, *studies: dict) -> dict:
    return {"name": "test", "storage": str(tmp_path / "runs"), "studies": list(studies)}


def test_grid_and_search_expand_into_named_validated_trials(root, tmp_path):
    raw = sweep(
        tmp_path,
        classifier_study(
            root,
            grid={"sequence": ["T2WI", "ADC"], "augment": ["none", "flip"], "backbone": ["resnet18", "resnet34"]},
            search={"train.stage2_lr": {"loguniform": ["1e-5", "1e-3"]}},  # YAML 1.1 reads 1e-5 as a string
            num_samples=2,
        ),
        detector_study(
            root,
            grid={"backbone": ["mobilenet_v3_fpn", "vgg16"]},
            backbone_kwargs={"mobilenet_v3_fpn": {"returned_layers": [2, 3, 4]}},
        ),
    )
    plan = plan_sweep(raw, "sweep.yaml")
    classifier, detector = plan.studies
    assert len(classifier.trials) == 2 * 2 * 2 * 2 and len(detector.trials) == 2
    keys = [t.key for t in plan.trials]
    assert len(set(keys)) == len(keys) and keys[0] == "cls-000"
    first = classifier.trials[0]
    assert first.config["data"]["sequence"] == "T2WI" and first.config["model_kwargs"]["backbone"] == "resnet18"
    assert first.run_name.startswith("cls: sequence=T2WI, augment=none, backbone=resnet18, train.stage2_lr=")
    lrs = [t.config["train"]["stage2_lr"] for t in classifier.trials]
    assert all(1e-5 <= lr <= 1e-3 for lr in lrs) and len(set(lrs)) == len(lrs)
    assert lrs == [t.config["train"]["stage2_lr"] for t in plan_sweep(raw, "again").studies[0].trials]  # seeded
    models = [t.config["model"] for t in detector.trials]
    assert models == ["fasterrcnn_mobilenet_v3_fpn", "fasterrcnn_vgg16"]
    assert detector.trials[0].config["model_kwargs"]["returned_layers"] == [2, 3, 4]
    assert "returned_layers" not in detector.trials[1].config["model_kwargs"]  # only for its backbone
    assert all(Path(t.config["output_dir"]).is_absolute() for t in plan.trials)  # trials chdir


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s.update(colour="red"), "studies[0].colour: Extra inputs are not permitted"),
        (
            lambda s: s.update(grid={"backbone": ["resnet18", "vgg19"]}),
            "studies[0].grid.backbone[1]: unknown backbone 'vgg19'; known: resnet18, resnet34",
        ),
        (lambda s: s.update(grid={"sequence": ["T2WI", "T1"]}), "studies[0].grid.sequence[1]: unknown sequence 'T1'"),
        (lambda s: s["train"].update(stage2_epochs="many"), "train.stage2_epochs: Input should be a valid integer"),
        (lambda s: s["data"].update(root="/nonexistent/dataset"), "studies[0].data.root: /nonexistent/dataset holds"),
        (lambda s: s.update(resources={"gpus": "half"}), "studies[0].resources.gpus: Input should be a valid number"),
        (lambda s: s.update(search={"train.stage2_lr": {"normal": [0, 1]}}), "studies[0].search.train.stage2_lr"),
        (lambda s: s.update(grid={"augment": []}), "studies[0].grid.augment: an empty list gives no trials"),
        (lambda s: s.update(model="resnet"), "model: unknown classification model 'resnet'"),
    ],
)
def test_bad_sweep_files_name_the_key(root, tmp_path, change, expected):
    study = classifier_study(root)
    change(study)
    with pytest.raises(ConfigError) as error:
        plan_sweep(sweep(tmp_path, study), "sweep.yaml")
    assert expected in str(error.value) and "sweep.yaml" in str(error.value)


def test_asha_on_a_detector_needs_per_epoch_validation(root, tmp_path):
    study = detector_study(root, scheduler={"type": "asha", "metric": "val_map50"})
    study["train"]["eval_every"] = 0
    with pytest.raises(ConfigError, match=r"studies\[0\].scheduler: asha needs a metric every epoch"):
        plan_sweep(sweep(tmp_path, study), "sweep.yaml")


def test_studies_must_have_distinct_names(root, tmp_path):
    with pytest.raises(ConfigError, match="names must differ"):
        plan_sweep(sweep(tmp_path, classifier_study(root), classifier_study(root)), "sweep.yaml")


def test_resources_are_checked_against_the_cluster(root, tmp_path):
    plan = plan_sweep(sweep(tmp_path, classifier_study(root, resources={"gpus": 0.25})), "sweep.yaml")
    with pytest.raises(
        SweepError, match=r"studies\[0\].resources.gpus: 0.25 GPU per trial, but the Ray cluster has no GPU"
    ):
        check_resources(plan.studies, {"CPU": 2.0}, "sweep.yaml")
    check_resources(plan.studies, {"CPU": 2.0, "GPU": 1.0}, "sweep.yaml")  # a GPU cluster: fine
    plan = plan_sweep(sweep(tmp_path, classifier_study(root, resources={"cpus": 4})), "sweep.yaml")
    with pytest.raises(SweepError, match="4 CPUs per trial; the cluster has 2"):
        check_resources(plan.studies, {"CPU": 2.0}, "sweep.yaml")


def test_shipped_sweeps_are_valid():
    for name in ("sweep.yaml", "paper.yaml"):
        plan = load_sweep(REPO / "examples" / name)
        assert {s.task for s in plan.studies} == {"classification", "detection"}
    demo = load_sweep(REPO / "examples" / "sweep.yaml")
    classifier, detector = demo.studies
    assert len({t.config["data"]["sequence"] for t in classifier.trials}) >= 3
    assert len({t.config["data"]["augment"] for t in classifier.trials}) >= 2
    assert len({t.config["model"] for t in detector.trials}) >= 2


def test_dry_run_lists_trials_and_resources(root, tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(
        yaml.safe_dump(
            sweep(
                tmp_path,
                classifier_study(root, grid={"augment": ["none", "flip"]}, resources={"cpus": 1, "gpus": 0.25}),
            )
        )
    )
    harness = str(Path(sys.executable).parent / "harness")
    result = subprocess.run(
        [harness, "run", str(path), "--dry-run"],
        capture_output=True,
        text=True,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "cls-000" in result.stdout and "cls-001" in result.stdout and "augment=flip" in result.stdout
    assert "1 CPU, 0.25 GPU each" in result.stdout
    assert not (tmp_path / "runs").exists()  # nothing ran
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(sweep(tmp_path, classifier_study(root, grid={"backbone": ["vgg19"]}))))
    result = subprocess.run([harness, "run", str(bad), "--dry-run"], capture_output=True, text=True)
    assert result.returncode == 2 and "studies[0].grid.backbone[0]: unknown backbone 'vgg19'" in result.stderr


def test_names_that_would_escape_their_folder_are_refused(root, tmp_path):
    with pytest.raises(ConfigError, match=r"sweep.yaml: name: '../x': use letters"):
        plan_sweep({**sweep(tmp_path, classifier_study(root)), "name": "../x"}, "sweep.yaml")
    with pytest.raises(ConfigError, match=r"studies\[0\].name: 'a/b': use letters"):
        plan_sweep(sweep(tmp_path, classifier_study(root) | {"name": "a/b"}), "sweep.yaml")
