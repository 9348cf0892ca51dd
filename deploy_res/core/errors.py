"""The one exception type users see.

Every error a user can cause (a wrong name, a file that does not fit, bad
data) is raised as :class:`DeployResError` with a one-line message that says
what is wrong and what to do. The CLI prints that line and exits non-zero;
anything else is a bug and keeps its traceback.
"""


class DeployResError(Exception):
    """A user-facing error: one line, what is wrong and what to do."""

    exit_code = 2


class ValidationFailed(DeployResError):
    """A numerical check (parity, validation) did not pass."""

    exit_code = 1
