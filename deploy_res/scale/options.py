"""Where sharded work runs: :class:`RayOptions`, light enough for the command line to build without Ray."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from deploy_res.core.errors import require_at_least_one


@dataclass(frozen=True)
class RayOptions:
    """Where sharded work runs: a new local cluster of ``cpus`` CPUs (default: all of this machine's), or the
    cluster at ``address`` (``ray://HOST:10001`` or ``HOST:6379``); ``actors`` inference actors (default:
    :func:`~deploy_res.scale.ray_data.plan_actors`'). A stage given ``RayOptions()`` shards its batches on a new local cluster."""

    address: Optional[str] = None
    actors: Optional[int] = None
    cpus: Optional[int] = None

    def __post_init__(self) -> None:
        require_at_least_one(self, "actors", "cpus", options={"cpus": "ray-cpus"})

    @property
    def where(self) -> str:
        """``local`` or the cluster's address, as results record it."""
        return self.address or "local"

    def session(self):
        """:func:`deploy_res.scale.ray_data.ray_session` for these options: Ray connected for the block."""
        from deploy_res.scale.ray_data import ray_session

        return ray_session(self.address, self.cpus)
