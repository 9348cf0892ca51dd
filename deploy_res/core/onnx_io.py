"""Reading and writing ONNX files: one place for atomic saves and the 2 GB protobuf limit."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import onnx

from deploy_res.core.files import atomic_path
from deploy_res.core.errors import DeployResError

PROTOBUF_LIMIT = 2_000_000_000
"""protobuf cannot serialise a message past 2 GB: larger models keep their weights in ``<name>.data``."""

ModelLike = Union[onnx.ModelProto, str, os.PathLike]


def first_line(exc: BaseException) -> str:
    """An exception as one short line."""
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:300]


def proto_bytes(model: onnx.ModelProto) -> int:
    """Size of the serialised model, counting initializer payloads without serialising."""
    return sum(len(t.raw_data) + 4 * len(t.float_data) + 8 * len(t.int64_data) for t in model.graph.initializer) + len(model.graph.node) * 256


def load_onnx(model_or_path: ModelLike) -> onnx.ModelProto:
    """The model itself, or the ONNX file at a path (with its external data); one-line error if unreadable."""
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    path = Path(model_or_path)
    if not path.is_file():
        raise DeployResError(f"no ONNX file at {path}; pass the path of a .onnx model")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf and onnx raise several types
        raise DeployResError(f"cannot read {path} as ONNX ({first_line(exc)}); is it an ONNX model?") from None


def save_onnx(model: onnx.ModelProto, path: Union[str, os.PathLike]) -> Path:
    """Write ``model`` atomically; weights go to ``<name>.data`` beside it only past 2 GB."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if proto_bytes(model) < PROTOBUF_LIMIT:
            onnx.save_model(model, str(tmp))
        else:
            # The weights go to <name>.data beside the model, written under its final name (only the
            # .onnx is atomic). onnx moves the data out of the proto it saves, so save a copy.
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            onnx.save_model(copy, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True, location=path.name + ".data", size_threshold=1024)
    return path
