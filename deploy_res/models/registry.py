"""The model zoo's registry: each model by name with its input and preprocessing settings.

Entries follow timm's pretrained configs: ``input_size``, ``mean``, ``std``,
``crop_pct`` and ``interpolation`` say how an image becomes the model's input
(resize the short side to ``input_size / crop_pct``, centre-crop, scale to
[0, 1], normalise).
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from torch import nn

from deploy_res.core.errors import DeployResError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes model input. Defaults: torchvision's ImageNet eval transform."""

    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_pct: float = 0.875
    interpolation: str = "bilinear"

    @property
    def resize_size(self) -> int:
        """Short side before the centre crop (``floor(input / crop_pct)``, 256 for 224)."""
        return int(self.input_size[-1] / self.crop_pct)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "resize_size": self.resize_size}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Preprocessing":
        return cls(
            input_size=tuple(data["input_size"]),
            mean=tuple(data["mean"]),
            std=tuple(data["std"]),
            crop_pct=float(data["crop_pct"]),
            interpolation=str(data.get("interpolation", "bilinear")),
        )


@dataclass(frozen=True)
class ModelSpec:
    """A registered zoo model: its factory, family, reference library and preprocessing."""

    name: str
    family: str
    factory: Callable[..., nn.Module]
    reference: str
    preprocessing: Preprocessing = field(default_factory=Preprocessing)

    def create(self, **kwargs: Any) -> nn.Module:
        return self.factory(**kwargs)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(family: str, reference: str, **preprocessing: Any) -> Callable:
    """Decorator: register a factory under its function name with its preprocessing."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = factory.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelSpec(name, family, factory, reference, Preprocessing(**preprocessing))
        return factory

    return wrap


def list_models() -> list[str]:
    """Names of all registered models, in registration order."""
    return list(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The spec of a zoo model; a one-line error with the closest names if unknown."""
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "run `deployres models` for the list"
        raise DeployResError(f"unknown model {name!r}; {hint} (or pass package.module:factory)") from None


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a zoo model by name (random weights)."""
    return get_spec(name).create(**kwargs)
