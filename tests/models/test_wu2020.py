"""Wu 2020 DL and hybrid models: the architecture read from eFigure 2, training hooks, ImageNet weights."""

import pytest
import torch
import torch.nn.functional as F
import torchvision

from harness.models import CLASSIFIER_BACKBONES, WeightsError, create_model, imagenet_file_names

X = torch.randn(2, 3, 64, 64)


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A state_dict of a freshly built torchvision resnet18, as torchvision's ImageNet file would hold."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


def test_output_features_and_cam_layer_shapes():
    model = create_model("wu2020").eval()
    maps = []
    model.cam_layer.register_forward_hook(lambda module, args, output: maps.append(output))
    with torch.no_grad():
        assert model(X).shape == (2, 2)
        assert model.features(X).shape == (2, 128) and model.feature_dim == 128
        assert model.subnetwork1(X).shape == (2, 128, 8, 8)  # eFigure 2 reading: 8x8 @ 128 after sub-network 1
        probability = model.predict_proba(X)
    assert maps[0].shape == (2, 128, 8, 8)
    assert probability.shape == (2,) and ((probability >= 0) & (probability <= 1)).all()
    assert [type(m).__name__ for m in model.subnetwork2] == [
        "ZeroPad2d",
        "Conv2d",
        "BatchNorm2d",
        "ReLU",
        "Conv2d",
        "AdaptiveAvgPool2d",
    ]
    assert model.subnetwork2.conv7x7.kernel_size == (7, 7) and model.cam_layer.kernel_size == (1, 1)


def test_stem_output_is_the_captions_32x32_at_64():
    model = create_model("wu2020")
    stem = model.subnetwork1
    assert stem.relu(stem.bn1(stem.conv1(X))).shape == (2, 64, 32, 32)


@pytest.mark.parametrize(("blocks", "last_block"), [(3, "layer2.0."), (4, "layer2.1.")])
def test_subnetwork1_is_resnet18s_stem_and_first_blocks(blocks, last_block):
    subnetwork1 = create_model("wu2020", backbone_blocks=blocks).subnetwork1
    reference = torchvision.models.resnet18(weights=None).state_dict()
    kept = ("conv1.", "bn1.", "layer1.", "layer2.0.") + (("layer2.1.",) if blocks == 4 else ())
    expected = {k: v.shape for k, v in reference.items() if k.startswith(kept)}
    assert {k: v.shape for k, v in subnetwork1.state_dict().items()} == expected
    assert any(k.startswith(last_block) for k in expected)


def test_freezing_subnetwork1_leaves_its_grads_none():
    model = create_model("wu2020")
    model.subnetwork1.requires_grad_(False)
    F.cross_entropy(model(X), torch.tensor([0, 1])).backward()
    assert all(p.grad is None for p in model.subnetwork1.parameters())
    assert all(p.grad is not None for p in model.subnetwork2.parameters())
    assert model.subnetwork3.weight.grad is not None


def test_hybrid_depends_on_the_clinical_input_and_exposes_its_mlp():
    torch.manual_seed(0)
    model = create_model("wu2020_hybrid").eval()
    with torch.no_grad():
        negative = model(X, torch.zeros(2, 1))
        positive = model(X, torch.ones(2))  # (B,) is accepted for one clinical variable
    assert negative.shape == positive.shape == (2, 2)
    assert not torch.allclose(negative, positive)
    assert model.predict_proba(X, torch.ones(2, 1)).shape == (2,)
    mlp = list(model.mlp_parameters())
    assert [tuple(p.shape) for p in mlp if p.dim() == 2] == [(6, 129), (4, 6), (2, 4), (2, 2)]
    assert {id(p) for p in mlp} == {id(p) for p in model.subnetwork4.parameters()}
    with pytest.raises(ValueError, match="clinical must be"):
        model(X, torch.zeros(2, 3))


