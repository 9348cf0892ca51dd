"""``deployres triton --check``: serve a written repository on the bundled tritonserver and compare with the engines."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from deploy_res.core.errors import DeployResError
from deploy_res.core.numerics import SERVE_CHECK_RTOL, seeded_array
from deploy_res.serve.triton_engine import Engine

CHECK_MAX_REL_ERROR = SERVE_CHECK_RTOL
"""``--check``: the largest max |served - in-process| / max |in-process| accepted (same engine, same
runtime; only thread-count-dependent summation order may differ)."""


def check_repository(repository: Path, models: Sequence[tuple[str, Engine, int]], ready_timeout_s: float = 180.0) -> list[dict[str, Any]]:
    """Serve ``repository`` on the bundled ``tritonserver`` (loopback, stopped by PID when done) and send
    each classifier model seeded inputs over HTTP; compare with its engine run in-process.

    Returns one record per model (``max_rel_error``, ``passed``); raises :class:`ValidationFailed`
    when a served output differs by more than :data:`CHECK_MAX_REL_ERROR`.
    """
    from deploy_res.core.errors import ValidationFailed
    from deploy_res.engines import load_engine
    from deploy_res.serve.server import start_server
    from deploy_res.validation.metrics import compare

    try:
        import tritonclient.http as httpclient
        from tritonclient.utils import np_to_triton_dtype
    except ImportError:
        raise DeployResError("--check needs tritonclient (pip install 'deployres[triton]')") from None
    checks = []
    with start_server(repository, ready_timeout_s=ready_timeout_s) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        try:
            for name, engine, max_batch_size in models:
                with load_engine(engine.path) as runner:
                    batch = min(2, max_batch_size) if max_batch_size > 0 else None
                    rng = np.random.default_rng(0)
                    feeds, requests = {}, []
                    for info, tensor in zip(runner.inputs, engine.inputs):
                        shape = ([batch] if batch else []) + [d if isinstance(d, int) and d > 0 else 1 for d in (tensor.shape[1:] if batch else tensor.shape)]
                        feeds[info.name] = seeded_array(shape, np.dtype(info.dtype), rng)
                        request = httpclient.InferInput(info.name, list(shape), np_to_triton_dtype(feeds[info.name].dtype))
                        request.set_data_from_numpy(feeds[info.name])
                        requests.append(request)
                    expected = runner.run(feeds)
                reply = client.infer(name, requests)
                worst = max(compare(np.asarray(expected[out.name], np.float32), np.asarray(reply.as_numpy(out.name), np.float32))["max_rel_error"]
                            for out in engine.outputs)
                checks.append({"model": name, "url": server.http_url, "inputs": {k: list(v.shape) for k, v in feeds.items()},
                               "max_rel_error": float(worst), "passed": bool(worst <= CHECK_MAX_REL_ERROR)})
        finally:
            client.close()
    failed = [c for c in checks if not c["passed"]]
    if failed:
        raise ValidationFailed(f"{repository} was written, but served {failed[0]['model']} differs from its engine in-process "
                               f"(max rel error {failed[0]['max_rel_error']:.3g} > {CHECK_MAX_REL_ERROR:g})")
    return checks
