"""A deployres engine served by Triton (the tritonserver nvidia-pytriton bundles) under concurrency 1, 2, 4, 8. (Not a test.)

Writes a ``--python-backend`` repository for ENGINE (the engine runs in Triton's
Python backend through deployres' own runner), starts the bundled server on
loopback, and for each concurrency level runs a bounded closed loop of HTTP
requests (one tritonclient per thread, batch 1 each) for ``--seconds``. Printed
per level: requests/s, p50/p99 latency, and from the server's own statistics the
requests per execution (what dynamic batching merged). The first line is the same
engine in-process at batch 1 and at the optimal batch, same threads, for scale.

    python benchmarks/bench_triton.py ENGINE [--seconds 5] [--levels 1 2 4 8] [--queue-delay-us 2000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
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


def load_level(url: str, model: str, x: np.ndarray, concurrency: int, seconds: float) -> list[float]:
    import tritonclient.http as httpclient

    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker() -> None:
        client = httpclient.InferenceServerClient(url)
        feed = httpclient.InferInput("input", list(x.shape), "FP32")
        feed.set_data_from_numpy(x)
        mine = []
        while time.perf_counter() < stop:
            start = time.perf_counter()
            client.infer(model, [feed])
            mine.append(time.perf_counter() - start)
        client.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engine", type=Path)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--queue-delay-us", type=int, default=2000)
    args = parser.parse_args()

    import tritonclient.http as httpclient

    from deploy_res.serve import triton
    from deploy_res.serve.server import start_server

    opt = 8
    b1_ms, b1_ips = in_process(args.engine, 1, args.seconds)
    bo_ms, bo_ips = in_process(args.engine, opt, args.seconds)
    print(f"in-process: batch 1 {b1_ms:.2f} ms ({b1_ips:.0f} img/s); batch {opt} {bo_ms:.2f} ms ({bo_ips:.0f} img/s)")
    with tempfile.TemporaryDirectory() as folder:
        repo = Path(folder) / "repo"
        written = triton([args.engine], repo, python_backend=True, max_queue_delay_us=args.queue_delay_us)
        model = written.models[0]["name"]
        with start_server(repo, ready_timeout_s=180) as server:
            client = httpclient.InferenceServerClient(server.http_url)
            shape = [1, *[d.dim_value for d in __import__("onnx").load(str(repo / model / "1" / "engine" / "source.onnx"), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[1:]]]
            x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
            load_level(server.http_url, model, x, 1, 1.0)  # warm the connection path
            print(f"Triton {model}, python backend, max_queue_delay_microseconds {args.queue_delay_us}, HTTP, batch-1 requests")
            print("| concurrency | req/s | p50 ms | p99 ms | requests per execution |")
            print("|---|---|---|---|---|")
            for level in args.levels:
                before = client.get_inference_statistics(model)["model_stats"][0]
                latencies = sorted(load_level(server.http_url, model, x, level, args.seconds))
                after = client.get_inference_statistics(model)["model_stats"][0]
                inferences = after["inference_count"] - before["inference_count"]
                executions = max(1, after["execution_count"] - before["execution_count"])
                p50 = latencies[len(latencies) // 2] * 1000
                p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
                print(f"| {level} | {len(latencies) / args.seconds:.1f} | {p50:.1f} | {p99:.1f} | {inferences / executions:.2f} |")
            client.close()


if __name__ == "__main__":
    main()
