"""A real Triton server: the ``tritonserver`` that nvidia-pytriton bundles (Python backend only), on loopback.

The repository comes from ``deployres triton --python-backend --ensemble``; requests go over HTTP and
gRPC with tritonclient; outputs must equal the engine run in-process; concurrent requests must be
merged by dynamic batching (the server's own statistics say so); a JPEG goes through the ensemble.
The server is started once for the module, bounded in time, and stopped by its PID.
"""

from __future__ import annotations

import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from deploy_res.core.errors import DeployResError

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient is not installed (pip install 'deployres[triton]')")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient is not installed (pip install 'deployres[triton]')")

MODEL = "resnet18_fp32_onnxruntime"
QUEUE_DELAY_US = 200_000
"""Long enough that 8 requests sent at once land in one batch even on 2 busy cores."""


OPENVINO_MODEL = "resnet18_fp32_openvino"


@pytest.fixture(scope="module")
def openvino_engine(request):
    """The OpenVINO engine when openvino is installed, else ``None`` (its server test then skips)."""
    import importlib.util

    return request.getfixturevalue("served_openvino_engine") if importlib.util.find_spec("openvino") else None


@pytest.fixture(scope="module")
def server(served_engine, openvino_engine, tmp_path_factory):
    from deploy_res.serve import TritonSettings, triton
    from deploy_res.serve.server import start_server

    folder = tmp_path_factory.mktemp("triton")
    repo = folder / "repo"
    labels = folder / "labels.txt"
    labels.write_text("".join(f"class_{i}\n" for i in range(1000)))
    triton([served_engine], repo, TritonSettings(python_backend=True, ensemble=True, max_queue_delay_us=QUEUE_DELAY_US, labels=labels))
    if openvino_engine is not None:  # the same model as an OpenVINO engine in two streams, in the same server
        triton([openvino_engine], repo / OPENVINO_MODEL, TritonSettings(python_backend=True, max_queue_delay_us=0, threads=2, streams=2, cores=2))
        (repo / OPENVINO_MODEL / OPENVINO_MODEL).rename(repo / "ov.tmp")
        (repo / OPENVINO_MODEL).rmdir()
        (repo / "ov.tmp").rename(repo / OPENVINO_MODEL)
    try:
        running = start_server(repo, ready_timeout_s=180)
    except DeployResError as exc:  # e.g. glibc < 2.35, or the wheel absent: say why, do not fail
        pytest.skip(f"the bundled tritonserver cannot start here: {exc}")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def runner(served_engine):
    from deploy_res.engines import load_engine

    loaded = load_engine(served_engine)
    yield loaded
    loaded.close()


def _inputs(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, 64, 64)).astype(np.float32)


def test_http_and_grpc_equal_in_process(server, runner):
    x = _inputs(3)
    expected = runner.run({"input": x})["logits"]
    http = httpclient.InferenceServerClient(server.http_url)
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        assert http.is_model_ready(MODEL) and grpc.is_model_ready(MODEL)
        feed = httpclient.InferInput("input", list(x.shape), "FP32")
        feed.set_data_from_numpy(x)
        over_http = http.infer(MODEL, [feed]).as_numpy("logits")
        feed = grpcclient.InferInput("input", list(x.shape), "FP32")
        feed.set_data_from_numpy(x)
        over_grpc = grpc.infer(MODEL, [feed]).as_numpy("logits")
    finally:
        http.close()
        grpc.close()
    # Same engine, same batch, same thread count: the same numbers, bit for bit in practice.
    np.testing.assert_allclose(over_http, expected, rtol=0, atol=1e-5)
    np.testing.assert_allclose(over_grpc, expected, rtol=0, atol=1e-5)


def test_dynamic_batching_merges_concurrent_requests(server, runner):
    x = _inputs(8, seed=1)
    expected = runner.run({"input": x})["logits"]
    stats = httpclient.InferenceServerClient(server.http_url)
    before = stats.get_inference_statistics(MODEL)["model_stats"][0]

    def one(index: int) -> np.ndarray:
        client = httpclient.InferenceServerClient(server.http_url)
        try:
            feed = httpclient.InferInput("input", [1, 3, 64, 64], "FP32")
            feed.set_data_from_numpy(x[index:index + 1])
            return client.infer(MODEL, [feed]).as_numpy("logits")
        finally:
            client.close()

    with ThreadPoolExecutor(8) as pool:
        outputs = list(pool.map(one, range(8)))
    after = stats.get_inference_statistics(MODEL)["model_stats"][0]
    stats.close()
    np.testing.assert_allclose(np.concatenate(outputs), expected, rtol=0, atol=1e-4)
    inferences = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert inferences == 8
    assert executions < 8, f"8 concurrent requests ran as {executions} executions: dynamic batching merged nothing"
    sizes = {entry["batch_size"] for entry in after["batch_stats"]}
    assert max(sizes) > 1


