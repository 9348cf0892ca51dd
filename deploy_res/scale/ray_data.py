"""Run :mod:`.work` batches on Ray Data: a local cluster on a laptop, or an existing cluster.

The pipeline is two stages over a dataset whose rows are the numbered
batches of :func:`~deploy_res.scale.work.plan_batches`:

1. ``map`` tasks decode and preprocess each batch's images (``num_cpus`` from
   the room :func:`plan_actors` leaves for them);
2. ``map_batches`` on a fixed pool of actors
   (``compute=ActorPoolStrategy(size=n)``; ``concurrency=`` is deprecated
   since Ray 2.51), each holding one worker: one engine session, and for
   validation one reference model. With GPUs, one actor per GPU
   (``num_gpus=1``).

Each batch stays one row from start to end, so every sample meets the engine
with the same neighbours as in the single-process loop: results are equal
bit for bit, whatever the number of actors. Results come back to the driver
(small: top-k per image, or one mergeable metrics state per batch), so the
output file is written by the driver on its own disk.

**Sizing.** Measured on a 2-CPU local cluster (Ray 2.60): two 1-CPU
inference actors reserved every CPU, the decode stage starved
(``backpressured: tasks(ResourceBudget)``) and the pipeline hung.
:func:`plan_actors` always leaves CPUs for decoding (a quarter of the
cluster, at least one) and gives the actors the rest, fractionally when more
actors than CPUs are asked for.

**Authentication.** Ray 2.60 turns token authentication on by default for a
new local cluster and writes a token to ``~/.ray/auth_token``. A local
cluster started here keeps token authentication but with a random token for
this run only, passed through ``RAY_AUTH_TOKEN`` (nothing written to the home
folder); an explicit ``RAY_AUTH_MODE`` (``token`` or ``disabled``) in the
environment is respected as it is. Joining a cluster (``address``) uses the
user's own token settings (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
``~/.ray/auth_token``), untouched.

**Stopping.** A cluster started here is shut down when the work ends, fails
or is interrupted (Ctrl-C); a cluster joined (or a Ray session the caller
already had open) is only disconnected from, or left alone.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import secrets
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

from deploy_res.core.errors import DeployResError
from deploy_res.scale.work import WorkBatch, load_batch

INSTALL_HINT = "--ray needs Ray Data: pip install 'deployres[ray]' (or pip install 'ray[data]' pyarrow)"
DECODE_SHARE = 0.25
"""Share of the cluster's CPUs left to the decode tasks (at least one CPU, or half of a 1-CPU cluster)."""


