"""The search space: serving points never use more cores than given; the exhaustive sweep counts every configuration."""

from __future__ import annotations

import pytest

from deploy_res.tune.space import BATCHES, DELAYS_US, Serving, coarse, engine_candidates, exhaustive, neighbours


@pytest.mark.parametrize("cores", [1, 2, 3, 8])
def test_coarse_and_neighbours_stay_within_the_cores(cores):
    first = coarse(cores, 16)
    assert first and all(1 <= p.cores <= cores for p in first)
    assert Serving(1, cores, 1, 0) in first  # one instance on every core, unbatched
    for point in first + exhaustive(cores, 16):
        for step in neighbours(point, cores, 16):
            assert 1 <= step.cores <= cores and step != point
            assert step.max_batch in BATCHES and step.queue_delay_us in DELAYS_US
            assert step.max_batch > 1 or step.queue_delay_us == 0


def test_neighbours_move_one_axis_at_a_time():
    point = Serving(1, 2, 8, 500)
    steps = set(neighbours(point, 2, 16))
    assert {Serving(1, 2, 8, 0), Serving(1, 2, 8, 2000), Serving(1, 2, 4, 500), Serving(1, 2, 16, 500), Serving(2, 1, 8, 500)} == steps


def test_the_top_batch_caps_every_point():
    assert all(p.max_batch <= 4 for p in exhaustive(2, 4) + coarse(2, 4))
    assert all(p.max_batch <= 4 for p in neighbours(Serving(1, 2, 4, 0), 2, 4))


@pytest.mark.parametrize("cores", [1, 2, 4])
def test_exhaustive_counts_every_configuration(cores):
    pairs = sum(1 for i in range(1, cores + 1) for t in range(1, cores + 1) if i * t <= cores)
    per_pair = 1 + (len(BATCHES) - 1) * len(DELAYS_US)  # batch 1 has no queue delay
    points = exhaustive(cores, 16)
    assert len(points) == pairs * per_pair == len(set(points))


def test_engine_candidates_follow_the_machine():
    assert engine_candidates((), (), has_bf16=False, has_openvino=False) == [("fp32", "onnxruntime"), ("int8", "onnxruntime")]
    assert ("bf16", "openvino") in engine_candidates((), (), has_bf16=True, has_openvino=True)
    assert engine_candidates(("fp32", "int8"), ("onnxruntime",), has_bf16=True, has_openvino=True) == [("fp32", "onnxruntime"), ("int8", "onnxruntime")]


@pytest.mark.parametrize("cores", [2, 4])
def test_the_streams_axis_shares_an_instances_threads_and_needs_batches(cores):
    points = exhaustive(cores, 16, streams=True)
    assert len(points) == len(set(points)) and set(exhaustive(cores, 16)) < set(points)
    assert all(1 <= p.streams <= p.threads and p.cores <= cores for p in points)
    assert all(p.max_batch > 1 for p in points if p.streams > 1)  # a lone sample cannot be cut into slices
    assert Serving(1, cores, 8, 0, streams=cores) in coarse(cores, 16, streams=True)  # OpenVINO's throughput mode
    assert all(p.streams == 1 for p in coarse(cores, 16))
    for point in points:
        steps = neighbours(point, cores, 16, streams=True)
        assert all(1 <= s.streams <= s.threads and s.cores <= cores for s in steps)
        assert all(s.streams == 1 for s in neighbours(point, cores, 16) if point.streams == 1)
    assert Serving(1, 2, 8, 0, streams=2) in neighbours(Serving(1, 2, 8, 0), 2, 16, streams=True)
    # fewer threads per instance bring the streams down with them
    assert Serving(2, 1, 8, 0) in neighbours(Serving(1, 2, 8, 0, streams=2), 2, 16, streams=True)


def test_a_serving_key_names_its_streams_only_when_there_are_several():
    from deploy_res.tune.search import _serving_of

    assert Serving(1, 2, 8, 0).key == "i1_t2_b8_d0" and Serving(1, 2, 8, 0, streams=2).key == "i1_t2_b8_d0_s2"
    for point in (Serving(1, 2, 8, 500), Serving(1, 4, 16, 0, streams=4)):
        assert Serving(**_serving_of(point.key)) == point


def test_a_gpu_engine_s_instances_share_the_gpu_not_the_cores():
    from deploy_res.tune.space import GPU_INSTANCES

    assert ("fp16", "tensorrt") in engine_candidates((), (), has_bf16=False, has_openvino=False, has_tensorrt=True)
    assert all(b != "tensorrt" for _, b in engine_candidates((), (), has_bf16=True, has_openvino=True))  # no GPU, no TensorRT here
    points = exhaustive(1, 16, gpu=True)  # one host core still serves several GPU instances
    assert {p.instances for p in points} == set(range(1, GPU_INSTANCES + 1)) and all(p.threads == 1 and p.streams == 1 for p in points)
    assert Serving(2, 1, 8, 0) in coarse(1, 16, gpu=True)
    for point in points:
        assert all(s.threads == 1 and 1 <= s.instances <= GPU_INSTANCES for s in neighbours(point, 1, 16, streams=True, gpu=True))


def test_tensorrt_asked_for_where_it_cannot_run_is_one_line():
    from deploy_res.core.errors import DeployResError
    from deploy_res.engines import unavailable
    from deploy_res.tune.search import plan_candidates
    from deploy_res.tune.settings import TuneSettings

    reason = unavailable("tensorrt")
    if reason is None:
        pytest.skip("TensorRT runs here")
    with pytest.raises(DeployResError, match="--backend tensorrt was asked for, but"):
        plan_candidates(TuneSettings(data="x.npz", backends=("tensorrt",)))