def test_hybrid_starts_from_a_trained_dl_model():
    dl = create_model("wu2020")
    hybrid = create_model("wu2020_hybrid")
    hybrid.load_dl_state_dict(dl.state_dict())
    dl.eval(), hybrid.eval()
    with torch.no_grad():
        assert torch.equal(dl.features(X), hybrid.features(X))
    with pytest.raises(ValueError, match="not a matching wu2020"):
        hybrid.load_dl_state_dict(create_model("wu2020", backbone_blocks=4).state_dict())


@pytest.mark.parametrize("backbone", CLASSIFIER_BACKBONES)
@pytest.mark.parametrize("blocks", [3, None])
def test_backbone_variants(backbone, blocks):
    model = create_model("wu2020", backbone=backbone, backbone_blocks=blocks)
    trunk = model.subnetwork1
    with torch.no_grad():
        maps = trunk(X)
    assert maps.shape[1] == trunk.out_channels and model(X).shape == (2, 2)
    if blocks is None:  # the whole network: stride 32
        assert maps.shape[-2:] == (2, 2)


def test_bad_backbone_arguments_are_explained():
    with pytest.raises(ValueError, match="did you mean 'resnet18'"):
        create_model("wu2020", backbone="resnet19")
    with pytest.raises(ValueError, match="between 1 and 8"):
        create_model("wu2020", backbone_blocks=9)


# --- weights -------------------------------------------------------------------------------------------------------


def test_imagenet_without_the_cached_file_names_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        create_model("wu2020", weights="imagenet")
    message = str(info.value)
    assert "resnet18-f37072fd.pth" in message and str(tmp_path / "hub" / "checkpoints") in message
    assert "pretrained: false" in message


def test_imagenet_file_in_torchvisions_cache_is_used(tmp_path, monkeypatch, resnet18_file):
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / imagenet_file_names("resnet18")[0]).write_bytes(resnet18_file.read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    model = create_model("wu2020_hybrid", weights="imagenet")
    expected = torch.load(resnet18_file, weights_only=True)
    assert torch.equal(model.subnetwork1.layer2[0].conv2.weight, expected["layer2.0.conv2.weight"])


def test_weights_from_a_path_load_into_subnetwork1(resnet18_file):
    model = create_model("wu2020", weights=resnet18_file)
    expected = torch.load(resnet18_file, weights_only=True)
    loaded = model.subnetwork1.state_dict()
    assert loaded and all(torch.equal(v, expected[k]) for k, v in loaded.items())
    assert model.build_kwargs["weights"] == str(resnet18_file)


def test_old_files_without_batchnorm_counters_load(tmp_path, resnet18_file):
    # torchvision's resnet18-f37072fd.pth predates BatchNorm's num_batches_tracked buffer.
    state = {k: v for k, v in torch.load(resnet18_file, weights_only=True).items() if "num_batches" not in k}
    path = tmp_path / "old.pth"
    torch.save(state, path)
    assert torch.equal(create_model("wu2020", weights=path).subnetwork1.conv1.weight, state["conv1.weight"])


def test_light_backbone_weights_load(tmp_path):
    path = tmp_path / "mnv3s.pth"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), path)
    model = create_model("wu2020", weights=path, backbone="mobilenet_v3_small")
    expected = torch.load(path, weights_only=True)
    assert torch.equal(model.subnetwork1.features[3].block[0][0].weight, expected["features.3.block.0.0.weight"])


def test_wrong_weights_files_are_explained(tmp_path, resnet18_file):
    wrong = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), wrong)
    with pytest.raises(WeightsError, match=r"not a torchvision resnet18 state_dict: .*unexpected keys \(layer1\.2"):
        create_model("wu2020", weights=wrong)
    renamed = tmp_path / "renamed.pth"
    torch.save({"backbone." + k: v for k, v in torch.load(resnet18_file, weights_only=True).items()}, renamed)
    with pytest.raises(WeightsError, match=f"{renamed}.*missing keys"):
        create_model("wu2020", weights=renamed)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read weights file"):
        create_model("wu2020", weights=garbage)
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        create_model("wu2020", weights=tmp_path / "nowhere.pth")
