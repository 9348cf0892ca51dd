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
    state = load_model("resnet18", num_classes=10).module.state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 5, 5)  # a backbone mismatch is refused even beside a resized head
    torch.save(state, path)
    with pytest.raises(DeployResError, match=r"conv1.weight has shape \(64, 3, 5, 5\), model expects \(64, 3, 7, 7\)"):
        load_model("resnet18", weights=path)


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a pickle")
    with pytest.raises(DeployResError, match="junk.pt is not a PyTorch checkpoint"):
        load_model("resnet18", weights=path)
    torch.save({"epoch": 1}, path)
    with pytest.raises(DeployResError, match="holds no state dict"):
        extract_state_dict(torch.load(path, weights_only=True), path)


def _old_style(state, version=1):
    """``state`` as a PyTorch < 0.4.1 checkpoint: no num_batches_tracked, BatchNorm metadata version ``version``."""
    from collections import OrderedDict

    old = OrderedDict((k, v) for k, v in state.items() if not k.endswith("num_batches_tracked"))
    old._metadata = OrderedDict((k, {**v, "version": version} if "bn" in k or k.endswith("downsample.1") else dict(v))
                                for k, v in state._metadata.items())
    return old


@pytest.mark.parametrize("form", ["bn_version_1", "no_metadata", "dataparallel_bn_version_1", "scalar_as_1_element"])
def test_legacy_checkpoints_pytorch_accepts_load(tmp_path, form):
    source = load_model("resnet18", init_seed=3).module
    state = source.state_dict()
    if form == "bn_version_1":
        state = _old_style(state)
    elif form == "no_metadata":
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # a plain dict has no _metadata
    elif form == "dataparallel_bn_version_1":
        old = _old_style(state)
        state = type(old)((f"module.{k}", v) for k, v in old.items())
        state._metadata = type(old._metadata)((f"module.{k}" if k else "module", v) for k, v in old._metadata.items())
        state = {"state_dict": state, "epoch": 90}
    else:  # PyTorch 0.3 saved 0-d tensors as 1-element tensors
        state["bn1.num_batches_tracked"] = torch.tensor([7])
    path = tmp_path / "old.pt"
    torch.save(state, path)
    # the rule: deployres accepts what PyTorch's strict load accepts
    torch.nn.Module.load_state_dict(load_model("resnet18").module, extract_state_dict(torch.load(path, weights_only=True)), strict=True)
    loaded = load_model("resnet18", weights=path).module
    for key, value in source.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.parametrize("dataparallel", [False, True])
def test_missing_num_batches_tracked_from_a_new_pytorch_is_refused_like_pytorch(tmp_path, dataparallel):
    state = _old_style(load_model("resnet18").module.state_dict(), version=2)  # metadata says: saved with the buffer
    if dataparallel:
        meta = state._metadata
        state = type(state)((f"module.{k}", v) for k, v in state.items())
        state._metadata = type(meta)((f"module.{k}" if k else "module", v) for k, v in meta.items())
    path = tmp_path / "new.pt"
    torch.save(state, path)
    with pytest.raises(RuntimeError, match="Missing key"):
        load_model("resnet18").module.load_state_dict(extract_state_dict(torch.load(path, weights_only=True)), strict=True)
    with pytest.raises(DeployResError, match=r"^weights new.pt do not fit the model: keys 20 missing \(first: bn1.num_batches_tracked\)$"):
        load_model("resnet18", weights=path)


def test_one_element_tensor_for_a_vector_is_still_a_shape_error(tmp_path):
    state = load_model("resnet18").module.state_dict()
    state["fc.bias"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(DeployResError, match=r"fc.bias has shape \(1,\), model expects \(1000,\)"):
        load_model("resnet18", weights=path)
