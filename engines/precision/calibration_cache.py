"""The calibration cache: the :class:`Ranges` type and the JSON file that keeps them, never stale.

``calibrate(..., cache_path=...)`` (:mod:`deploy_res.engines.precision.calibration`)
stores the ranges as JSON together with their key (:func:`cache_key`): the
model's sha256, the method and its resolved options, the sha256 of the input
arrays (so file names, preprocessing and sample choice all count), the sample
count, the batch size and the library versions. The
cache checks itself: it carries a sha256 over its own content (key, method,
options, ranges), and every range must be finite with ``low <= high``. A
cache is used only when every key field matches, its digest holds and its
ranges are sound; otherwise (or when it is unreadable) the ranges are
recomputed and the file is replaced atomically, and ``Ranges.replaced`` says
why the old file was not used. Freshly computed ranges that are not finite
(NaN or Inf in the calibration data) are an error, never a Q/DQ scale
(:func:`range_problem` says which).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from deploy_res.core.files import write_json_atomic
from deploy_res.core.records import library_versions

CACHE_SCHEMA = 2  # 2: the cache carries a sha256 over its content
_KEY_PACKAGES = ("deployres", "onnx", "onnxruntime", "onnxruntime-gpu", "numpy")


@dataclass
class Ranges:
    """Calibrated activation ranges: ``tensors[name] = (low, high)`` in float.

    ``key`` holds what they were computed from (model hash, method, options,
    data hash, sample count, batch size, versions); ``from_cache`` says
    whether they were read from a cache file; ``seconds`` is the time the
    computation took (0 when cached).
    """

    method: str
    options: dict[str, Any]
    tensors: dict[str, tuple[float, float]]
    key: dict[str, Any] = field(default_factory=dict)
    from_cache: bool = False
    seconds: float = 0.0
    replaced: str | None = None
    """Why an existing cache file was not used (``differs in ...``, ``digest mismatch``...); None when none existed or it was used."""

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def __len__(self) -> int:
        return len(self.tensors)

    def amax(self, name: str) -> float:
        """The symmetric range bound ``max(|low|, |high|)`` of tensor ``name``."""
        low, high = self.tensors[name]
        return max(abs(low), abs(high))

    def to_json(self) -> dict[str, Any]:
        body = {
            "schema": CACHE_SCHEMA,
            "key": self.key,
            "method": self.method,
            "options": self.options,
            "ranges": {name: [low, high] for name, (low, high) in self.tensors.items()},
        }
        return {**body, "sha256": content_digest(body)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Ranges":
        tensors = {name: (float(pair[0]), float(pair[1])) for name, pair in data["ranges"].items()}
        return cls(str(data["method"]), dict(data["options"]), tensors, dict(data["key"]))

    def to_ort_tensors_data(self):
        """The ranges as ONNX Runtime's ``TensorsData`` (labelled MinMax: only low/high are carried)."""
        from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData

        return TensorsData(
            CalibrationMethod.MinMax,
            {name: TensorData(lowest=np.float32(low), highest=np.float32(high)) for name, (low, high) in self.tensors.items()},
        )


def data_fingerprint(arrays: np.ndarray) -> str:
    """sha256 over the arrays' dtype, shape and bytes (what the calibrator actually sees)."""
    arrays = np.ascontiguousarray(arrays)
    digest = hashlib.sha256(f"{arrays.dtype.str}{arrays.shape}".encode())
    digest.update(memoryview(arrays).cast("B"))
    return digest.hexdigest()


def content_digest(body: Mapping[str, Any]) -> str:
    """sha256 over a cache's content (everything but the digest itself), as canonical JSON."""
    content = {name: value for name, value in body.items() if name != "sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()).hexdigest()


def range_problem(tensors: Mapping[str, tuple[float, float]]) -> str | None:
    """The first range that cannot become a Q/DQ scale (not finite, or ``low > high``), described; None if all are sound."""
    for name, (low, high) in tensors.items():
        if not (np.isfinite(low) and np.isfinite(high)):
            return f"tensor {name!r} has a non-finite range ({low}, {high})"
        if low > high:
            return f"tensor {name!r} has an inverted range ({low}, {high})"
    return None


def cache_key(model_sha256: str, method: str, options: Mapping[str, Any], data_sha256: str, samples: int, batch_size: int) -> dict[str, Any]:
    """Everything the ranges depend on; a cache is reused only when this matches exactly."""
    versions = library_versions()
    return {
        "model_sha256": model_sha256,
        "method": method,
        "options": dict(sorted(options.items())),
        "data_sha256": data_sha256,
        "samples": int(samples),
        "batch_size": int(batch_size),
        "versions": {name: versions[name] for name in _KEY_PACKAGES if name in versions},
    }


def read_cache(path: Path, key: Mapping[str, Any]) -> tuple[Ranges | None, str]:
    """(ranges, "matches") when the cache at ``path`` can serve ``key``, else (None, why not)."""
    if not path.is_file():
        return None, "absent"
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            return None, "unreadable"
        if data.get("schema") != CACHE_SCHEMA:
            return None, f"has schema {data.get('schema')}, not {CACHE_SCHEMA}"
        cached, wanted = data.get("key") or {}, json.loads(json.dumps(dict(key)))
        differ = [name for name in wanted if not isinstance(cached, dict) or cached.get(name) != wanted[name]]
        if differ or cached != wanted:
            return None, "differs in " + (", ".join(differ) or "its key")
        if data.get("sha256") != content_digest(data):
            return None, "fails its sha256 check (edited or corrupted)"
        ranges = Ranges.from_json(data)
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None, "unreadable"
    problem = range_problem(ranges.tensors)
    if problem:
        return None, f"holds unusable ranges: {problem}"
    return ranges, "matches"


def load_cache(cache_path: str | os.PathLike, key: Mapping[str, Any]) -> Ranges | None:
    """The cached ranges when ``cache_path`` exists, is readable, its key equals ``key``, its digest holds and
    its ranges are finite with low <= high; else None."""
    ranges, _ = read_cache(Path(cache_path), key)
    if ranges is not None:
        ranges.from_cache = True
    return ranges


def explain_cache_miss(cache_path: str | os.PathLike, key: Mapping[str, Any]) -> str:
    """Why ``cache_path`` cannot serve ``key``: 'absent', 'unreadable', the key fields that differ, a failed
    digest or an unusable range; 'matches' when it can."""
    return read_cache(Path(cache_path), key)[1]


def write_cache(cache_path: str | os.PathLike, ranges: Ranges) -> None:
    """Write ``ranges`` (with their key and digest) to ``cache_path`` atomically, creating its folder."""
    Path(cache_path).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(cache_path, ranges.to_json())
