"""Resolve what the user named into a PyTorch module: a zoo name or ``package.module:factory``
(optionally called with literal arguments, ``package.module:factory(ARGS)``), optionally with a checkpoint.

Factory arguments are Python literals only (numbers, strings, ``True``/``False``/``None``,
tuples, lists, dicts), read with :func:`ast.literal_eval`, never ``eval``:
``torchvision.models:resnet50(num_classes=37)``.

A zoo model's classifier (``fc``; ``classif`` for Inception-ResNet-v2) takes
its output size from the checkpoint when that is all that differs, or from
``num_classes``; a checkpoint contradicting ``num_classes`` is refused.

Checkpoints are read with ``torch.load(weights_only=True)``. A whole pickled
model (``torch.save(model, PATH)``) is refused, since loading it runs code from
the file, unless ``trust_pickle=True``; a file that is no checkpoint is
refused in one line saying what it is. A bare state dict
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

import ast
import importlib
import pickletools
import zipfile
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
    num_classes: Optional[int] = None
    trust_pickle: bool = False
    notes: tuple[str, ...] = ()
    program: Optional[str] = None
    """``torchscript`` or ``export`` for a program file (default None: a zoo model or factory)."""


DEFAULT_INIT_SEED = 0
"""Seed of the random initialisation when no weights are given, so a later stage can rebuild the very same model."""


HEAD_NAMES = ("fc", "classif")
"""The zoo's classifier attributes: ``fc`` (ResNet, ResNeXt, Wide, SE, plain), ``classif`` (Inception-ResNet-v2)."""


def load_model(source: str, weights: Optional[str | Path] = None, preprocessing: Optional[Preprocessing] = None,
               init_seed: int = DEFAULT_INIT_SEED, num_classes: Optional[int] = None, trust_pickle: bool = False,
               **factory_kwargs: Any) -> LoadedModel:
    """Build the model ``source`` names, load ``weights`` if given, and return it in eval mode.

    ``source`` is a zoo name (``resnet50``), ``package.module:factory`` or
    ``package.module:factory(ARGS)`` (literal arguments only), where
    ``factory(*ARGS, **factory_kwargs)`` returns an ``nn.Module``. ``preprocessing``
    overrides the zoo's settings (default: the zoo's, ImageNet 224 for a
    factory). ``num_classes`` (default None) sizes a zoo model's classifier
    (default: the checkpoint's, else the zoo's 1000) and is passed to a factory
    as ``num_classes=``. ``trust_pickle`` (default False) lets a checkpoint that
    is a whole pickled model load, running its code. The module is constructed
    under ``torch.manual_seed(init_seed)`` (default 0, the global RNG left
    untouched), so an untrained model is reproducible from its manifest.
    """
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1):
        raise DeployResError(f"num_classes must be a whole number of at least 1, got {num_classes!r}")
    program = program_kind(source)
    if program is not None:
        return _load_program(source, program, weights, preprocessing, num_classes, trust_pickle)
    state = read_state_dict(weights, trust_pickle) if weights is not None else None
    notes: list[str] = []
    if ":" in source:
        if num_classes is not None:
            factory_kwargs = {**factory_kwargs, "num_classes": num_classes}
        module = _seeded(init_seed, lambda: _build_from_factory(source, **factory_kwargs))
        spec_pre, family, zoo = Preprocessing(), None, False
    else:
        spec = get_spec(source)
        if "num_classes" in factory_kwargs:  # the keyword callers have always passed
            num_classes = factory_kwargs.pop("num_classes") if num_classes is None else num_classes
        module = _seeded(init_seed, lambda: spec.create(**factory_kwargs))
        module, num_classes, note = _fit_zoo_head(module, lambda n: _seeded(init_seed, lambda: spec.create(num_classes=n, **factory_kwargs)),
                                                  source, state, num_classes, Path(weights).name if weights else None)
        notes += [note] if note else []
        spec_pre, family, zoo = spec.preprocessing, spec.family, True
    if state is not None:
        _load_state(module, state, Path(weights))
    module.eval()
    return LoadedModel(module, source, zoo, preprocessing or spec_pre, family, Path(weights) if weights else None, init_seed,
                       num_classes, trust_pickle, tuple(notes))


PROGRAM_KINDS = {"torchscript": "a TorchScript archive (torch.jit.save)", "export": "a torch.export program (torch.export.save)"}


