"""Wu 2020 classifier samples and Lu 2018 detector samples built from a dataset the tests write."""

import os

import numpy as np
import pytest
import torch

import harness.datasets.index as index_module
import harness.datasets.series as series_module
from harness.datasets.augment import create_augmentation
from harness.datasets.classification import TumourSliceDataset, crop_three_slices, roi_with_margin
from harness.datasets.detection import NodeSliceDataset, collate_detection
from harness.datasets.errors import DataError
from harness.datasets.index import index_dataset
from harness.datasets.splits import split_by_center
from harness.datasets.volumes import load_sequence
from tests.datasets.minidata import write_dataset

PATIENTS = ["P01", "P02", "P03", "P04"]


@pytest.fixture
def index(tmp_path):
    return index_dataset(write_dataset(tmp_path / "ds"))


@pytest.mark.parametrize("sequence", ["T2WI", "CET1WI", "DWI", "ADC"])
def test_classifier_samples_are_three_adjacent_zscored_slices(index, sequence):
    dataset = TumourSliceDataset(index, PATIENTS, sequence=sequence)
    n_tumour_slices = {"T2WI": 4, "CET1WI": 3, "DWI": 4, "ADC": 4}[sequence]
    assert len(dataset) == 4 * n_tumour_slices
    sample = dataset[0]
    assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == torch.float32
    assert abs(float(sample["image"].mean())) < 1e-4 and abs(float(sample["image"].std()) - 1) < 1e-2
    assert sample["label"] in (0, 1) and sample["mr_ln_status"] == sample["label"]
    assert sample["patient"].startswith("pt-") and "P0" not in sample["patient"]
    assert len({dataset[i]["patient"] for i in range(len(dataset))}) == 4
    # the three channels are different slices, not one slice repeated
    assert not torch.allclose(sample["image"][0], sample["image"][1])


def test_classifier_crop_matches_a_direct_computation(index):
    """The middle channel equals the ROI of slice k cut out by hand (an axis-aligned box, integer pixels)."""
    volume = load_sequence(index, "P01", "T2WI")
    k, box = 2, (8.0, 6.0, 20.0, 18.0)
    roi = roi_with_margin(box, volume.pixel_spacing, margin_mm=0.0)
    assert roi == [8.0, 6.0, 20.0, 18.0]  # a 12x12 box with 1 mm pixels: square already, no margin
    crop = crop_three_slices(volume, k, roi, size=12)  # same size: RoIAlign samples pixel centres
    expected = np.stack([volume.pixels[k + d, 6:18, 8:20] for d in (-1, 0, 1)]).astype(np.float64)
    expected = (expected - expected.mean()) / expected.std()
    np.testing.assert_allclose(crop, expected, atol=1e-4)


def test_detector_samples_carry_torchvision_targets_and_negatives(index):
    dataset = NodeSliceDataset(index, PATIENTS, sequence="T2WI", image_size=64)
    assert len(dataset) == 4 * 6  # every slice, negatives kept
    assert dataset.positive_items == 2  # lnm=1 patients' metastatic node; benign nodes are not targets
    positives = [dataset[i] for i in range(len(dataset)) if len(dataset[i]["target"]["labels"])]
    target = positives[0]["target"]
    assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [2]  # mesorectal = class 2
    # box (2, 3, 7, 9) on a 40x32 (columns x rows) slice, resized to 64x64
    np.testing.assert_allclose(target["boxes"].numpy(), [[3.2, 6.0, 11.2, 18.0]], rtol=1e-6)
    assert positives[0]["image"].shape == (3, 64, 64)
    negative = next(dataset[i] for i in range(len(dataset)) if not len(dataset[i]["target"]["labels"]))
    assert negative["target"]["boxes"].shape == (0, 4)
    images, targets, rest = collate_detection([positives[0], negative])
    assert len(images) == len(targets) == 2 and "patient" in rest[0]


