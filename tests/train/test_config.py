import pytest
import yaml

from harness.config import ConfigError, DetectorTraining, apply_overrides, load_config, parse_config

BASE = {"task": "classification", "model": "wu2020", "data": {"root": "/data"}}


def test_defaults_are_the_papers_schedules():
    classifier = parse_config(BASE)
    assert (classifier.train.stage1_epochs, classifier.train.stage1_optimizer, classifier.train.stage1_lr) == (
        20,
        "sgd",
        1e-5,
    )
    assert (classifier.train.stage2_epochs, classifier.train.stage2_optimizer, classifier.train.stage2_lr) == (
        30,
        "rmsprop",
        5e-5,
    )
    assert classifier.train.batch_size == 128
    detector = parse_config({"task": "detection", "model": "fasterrcnn_vgg16", "data": {"root": "/d"}})
    assert isinstance(detector.train, DetectorTraining)
    assert (detector.train.lr, detector.train.lr_drop_at, detector.train.momentum, detector.train.weight_decay) == (
        1e-3,
        0.75,
        0.9,
        5e-4,
    )


def test_yaml_exponent_strings_are_numbers(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("task: classification\nmodel: wu2020\ndata: {root: /d}\ntrain: {stage2_lr: 1e-3}\n")
    assert load_config(path).train.stage2_lr == pytest.approx(1e-3)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"model": "wu2021"}, "model: unknown classification model 'wu2021'; known: wu2020, wu2020_hybrid"),
        ({"data": {"root": "/d", "sequence": "FLAIR"}}, "data.sequence: unknown sequence 'FLAIR'"),
        ({"data": {"root": "/d", "augment": "papr"}}, "data.augment: unknown augmentation set 'papr'"),
        ({"data": {}}, "exactly one of data.root"),
        ({"train": {"stage2_lr": "fast"}}, "train.stage2_lr"),
        ({"train": {"epochs": 3}}, "train.epochs: Extra inputs are not permitted"),
        ({"model_kwargs": {"depth": 3}}, "model_kwargs.depth: not an argument of wu2020; did you mean 'width'?"),
        (
            {"task": "detection", "model": "fasterrcnn_vgg16", "data": {"root": "/d", "sequence": "ADC"}},
            "data.sequence: detection uses axial T2WI or DWI",
        ),
    ],
)
def test_errors_name_the_key_path_and_allowed_values(change, fragment):
    with pytest.raises(ConfigError) as info:
        parse_config({**BASE, **change}, "trial.yaml")
    assert fragment in str(info.value)
    assert str(info.value).startswith("trial.yaml: ")


def test_overrides_are_yaml_values_on_dotted_paths():
    raw = apply_overrides(dict(BASE), ["train.stage2_epochs=5", "data.split.val_centers=[2]", "seed=7"])
    config = parse_config(raw)
    assert config.train.stage2_epochs == 5 and config.seed == 7
    assert config.data.split.val_centers == ["2"]  # centre labels are strings
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides(dict(BASE), ["seed"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("task: [")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_fold_and_repeat_switches_rerun_one_trial_of_a_cv_sweep(tmp_path):
    from harness.cli import build_parser
    from harness.cli.train import train_overrides

    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump({**BASE, "data": {**BASE["data"], "split": {"folds": 3}}, "seed": 7}))
    args = build_parser().parse_args(["train", str(path), "--fold", "2", "--repeat", "1"])
    config = load_config(path, train_overrides(args))
    assert (config.data.split.by, config.data.split.fold, config.data.split.folds) == ("cv", 2, 3)
    assert config.repeat == 1 and config.training_seed == 8
    args = build_parser().parse_args(["train", str(path), "--fold", "3"])
    with pytest.raises(ConfigError, match="split.fold: 3 is not a fold of 3"):
        load_config(path, train_overrides(args))
