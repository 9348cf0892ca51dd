"""Option parsing shared by the commands: comma-separated tuples, shapes, limits, batch lists, the Ray options."""

from __future__ import annotations

import math
from typing import Optional

import click

TARGETS = ("onnxruntime", "tensorrt", "portable")


def _int_tuple(count: int, label: str):
    def parse(_ctx, param, value):
        if value is None:
            return None
        parts = value.replace("x", ",").split(",")
        try:
            numbers = tuple(int(p) for p in parts)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not {count} integers separated by commas ({label})") from None
        if len(numbers) != count or min(numbers) < 1:
            raise click.BadParameter(f"{value!r} must be {count} positive integers ({label})")
        return numbers
    return parse


def _input_shapes(_ctx, _param, values):
    """``--input-shape [NAME:]D0,D1,...`` (repeatable) -> ``{name or None: shape}``; None names the only input."""
    shapes = {}
    for value in values or ():
        name, _, dims = value.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.replace("x", ",").split(","))
        except ValueError:
            raise click.BadParameter(f"{value!r} is not [NAME:]N,C,H,W (integers separated by commas)") from None
        if min(shape) < 1:
            raise click.BadParameter(f"{value!r} must be positive integers, e.g. 1,3,224,224")
        shapes[name or None] = shape
    return shapes or None


def _float_triple(_ctx, param, value):
    if value is None:
        return None
    try:
        numbers = tuple(float(p) for p in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not three numbers separated by commas") from None
    if len(numbers) != 3:
        raise click.BadParameter(f"{value!r} must be three numbers, one per channel")
    if not all(math.isfinite(n) for n in numbers):
        raise click.BadParameter(f"{value!r} must be finite numbers")
    if param is not None and param.name == "std" and min(numbers) <= 0:
        raise click.BadParameter(f"{value!r}: every std must be positive (inputs are divided by it)")
    return numbers


def _limit(low: float, high: float):
    """A callback for a validation limit: a finite number in [low, high] (nan would pass or fail everything)."""
    def check(_ctx, _param, value):
        if value is None:
            return None
        if not math.isfinite(value) or not low <= value <= high:
            raise click.BadParameter(f"{value!r} is not a number from {low:g} to {high:g}")
        return value
    return check


def _batch_list(_ctx, _param, value):
    try:
        numbers = tuple(int(p) for p in value.split(",") if p.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not batch sizes separated by commas, e.g. 1,8") from None
    if not numbers or min(numbers) < 1:
        raise click.BadParameter(f"{value!r} must be positive batch sizes, e.g. 1,8")
    return numbers


def _level_list(value):
    try:
        return _batch_list(None, None, value)
    except click.BadParameter:
        raise click.BadParameter(f"{value!r} must be positive concurrency levels separated by commas, e.g. 1,2,4,8") from None


def _names(value: Optional[str]) -> Optional[tuple[str, ...]]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None


def _ray_options(command):
    """``--ray``, ``--ray-address``, ``--actors``, ``--ray-cpus``: run the batches on Ray Data (deploy_res.scale.ray_data)."""
    for option in reversed((
        click.option("--ray", is_flag=True, help="Shard the work over Ray Data actors on a new local cluster (pip install 'deployres[ray]')."),
        click.option("--ray-address", help="Join this Ray cluster instead (ray://HOST:10001 or HOST:6379; implies --ray)."),
        click.option("--actors", type=click.IntRange(1), help="With --ray: inference actors [default: one per GPU, else one per CPU left after decoding]."),
        click.option("--ray-cpus", type=click.IntRange(1), help="With --ray: CPUs of the local cluster [default: all of this machine's]."),
    )):
        command = option(command)
    return command
