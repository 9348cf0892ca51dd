"""INT8 calibration: activation ranges over real data, with a cache that is never stale.

The ranges come from ONNX Runtime's own calibrators
(``onnxruntime.quantization.calibrate.create_calibrator``; MinMax, Entropy,
Percentile), fed one batch at a time so a progress bar can follow and memory
stays bounded. Every float tensor of the graph gets a ``(low, high)`` range,
which is what both Q/DQ emitters (:mod:`deploy_res.engines.precision.qdq`) need: the
``tensorrt`` one reads ``max(|low|, |high|)`` of the tensors it quantises,
the ``onnxruntime`` one hands the table to ``quantize_static``.

The entropy threshold search is ONNX Runtime's algorithm
(``HistogramCollector.get_entropy_threshold``: KL divergence between the
clipped histogram and its quantised version, TensorRT's "entropy calibration
2") evaluated with numpy over all candidate thresholds at once instead of in
Python loops: the same thresholds (up to float32 ties between KL scores) about
10x faster (ORT's loop takes 2-3 s per tensor, minutes for ResNet-50). The histograms are ORT's.

Cache: ``calibrate(..., cache_path=...)`` stores the ranges as JSON together
with their key: the model's sha256, the method and its resolved options, the
sha256 of the input arrays (so file names, preprocessing and sample choice
all count), the sample count, the batch size and the library versions. The
cache checks itself: it carries a sha256 over its own content (key, method,
options, ranges), and every range must be finite with ``low <= high``. A
cache is used only when every key field matches, its digest holds and its
ranges are sound; otherwise (or when it is unreadable) the ranges are
recomputed and the file is replaced atomically, and ``Ranges.replaced`` says
why the old file was not used. Freshly computed ranges that are not finite
(NaN or Inf in the calibration data) are an error, never a Q/DQ scale.

Default method, chosen by measurement: ``percentile`` (99.999, ORT's own
default percentile). ResNet-50, random weights with BatchNorm re-estimated
on scikit-image crops, calibrated on 64 crops, mean logit cosine vs FP32 on
64 other crops (``onnxruntime`` emitter / ``tensorrt`` emitter):

====================== ================= ========================== ===============
method                 torchvision init  residual-branch gain 0.5   time (64 crops)
====================== ================= ========================== ===============
minmax                 0.9828 / 0.9833   0.9900 / 0.9910            11 s
percentile 99.999      0.9835 / 0.9849   0.9910 / 0.9930            27 s
percentile 99.99       0.9830 / 0.9850   0.9907 / 0.9935
percentile 99.9        0.9764 / 0.9813
entropy (2048/255)     0.8605 / 0.8578   0.8334 / 0.8339            66 s
====================== ================= ========================== ===============

Percentile is best or tied-best for both emitters. Entropy is far worse on
these networks: ORT's KL search runs on signed histograms in which half of
every post-ReLU tensor sits in the zero bin, so it picks small thresholds
and clips the few large activations a ReLU network depends on. (Why the
first column stays below 0.99 whatever the method: see
``tests/precision/test_resnet50_int8.py``.)
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx

from deploy_res.core.files import library_versions, sha256_file, write_json_atomic
from deploy_res.core.errors import DeployResError

METHODS = ("minmax", "entropy", "percentile")

# Measured (module docstring): best or tied-best cosine for both emitters on ResNet-50.
DEFAULT_METHOD = "percentile"

# Options per method; callers may override any of them. Every resolved option is part of the cache key.
#  - entropy: ORT's KL search needs many more histogram bins than quantised bins to have
#    candidates at all (ORT's create_calibrator default of 128/128 gives exactly one
#    candidate: the full range, i.e. MinMax). 2048 bins over [-t, t] and 255 quantised
#    bins simulate int8's 255 levels, as TensorRT's entropy calibrator does on |x|.
#  - percentile: ORT's default 99.999 on a 2048-bin histogram, cut on both sides
#    (symmetric=False keeps the real low/high so uint8 ranges of ReLU outputs start at 0).
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "minmax": {},
    "entropy": {"num_bins": 2048, "num_quantized_bins": 255},
    "percentile": {"num_bins": 2048, "percentile": 99.999, "symmetric": False},
}
DEFAULT_BATCH_SIZE = 8
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


# --------------------------------------------------------------------------- keys and cache


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


def resolve_options(method: str, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The method's default options updated with ``options``; unknown methods/options are errors."""
    if method not in METHODS:
        raise DeployResError(f"unknown calibration method {method!r}; use one of {', '.join(METHODS)}")
    resolved = dict(DEFAULT_OPTIONS[method])
    for name, value in (options or {}).items():
        if name not in resolved and not (method == "minmax" and name in ("moving_average", "averaging_constant", "symmetric")):
            raise DeployResError(f"calibration method {method} has no option {name!r}; it takes {', '.join(resolved) or 'none'}")
        resolved[name] = value
    return resolved


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