def program_kind(source: str) -> Optional[str]:
    """``torchscript`` or ``export`` when ``source`` names a file holding a program (None for zoo names and factories)."""
    path = Path(source)
    if get_spec_or_none(source) is not None or not path.is_file():
        return None
    if not zipfile.is_zipfile(path):
        raise DeployResError(f"{source} is neither a TorchScript archive nor a torch.export .pt2 program (not a zip archive); "
                             "MODEL is a zoo name, package.module:factory, or such a file")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names):
        return "torchscript"
    if any(n.endswith("/archive_format") for n in names) and any(n.endswith(".json") and "/models/" in n for n in names):
        return "export"
    if any(n.endswith("data.pkl") for n in names):
        raise DeployResError(f"{source} is a checkpoint (torch.save), not a model; pass a zoo name or package.module:factory as MODEL "
                             f"and the file as --weights")
    raise DeployResError(f"{source} is a zip archive but neither a TorchScript archive nor a torch.export .pt2 program")


def get_spec_or_none(name: str) -> Any:
    return None if name not in list_models() else get_spec(name)


def _load_program(source: str, kind: str, weights: Any, preprocessing: Optional[Preprocessing], num_classes: Optional[int],
                  trust_pickle: bool) -> LoadedModel:
    """A TorchScript archive (``torch.jit.load``) or a ``torch.export`` program (``torch.export.load``, after every
    pickle in it is checked to import nothing but tensor rebuilders, unless ``trust_pickle``)."""
    if weights is not None or num_classes is not None:
        raise DeployResError(f"{source} is {PROGRAM_KINDS[kind]}, which carries its own weights and head; drop --weights / --num-classes")
    try:
        if kind == "torchscript":
            module = torch.jit.load(source, map_location="cpu")
        else:
            unsafe = [] if trust_pickle else _unsafe_program_globals(Path(source))
            if unsafe:
                raise DeployResError(f"{source} is a torch.export program whose pickles import {unsafe[0]}; loading it runs code from the "
                                     "file: pass --trust-pickle if you trust the file")
            module = torch.export.load(source).module()
    except DeployResError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DeployResError(f"cannot load {source} ({PROGRAM_KINDS[kind]}): {first[:200]}") from None
    if kind == "torchscript":
        module.eval()  # a torch.export program's module has its mode fixed at export (and refuses .eval())
    return LoadedModel(module, source, False, preprocessing or Preprocessing(), None, None, DEFAULT_INIT_SEED, None, trust_pickle,
                       (f"{Path(source).name} is {PROGRAM_KINDS[kind]}",), kind)


_PROGRAM_SAFE_GLOBALS = ("collections.OrderedDict", "torch.Size", "torch.device", "torch.serialization._get_layout", "builtins.set")


def _safe_global(name: str) -> bool:
    return name in _PROGRAM_SAFE_GLOBALS or name.startswith(("torch._utils._rebuild_", "torch._tensor._rebuild_")) \
        or (name.startswith("torch.") and (name.endswith("Storage") or isinstance(getattr(torch, name[6:], None), torch.dtype)))


def _unsafe_program_globals(path: Path) -> list[str]:
    """Globals outside tensor rebuilding that the pickles in a ``.pt2`` archive would import (read with pickletools)."""
    found: list[str] = []
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            data = archive.read(name)
            if "/constants/opaque_obj_" in name:  # a raw pickle, read with pickle.loads
                found += [g for g in _globals_in(data, pickles=1) if not _safe_global(g)]
                continue
            if data[:4] != b"PK\x03\x04":  # raw tensor bytes or JSON; other pickles come as torch.save archives inside
                continue
            import io

            try:
                with zipfile.ZipFile(io.BytesIO(data)) as inner:
                    pickles = [inner.read(n) for n in inner.namelist() if n.endswith(".pkl")]
            except zipfile.BadZipFile:  # tensor bytes that happen to start like a zip
                continue
            found += [g for blob in pickles for g in _globals_in(blob, pickles=1) if not _safe_global(g)]
    return list(dict.fromkeys(found))


def load_manifest_model(model: Mapping[str, Any], weights: Optional[str | Path] = None) -> LoadedModel:
    """Rebuild the model a manifest's ``model`` block names: its source, seed, ``num_classes`` and ``trust_pickle``
    (defaults for manifests written before them: seed 0, the checkpoint's head, False). A program file (TorchScript,
    ``.pt2``) must still be the one the manifest recorded."""
    program = model.get("program")
    if isinstance(program, Mapping) and program.get("sha256"):
        from deploy_res.core.records import verify_record

        verify_record(model["source"], program, PROGRAM_KINDS.get(program.get("kind"), "program"),
                      "the PyTorch original would not be the exported model; re-export from it")
    return load_model(model["source"], weights, init_seed=int(model.get("init_seed") or 0), num_classes=model.get("num_classes"),
                      trust_pickle=bool(model.get("trust_pickle", False)))