def test_ensemble_classifies_a_jpeg(server, runner, served_engine):
    from PIL import Image

    from deploy_res.data.photos import sample_photo, sample_photo_names
    from deploy_res.data.preprocess import preprocess_image
    from deploy_res.models.registry import Preprocessing

    photo = sample_photo(sample_photo_names()[0])[:200, :300]  # a real photo, not square: resize and crop both act
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(photo, dtype=np.uint8)).convert("RGB").save(buffer, format="JPEG", quality=90)
    jpeg = buffer.getvalue()
    pre = Preprocessing.from_dict(json.loads(Path(str(served_engine) + ".json").read_text())["preprocessing"])
    with Image.open(io.BytesIO(jpeg)) as image:
        expected = runner.run({"input": preprocess_image(image, pre)[None]})["logits"]
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        data = np.frombuffer(jpeg, dtype=np.uint8)[None]
        feed = httpclient.InferInput("IMAGE", list(data.shape), "UINT8")
        feed.set_data_from_numpy(data)
        logits = client.infer(f"{MODEL}_ensemble", [feed]).as_numpy("logits")
        bad = np.frombuffer(b"not an image at all", dtype=np.uint8)[None]
        feed = httpclient.InferInput("IMAGE", list(bad.shape), "UINT8")
        feed.set_data_from_numpy(bad)
        with pytest.raises(Exception, match="not a decodable image"):
            client.infer(f"{MODEL}_ensemble", [feed])
    finally:
        client.close()
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-5)


def test_classification_with_labels(server, runner):
    """Triton's classification extension reads the label file deployres wrote: top classes by name, on the model and the ensemble."""
    x = _inputs(1, seed=7)
    top = np.argsort(-runner.run({"input": x})["logits"][0])[:3]
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        feed = httpclient.InferInput("input", list(x.shape), "FP32")
        feed.set_data_from_numpy(x)
        result = client.infer(MODEL, [feed], outputs=[httpclient.InferRequestedOutput("logits", class_count=3)])
        entries = [item.decode() if isinstance(item, bytes) else str(item) for item in result.as_numpy("logits").reshape(-1)]
    finally:
        client.close()
    # "score:index:label", best first
    assert [int(entry.split(":")[1]) for entry in entries] == [int(i) for i in top]
    assert [entry.split(":")[2] for entry in entries] == [f"class_{i}" for i in top]


def test_openvino_engine_served_through_python_backend_in_two_streams(server, openvino_engine):
    """A batch of two is cut into one slice per stream inside the served runner; the outputs are the engine's."""
    if openvino_engine is None:
        pytest.skip("openvino is not installed")
    from deploy_res.engines import load_engine

    x = _inputs(2, seed=5)
    runner = load_engine(openvino_engine)
    expected = runner.run({"input": x})["logits"]
    runner.close()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        feed = grpcclient.InferInput("input", list(x.shape), "FP32")
        feed.set_data_from_numpy(x)
        served = client.infer(OPENVINO_MODEL, [feed]).as_numpy("logits")
    finally:
        client.close()
    np.testing.assert_allclose(served, expected, rtol=0, atol=1e-4)


def test_load_test_reports_levels_and_server_batches(server):
    from deploy_res.serve.load import TOOL, load_test, markdown_table

    result = load_test(server.grpc_url, MODEL, {"input": _inputs(1, seed=9)}, levels=(1, 4), seconds=1.0, protocol="grpc", warmup_s=0.2)
    assert result["tool"] == TOOL and [level["concurrency"] for level in result["levels"]] == [1, 4]
    for level in result["levels"]:
        assert level["requests"] > 0 and level["errors"] == 0
        assert 0 < level["p50_ms"] <= level["p99_ms"] and level["throughput"] == level["requests_per_s"]
        # The server counted what the clients sent (in-flight requests at the end may land after the snapshot).
        assert level["server"]["inferences"] >= level["requests"] and level["server"]["executions"] >= 1
        assert sum(size * count for size, count in level["server"]["batch_sizes"].items()) == level["server"]["inferences"]
    table = markdown_table(result)
    assert table.count("\n| ") == 3 and "p99 ms" in table


def test_cli_check_serves_the_repository(served_engine, tmp_path):
    """`deployres triton --python-backend --check`: the repository is served on the bundled server and compared."""
    from click.testing import CliRunner

    from deploy_res.cli import cli
    from deploy_res.serve.server import bundled_server

    try:
        bundled_server()
    except DeployResError as exc:
        pytest.skip(str(exc))
    runner = CliRunner()
    refused = runner.invoke(cli, ["triton", str(served_engine), "-o", str(tmp_path / "native"), "--check"])
    assert refused.exit_code == 2 and "add --python-backend" in refused.output and not (tmp_path / "native").exists()
    result = runner.invoke(cli, ["triton", str(served_engine), "-o", str(tmp_path / "repo"), "--python-backend", "--check"])
    if result.exit_code == 2 and "tritonserver" in result.output:
        pytest.skip(f"the bundled tritonserver cannot start here: {result.output.strip()}")
    assert result.exit_code == 0, result.output
    assert f"checked {MODEL} on tritonserver" in result.output and "ok" in result.output


def test_stop_ends_the_server_by_pid(server):
    """Last in the module: stop() ends the process group the server leads, within its exit timeout."""
    pid = server.pid
    start = time.monotonic()
    server.stop()
    assert time.monotonic() - start < 30
    assert server.process.poll() is not None
    from deploy_res.serve.server import group_members

    assert group_members(pid) == [], "Python-backend stubs outlived the server"