def _read_cache(path: Path, key: Mapping[str, Any]) -> tuple[Ranges | None, str]:
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
    ranges, _ = _read_cache(Path(cache_path), key)
    if ranges is not None:
        ranges.from_cache = True
    return ranges


def explain_cache_miss(cache_path: str | os.PathLike, key: Mapping[str, Any]) -> str:
    """Why ``cache_path`` cannot serve ``key``: 'absent', 'unreadable', the key fields that differ, a failed
    digest or an unusable range; 'matches' when it can."""
    return _read_cache(Path(cache_path), key)[1]


# --------------------------------------------------------------------------- calibration


class _OneBatch:
    """A CalibrationDataReader that yields a single feed once."""

    def __init__(self, feed: dict[str, np.ndarray]) -> None:
        self.feed: dict[str, np.ndarray] | None = feed

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed, self.feed = self.feed, None
        return feed


def _single_input(model: onnx.ModelProto) -> tuple[str, list[int | None], int]:
    initializers = {init.name for init in model.graph.initializer}
    inputs = [vi for vi in model.graph.input if vi.name not in initializers]
    if len(inputs) != 1:
        raise DeployResError(f"calibration supports models with one input; this one has {len(inputs)} ({', '.join(v.name for v in inputs)})")
    tensor_type = inputs[0].type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    return inputs[0].name, dims, tensor_type.elem_type


def _load_onnx(model: str | os.PathLike | onnx.ModelProto) -> tuple[onnx.ModelProto, str, Path | None]:
    """(proto without weights loaded lazily is not needed here, sha256, path or None)."""
    if isinstance(model, onnx.ModelProto):
        return model, hashlib.sha256(model.SerializeToString()).hexdigest(), None
    path = Path(model)
    if not path.is_file():
        raise DeployResError(f"ONNX model {path} does not exist; export it first (deployres export)")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends
        raise DeployResError(f"{path} is not a readable ONNX model ({type(exc).__name__}); re-export it") from None
    return proto, sha256_file(path), path


def calibrate(
    model: str | os.PathLike | onnx.ModelProto,
    data: np.ndarray,
    method: str = DEFAULT_METHOD,
    options: Mapping[str, Any] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    cache_path: str | os.PathLike | None = None,
    quiet: bool = False,
    console: Any = None,
) -> Ranges:
    """Activation ranges of every float tensor of ``model`` over ``data``.

    ``model``: an ONNX file (or ModelProto) with one input. ``data``: float
    samples (N, ...) matching that input; run in batches of ``batch_size``
    (default 8; the model's batch axis must then be dynamic or 8). ``method``:
    ``minmax``, ``entropy`` or ``percentile`` (default :data:`DEFAULT_METHOD`,
    options :data:`DEFAULT_OPTIONS` updated by ``options``). ``cache_path``
    (default None: no cache): JSON file of the ranges, reused only when its key
    matches (see module docstring), else rebuilt and replaced atomically.
    ``quiet`` (default False) hides the rich progress bar; ``console`` is an
    optional ``rich.console.Console`` to draw it on.
    """
    resolved = resolve_options(method, options)
    proto, model_sha, model_path = _load_onnx(model)
    input_name, dims, elem_type = _single_input(proto)
    data = np.asarray(data)
    expected_dtype = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    if data.dtype != expected_dtype:
        raise DeployResError(f"calibration data is {data.dtype}; the model input {input_name!r} expects {expected_dtype.name}")
    if data.ndim != len(dims) or any(d is not None and d != s for d, s in zip(dims[1:], data.shape[1:])):
        want = ", ".join("?" if d is None else str(d) for d in dims)
        raise DeployResError(f"calibration data has shape {tuple(data.shape)}; the model input {input_name!r} expects ({want})")
    if data.shape[0] == 0:
        raise DeployResError("calibration data holds no samples; pass at least one")
    if dims and dims[0] is not None:
        batch_size = dims[0]
        if data.shape[0] % batch_size:
            raise DeployResError(f"the model's batch size is fixed at {batch_size} and {data.shape[0]} samples do not divide into it; export with a dynamic batch")
    key = cache_key(model_sha, method, resolved, data_fingerprint(data), data.shape[0], batch_size)
    replaced = None
    if cache_path is not None:
        cached, why = _read_cache(Path(cache_path), key)
        if cached is not None:
            cached.from_cache = True
            return cached
        replaced = None if why == "absent" else why
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="deployres-calib-") as tmp:
        tensors = _run_calibrator(proto, model_path, Path(tmp), input_name, data, method, resolved, batch_size, quiet, console)
    problem = range_problem(tensors)
    if problem:
        raise DeployResError(f"calibration gave unusable ranges: {problem}; the calibration data must be finite (no NaN or Inf)")
    ranges = Ranges(method, resolved, tensors, key, False, time.perf_counter() - start, replaced)
    if cache_path is not None:
        Path(cache_path).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(cache_path, ranges.to_json())
    return ranges


