"""The one exception type users see.

Every error a user can cause (a wrong name, a file that does not fit, bad
data) is raised as :class:`DeployResError` with a one-line message that says
what is wrong and what to do. The CLI prints that line and exits non-zero;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any, Mapping


class DeployResError(Exception):
    """A user-facing error: one line, what is wrong and what to do."""

    exit_code = 2


class ValidationFailed(DeployResError):
    """A numerical check (parity, validation) did not pass."""

    exit_code = 1


class ValidationInconclusive(DeployResError):
    """A validation whose data cannot decide: an interval straddles its limit (neither pass nor fail)."""

    exit_code = 3


def require_at_least_one(settings: Any, *names: str, options: Mapping[str, str] = {}) -> None:
    """A one-line error for the first of ``settings``' fields ``names`` that is set (not None) and below 1.

    The error names the command-line option: ``--`` and the field with dashes, unless ``options`` maps the field
    to another option name (``{"cpus": "ray-cpus"}``).
    """
    for name in names:
        value = getattr(settings, name)
        if value is not None and value < 1:
            raise DeployResError(f"--{options.get(name, name.replace('_', '-'))} must be at least 1, got {value}")
