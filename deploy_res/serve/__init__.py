"""Serving: hand deployres' verified engines to existing servers (Triton Inference Server).

:func:`triton` writes a Triton model repository (:mod:`.triton`: it reads each engine in
:mod:`.triton_engine`, decides its config in :mod:`.triton_config`, writes it in
:mod:`.triton_writer` and, asked to, serves and compares it in :mod:`.triton_check`); :mod:`.runtime`
is what runs inside Triton's Python backend; :mod:`.server` starts the
``tritonserver`` that the ``nvidia-pytriton`` wheel bundles, for tests and
local checks; :mod:`.load` measures a served model under concurrency.
"""

from deploy_res.serve.triton import TritonRepository, read_engine, triton
from deploy_res.serve.triton_settings import TritonSettings

__all__ = ["TritonRepository", "TritonSettings", "read_engine", "triton"]
