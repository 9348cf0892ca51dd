"""Resolve what the user named into a PyTorch module: a zoo name or ``package.module:factory``,
optionally with a checkpoint.

Checkpoints are read with ``torch.load(weights_only=True)``; a bare state dict
or one inside the usual wrappers (``{"state_dict": ...}``, ``{"model": ...}``,
``{"model_state_dict": ...}``, ``{"module": ...}``) is accepted, and the
``module.`` prefix DataParallel leaves is stripped.

Whether the weights fit is PyTorch's own decision: what
``module.load_state_dict(state, strict=True)`` accepts is accepted, including
the legacy forms its loading code handles (checkpoints from before
BatchNorm's ``num_batches_tracked`` buffer, told apart by the version in the
state dict's ``_metadata``, which is kept through the unwrapping; 1-element
tensors for 0-d buffers from PyTorch 0.3). What it refuses is refused with a
one-line error naming the first missing, unexpected or mis-shaped key.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
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


def extract_state_dict(checkpoint: Any, path: str | Path = "checkpoint") -> "OrderedDict[str, torch.Tensor]":
    """Find the state dict in a checkpoint object and strip DataParallel's ``module.`` prefix.

    The state dict's ``_metadata`` (per-module versions, which decide how
    PyTorch loads legacy entries) is kept, its prefixes stripped alike.
    """
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
    metadata = getattr(state, "_metadata", None)
    result: OrderedDict[str, torch.Tensor] = OrderedDict(state)
    if metadata is not None:
        result._metadata = OrderedDict(metadata)  # type: ignore[attr-defined]
    if all(k.startswith("module.") for k in result):
        from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

        consume_prefix_in_state_dict_if_present(result, "module.")  # renames the keys and the _metadata entries
    return result


def _looks_like_state_dict(obj: Mapping) -> bool:
    return bool(obj) and all(isinstance(k, str) for k in obj) and any(isinstance(v, torch.Tensor) for v in obj.values()) \
        and all(isinstance(v, torch.Tensor) or k.endswith("_extra_state") for k, v in obj.items())


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
    seen: dict[str, Any] = {}

    def record(_module: nn.Module, keys: Any) -> None:  # the missing/unexpected keys, before strict turns them into an error
        seen["keys"] = keys

    handle = module.register_load_state_dict_post_hook(record)
    try:
        module.load_state_dict(state, strict=True)  # PyTorch decides what fits, legacy forms included
    except RuntimeError as exc:
        raise DeployResError(f"weights {path.name} do not fit the model: {_misfit(module, state, seen.get('keys'), exc)}") from None
    finally:
        handle.remove()


def _misfit(module: nn.Module, state: Mapping[str, Any], keys: Any, exc: RuntimeError) -> str:
    """The first reason ``load_state_dict`` refused: missing/unexpected keys, a shape, else its own first line."""
    if keys is not None and (keys.missing_keys or keys.unexpected_keys):
        parts = []
        if keys.missing_keys:
            parts.append(f"{len(keys.missing_keys)} missing (first: {keys.missing_keys[0]})")
        if keys.unexpected_keys:
            parts.append(f"{len(keys.unexpected_keys)} unexpected (first: {keys.unexpected_keys[0]})")
        return f"keys {'; '.join(parts)}"
    for key, tensor in module.state_dict().items():
        given = state.get(key)
        if isinstance(given, torch.Tensor) and tuple(given.shape) != tuple(tensor.shape) \
                and not (tensor.dim() == 0 and tuple(given.shape) == (1,)):  # PyTorch 0.3 stored scalars as 1-element tensors
            return f"{key} has shape {tuple(given.shape)}, model expects {tuple(tensor.shape)}"
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[1] if len(lines) > 1 else lines[0] if lines else type(exc).__name__)[:300]