def _stage_model(proto: onnx.ModelProto, model_path: Path | None, tmp: Path) -> Path:
    """A path to the model inside ``tmp``: ORT writes scratch files beside the model it calibrates."""
    staged = tmp / "model.onnx"
    if model_path is None:
        onnx.save(proto, str(staged))
        return staged
    external = [init for init in proto.graph.initializer if init.data_location == onnx.TensorProto.EXTERNAL]
    if external:  # keep relative external-data paths valid: load fully, save as one file
        onnx.save(onnx.load(str(model_path)), str(staged))
        return staged
    try:
        os.symlink(model_path.resolve(), staged)
    except OSError:
        shutil.copyfile(model_path, staged)
    return staged


def _run_calibrator(
    proto: onnx.ModelProto,
    model_path: Path | None,
    tmp: Path,
    input_name: str,
    data: np.ndarray,
    method: str,
    options: dict[str, Any],
    batch_size: int,
    quiet: bool,
    console: Any,
) -> dict[str, tuple[float, float]]:
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    ort_method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}[method]
    staged = _stage_model(proto, model_path, tmp)
    # ORT's histogram code prints to stdout; keep the terminal to our progress bar.
    with contextlib.redirect_stdout(io.StringIO()):
        calibrator = create_calibrator(staged, None, augmented_model_path=str(tmp / "augmented.onnx"), calibrate_method=ort_method, extra_options=dict(options))
    total = data.shape[0]
    with _progress(quiet, console) as progress:
        task = progress.add_task(f"calibrating ({method})", total=total)
        for begin in range(0, total, batch_size):
            batch = np.ascontiguousarray(data[begin : begin + batch_size])
            with contextlib.redirect_stdout(io.StringIO()):
                calibrator.collect_data(_OneBatch({input_name: batch}))
            progress.update(task, advance=batch.shape[0])
        with contextlib.redirect_stdout(io.StringIO()):
            if method == "entropy":
                tensors = _entropy_ranges(calibrator.collector.histogram_dict, int(options["num_quantized_bins"]))
            else:
                tensors = {name: _pair(value) for name, value in calibrator.compute_data().items()}
    return tensors


def _pair(value: Any) -> tuple[float, float]:
    low, high = value.range_value if hasattr(value, "range_value") else value[:2]
    return float(np.asarray(low).item()), float(np.asarray(high).item())


@contextlib.contextmanager
def _progress(quiet: bool, console: Any):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("samples"), TimeElapsedColumn(),
        console=console, disable=quiet, transient=False,
    )
    with progress:
        yield progress


# --------------------------------------------------------------------------- entropy (vectorised ORT algorithm)


def _entropy_ranges(histograms: Mapping[str, tuple], num_quantized_bins: int) -> dict[str, tuple[float, float]]:
    return {name: entropy_threshold(hist[0], hist[1], float(hist[2]), float(hist[3]), num_quantized_bins) for name, hist in histograms.items()}


