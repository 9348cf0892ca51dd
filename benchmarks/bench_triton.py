"""A deployres engine served by Triton (the tritonserver nvidia-pytriton bundles) under concurrency 1, 2, 4, 8. (Not a test.)

Writes a ``--python-backend`` repository for ENGINE (the engine runs in Triton's
Python backend through deployres' own runner), starts the bundled server on
loopback, and for each concurrency level runs :func:`deploy_res.serve.load.load_test`
(a bounded closed loop of HTTP requests, one tritonclient per thread, batch 1
each) for ``--seconds``. Printed per level: requests/s, p50/p90/p99 latency, and
from the server's own statistics the samples per execution (what dynamic
batching merged). The first line is the same
engine in-process at batch 1 and at the optimal batch, same threads, for scale.

    python benchmarks/bench_triton.py ENGINE [--seconds 5] [--levels 1 2 4 8] [--queue-delay-us 2000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def in_process(engine: Path, batch: int, seconds: float) -> tuple[float, float]:
    from deploy_res.engines import load_engine

    runner = load_engine(engine)
    info = runner.inputs[0]
    x = np.zeros((batch, *[d for d in info.shape[1:]]), dtype=info.dtype)
    runner.run({info.name: x})
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        runner.run({info.name: x})
        times.append(time.perf_counter() - start)
    runner.close()
    return statistics.median(times) * 1000, batch * len(times) / sum(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engine", type=Path)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--queue-delay-us", type=int, default=2000)
    args = parser.parse_args()

    from deploy_res.serve import TritonSettings, triton
    from deploy_res.serve.load import load_test, markdown_table
    from deploy_res.serve.server import start_server

    opt = 8
    b1_ms, b1_ips = in_process(args.engine, 1, args.seconds)
    bo_ms, bo_ips = in_process(args.engine, opt, args.seconds)
    print(f"in-process: batch 1 {b1_ms:.2f} ms ({b1_ips:.0f} img/s); batch {opt} {bo_ms:.2f} ms ({bo_ips:.0f} img/s)")
    with tempfile.TemporaryDirectory() as folder:
        repo = Path(folder) / "repo"
        written = triton([args.engine], repo, TritonSettings(python_backend=True, max_queue_delay_us=args.queue_delay_us))
        model = written.models[0]["name"]
        with start_server(repo, ready_timeout_s=180) as server:
            import onnx

            graph = onnx.load(str(repo / model / "1" / "engine" / "source.onnx"), load_external_data=False).graph
            shape = [1, *[d.dim_value for d in graph.input[0].type.tensor_type.shape.dim[1:]]]
            x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            result = load_test(server.http_url, model, {graph.input[0].name: x}, levels=args.levels, seconds=args.seconds)
            print(f"python backend, max_queue_delay_microseconds {args.queue_delay_us}")
            print(markdown_table(result))


if __name__ == "__main__":
    main()
