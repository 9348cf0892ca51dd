"""Model resolution and checkpoint loading."""

from __future__ import annotations

import pytest
import torch

from deploy_res.core.errors import DeployResError
from deploy_res.loading import extract_state_dict, load_model


def test_zoo_name_builds_eval_model():
    loaded = load_model("resnet18")
    assert loaded.zoo and loaded.family == "resnet" and not loaded.module.training
    assert loaded.preprocessing.input_size == (3, 224, 224)


def test_unknown_name_suggests_closest():
    with pytest.raises(DeployResError, match=r"unknown model 'resnet5'.*resnet50"):
        load_model("resnet5")


def test_factory_path_imports_any_module():
    loaded = load_model("deploy_res.models.resnet:resnet18", num_classes=7)
    assert not loaded.zoo
    assert loaded.module.fc.out_features == 7


@pytest.mark.parametrize(
    "source, message",
    [
        ("no_such_pkg.mod:make", "cannot import 'no_such_pkg.mod'"),
        ("deploy_res.models.resnet:nope", "has no attribute 'nope'"),
        ("deploy_res.models.resnet:conv1x1", "failed: TypeError"),
        ("deploy_res.models.registry:list_models", "returned list, not a torch.nn.Module"),
        ("deploy_res.models.resnet:IMAGENET", "has no attribute"),
    ],
)
def test_bad_factory_is_one_line(source, message):
    with pytest.raises(DeployResError, match=message) as info:
        load_model(source)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("wrap", [lambda s: s, lambda s: {"state_dict": s}, lambda s: {"model": s, "epoch": 3},
                                  lambda s: {"state_dict": {f"module.{k}": v for k, v in s.items()}}])
def test_checkpoint_wrappers_and_dataparallel_prefix(tmp_path, wrap):
    source = load_model("resnet18").module
    path = tmp_path / "ckpt.pt"
    torch.save(wrap(source.state_dict()), path)
    loaded = load_model("resnet18", weights=path)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.module.state_dict()[key], value)


def test_checkpoint_that_does_not_fit_names_keys(tmp_path):
    state = load_model("resnet18").module.state_dict()
    state.pop("fc.bias")
    state["head.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(DeployResError, match=r"1 missing \(first: fc.bias\); 1 unexpected \(first: head.weight\)"):
        load_model("resnet18", weights=path)


def test_checkpoint_with_wrong_shape(tmp_path):
    path = tmp_path / "bad.pt"
    torch.save(load_model("resnet18", num_classes=10).module.state_dict(), path)
    with pytest.raises(DeployResError, match=r"fc.weight has shape \(10, 512\), model expects \(1000, 512\)"):
        load_model("resnet18", weights=path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a pickle")
    with pytest.raises(DeployResError, match="cannot read weights"):
        load_model("resnet18", weights=path)
    torch.save({"epoch": 1}, path)
    with pytest.raises(DeployResError, match="holds no state dict"):
        extract_state_dict(torch.load(path, weights_only=True), path)
