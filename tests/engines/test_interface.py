"""The engine interface is what the backends keep: one ``load`` signature, context-managed runners, typed capabilities.

CPU-only: TensorRT's classes are inspected, not run (its ``gpu`` tests run them);
its buffer bookkeeping is checked through the pure helpers on torch CPU tensors.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from deploy_res.core.errors import DeployResError
from deploy_res.engines import base, load_engine
from deploy_res.engines.onnxruntime import OnnxRuntimeBackend, OnnxRuntimeRunner
from deploy_res.engines.openvino import OpenVINOBackend, OpenVINORunner
from deploy_res.engines.tensorrt import TensorRTBackend, TensorRTRunner
from deploy_res.engines.tensorrt.backend import check_within, used_view

BACKENDS = (OnnxRuntimeBackend, OpenVINOBackend, TensorRTBackend)
RUNNERS = (OnnxRuntimeRunner, OpenVINORunner, TensorRTRunner)


def _parameters(function):
    return [(p.name, p.kind) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda cls: cls.name)
def test_load_signature_matches_the_protocol(backend):
    assert _parameters(backend.load) == _parameters(base.Backend.load) == [
        ("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), ("engine_path", inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ("options", inspect.Parameter.VAR_KEYWORD)]
    assert {"device", "threads"} <= backend.OPTIONS
    assert backend.load.__doc__ and all(option in backend.load.__doc__ for option in backend.OPTIONS)


@pytest.mark.parametrize("backend", BACKENDS, ids=lambda cls: cls.name)
def test_an_option_a_backend_does_not_take_is_one_line(backend, tmp_path):
    with pytest.raises(DeployResError, match=f"the {backend.name} backend takes no load option bogus; it takes "):
        backend().load(tmp_path / "missing", bogus=1)


def test_runners_share_the_base_and_declare_their_capabilities():
    assert all(issubclass(runner, base.RunnerBase) for runner in RUNNERS)
    assert issubclass(OnnxRuntimeRunner, base.TraceProfiler) and not issubclass(OnnxRuntimeRunner, base.LayerCounters)
    assert issubclass(OpenVINORunner, base.LayerCounters) and not issubclass(OpenVINORunner, base.TraceProfiler)
    assert issubclass(TensorRTRunner, base.LayerProfilerHost) and not issubclass(TensorRTRunner, base.LayerCounters)


def test_runner_base_closes_on_error():
    class Probe(base.RunnerBase):
        closed = 0

        def run(self, feeds):
            raise RuntimeError("mid-way")

        def close(self):
            Probe.closed += 1

    with pytest.raises(RuntimeError, match="mid-way"):
        with Probe(["a note"], 0.5) as runner:
            assert runner.notes == ["a note"] and runner.load_seconds == 0.5
            runner.run({})
    assert Probe.closed == 1


def test_load_engine_is_a_context_manager(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["output"])], "relu",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 3])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with load_engine(path, threads=1) as runner:
        assert isinstance(runner, base.Runner)
        assert (runner.backend, runner.device, runner.notes) == ("onnxruntime", "cpu", []) and runner.load_seconds > 0
        out = runner.run({"input": np.array([[-1.0, 0.0, 2.0]], np.float32)})["output"]
        assert out.tolist() == [[0.0, 0.0, 2.0]]
    assert runner.session is None


def test_tensorrt_buffers_are_viewed_at_the_run_shape():
    torch = pytest.importorskip("torch")

    buffer = torch.arange(8 * 3 * 2, dtype=torch.float32).reshape(8, 3, 2)  # the profile's largest batch, 8
    front = used_view(buffer, (2, 3, 2))
    assert tuple(front.shape) == (2, 3, 2) and front.data_ptr() == buffer.data_ptr()
    assert torch.equal(front, buffer[:2])
    front.copy_(torch.zeros(2, 3, 2))  # a run's input lands in the front of the kept buffer
    assert float(buffer[:2].abs().sum()) == 0 and float(buffer[2:].abs().sum()) > 0
    assert tuple(used_view(buffer, (8, 3, 2)).shape) == (8, 3, 2)
    check_within("input", (8, 3, 2), (8, 3, 2))
    with pytest.raises(DeployResError, match=r"input input has shape \(9, 3, 2\); this engine takes at most \(8, 3, 2\)"):
        check_within("input", (9, 3, 2), (8, 3, 2))
    with pytest.raises(DeployResError):
        check_within("input", (1, 3), (8, 3, 2))
