"""The manifest beside each artifact: the :class:`Manifest` type, reading and writing it, and its lineage.

Every pipeline stage reads an artifact and writes one, with a manifest
``<artifact>.json`` beside it that records what went in (path, sha256), the
settings, the library versions and the numerical check the stage ran.
:class:`Manifest` is the one place that knows how each concept is spelled
(parent, precision, backend, model, preprocessing, input/output); the atomic
writing of an artifact together with its manifest is :func:`deploy_res.core.artifact.write_artifact`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from deploy_res.core.errors import DeployResError
from deploy_res.core.files import write_json_atomic
from deploy_res.core.records import file_record, library_versions, verify_record

MANIFEST_SUFFIX = ".json"
SCHEMA_VERSION = 3
"""Manifest schema: 2 adds ``parent`` (the file this one was made from) to every stage's manifest; 3 names a precision
ONNX's ``settings.layout`` (INT8's Q/DQ layout) and ``settings.backend`` (FP16's) where 1 and 2 said ``settings.target``.
:class:`Manifest` reads all three (nothing reads a precision manifest's settings)."""


def manifest_path(artifact: str | os.PathLike) -> Path:
    """The manifest beside an artifact: ``model.onnx`` -> ``model.onnx.json``."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + MANIFEST_SUFFIX)


def manifest_record(artifact: Path, stage: str, body: dict[str, Any], name_as: Optional[Path] = None) -> dict[str, Any]:
    """The manifest of the file at ``artifact``, naming it ``name_as`` (its final place) when given."""
    record = file_record(artifact)
    if name_as is not None:
        record["path"] = str(Path(name_as).absolute())
    parent = body.get("parent") or body.get("source") or (body.get("inputs") or {}).get("onnx")
    return {"schema_version": SCHEMA_VERSION, "stage": stage, "artifact": record, "versions": library_versions(),
            **({"parent": parent} if isinstance(parent, dict) else {}), **body}


def write_manifest(artifact: str | os.PathLike, stage: str, body: dict[str, Any]) -> Path:
    """Write the manifest of ``artifact`` for pipeline ``stage``; return its path.

    The manifest always holds the schema version, the stage, the artifact's own
    file record and the library versions; ``body`` adds the stage's inputs,
    settings and checks. A stage that writes the artifact too uses
    :func:`write_artifact`, which places both as one unit.
    """
    path = manifest_path(artifact)
    write_json_atomic(path, manifest_record(Path(artifact), stage, body))
    return path


class Manifest(dict):
    """The manifest beside an artifact: the JSON object as written, plus the vocabulary every stage reads.

    It stays a plain ``dict`` (what ``json`` gives, what stages extend), so
    fields are read as always; the properties below are the one place that
    knows how each concept is spelled, in this schema version and the older
    one (version 1 spelled the parent link ``inputs.onnx`` in most stages and
    ``source`` in engine manifests; version 2 writes ``parent`` in every one).
    """

    path: Optional[Path] = None
    """The manifest file this was read from (None when built in memory)."""

    @property
    def stage(self) -> Optional[str]:
        return self.get("stage")

    @property
    def parent(self) -> Optional[dict[str, Any]]:
        """File record (``path``, ``sha256``, ``bytes``) of the file this artifact was made from, or None (the export)."""
        record = self.get("parent") or self.get("source") or (self.get("inputs") or {}).get("onnx")
        return record if isinstance(record, dict) and record.get("path") else None

    def parent_manifest(self) -> Optional["Manifest"]:
        """The parent's manifest (None at the start of the chain, or where the parent has none)."""
        parent = self.parent
        return read_manifest(parent["path"]) if parent and Path(parent["path"]).is_file() else None

    def ancestors(self, limit: int = 16) -> Iterator["Manifest"]:
        """This manifest, then its parent's, and so on back to the export (at most ``limit``)."""
        manifest: Optional[Manifest] = self
        for _ in range(limit):
            if manifest is None:
                return
            yield manifest
            manifest = manifest.parent_manifest()

    @property
    def precision(self) -> Optional[str]:
        """fp32 / bf16 / fp16 / int8 as the stage recorded it (settings, else the engine block); None if unrecorded."""
        for value in ((self.get("settings") or {}).get("precision"), (self.get("engine") or {}).get("precision")):
            if value:
                return str(value)
        return None

    @property
    def backend(self) -> Optional[str]:
        """The engine backend (``onnxruntime``, ``openvino``, ``tensorrt``) of an engine manifest, else None."""
        return (self.get("engine") or {}).get("backend") or None

    @property
    def model(self) -> dict[str, Any]:
        """The PyTorch original: ``source`` (zoo name or module:factory), weights, seed ({} when unknown)."""
        return self.get("model") or {}

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.get("preprocessing") or {}

    @property
    def input(self) -> dict[str, Any]:
        return self.get("input") or {}

    @property
    def output(self) -> dict[str, Any]:
        return self.get("output") or {}

    def verify(self, path: str | os.PathLike, remedy: str = "re-run the stage that wrote it") -> Path:
        """``path`` if it is the very file this manifest records, else a one-line error."""
        return verify_record(path, self.get("artifact"), self.stage or "artifact", remedy)


def read_manifest(artifact: str | os.PathLike, required: bool = False) -> Manifest | None:
    """Read the manifest beside ``artifact``; ``None`` if absent (an error if ``required``)."""
    path = manifest_path(artifact)
    if not path.exists():
        if required:
            raise DeployResError(f"no manifest {path.name} beside {artifact}; export the model with `deployres export` or pass the options it would hold")
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, TypeError, ValueError) as exc:
        raise DeployResError(f"manifest {path} is unreadable ({exc}); re-run the stage that wrote it") from None
    if not isinstance(record, dict):
        raise DeployResError(f"manifest {path} holds a JSON {type(record).__name__}, not an object; re-run the stage that wrote it")
    manifest = Manifest(record)
    manifest.path = path
    return manifest


def precision_of(artifact: str | os.PathLike, manifest: Optional[Mapping[str, Any]] = None) -> str:
    """fp32 / bf16 / fp16 / int8: as its manifest recorded it, once the file itself agrees
    (:func:`deploy_res.core.facts.check_facts`: a manifest the file contradicts is a one-line error, never a verdict's
    precision); else from the ONNX itself (Q/DQ nodes, FP16 tensors) or an engine file's name; fp32 otherwise.
    A file that is empty or not readable ONNX is a one-line error."""
    from deploy_res.core.facts import FLOAT_IR, check_facts, read_facts

    artifact = Path(artifact)
    manifest = manifest if manifest is not None else read_manifest(artifact) if artifact.is_file() else None
    precision = manifest.precision if isinstance(manifest, Manifest) else None
    if precision:
        if artifact.is_file():
            check_facts(artifact, manifest)
        return precision
    facts = read_facts(artifact) if artifact.suffix in (".onnx", ".xml") else None
    if facts is not None and facts.precision != FLOAT_IR:
        return facts.precision
    # an engine without a manifest: its name is all there is (resnet50.int8.plan)
    return next((p for p in ("int8", "fp16", "bf16") if p in artifact.name.lower().split(".")), "fp32")


LINEAGE_KEYS = ("model", "input", "output", "batch_range", "preprocessing")
"""Manifest fields every later stage carries forward, so any artifact leads back to its PyTorch original."""


def lineage(manifest: dict[str, Any] | None) -> dict[str, Any]:
    """The fields of ``manifest`` that a stage's output inherits (empty when there is none)."""
    return {key: manifest[key] for key in LINEAGE_KEYS if manifest and key in manifest}
