"""No import runs from a lower layer to a higher one (ARCHITECTURE.md draws the layers).

Every ``import`` in the package counts, the lazy ones inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"deploy_res": ROOT / "deploy_res", "deploy_res.exporters": ROOT / "exporters", "deploy_res.engines": ROOT / "engines"}

LAYERS = {
    "core": 0,                                              # the ground: errors, files, manifests, ONNX I/O, timing, residual finder
    "models": 1, "exporters": 1, "engines": 1,              # the zoo; ONNX graph passes; engine backends and precision
    "data": 2, "loading": 2, "scale": 2,                    # images and arrays, checkpoints and factories, batch plans
    "export": 3, "optimize": 3, "build": 3, "validation": 3, "profiling": 3, "reports": 3,
    "infer": 3, "serve": 3, "demo": 3,                      # the stages
    "pipeline": 4, "tune": 4,                               # `run`: the stages in order; `tune`: the stages searched
    "cli": 5,                                               # the command line
}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports():
    for package, folder in SOURCES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            module = ".".join([package, *parts[:-1]] + ([] if parts[-1] == "__init__" else [parts[-1]]))
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    yield module, node.module, path, node.lineno
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        yield module, alias.name, path, node.lineno


def test_every_room_has_a_layer():
    rooms = {_room(m) for m, *_ in _imports()} - {""}
    assert rooms <= set(LAYERS), f"give these a layer in LAYERS and ARCHITECTURE.md: {sorted(rooms - set(LAYERS))}"


def test_no_import_runs_from_a_lower_layer_to_a_higher_one():
    wrong = []
    for module, imported, path, line in _imports():
        if not imported.startswith("deploy_res.") or _room(module) not in LAYERS:
            continue
        here, there = LAYERS[_room(module)], LAYERS.get(_room(imported), 0)
        if there > here:
            wrong.append(f"{path.relative_to(ROOT)}:{line} ({_room(module)}, layer {here}) imports {imported} (layer {there})")
    assert not wrong, "\n".join(wrong)


def test_no_generic_top_level_names_are_imported():
    """The repository folders exporters/ and engines/ are imported only as deploy_res.exporters / deploy_res.engines."""
    bare = [f"{path.relative_to(ROOT)}:{line}" for _, imported, path, line in _imports() if imported.split(".")[0] in ("exporters", "engines")]
    assert not bare, bare
