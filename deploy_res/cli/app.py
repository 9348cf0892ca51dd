"""The ``deployres`` group: shared state, and every way out one line.

Every error a user can cause is one line on stderr, ``error: <what and what to do>``,
and a non-zero exit: a :class:`DeployResError` (its exit code), a click usage
error (bad option value, unknown option or command: exit 2) and a file system
refusal (permission, read-only, a folder where a file goes: exit 2). Ctrl-C
anywhere, an import that Ctrl-C cut short included, exits 130 with one line;
nothing half-written is left (the API writes an artifact and its manifest as
one unit). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import sys
import warnings
from typing import Optional

import click
from rich.console import Console

from deploy_res.core.errors import DeployResError


class Context:
    """Shared CLI state: where to print and how much."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        # Piped or captured output keeps whole table rows instead of wrapping at 80 columns.
        self.console = Console(quiet=quiet, highlight=False, width=None if sys.stdout.isatty() else 160)


pass_ctx = click.make_pass_decorator(Context, ensure=True)


class UserError(click.ClickException):
    """A DeployResError on its way out: ``error: <one line>`` and the error's exit code."""

    def __init__(self, error: DeployResError) -> None:
        super().__init__(str(error))
        self.exit_code = error.exit_code

    def show(self, file=None) -> None:
        click.echo(f"error: {_one_line(self.format_message())}", err=True)


class Interrupted(click.ClickException):
    """Ctrl-C: one line on stderr and exit code 130."""

    exit_code = 130

    def __init__(self) -> None:
        super().__init__("interrupted; nothing half-written was left behind")

    def show(self, file=None) -> None:
        click.echo(self.format_message(), err=True)


_USER_ERRNOS = {getattr(errno, name) for name in ("EACCES", "EPERM", "EROFS", "ENOSPC", "EDQUOT", "EISDIR", "ENOTDIR", "ENOENT", "EEXIST")
                if hasattr(errno, name)}
"""File-system refusals a user meets (permissions, a full or read-only disk, a folder where a file goes): one line, not a traceback."""


def _interrupted(exc: BaseException) -> bool:
    """Ctrl-C, or an error raised while handling one: a Ctrl-C during ``import onnxruntime`` surfaces as an ImportError."""
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


@contextlib.contextmanager
def _library_chatter_off():
    """Libraries' own warnings and log lines (torch, ONNX Runtime's quantiser) stay off stderr while a command
    runs: deployres prints its notes and its one error line itself. ``python -W`` / PYTHONWARNINGS still apply."""
    with warnings.catch_warnings():
        if not sys.warnoptions:
            warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).strip().splitlines() if part.strip())


class DeployResGroup(click.Group):
    """A click group whose every way out is one line: ``error: ...`` (or the interrupt line) and an exit code.

    Used as a program (the console script, ``CliRunner``) it handles click's
    usage errors itself, so no ``Usage: ... Try ...`` block is printed: just
    ``error: <click's message>`` and exit 2.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DeployResError as exc:
            raise UserError(exc) from None
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            if _interrupted(exc):
                raise Interrupted() from None
            if isinstance(exc, OSError) and exc.errno in _USER_ERRNOS:
                where = f": {exc.filename}" if exc.filename else ""
                raise UserError(DeployResError(f"{exc.strerror or type(exc).__name__}{where}")) from None
            raise
        except KeyboardInterrupt:
            raise Interrupted() from None

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode: bool = True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            with _library_chatter_off():
                result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:  # bare `deployres`: the help text is the answer
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            click.echo(f"error: {_one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except (UserError, Interrupted) as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {_one_line(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except (KeyboardInterrupt, click.exceptions.Abort):
            Interrupted().show()
            sys.exit(130)
        except Exception as exc:
            if not _interrupted(exc):
                raise
            Interrupted().show()
            sys.exit(130)
        sys.exit(result if isinstance(result, int) else 0)


@click.group(cls=DeployResGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("-q", "--quiet", is_flag=True, help="Print only errors and the final result line.")
@click.version_option(package_name="deployres")
@click.pass_context
def cli(ctx: click.Context, quiet: bool) -> None:
    """ResNet-family CNNs from PyTorch to fast, verified inference engines.

    \b
    Pipeline: export -> optimize -> build-engine -> validate -> profile,
    each stage writing an artifact and a JSON manifest beside it.
    """
    ctx.obj = Context(quiet=quiet)


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: the CLI; every error one line (see :class:`DeployResGroup`), Ctrl-C exit 130."""
    try:
        cli.main(args=argv, prog_name="deployres")
    finally:
        # The command is over and has said so: a Ctrl-C during the interpreter's shutdown (torch's and
        # ONNX Runtime's threads joining) would only turn its exit status into 130 without a word.
        with contextlib.suppress(ValueError, OSError):
            signal.signal(signal.SIGINT, signal.SIG_IGN)

