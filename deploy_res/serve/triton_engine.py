"""Reading an engine for Triton: its manifest, source ONNX graph I/O and validation verdict (:func:`read_engine`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from deploy_res.core.errors import DeployResError
from deploy_res.core.facts import check_facts
from deploy_res.core.manifest import manifest_path
from deploy_res.core.records import sha256_file
from deploy_res.core.manifest import read_manifest

# ONNX TensorProto element types -> Triton data types (model_config.proto DataType).
TRITON_TYPES = {1: "TYPE_FP32", 2: "TYPE_UINT8", 3: "TYPE_INT8", 4: "TYPE_UINT16", 5: "TYPE_INT16", 6: "TYPE_INT32",
                7: "TYPE_INT64", 8: "TYPE_STRING", 9: "TYPE_BOOL", 10: "TYPE_FP16", 11: "TYPE_FP64", 12: "TYPE_UINT32",
                13: "TYPE_UINT64", 16: "TYPE_BF16"}
_GPU_BACKENDS = ("tensorrt",)


@dataclass(frozen=True)
class Tensor:
    """A graph input or output as Triton sees it: name, ONNX element type, shape (``None`` = dynamic)."""

    name: str
    elem_type: int
    shape: tuple

    @property
    def triton_type(self) -> str:
        try:
            return TRITON_TYPES[self.elem_type]
        except KeyError:
            raise DeployResError(f"tensor {self.name!r} has ONNX element type {self.elem_type}, which Triton has no type for") from None


@dataclass
class Engine:
    """An engine, read and checked: its manifest, source ONNX, graph I/O and validation verdict."""

    path: Path
    sha256: str
    manifest: dict[str, Any]
    backend: str
    device: str
    precision: str
    source: Path
    inputs: list[Tensor]
    outputs: list[Tensor]
    onnx_info: dict[str, Any]
    validation: dict[str, Any]
    forced: Optional[str] = None



def _graph_io(onnx_path: Path) -> tuple[list[Tensor], list[Tensor], dict[str, Any]]:
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:
        raise DeployResError(f"{onnx_path} is not a readable ONNX file ({str(exc).splitlines()[0][:200]})") from None
    graph = model.graph
    initializers = {init.name for init in graph.initializer}

    def tensors(values) -> list[Tensor]:
        out = []
        for value in values:
            if value.name in initializers:
                continue
            kind = value.type.tensor_type
            shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in kind.shape.dim)
            out.append(Tensor(value.name, kind.elem_type, shape))
        return out

    external = sorted({entry.value for init in graph.initializer if init.data_location == onnx.TensorProto.EXTERNAL
                       for entry in init.external_data if entry.key == "location"})
    info = {"ir_version": model.ir_version, "opsets": {imp.domain or "ai.onnx": imp.version for imp in model.opset_import},
            "external_data": external}
    return tensors(graph.input), tensors(graph.output), info


def _validation(engine: Path, sha256: str, force: bool) -> tuple[dict[str, Any], Optional[str]]:
    """The validation verdict for ``engine``'s current bytes, as its lineage records it; refusing (one line) unless ``force``."""
    from deploy_res.validation.verdict import read_verdict

    verdict = read_verdict(engine, sha256)
    path = verdict.path
    if verdict.status == "unreadable":
        raise DeployResError(f"validation result {path} is unreadable; re-run `deployres validate {engine}`")
    problem = {
        "missing": f"{engine.name} has no validation result ({path.name}); run `deployres validate {engine}` first, or pass --force to serve it unvalidated",
        "stale": f"{path.name} validated other bytes than {engine.name} holds now; re-run `deployres validate {engine}`, or pass --force",
        "failed": f"{engine.name} FAILED validation ({'; '.join(verdict.failed) or 'see ' + str(path)}); refusing to serve it (pass --force to serve it anyway)",
        "inconclusive": f"{engine.name}'s validation was INCONCLUSIVE ({verdict.line}); validate it on more data, or pass --force to serve it unproven",
    }.get(verdict.status)
    if problem and not force:
        raise DeployResError(problem)
    return verdict.record(), problem


def read_engine(path: str | Path, force: bool = False) -> Engine:
    """Read and check one engine for serving; every problem a user can cause is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise DeployResError(f"engine {path} not found" + ("; it is a folder" if path.is_dir() else ""))
    manifest = read_manifest(path)
    if manifest is None:
        raise DeployResError(f"{path.name} has no manifest ({manifest_path(path).name}); deployres triton serves engines written by `deployres build-engine`")
    if manifest.get("stage") != "build-engine" or not manifest.get("engine", {}).get("backend"):
        raise DeployResError(f"{path.name} is a{'n' if str(manifest.get('stage', '?'))[0] in 'aeiou' else ''} {manifest.get('stage', 'unknown')} artifact, "
                             f"not an engine; build one with `deployres build-engine {path}`")
    sha256 = sha256_file(path)
    recorded = manifest.get("artifact", {}).get("sha256")
    if recorded and recorded != sha256:
        raise DeployResError(f"{path.name} changed since its manifest was written (sha256 differs); rebuild it with `deployres build-engine`")
    engine = manifest["engine"]
    source = Path(manifest.get("source", {}).get("path", ""))
    if not source.is_file():
        raise DeployResError(f"the source ONNX {source} that {path.name} was built from is gone; the repository needs its graph "
                             "(names, dims, types); rebuild the engine")
    if manifest["source"].get("sha256") and sha256_file(source) != manifest["source"]["sha256"]:
        raise DeployResError(f"{source.name} changed after {path.name} was built from it; rebuild the engine")
    inputs, outputs, info = _graph_io(source)
    if not inputs or not outputs:
        raise DeployResError(f"{source.name} has no graph inputs or outputs")
    validation, problem = _validation(path, sha256, force)
    check_facts(path, manifest)  # the precision and I/O the repository is written for are the engine file's own
    precision = manifest.get("settings", {}).get("precision") or engine.get("precision") or "fp32"
    return Engine(path, sha256, manifest, engine["backend"], engine.get("device", "cuda" if engine["backend"] in _GPU_BACKENDS else "cpu"),
                  precision, source, inputs, outputs, info, validation, problem)


# --------------------------------------------------------------------------- config pieces
