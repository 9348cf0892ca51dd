"""Running the ``deployres`` command in-process for tests: ``run_cli`` and ``one_error_line``."""

from __future__ import annotations

from click.testing import CliRunner, Result

from deploy_res.cli import cli


def run_cli(*args, catch_exceptions: bool = True) -> Result:
    """``deployres ARGS...`` through click's runner, every argument as ``str``; ``catch_exceptions=False``
    lets an unexpected exception fail the test with its traceback."""
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=catch_exceptions)


def one_error_line(result: Result, exit_code: int = 2) -> str:
    """The one ``error:`` line of a failed run, asserting the exit code and that no traceback was printed."""
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]
