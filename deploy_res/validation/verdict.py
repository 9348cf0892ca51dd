"""The validation verdict recorded for an engine: its ``<engine>.validation.json`` read, and matched to the engine's bytes.

``deployres infer`` and ``deployres triton`` both decide from it whether an engine may be used; only what they do
with a missing, stale or failed verdict differs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from deploy_res.core.names import validation_result_path
from deploy_res.core.records import sha256_file
from deploy_res.validation.thresholds import LIMIT_NAMES


@dataclass(frozen=True)
class Verdict:
    """``status``: ``passed``, ``failed``, ``inconclusive`` (the data could not decide), ``stale`` (the result judged
    other bytes than the engine holds now), ``missing`` or ``unreadable``; ``path`` the result file; ``result`` what
    it holds (empty unless read). Results of schema 1, before inconclusive existed, read as passed or failed."""

    status: str
    path: Path
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def counts(self) -> bool:
        """Whether the result judged this very engine (``passed``, ``failed`` or ``inconclusive``)."""
        return self.status in STATUS.values()

    @property
    def failed(self) -> list[str]:
        """The checks that failed, as the result words them."""
        return list(self.result.get("failed", []))

    @property
    def line(self) -> str:
        """The result's one-line verdict (with its intervals), or the checks that failed for an old result."""
        return str(self.result.get("verdict") or "; ".join(self.failed) or self.status)

    def record(self) -> dict[str, Any]:
        """The verdict as a lineage records it: status, result file and its sha256, the judged precision,
        reference, inputs and limit metrics."""
        if not self.result:
            return {"status": self.status, "path": str(self.path)}
        result = self.result
        return {"status": self.status, "path": str(self.path), "sha256": sha256_file(self.path), "passed": bool(result.get("passed")),
                "outcome": outcome_of(result), "verdict": result.get("verdict"), "evidence": result.get("evidence"),
                "confidence": result.get("confidence"), "failed": self.failed, "precision": result.get("precision"),
                "reference": result.get("reference"), "inputs": result.get("inputs"),
                "checks": [{k: c.get(k) for k in ("name", "value", "interval", "limit", "outcome")} for c in result.get("checks") or []],
                "metrics": {k: v for k, v in (result.get("metrics") or {}).items() if k in LIMIT_NAMES}}


STATUS = {"pass": "passed", "fail": "failed", "inconclusive": "inconclusive"}


def outcome_of(result: dict[str, Any]) -> str:
    """``pass``, ``fail`` or ``inconclusive`` of a validation result of any schema (1 had only ``passed``); where the
    two fields disagree, the stricter: only ``passed: true`` is a pass."""
    if result.get("passed") is True:
        return "pass"
    return result["outcome"] if result.get("outcome") in ("fail", "inconclusive") else "fail"


def read_verdict(engine: str | Path, sha256: Optional[str] = None) -> Verdict:
    """The verdict for ``engine``'s current bytes (``sha256``, default: hashed now) from ``deployres validate``'s default result file."""
    engine = Path(engine)
    path = validation_result_path(engine)
    if not path.is_file():
        return Verdict("missing", path)
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return Verdict("unreadable", path)
    if not isinstance(result, dict):
        return Verdict("unreadable", path)
    if result.get("artifact_sha256") != (sha256 or sha256_file(engine)):  # a result that names no bytes judged none of these
        return Verdict("stale", path, result)
    return Verdict(STATUS[outcome_of(result)], path, result)
