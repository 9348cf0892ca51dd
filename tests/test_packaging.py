"""What the install gives a user: the default path's needs, and nothing with a generic name at the top level."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

from packaging.requirements import Requirement


def _requirements(extra: str | None = None) -> set[str]:
    names = set()
    for line in metadata.requires("deployres") or []:
        req = Requirement(line)
        in_extra = req.marker is not None and req.marker.evaluate({"extra": extra or ""})
        if (req.marker is None and extra is None) or (extra is not None and in_extra):
            names.add(req.name.lower())
    return names


def test_the_default_exporter_needs_nothing_from_an_extra():
    """`deployres run` exports with dynamo by default, which imports onnxscript: a plain install must bring it."""
    assert "onnxscript" in _requirements()


def test_the_readme_main_job_install_brings_the_sample_photos():
    assert {"scikit-image"} <= _requirements("samples")


def test_no_generic_top_level_packages_are_installed(tmp_path):
    """PyPI has `exporters` and `engines`: ours install as deploy_res.exporters / deploy_res.engines only."""
    code = ("import importlib.util as u; "
            "print([n for n in ('exporters', 'engines') if u.find_spec(n)]); "
            "import deploy_res.exporters.pass_runner, deploy_res.engines.base")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
