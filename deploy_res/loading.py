"""Resolve what the user named into a PyTorch module: a zoo name or ``package.module:factory``,
optionally with a checkpoint.

Checkpoints are read with ``torch.load(weights_only=True)``; a bare state dict
or one inside the usual wrappers (``{"state_dict": ...}``, ``{"model": ...}``,
``{"model_state_dict": ...}``, ``{"module": ...}``) is accepted, and the
``module.`` prefix DataParallel leaves is stripped.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

from deploy_res.core.errors import DeployResError
from deploy_res.models import Preprocessing, get_spec, list_models

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "ema")


@dataclass
class LoadedModel:
    """A module in eval mode and what is known about it."""

    module: nn.Module
    source: str
    zoo: bool
    preprocessing: Preprocessing
    family: Optional[str] = None
    weights: Optional[Path] = None
    init_seed: int = 0


DEFAULT_INIT_SEED = 0
"""Seed of the random initialisation when no weights are given, so a later stage can rebuild the very same model."""


def load_model(source: str, weights: Optional[str | Path] = None, preprocessing: Optional[Preprocessing] = None,
               init_seed: int = DEFAULT_INIT_SEED, **factory_kwargs: Any) -> LoadedModel:
    """Build the model ``source`` names, load ``weights`` if given, and return it in eval mode.

    ``source`` is a zoo name (``resnet50``) or ``package.module:factory``, where
    ``factory(**factory_kwargs)`` returns an ``nn.Module``. ``preprocessing``
    overrides the zoo's settings (default: the zoo's, ImageNet 224 for a
    factory). The module is constructed under ``torch.manual_seed(init_seed)``
    (default 0, the global RNG left untouched), so an untrained model is
    reproducible from its manifest.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        if ":" in source:
            module = _build_from_factory(source, **factory_kwargs)
            spec_pre, family, zoo = Preprocessing(), None, False
        else:
            spec = get_spec(source)
            module = spec.create(**factory_kwargs)
            spec_pre, family, zoo = spec.preprocessing, spec.family, True
    if weights is not None:
        load_checkpoint(module, weights)
    module.eval()
    return LoadedModel(module, source, zoo, preprocessing or spec_pre, family, Path(weights) if weights else None, init_seed)


def _build_from_factory(source: str, **kwargs: Any) -> nn.Module:
    module_name, _, attr = source.partition(":")
    if not module_name or not attr:
        raise DeployResError(f"{source!r} is not of the form package.module:factory")
    try:
        mod = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or any error the module raises at import
        raise DeployResError(f"cannot import {module_name!r} ({type(exc).__name__}: {exc}); check the module path and that it is installed") from None
    factory = mod
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise DeployResError(f"module {module_name!r} has no attribute {attr!r}; zoo models: {', '.join(list_models())}")
    if not callable(factory):
        raise DeployResError(f"{source} is not callable; name a function that returns an nn.Module")
    try:
        model = factory(**kwargs)
    except Exception as exc:
        raise DeployResError(f"{source}() failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise DeployResError(f"{source}() returned {type(model).__name__}, not a torch.nn.Module")
    return model


def extract_state_dict(checkpoint: Any, path: str | Path = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the state dict in a checkpoint object and strip DataParallel's ``module.`` prefix."""
    state = checkpoint
    for _ in range(3):  # wrappers nest at most a couple of levels deep in practice
        if isinstance(state, Mapping) and not _looks_like_state_dict(state):
            inner = next((state[k] for k in _WRAPPER_KEYS if k in state and isinstance(state[k], Mapping)), None)
            if inner is None:
                break
            state = inner
    if isinstance(state, nn.Module):
        state = state.state_dict()
    if not isinstance(state, Mapping) or not _looks_like_state_dict(state):
        raise DeployResError(f"{path} holds no state dict (looked at the top level and under {', '.join(_WRAPPER_KEYS)}); save model.state_dict()")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _looks_like_state_dict(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(k, str) for k in obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def load_checkpoint(module: nn.Module, path: str | Path) -> None:
    """Load the checkpoint at ``path`` into ``module`` strictly; one-line error on any mismatch."""
    path = Path(path)
    if not path.is_file():
        raise DeployResError(f"weights file {path} not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DeployResError(f"cannot read weights {path}: {first}") from None
    state = extract_state_dict(checkpoint, path)
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
        raise DeployResError(f"weights {path.name} do not fit the model: keys {'; '.join(parts)}")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise DeployResError(f"weights {path.name} do not fit the model: {key} has shape {tuple(state[key].shape)}, model expects {tuple(tensor.shape)}")
    module.load_state_dict(state, strict=True)