def _seeded(seed: int, build: Any) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def _head(module: nn.Module) -> Optional[tuple[str, nn.Linear]]:
    """The zoo module's classifier: its attribute name and the ``nn.Linear`` (None if it has none)."""
    for name in HEAD_NAMES:
        layer = getattr(module, name, None)
        if isinstance(layer, nn.Linear):
            return name, layer
    return None


def _fit_zoo_head(module: nn.Module, rebuild: Any, source: str, state: Optional[Mapping[str, Any]], num_classes: Optional[int],
                  weights_name: Optional[str]) -> tuple[nn.Module, Optional[int], Optional[str]]:
    """The zoo module with the classifier ``num_classes`` or the checkpoint asks for, the class count and a one-line note."""
    head = _head(module)
    if head is None:
        if num_classes is not None:
            raise DeployResError(f"{source} has no classifier deployres can resize (looked for {', '.join(HEAD_NAMES)}); drop --num-classes")
        return module, None, None
    name, layer = head
    given = state.get(f"{name}.weight") if state is not None else None
    from_checkpoint = given.shape[0] if isinstance(given, torch.Tensor) and given.dim() == 2 and given.shape[1] == layer.in_features else None
    if num_classes is not None and from_checkpoint is not None and from_checkpoint != num_classes:
        raise DeployResError(f"weights {weights_name} contradict --num-classes {num_classes}: {name}.weight has shape {tuple(given.shape)}, "
                             f"a {from_checkpoint}-class head; drop --num-classes or pass {from_checkpoint}")
    wanted = num_classes or from_checkpoint or layer.out_features
    if wanted == layer.out_features:
        return module, wanted, None
    why = f"--num-classes {wanted}" if num_classes is not None else f"{weights_name}'s {name}.weight {tuple(given.shape)}"
    return rebuild(wanted), wanted, f"{source} built with a {wanted}-class head ({name}: {layer.in_features} -> {wanted}) from {why}"


def parse_source(source: str) -> tuple[str, str, tuple[Any, ...], dict[str, Any]]:
    """``package.module:factory(ARGS)`` -> (module, factory attribute, args, kwargs); literal arguments only, never ``eval``."""
    module_name, _, attr = source.partition(":")
    if not module_name or not attr:
        raise DeployResError(f"{source!r} is not of the form package.module:factory")
    if "(" not in attr:
        return module_name, attr, (), {}
    try:
        call = ast.parse(attr.strip(), mode="eval").body
    except SyntaxError as exc:
        raise DeployResError(f"{source!r}: the factory call does not parse ({exc.msg}); write package.module:factory(arg, key=value)") from None
    if not isinstance(call, ast.Call) or _dotted(call.func) is None:
        raise DeployResError(f"{source!r} is not of the form package.module:factory(ARGS)")
    args = tuple(_literal(node, source) for node in call.args)
    kwargs: dict[str, Any] = {}
    for keyword in call.keywords:
        if keyword.arg is None:
            raise DeployResError(f"{source!r}: **{ast.unparse(keyword.value)} is not allowed; name each keyword argument with a literal value")
        kwargs[keyword.arg] = _literal(keyword.value, source)
    return module_name, _dotted(call.func), args, kwargs


def _dotted(node: ast.AST) -> Optional[str]:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else None
    return None


def _literal(node: ast.AST, source: str) -> Any:
    try:
        if isinstance(node, ast.Starred):
            raise ValueError
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise DeployResError(f"{source!r}: argument {ast.unparse(node)} is not a Python literal; factory arguments may be numbers, strings, "
                             "True/False/None, tuples, lists and dicts only") from None


