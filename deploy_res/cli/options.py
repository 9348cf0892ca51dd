"""Option types the commands share (click ``ParamType``s), and the option groups more than one command takes.

Every option name has one meaning across the commands: ``--batch-range
MIN,OPT,MAX`` is the range an engine is built for (``export``), ``--batches
1,8`` the batch sizes measured (``profile``, ``run``), ``--batch N`` the batch
size of a run (``validate``, ``optimize``'s checks).
"""

from __future__ import annotations

import math
from typing import Any, Optional

import click


class IntTuple(click.ParamType):
    """``count`` positive integers separated by commas (or ``x``): ``3,224,224``."""

    name = "ints"

    def __init__(self, count: int, label: str) -> None:
        self.count, self.label = count, label

    def get_metavar(self, param: Any, ctx: Any = None) -> str:
        return self.label

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        try:
            numbers = tuple(int(p) for p in str(value).replace("x", ",").split(","))
        except ValueError:
            self.fail(f"{value!r} is not {self.count} integers separated by commas ({self.label})", param, ctx)
        if len(numbers) != self.count or min(numbers) < 1:
            self.fail(f"{value!r} must be {self.count} positive integers ({self.label})", param, ctx)
        return numbers


class IntList(click.ParamType):
    """One or more positive integers separated by commas: ``1,8`` (batch sizes, concurrency levels)."""

    name = "list"

    def __init__(self, what: str, example: str) -> None:
        self.what, self.example = what, example

    def get_metavar(self, param: Any, ctx: Any = None) -> str:
        return self.example

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        try:
            numbers = tuple(int(p) for p in str(value).split(",") if p.strip())
        except ValueError:
            self.fail(f"{value!r} is not {self.what} separated by commas, e.g. {self.example}", param, ctx)
        if not numbers or min(numbers) < 1:
            self.fail(f"{value!r} must be positive {self.what} separated by commas, e.g. {self.example}", param, ctx)
        return numbers


class Names(click.ParamType):
    """Names separated by commas: ``Sigmoid,GlobalAveragePool`` -> a tuple (blanks dropped); none at all -> ``empty``."""

    name = "names"

    def __init__(self, empty: Any = ()) -> None:
        self.empty = empty

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        if isinstance(value, tuple):
            return value
        return tuple(v.strip() for v in str(value).split(",") if v.strip()) or self.empty


class ChannelTriple(click.ParamType):
    """Three finite numbers, one per channel: ``0.485,0.456,0.406``; ``positive`` for a divisor (std)."""

    name = "triple"

    def __init__(self, positive: bool = False) -> None:
        self.positive = positive

    def get_metavar(self, param: Any, ctx: Any = None) -> str:
        return "R,G,B"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[float, ...]:
        if isinstance(value, tuple):
            return value
        try:
            numbers = tuple(float(p) for p in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not three numbers separated by commas", param, ctx)
        if len(numbers) != 3:
            self.fail(f"{value!r} must be three numbers, one per channel", param, ctx)
        if not all(math.isfinite(n) for n in numbers):
            self.fail(f"{value!r} must be finite numbers", param, ctx)
        if self.positive and min(numbers) <= 0:
            self.fail(f"{value!r}: every std must be positive (inputs are divided by it)", param, ctx)
        return numbers


class Limit(click.ParamType):
    """A finite number in ``[low, high]`` (``click.FloatRange`` lets ``nan`` through, which would pass or fail everything)."""

    name = "number"

    def __init__(self, low: float, high: float) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            number = float(value)
        except ValueError:
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number) or not self.low <= number <= self.high:
            self.fail(f"{value!r} is not a number from {self.low:g} to {self.high:g}", param, ctx)
        return number


class InputShape(click.ParamType):
    """``[NAME:]D0,D1,...``: a full input shape, for the input called NAME (none: the only input) -> ``(name, shape)``."""

    name = "shape"

    def get_metavar(self, param: Any, ctx: Any = None) -> str:
        return "[NAME:]N,C,H,W"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[Optional[str], tuple[int, ...]]:
        if isinstance(value, tuple):
            return value
        name, _, dims = str(value).rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.replace("x", ",").split(","))
        except ValueError:
            self.fail(f"{value!r} is not [NAME:]N,C,H,W (integers separated by commas)", param, ctx)
        if min(shape) < 1:
            self.fail(f"{value!r} must be positive integers, e.g. 1,3,224,224", param, ctx)
        return name or None, shape


