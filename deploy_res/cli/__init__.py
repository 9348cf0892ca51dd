"""The ``deployres`` command: a thin click layer over the Python API.

Each command parses its options, calls one API function, and prints. Every
error a user can cause is one line on stderr, ``error: <what and what to do>``,
and a non-zero exit (see :mod:`deploy_res.cli.app`). The rooms:

- ``app``: the click group, its shared state and error handling, ``main``;
- ``options``: option parsing shared by the commands;
- ``render``: the tables and lines printed beyond a command's one result line;
- ``*_commands``: the commands, one module per stage.
"""

from __future__ import annotations

from deploy_res.cli.app import cli, main
from deploy_res.cli import (  # noqa: F401  (each registers its commands on the group)
    build_commands, export_commands, infer_commands, profile_commands, run_commands, serve_commands, tune_commands, validate_commands, zoo_commands,
)

__all__ = ["cli", "main"]