def _build_from_factory(source: str, **extra: Any) -> nn.Module:
    module_name, attr, args, kwargs = parse_source(source)
    clash = sorted(set(kwargs) & set(extra))
    if clash:
        raise DeployResError(f"{source!r} already sets {clash[0]}=; drop --{clash[0].replace('_', '-')} or the argument")
    kwargs.update(extra)
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
        raise DeployResError(f"{module_name}:{attr} is not callable; name a function that returns an nn.Module")
    try:
        model = factory(*args, **kwargs)
    except Exception as exc:
        raise DeployResError(f"{source}{'' if '(' in source else '()'} failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise DeployResError(f"{source}{'' if '(' in source else '()'} returned {type(model).__name__}, not a torch.nn.Module")
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
        raise DeployResError(f"weights {path.name} holds no state dict (looked at the top level and under {', '.join(_WRAPPER_KEYS)}); save model.state_dict()")
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


def load_checkpoint(module: nn.Module, path: str | Path, trust_pickle: bool = False) -> None:
    """Load the checkpoint at ``path`` into ``module`` strictly; one-line error on any mismatch.

    ``trust_pickle`` (default False): also load a whole pickled model, running the code in the file.
    """
    _load_state(module, read_state_dict(path, trust_pickle), Path(path))


def read_state_dict(path: str | Path, trust_pickle: bool = False) -> "OrderedDict[str, torch.Tensor]":
    """The state dict in the checkpoint at ``path`` (unwrapped as :func:`extract_state_dict` does).

    Read with ``torch.load(weights_only=True)``; a whole pickled model or other pickled
    Python objects load only with ``trust_pickle`` (default False). A file that is no
    checkpoint, or one refused, is a one-line error saying what the file is.
    """
    path = Path(path)
    if not path.is_file():
        raise DeployResError(f"weights file {path} not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as exc:
        raise DeployResError(_unreadable(path, exc, trust_pickle)) from None
    return extract_state_dict(checkpoint, path)


_SAFE_GLOBAL_PREFIXES = ("torch.", "collections.OrderedDict", "_codecs.encode", "builtins.")
_SAVE_HINT = "save it with torch.save(model.state_dict(), PATH)"


def _unreadable(path: Path, exc: Exception, trusted: bool) -> str:
    """Why ``torch.load`` could not read ``path``, in one line: what the file is and what to do."""
    what = _file_kind(path)
    if what is not None:
        return f"weights {path.name} {what}; pass a checkpoint written by torch.save(model.state_dict(), PATH)"
    found = _pickle_globals(path)
    if not trusted and found:
        modules = [g for g in found if g.startswith("torch.nn.modules.")]
        custom = [g for g in found if not g.startswith(_SAFE_GLOBAL_PREFIXES)]
        if modules:
            cls = (custom or modules)[0]
            return (f"weights {path.name} is a whole pickled nn.Module ({cls}), not a state dict; it is refused because loading it "
                    f"runs code from the file: {_SAVE_HINT}, or pass --trust-pickle if you trust the file")
        if custom:
            return (f"weights {path.name} holds pickled Python objects beside tensors (first: {custom[0]}); they are refused because "
                    f"loading them runs code from the file: {_SAVE_HINT}, or pass --trust-pickle if you trust the file")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"cannot read weights {path}: {first[:200]}"


def _file_kind(path: Path) -> Optional[str]:
    """What ``path`` is when it is plainly no PyTorch checkpoint (None when it may be one)."""
    head = path.read_bytes()[:16] if path.stat().st_size else b""
    if not head:
        return "is an empty file, not a checkpoint"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "is a TorchScript archive (torch.jit.save), not a checkpoint of weights"
        if not any(n.endswith("data.pkl") for n in names):
            return "is a zip archive but not a PyTorch checkpoint (it holds no data.pkl)"
        return None
    if head.startswith(b"PK"):
        return "is a damaged zip archive (torch.save writes a zip; this one cannot be opened): it was cut short or corrupted, save it again"
    if head[0] != 0x80:  # every pickle torch.save writes starts with the PROTO opcode
        return "is not a PyTorch checkpoint (neither torch.save's zip archive nor a pickle" + (": it reads as text)" if _is_text(path) else ")")
    return None


def _is_text(path: Path) -> bool:
    try:
        path.read_bytes()[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _pickle_globals(path: Path) -> list[str]:
    """The ``module.name`` globals the pickle(s) in ``path`` would import, read with :mod:`pickletools` (nothing runs)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return _globals_in(archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl"))), pickles=1)
        return _globals_in(path.read_bytes(), pickles=5)  # the legacy format: magic, protocol, sys info, object, storage keys
    except (OSError, StopIteration, zipfile.BadZipFile):
        return []


def _globals_in(data: bytes, pickles: int) -> list[str]:
    import io

    found: dict[str, None] = {}
    stream = io.BytesIO(data)
    for _ in range(pickles):
        strings: list[str] = []
        try:
            for opcode, arg, _pos in pickletools.genops(stream):
                if opcode.name in ("GLOBAL", "INST"):
                    found[str(arg).replace(" ", ".")] = None
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found[f"{strings[-2]}.{strings[-1]}"] = None
                elif isinstance(arg, str):
                    strings.append(arg)
        except Exception:  # the end of the pickles (raw storage bytes follow) or a damaged one
            break
    return list(found)


def _load_state(module: nn.Module, state: Mapping[str, Any], path: Path) -> None:
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
