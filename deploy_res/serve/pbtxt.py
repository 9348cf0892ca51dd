"""Protobuf text format for Triton's ``config.pbtxt``, written without Triton installed.

A config is built as plain Python values and rendered here: a ``dict`` is a
message, a ``list`` of dicts a repeated message (one ``name { ... }`` block
each), a ``list`` of scalars ``name: [a, b]``, :class:`Enum` a bare
identifier, ``str`` a quoted string. Map fields (``parameters``,
``input_map``) are lists of ``{"key": ..., "value": ...}`` entries, which is
how the text format spells a map.

The tests parse every file written with Triton's own schema
(``tritonclient.grpc.model_config_pb2.ModelConfig``); :func:`check_schema`
does the same at write time when ``tritonclient`` is installed.
"""

from __future__ import annotations

import json
from typing import Any, Optional


class Enum(str):
    """An enum value (``KIND_CPU``, ``TYPE_FP32``): written without quotes."""


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string literal is a valid text-format string literal
    raise TypeError(f"cannot write {type(value).__name__} in a config.pbtxt")


def render(message: dict[str, Any], indent: int = 0) -> str:
    """``message`` in protobuf text format, two spaces per level, fields in dict order."""
    pad = "  " * indent
    lines: list[str] = []
    for key, value in message.items():
        if value is None:
            continue
        if isinstance(value, dict):
            lines.append(f"{pad}{key} {{\n{render(value, indent + 1)}{pad}}}\n")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                lines.append(f"{pad}{key} {{\n{render(item, indent + 1)}{pad}}}\n")
        elif isinstance(value, list):
            if value:
                lines.append(f"{pad}{key}: [{', '.join(_scalar(v) for v in value)}]\n")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}\n")
    return "".join(lines)


def parameters(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Triton's ``parameters`` map (string values only) as text-format entries."""
    return [{"key": key, "value": {"string_value": str(value)}} for key, value in values.items()]


def string_map(values: dict[str, str]) -> list[dict[str, Any]]:
    """A ``map<string, string>`` (an ensemble step's ``input_map``/``output_map``)."""
    return [{"key": key, "value": value} for key, value in values.items()]


def check_schema(text: str) -> Optional[str]:
    """Parse ``text`` with Triton's ``ModelConfig`` schema: ``None`` if it parses (or tritonclient is
    absent), else the parser's one-line complaint."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        return None
    try:
        text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        return str(exc).splitlines()[0]
    return None