def input_shapes(values) -> Optional[dict[Optional[str], tuple[int, ...]]]:
    """The repeated ``--input-shape`` values as ``{name or None: shape}`` (None names the only input), or None."""
    return dict(values) or None


class TorchModes(click.ParamType):
    """``eager``, ``compile``, ``both`` or a comma list of the first two -> a tuple of modes."""

    name = "modes"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        modes = ("eager", "compile") if str(value).strip() == "both" else tuple(v.strip() for v in str(value).split(",") if v.strip())
        bad = [mode for mode in modes if mode not in ("eager", "compile")]
        if bad or not modes:
            self.fail(f"{value!r}: choose eager, compile, both, or eager,compile", param, ctx)
        return modes


CHW = IntTuple(3, "C,H,W")
BATCH_SIZES = IntList("batch sizes", "1,8")


def ray_options(command):
    """``--ray``, ``--ray-address``, ``--actors``, ``--ray-cpus``: run the batches on Ray Data (deploy_res.scale.ray_data)."""
    for option in reversed((
        click.option("--ray", is_flag=True, help="Shard the work over Ray Data actors on a new local cluster (pip install 'deployres[ray]')."),
        click.option("--ray-address", help="Join this Ray cluster instead (ray://HOST:10001 or HOST:6379; implies --ray)."),
        click.option("--actors", type=click.IntRange(1), help="With --ray: inference actors [default: one per GPU, else one per CPU left after decoding]."),
        click.option("--ray-cpus", type=click.IntRange(1), help="With --ray: CPUs of the local cluster [default: all of this machine's]."),
    )):
        command = option(command)
    return command


def ray_options_from(ray: bool, ray_address: Optional[str], actors: Optional[int], ray_cpus: Optional[int]):
    """The :class:`~deploy_res.scale.options.RayOptions` the four Ray options ask for, or None (run in this process)."""
    from deploy_res.scale.options import RayOptions

    if not (ray or ray_address):
        return None
    return RayOptions(address=ray_address, actors=actors, cpus=ray_cpus)


def preprocessing_options(command):
    """``--input-size``, ``--mean``, ``--std``, ``--crop-pct``: preprocessing for an ONNX file without a manifest."""
    for option in reversed((
        click.option("--input-size", type=CHW, help="Preprocessing for an ONNX file without a manifest: input C,H,W."),
        click.option("--mean", type=ChannelTriple(), help="Preprocessing mean for an ONNX file without a manifest [default: ImageNet's]."),
        click.option("--std", type=ChannelTriple(positive=True), help="Preprocessing std for an ONNX file without a manifest [default: ImageNet's]."),
        click.option("--crop-pct", type=click.FloatRange(0.1, 1.0), help="Resize-then-crop ratio for an ONNX file without a manifest [default: 0.875]."),
    )):
        command = option(command)
    return command


def preprocessing_from(input_size=None, mean=None, std=None, crop_pct=None):
    """A :class:`~deploy_res.models.Preprocessing` with the given parts over ImageNet's defaults, or None if none is given."""
    from deploy_res.models import Preprocessing

    if not (input_size or mean or std or crop_pct):
        return None
    base = Preprocessing()
    return Preprocessing(input_size or base.input_size, mean or base.mean, std or base.std, crop_pct or base.crop_pct, base.interpolation)


def any_batch_option(command):
    """``--any-batch``: run outside the manifest's batch range where the backend can (:mod:`deploy_res.core.guards`)."""
    return click.option("--any-batch", is_flag=True, help="Run ONNX Runtime and OpenVINO engines at batch sizes outside the batch range "
                        "their manifest records (their batch axis is dynamic; TensorRT plans cannot); the memory guard still applies.")(command)