def test_detector_options(index):
    all_nodes = NodeSliceDataset(index, PATIENTS, sequence="DWI", image_size=48, targets="all", label_mode="single")
    assert all_nodes.positive_items == 4
    labels = {int(lab) for i in range(len(all_nodes)) for lab in all_nodes[i]["target"]["labels"]}
    assert labels == {1}
    positives_only = NodeSliceDataset(index, PATIENTS, sequence="DWI", image_size=48, negatives=False)
    assert len(positives_only) == positives_only.positive_items == 2
    with pytest.raises(ValueError, match="sequence must be one of"):
        NodeSliceDataset(index, PATIENTS, sequence="CET1WI")


def test_augmentation_is_applied_per_item(index):
    flip = create_augmentation("flip", "detection", p=1.0)
    plain = NodeSliceDataset(index, ["P01"], image_size=64, negatives=False)
    flipped = NodeSliceDataset(index, ["P01"], image_size=64, negatives=False, transform=flip)
    torch.testing.assert_close(flipped[0]["image"], plain[0]["image"].flip(-1))
    x0, _, x1, _ = plain[0]["target"]["boxes"][0].tolist()
    assert flipped[0]["target"]["boxes"][0, 0].item() == pytest.approx(64 - x1)


def test_second_build_reads_no_dicom(index, monkeypatch):
    TumourSliceDataset(index, PATIENTS, sequence="ADC")
    NodeSliceDataset(index, PATIENTS)

    def refuse(*args, **kwargs):
        raise AssertionError("DICOM parsed although the cache holds everything")

    monkeypatch.setattr(index_module, "read_dicom", refuse)
    monkeypatch.setattr(series_module, "read_dicom", refuse, raising=False)
    monkeypatch.setattr(series_module, "read_pixels", refuse, raising=False)
    again = index_dataset(index.root)
    assert len(TumourSliceDataset(again, PATIENTS, sequence="ADC")) == 16
    assert len(NodeSliceDataset(again, PATIENTS)) == 24


def test_cache_is_invalidated_by_an_edited_source_file(index):
    before = TumourSliceDataset(index, ["P01"], sequence="T2WI")[0]["image"]
    path = sorted((index.root / "dicom" / "P01" / "T2WI").iterdir())[1]  # slice 1: the first tumour slice
    import pydicom

    ds = pydicom.dcmread(path)
    ds.PixelData = (ds.pixel_array[::-1].copy()).tobytes()  # same size, different content
    ds.save_as(path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    after = TumourSliceDataset(index_dataset(index.root), ["P01"], sequence="T2WI")[0]["image"]
    assert not torch.allclose(before[1], after[1])


def test_preprocessing_parameters_are_part_of_the_key(index):
    small = TumourSliceDataset(index, ["P01"], size=32)
    large = TumourSliceDataset(index, ["P01"], size=64)
    assert small[0]["image"].shape == (3, 32, 32) and large[0]["image"].shape == (3, 64, 64)


def test_center_split_feeds_disjoint_patients(index):
    split = split_by_center(index.patients.values(), val_centers=["2"])
    train = TumourSliceDataset(index, split.train)
    val = TumourSliceDataset(index, split.val)
    train_patients = {train[i]["patient"] for i in range(len(train))}
    val_patients = {val[i]["patient"] for i in range(len(val))}
    assert train_patients and val_patients and not train_patients & val_patients
    assert {val[i]["center"] for i in range(len(val))} == {"2"}


def test_missing_tumour_boxes_error_or_skip(tmp_path):
    root = write_dataset(tmp_path / "ds")
    lines = (root / "annotations.csv").read_text().splitlines()
    kept = [line for line in lines if not (line.startswith("P02,T2WI") and ",tumour," in line)]
    (root / "annotations.csv").write_text("\n".join(kept) + "\n")
    with pytest.raises(DataError, match=r"patient 'P02'.*no tumour ROI box on T2WI"):
        TumourSliceDataset(index_dataset(root), PATIENTS)
    skipping = index_dataset(root, on_error="skip")
    dataset = TumourSliceDataset(skipping, PATIENTS)
    assert len(dataset) == 12 and "P02" in skipping.excluded_patients
