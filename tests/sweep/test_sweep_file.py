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
    assert first.run_name.startswith("T2WI none resnet18 stage2_lr=")  # telling values first, no key names
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
    paper = load_sweep(REPO / "examples" / "paper.yaml")
    assert {s.task for s in paper.studies} == {"classification", "detection"}
    wu = paper.studies[0]
    assert wu.study.cv.test_centers == ["3"] and len(wu.trials) == 6 * 5 * 2  # external test centre, in no fold
    (classifier,) = load_sweep(REPO / "examples" / "sweep.yaml").studies  # the demo: a planted cohort, with cv
    assert {t.config["data"]["sequence"] for t in classifier.trials} == {"ADC", "T2WI", "CET1WI"}
    assert len({t.config["data"]["augment"] for t in classifier.trials}) >= 2 and classifier.study.cv.folds >= 3
    planted = classifier.trials[0].config["data"]["synth"]["signal_by_sequence"]
    assert planted["ADC"] > planted["T2WI"] > planted["CET1WI"] == 0


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
    assert "cls-000" in result.stdout and "cls-001" in result.stdout and "flip" in result.stdout
    assert "2 configurations x 1 folds x 1 repeats = 2 trials" in " ".join(result.stdout.split())
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


def test_cv_and_repeats_expand_each_configuration_into_folds_times_repeats(root, tmp_path):
    study = classifier_study(root, grid={"augment": ["none", "flip"]}, cv={"folds": 3, "seed": 4}, repeats=2)
    study["data"].pop("split")
    plan = plan_sweep(sweep(tmp_path, study), "sweep.yaml")
    (only,) = plan.studies
    assert len(only.trials) == 2 * 3 * 2 and list(only.configurations) == ["cls-000", "cls-001"]
    trials = only.configurations["cls-001"]
    assert [t.key for t in trials[:3]] == ["cls-001-f0-r0", "cls-001-f0-r1", "cls-001-f1-r0"]
    assert [(t.fold, t.repeat) for t in trials] == [(f, r) for f in range(3) for r in range(2)]
    assert trials[3].run_name == "flip f1 r1" and trials[3].configuration_name == "flip"
    for trial in only.trials:  # every configuration the same folds: comparisons are paired on patients
        split = trial.config["data"]["split"]
        assert split == {**split, "by": "cv", "folds": 3, "fold": trial.fold, "seed": 4}
        assert trial.config["repeat"] == trial.repeat and trial.config["seed"] == only.trials[0].config["seed"]


def test_cv_refuses_a_template_split_and_bad_values(root, tmp_path):
    with pytest.raises(ConfigError, match=r"studies\[0\]\.data\.split: the study's cv sets the split"):
        plan_sweep(sweep(tmp_path, classifier_study(root, cv=3)), "sweep.yaml")
    study = classifier_study(root, cv={"folds": 1})
    study["data"].pop("split")
    with pytest.raises(ConfigError, match=r"studies\[0\]\.cv\.folds"):
        plan_sweep(sweep(tmp_path, study), "sweep.yaml")
    study = classifier_study(root, cv={"folds": 3, "test_centers": [2], "test_fraction": 0.2})
    study["data"].pop("split")
    with pytest.raises(ConfigError, match="not both"):
        plan_sweep(sweep(tmp_path, study), "sweep.yaml")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"scheduler": {"type": "asha", "metric": "val_acu"}},
            r"studies\[0\]\.scheduler\.metric: 'val_acu' is not reported .* did you mean 'val_auc'",
        ),
        ({"model_kwargs": {"width": 16, "backbone": "resnet19"}}, r"model_kwargs\.backbone: unknown classifier"),
        ({"model_kwargs": {"width": 16, "dropuot": 0.5}}, r"model_kwargs\.dropuot: .*did you mean 'dropout'"),
        ({"model_kwargs": {"width": "wide"}}, r"model_kwargs\.width: 'wide' is not a valid int"),
        (
            {"grid": {"backbone": ["resnet18"]}, "backbone_kwargs": {"resnet81": {"backbone_blocks": 4}}},
            r"backbone_kwargs\.resnet81: not a backbone of grid\.backbone .*did you mean 'resnet18'",
        ),
        ({"backbone_kwargs": {"resnet18": {"backbone_blocks": 4}}}, r"backbone_kwargs: the study has no grid backbone"),
        ({"grid": {"train.stage2_lr": ["1e-3", 1.0e-3]}}, r"grid: configurations cls-000 and cls-001 are the same"),
        ({"early_stopping": {"metric": "val_map50"}}, r"early_stopping\.metric: 'val_map50' is not reported"),
    ],
)
def test_mistakes_that_used_to_pass_validation_fail_with_their_key_path(root, tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        plan_sweep(sweep(tmp_path, classifier_study(root, **extra)), "sweep.yaml")


def test_model_kwargs_are_coerced_like_the_rest_of_the_config(root, tmp_path):
    plan = plan_sweep(sweep(tmp_path, classifier_study(root, model_kwargs={"width": 16, "dropout": "5e-1"})), "s")
    assert plan.trials[0].config["model_kwargs"]["dropout"] == 0.5
