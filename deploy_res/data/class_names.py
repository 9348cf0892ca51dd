"""Class names: read once (``--labels``), recorded in the manifest as ``model.class_names``, read back by every stage.

A names source is a text file with one name per line (blank lines ignored, as Triton's ``label_filename``), or a
labelled image folder, whose sorted sub-folder names are its classes (label ``i`` is the ``i``-th, as torchvision's
``ImageFolder`` and :func:`deploy_res.data.images.load_labelled_folder` assign them). ``model`` is a lineage key
(:data:`deploy_res.core.manifest.LINEAGE_KEYS`), so every artifact built from the export carries the names down.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from deploy_res.core.errors import DeployResError


def read_class_names(source: str | os.PathLike) -> list[str]:
    """The class names in ``source`` (a text file, one per line, or a folder of class sub-folders), in label order."""
    path = Path(source)
    if path.is_dir():
        names = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not names:
            raise DeployResError(f"--labels {path} is a folder without class sub-folders; pass a text file with one class name per line "
                                 "or a folder of class sub-folders")
        return names
    if not path.is_file():
        raise DeployResError(f"--labels {path} does not exist; pass a text file with one class name per line or a folder of class sub-folders")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DeployResError(f"--labels {path.name} is not UTF-8 text; pass a text file with one class name per line") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise DeployResError(f"--labels {path.name} holds no class names; write one name per line")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DeployResError(f"--labels {path.name} names {repeated[0]!r} more than once; every class needs its own name")
    return names


def check_class_count(names: Sequence[str], classes: Any, source: str, model: str) -> None:
    """One line when ``names`` does not give each of the model's ``classes`` outputs a name (``classes`` not a whole
    number: nothing to check)."""
    if isinstance(classes, int) and classes > 0 and len(names) != classes:
        raise DeployResError(f"{source} has {len(names)} class names; {model} outputs {classes} classes: give one name per output")


def class_names_of(manifest: Optional[Mapping[str, Any]]) -> Optional[list[str]]:
    """The class names an artifact's manifest records (``model.class_names``), or None."""
    names = ((manifest or {}).get("model") or {}).get("class_names")
    return list(names) if isinstance(names, list) and names else None


def named(index: int, names: Optional[Sequence[str]]) -> str:
    """``"cat (3)"`` when class ``index`` has a name, else ``"3"``."""
    return f"{names[index]} ({index})" if names is not None and 0 <= index < len(names) else str(index)
