"""Measuring one serving configuration of one engine: through the real ``tritonserver``, or in-process.

:class:`TritonHarness` starts the ``tritonserver`` that nvidia-pytriton bundles once per search (loopback, free
ports, explicit model control, stopped by its PID) and serves each point as its own Python-backend model, written
by :func:`deploy_res.serve.triton` with the point's instances, threads (and OpenVINO streams), ``max_batch_size`` and queue delay: load it,
run the closed loop of :func:`deploy_res.serve.load.load_test` at the search's concurrency, unload it. Only one model
is loaded at a time, and unloading ends its stub process, so no engine's spinning ONNX Runtime threads slow the
next (FACTS.md, timing trap).

:class:`InProcessHarness` is the fallback where the bundled server cannot run: the same closed loop (``concurrency``
client threads, each sending its next single-sample request when the last one answered) against ``instances``
runners with ``threads`` threads each, behind a dynamic batcher that merges up to ``max_batch`` queued requests,
waiting at most ``queue_delay_us`` for more. Its figures exclude HTTP and the server, so they are not Triton's;
the report says which harness measured.
"""

from __future__ import annotations

import os
import queue
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from deploy_res.core.errors import DeployResError
from deploy_res.tune.space import Serving

TRITON = "tritonserver (nvidia-pytriton's, Python backend) + deploy_res.serve.load closed loop"
IN_PROCESS = "in-process closed loop with a dynamic batcher (no server, no HTTP)"


def _warmup(seconds: float) -> float:
    return min(1.0, max(0.2, seconds / 2))


class TritonHarness:
    """One bundled ``tritonserver`` in explicit model-control mode; :meth:`measure` serves one point at a time."""

    kind = "triton"
    tool = TRITON

    def __init__(self, workdir: Path, cores: int) -> None:
        from deploy_res.serve.server import start_server

        self.root = Path(workdir) / "repository"
        self.staging = Path(workdir) / "staging"
        shutil.rmtree(workdir, ignore_errors=True)
        self.root.mkdir(parents=True)
        self.cores = cores
        self.server = start_server(self.root, ready_timeout_s=180, extra_args=("--model-control-mode=explicit",))

    def measure(self, engine: Path, name: str, serving: Serving, inputs: dict[str, np.ndarray], concurrency: int, seconds: float,
                force: bool = False) -> dict[str, Any]:
        """One point's closed-loop figures; ``force`` (default False) serves an engine without a passing validation."""
        import tritonclient.http as httpclient

        from deploy_res.serve.server import group_members

        from deploy_res.serve import TritonSettings, triton
        from deploy_res.serve.load import load_test

        model = f"{name}_{serving.key}"
        staging = self.staging / serving.key
        triton([engine], staging, TritonSettings(names=(model,), python_backend=True, instances=serving.instances, threads=serving.threads,
                                                 streams=serving.streams, cores=self.cores, max_batch_size=serving.max_batch, max_queue_delay_us=serving.queue_delay_us,
                                                 overwrite=True, force=force))
        target = self.root / model
        shutil.rmtree(target, ignore_errors=True)
        (staging / model).rename(target)
        shutil.rmtree(staging, ignore_errors=True)
        client = httpclient.InferenceServerClient(self.server.http_url, network_timeout=300.0, connection_timeout=300.0)
        try:
            try:
                client.load_model(model)
            except Exception as exc:  # the server's reason, one line
                raise DeployResError(f"tritonserver could not load {model}: {str(exc).splitlines()[0][:300]}") from None
            result = load_test(self.server.http_url, model, inputs, levels=[concurrency], seconds=seconds, warmup_s=_warmup(seconds),
                               keep_latencies=True)
            memory = rss_mib(group_members(self.server.pid))  # the server and the model's stub processes, still loaded
        finally:
            try:
                client.unload_model(model)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and _loaded(client, model):
                    time.sleep(0.1)
            except Exception:  # noqa: BLE001 - a server that died is reported by the next point
                pass
            client.close()
            shutil.rmtree(target, ignore_errors=True)
        level = result["levels"][0]
        return {"latencies_ms": level["latencies_ms"], "throughput": level["throughput"], "requests": level["requests"],
                "errors": level["errors"], "first_error": level["first_error"], "seconds": level["seconds"],
                "samples_per_execution": level["server"]["samples_per_execution"], "batch_sizes": level["server"]["batch_sizes"],
                "memory_mib": memory, "memory_of": "resident memory of tritonserver and the model's stubs after the run"}

    def close(self) -> None:
        self.server.stop()


def _loaded(client, model: str) -> bool:
    for entry in client.get_model_repository_index():
        if entry.get("name") == model and entry.get("state") in ("READY", "LOADING", "UNLOADING"):
            return True
    return False