def entropy_threshold(hist: np.ndarray, edges: np.ndarray, low: float, high: float, num_quantized_bins: int) -> tuple[float, float]:
    """ORT's ``HistogramCollector.get_entropy_threshold``, vectorised; returns (low, high).

    Candidate ``i`` keeps the ``2i+1`` bins around the zero bin, folds the
    outliers into its end bins (``p``), merges the kept bins into
    ``num_quantized_bins`` chunks and spreads each chunk's count back over its
    non-empty bins (``q``, truncated to integers as in ORT), smooths both
    (ORT's ``smooth_distribution``) and scores KL(p || q); the lowest KL
    wins, clipped to the observed [low, high]. All candidates are rows of one
    zero-padded matrix, so the search costs a few numpy passes.
    """
    hist = np.asarray(hist).astype(np.int64)
    num_bins = hist.size
    zero_bin = num_bins // 2
    nq = int(num_quantized_bins)
    half_q = nq // 2
    if zero_bin < half_q:
        return low, high
    cums = np.concatenate([[0], np.cumsum(hist)])
    cand = np.arange(half_q, zero_bin + 1)
    starts = zero_bin - cand
    ends = np.minimum(zero_bin + cand + 1, num_bins)
    lengths = ends - starts
    width = int(lengths.max())
    pos = np.arange(width)[None, :]
    inside = pos < lengths[:, None]  # (C, W) mask of each candidate's bins
    sliced = np.where(inside, hist[np.minimum(starts[:, None] + pos, num_bins - 1)], 0)
    p = sliced.copy()
    rows = np.arange(cand.size)
    p[rows, 0] += cums[starts]
    p[rows, lengths - 1] += cums[-1] - cums[ends]
    merged = lengths // nq  # >= 1 for every candidate since lengths >= 2 * half_q + 1 >= nq - 1 ... guarded below
    merged = np.maximum(merged, 1)
    body = pos < (merged * nq)[:, None]
    chunk = np.minimum(pos // merged[:, None], nq - 1)
    chunk_edges = np.arange(nq + 1)[None, :] * merged[:, None]  # (C, nq+1) positions
    slice_cums = np.concatenate([np.zeros((cand.size, 1), np.int64), np.cumsum(sliced, axis=1)], axis=1)
    quantized = np.diff(np.take_along_axis(slice_cums, np.minimum(chunk_edges, width), axis=1), axis=1)
    quantized[:, -1] += slice_cums[rows, lengths] - slice_cums[rows, np.minimum(merged * nq, lengths)]
    nonzero_cums = np.concatenate([np.zeros((cand.size, 1), np.int64), np.cumsum((p != 0) & inside, axis=1)], axis=1)
    norms = np.diff(np.take_along_axis(nonzero_cums, np.minimum(chunk_edges, width), axis=1), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.where(norms > 0, quantized / np.maximum(norms, 1), 0).astype(np.int64)
    q = np.where(body & inside, np.take_along_axis(spread, chunk, axis=1), 0)
    short = (lengths // nq) == 0  # ORT: no merged bins -> q all zero -> KL inf
    p_s, p_ok = _smooth(p, inside)
    q_s, q_ok = _smooth(q, inside)
    pn = p_s / p_s.sum(axis=1, keepdims=True, dtype=np.float32)
    qn = q_s / q_s.sum(axis=1, keepdims=True, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):  # ORT's rel_entr: inf unless both > 0
        terms = np.where((pn > 0) & (qn > 0), pn * np.log(pn / qn), np.float32(np.inf))
    terms = np.where(inside, terms, np.float32(0))
    kl = terms.sum(axis=1, dtype=np.float32)
    kl[~(p_ok & q_ok) | short] = np.inf
    best = int(np.argmin(kl))
    return max(float(edges[starts[best]]), low), min(float(edges[ends[best]]), high)


def _smooth(p: np.ndarray, inside: np.ndarray, eps: float = 0.0001) -> tuple[np.ndarray, np.ndarray]:
    """ORT's ``smooth_distribution`` on each row's ``inside`` entries; (smoothed, row has a non-zero)."""
    zeros = (p == 0) & inside
    n_zeros = zeros.sum(axis=1, keepdims=True)
    n_nonzeros = inside.sum(axis=1, keepdims=True) - n_zeros
    eps1 = (eps * n_zeros / np.maximum(n_nonzeros, 1)).astype(np.float32)
    smoothed = p.astype(np.float32) + np.where(zeros, np.float32(eps), -eps1)
    return np.where(inside, smoothed, np.float32(0)), n_nonzeros[:, 0] > 0
