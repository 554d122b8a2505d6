"""Detector samples resampled to a fixed pixel size (``spacing_mm``): image content, boxes, crops and pads."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from harness.datasets.detection import NodeSliceDataset, resize_volume
from harness.datasets.index import index_dataset
from harness.datasets.volumes import load_sequence
from tests.datasets.minidata import write_dataset

# The minidata T2WI: 6 slices of 32 rows x 40 columns, 1 mm pixels; the lnm=1 patients' metastatic node is the box
# (2, 3, 7, 9) on slice 2.
NODE = (2.0, 3.0, 7.0, 9.0)


@pytest.fixture
def index(tmp_path):
    return index_dataset(write_dataset(tmp_path / "ds"))


def _zscored(index, patient="P01"):
    volume = torch.from_numpy(load_sequence(index, patient, "T2WI").pixels.astype(np.float32))
    return (volume - volume.mean()) / volume.std()


def _node_item(dataset):
    return next(dataset[i] for i in range(len(dataset)) if len(dataset[i]["target"]["boxes"]))


def test_coarser_pixels_shrink_and_pad_the_slice(index):
    # 2 mm pixels: 32 x 40 becomes 16 x 20, centred on a 32 x 32 canvas (8 rows above, 6 columns left)
    dataset = NodeSliceDataset(index, ["P01"], sequence="T2WI", image_size=32, spacing_mm=2.0, negatives=False)
    item = _node_item(dataset)
    x0, y0, x1, y1 = NODE
    np.testing.assert_allclose(item["target"]["boxes"].numpy(), [[x0 / 2 + 6, y0 / 2 + 8, x1 / 2 + 6, y1 / 2 + 8]])
    volume = _zscored(index)
    expected = F.interpolate(volume[:, None], size=(16, 20), mode="bilinear", antialias=True)[2, 0]
    image = item["image"][0]
    torch.testing.assert_close(image[8:24, 6:26], expected)
    assert torch.all(image[:8] == volume.min()) and torch.all(image[:, :6] == volume.min())  # padding


def test_finer_pixels_crop_the_centre_and_clip_boxes(index):
    # 0.5 mm pixels: 64 x 80, cropped to 64 x 64 (columns 8-71): the node's x range 4-14 becomes -4..6, clipped at 0
    dataset = NodeSliceDataset(index, ["P01"], sequence="T2WI", image_size=64, spacing_mm=0.5, negatives=False)
    item = _node_item(dataset)
    np.testing.assert_allclose(item["target"]["boxes"].numpy(), [[0.0, 6.0, 6.0, 18.0]])
    expected = F.interpolate(_zscored(index)[:, None], size=(64, 80), mode="bilinear", antialias=True)[2, 0, :, 8:72]
    torch.testing.assert_close(item["image"][0], expected)


def test_a_box_cropped_away_is_no_target(index):
    # a 48-pixel canvas keeps columns 16-63 of 80: the node (x 4-14) is outside, so P01 has no positive slice left
    cropped = NodeSliceDataset(index, ["P01"], sequence="T2WI", image_size=48, spacing_mm=0.5)
    assert cropped.positive_items == 0 and len(cropped) == 6
    with pytest.raises(Exception, match="no samples"):
        NodeSliceDataset(index, ["P01"], sequence="T2WI", image_size=48, spacing_mm=0.5, negatives=False)


def test_same_physical_size_whatever_the_grid():
    """Rows and columns follow their own spacing (DICOM order: between rows, between columns)."""
    pixels = np.zeros((1, 30, 40), dtype=np.float32)
    pixels[0, 10:20, 10:20] = 1.0  # a 10 x 10 pixel square: 20 mm tall, 10 mm wide with (2.0, 1.0) mm pixels
    slices, (sx, sy, ox, oy) = resize_volume(pixels, 64, (2.0, 1.0), 1.0)
    assert (sx, sy) == (1.0, 2.0) and (ox, oy) == (12, 2)  # 60 rows x 40 columns on a 64 x 64 canvas
    bright = np.argwhere(slices[0] > slices[0].max() / 2)
    height, width = bright.max(0) - bright.min(0) + 1
    assert (height, width) == (20, 10)
    stretched, transform = resize_volume(pixels, 64, (2.0, 1.0), None)  # the old behaviour: fill the square
    assert stretched.shape == (1, 64, 64) and tuple(transform) == (64 / 40, 64 / 30, 0, 0)


def test_spacing_must_be_positive(index):
    with pytest.raises(ValueError, match="spacing_mm"):
        NodeSliceDataset(index, ["P01"], sequence="T2WI", spacing_mm=0.0)