class InProcessHarness:
    """The closed loop and a dynamic batcher in this process (see the module docstring)."""

    kind = "in-process"
    tool = IN_PROCESS

    def __init__(self, workdir: Path, cores: int) -> None:
        self.cores = cores

    def measure(self, engine: Path, name: str, serving: Serving, inputs: dict[str, np.ndarray], concurrency: int, seconds: float) -> dict[str, Any]:
        from deploy_res.engines import backend_of, load_engine

        backend = backend_of(engine)
        options = {"threads": serving.threads} if backend in ("onnxruntime", "openvino") else {}
        if serving.streams > 1 and backend == "openvino":
            options["streams"] = serving.streams
        runners = [load_engine(engine, **options) for _ in range(serving.instances)]
        try:
            (input_name, array), = inputs.items()
            dtype = np.dtype(runners[0].inputs[0].dtype) if runners[0].inputs[0].dtype in ("float32", "float16") else np.float32
            array = np.ascontiguousarray(array, dtype=dtype)
            for runner in runners:
                runner.run({input_name: array})
            _closed_loop(runners, input_name, array, serving, concurrency, _warmup(seconds))
            measured = _closed_loop(runners, input_name, array, serving, concurrency, seconds)
            return {**measured, "memory_mib": rss_mib([os.getpid()]), "memory_of": "resident memory of this process with the runners loaded"}
        finally:
            for runner in runners:
                runner.close()

    def close(self) -> None:
        pass


def _closed_loop(runners, input_name: str, array: np.ndarray, serving: Serving, concurrency: int, seconds: float) -> dict[str, Any]:
    requests: "queue.Queue[list]" = queue.Queue()
    stop = threading.Event()
    executions: list[int] = []
    errors: list[str] = []
    delay = serving.queue_delay_us / 1e6

    def instance(runner) -> None:
        while not stop.is_set():
            try:
                first = requests.get(timeout=0.05)
            except queue.Empty:
                continue
            batch = [first]
            deadline = time.perf_counter() + delay
            while len(batch) < serving.max_batch:
                remaining = deadline - time.perf_counter()
                try:
                    batch.append(requests.get(timeout=remaining) if remaining > 0 else requests.get_nowait())
                except queue.Empty:
                    break
            try:
                runner.run({input_name: np.concatenate([array] * len(batch)) if len(batch) > 1 else array})
            except Exception as exc:  # noqa: BLE001 - counted and named like a failed served request
                errors.append(str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
            executions.append(len(batch))
            for item in batch:
                item[0].set()

    latencies: list[float] = []
    lock = threading.Lock()
    end = time.perf_counter() + seconds

    def client() -> None:
        mine = []
        while time.perf_counter() < end:
            done = threading.Event()
            start = time.perf_counter()
            requests.put([done])
            while not done.wait(0.5):
                if stop.is_set():
                    return
            mine.append((time.perf_counter() - start) * 1000)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=instance, args=(r,), daemon=True) for r in runners]
    clients = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in workers + clients:
        thread.start()
    for thread in clients:
        thread.join(seconds + 120)
    elapsed = time.perf_counter() - started
    stop.set()
    for thread in workers:
        thread.join(5)
    sizes: dict[int, int] = {}
    for size in executions:
        sizes[size] = sizes.get(size, 0) + 1
    return {"latencies_ms": latencies, "throughput": len(latencies) / elapsed, "requests": len(latencies), "errors": len(errors),
            "first_error": errors[0] if errors else None, "seconds": round(elapsed, 3),
            "samples_per_execution": sum(executions) / len(executions) if executions else None, "batch_sizes": sizes}


def rss_mib(pids) -> Optional[float]:
    """Resident memory of ``pids`` together (MiB, from ``/proc/PID/status``); None where it cannot be read."""
    total, read = 0, False
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    read = True
        except (OSError, ValueError):
            continue
    return round(total / 1024, 1) if read else None


def open_harness(kind: str, workdir: Path, cores: int, note) -> Any:
    """The harness ``kind`` asks for: ``triton``, ``in-process``, or ``auto`` (the bundled tritonserver where it starts,
    else in-process, with ``note(reason)``)."""
    if kind == "in-process":
        return InProcessHarness(workdir, cores)
    try:
        return TritonHarness(workdir, cores)
    except DeployResError as exc:
        if kind == "triton":
            raise
        note(f"the bundled tritonserver cannot run here ({str(exc)[:200]}); measuring in-process instead")
        return InProcessHarness(workdir, cores)
    except ImportError as exc:
        if kind == "triton":
            raise DeployResError(f"--harness triton needs tritonclient (pip install 'deployres[triton]'): {exc}") from None
        note(f"tritonclient is not installed ({exc}); measuring in-process instead")
        return InProcessHarness(workdir, cores)