def import_ray():
    """The ``ray`` module with Ray Data, or a one-line error saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise DeployResError(INSTALL_HINT) from None
    return ray


# --------------------------------------------------------------------------- sizing


@dataclass(frozen=True)
class ActorPlan:
    """How many inference actors, what each reserves, and the CPUs left to decoding."""

    actors: int
    num_cpus: float
    num_gpus: int
    threads: int
    decode_cpus: float

    def describe(self) -> str:
        gpu = f", {self.num_gpus} GPU" if self.num_gpus else ""
        return f"{self.actors} actor(s) x ({self.num_cpus:g} CPU{gpu}, {self.threads} thread(s)); decode tasks {self.decode_cpus:g} CPU each"


def plan_actors(resources: Mapping[str, float], actors: Optional[int] = None) -> ActorPlan:
    """Actors for a cluster with ``resources`` (``ray.cluster_resources()``); never all the CPUs.

    Default (``actors`` None): one actor per GPU with ``num_gpus=1``; on CPUs
    only, one actor per whole CPU left after the decode share. An explicit
    ``actors`` count splits the same CPU budget between them (fractional
    ``num_cpus``), so asking for more actors never starves the decoding.
    """
    cpus = float(resources.get("CPU", 0.0))
    gpus = int(resources.get("GPU", 0.0))
    if cpus <= 0:
        raise DeployResError("the Ray cluster has no CPUs to decode images on; start it with some (ray start --num-cpus N)")
    reserve = max(1.0, cpus * DECODE_SHARE) if cpus >= 2 else cpus / 2
    budget = cpus - reserve
    if actors is not None and actors < 1:
        raise DeployResError(f"--actors {actors}: at least one actor is needed")
    if gpus:
        count = actors or gpus
        if count > gpus:
            raise DeployResError(f"{count} actors asked for, the cluster has {gpus} GPU(s): one engine per GPU, use --actors {gpus} or fewer")
        num_cpus = min(1.0, budget / count)
        return ActorPlan(count, _round(num_cpus), 1, max(1, int(num_cpus)), _round(min(1.0, reserve)))
    count = actors or max(1, int(budget))
    num_cpus = budget / count
    return ActorPlan(count, _round(num_cpus), 0, max(1, int(num_cpus)), _round(min(1.0, reserve)))


def _round(value: float) -> float:
    return math.floor(value * 1000) / 1000  # never ask for more than there is through rounding


# --------------------------------------------------------------------------- session


@contextlib.contextmanager
def ray_session(address: Optional[str] = None, num_cpus: Optional[int] = None) -> Iterator[Any]:
    """Ray connected for the block: to ``address``, or to a new local cluster that is shut down after.

    A Ray session already open in this process (``ray.is_initialized()``) is
    used as it is and left open. ``num_cpus`` sizes a new local cluster
    (default: this machine's CPUs). See the module docstring for the token
    authentication handling.
    """
    saved = {key: os.environ.get(key) for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}

    def restore() -> None:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    # Ray reads these when it is imported and caches them: set them first.
    if address is None and "RAY_AUTH_MODE" not in os.environ:
        os.environ["RAY_AUTH_MODE"] = "token"
        if not os.environ.get("RAY_AUTH_TOKEN") and not os.environ.get("RAY_AUTH_TOKEN_PATH"):
            os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
    try:
        ray = import_ray()
    except DeployResError:
        restore()
        raise
    if ray.is_initialized():
        restore()
        yield ray
        return
    with contextlib.suppress(ImportError, AttributeError):  # Ray imported earlier in this process: drop its cached auth settings
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    try:
        kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        try:
            if address is None:
                ray.init(address="local", num_cpus=num_cpus, **kwargs)
            else:
                check_reachable(address)
                ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
            raise DeployResError(f"cannot start or join {where}: {str(exc).splitlines()[0][:200]}") from None
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # deployres shows one bar over images
        context.print_on_execution_start = False
        context.verbose_stats_logs = False
        with contextlib.suppress(AttributeError):
            context.issue_detectors_config.detectors = []  # its advice goes to the log, which deployres keeps quiet
        yield ray
    finally:
        if ray.is_initialized():
            ray.shutdown()
        restore()


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail at once, in one line, when ``address`` (``HOST:PORT`` or ``ray://HOST:PORT``) does not answer.

    Ray itself keeps retrying an unreachable head for minutes. ``auto`` and
    other forms without a port are left to Ray.
    """
    import socket

    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise DeployResError(f"cannot reach the Ray cluster at {address} ({reason}); is `ray start --head` running there, "
                             f"and is the port the head's GCS port (6379) or Ray Client's (ray://HOST:10001)?") from None


# --------------------------------------------------------------------------- the pipeline


def _decode_row(row: dict[str, Any], pre, skip_bad: bool, source: str) -> dict[str, Any]:
    work: WorkBatch = pickle.loads(row["work"])
    loaded = load_batch(work, pre, skip_bad, source)
    return {"index": row["index"], "loaded": pickle.dumps(loaded, protocol=5)}


class _Actor:
    """One Ray actor: builds its worker once, then runs it on one batch (one row) per call."""

    def __init__(self, factory: Callable[..., Any], kwargs: Mapping[str, Any], threads: int) -> None:
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:  # pragma: no cover - torch is a dependency
            pass
        self.worker = factory(**kwargs, threads=threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = []
        for loaded in batch["loaded"]:
            arrays, labels, names, skipped = pickle.loads(loaded)
            results.append(pickle.dumps((self.worker(arrays, labels, names) if arrays is not None else None, skipped), protocol=5))
        return {"index": np.asarray(batch["index"]), "result": np.asarray(results, dtype=object)}


def _deployres_error(exc: BaseException) -> Optional[DeployResError]:
    """The DeployResError a Ray task raised, found in Ray's wrapping of it."""
    seen, stack = set(), [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, DeployResError):
            return current
        stack += [getattr(current, "cause", None), current.__cause__, current.__context__]
    text = str(exc)
    marker = "DeployResError: "
    if marker in text:
        return DeployResError(text.split(marker, 1)[1].strip().splitlines()[0])
    return None


def _check_actor_memory(plan: ActorPlan, actor_memory: int, resources: Mapping[str, float]) -> None:
    """One line when ``plan.actors`` actors of ``actor_memory`` bytes each exceed the cluster's schedulable memory."""
    from deploy_res.core.guards import check_pool

    check_pool(plan.actors, actor_memory, int(resources.get("memory", 0)), "the cluster's memory for tasks")


def run_on_ray(
    batches: Sequence[WorkBatch],
    factory: Callable[..., Any],
    factory_kwargs: Mapping[str, Any],
    pre,
    skip_bad: bool = False,
    source: str = "the data",
    actors: Optional[int] = None,
    on_plan: Optional[Callable[[ActorPlan], None]] = None,
    actor_memory: int = 0,
) -> Iterator[tuple[int, Any, list[str]]]:
    """Yield ``(batch index, worker result or None, skipped names)`` for every batch, as they finish.

    ``factory(**factory_kwargs, threads=n)`` makes each actor's worker; a
    worker is called as ``worker(arrays, labels, names)``. Needs a connected
    Ray (:func:`ray_session`). Results arrive in any order. ``actor_memory``
    (bytes one actor needs: its engine and batches, :mod:`deploy_res.core.guards`;
    default 0: not said) is reserved per actor, and a pool that would need more
    than the cluster's memory is a one-line error before anything starts.
    """
    ray = import_ray()
    from ray.data import ActorPoolStrategy

    resources = ray.cluster_resources()
    plan = plan_actors(resources, actors)
    _check_actor_memory(plan, actor_memory, resources)
    if on_plan is not None:
        on_plan(plan)
    rows = [{"index": work.index, "work": pickle.dumps(work, protocol=5)} for work in batches]
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), 200)))
    # A memory hint (a batch of decoded floats, twice over) sizes the decode tasks; as a side effect the two stages'
    # remote arguments differ, so Ray does not fuse decoding into the actors, where it would run in turn with inference.
    largest = max((len(work) for work in batches), default=1)
    per_sample = 4 * int(np.prod(pre.input_size)) if pre is not None else 4 * 3 * 224 * 224
    dataset = dataset.map(_decode_row, fn_kwargs={"pre": pre, "skip_bad": skip_bad, "source": source},
                          num_cpus=plan.decode_cpus, memory=2 * largest * per_sample + (320 << 20))
    dataset = dataset.map_batches(
        _Actor,
        fn_constructor_kwargs={"factory": factory, "kwargs": dict(factory_kwargs), "threads": plan.threads},
        batch_size=1,
        batch_format="numpy",
        compute=ActorPoolStrategy(size=plan.actors),
        num_cpus=plan.num_cpus,
        num_gpus=plan.num_gpus or None,
        memory=actor_memory or None,
    )
    try:
        for out in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for index, result in zip(out["index"], out["result"]):
                value, skipped = pickle.loads(result)
                yield int(index), value, skipped
    except (KeyboardInterrupt, DeployResError):
        raise
    except Exception as exc:
        error = _deployres_error(exc)
        if error is not None:
            raise DeployResError(str(error)) from None
        raise
