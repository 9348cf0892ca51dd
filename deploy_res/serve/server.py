"""Start and stop the ``tritonserver`` binary that the ``nvidia-pytriton`` wheel bundles.

PyPI's ``nvidia-pytriton`` (0.7.0) carries a real Triton Inference Server
(2.51) with its Python backend only; Triton's ``onnxruntime``, ``tensorrt``
and ``openvino`` backends ship only in NVIDIA's containers. This module runs
that binary on a model repository the way the tests and a quick local check
need it, measured on this machine:

* a backend folder holding the Python backend (``libtriton_python.so``, its
  utils) and the stub built for this interpreter's version
  (``python_backend_stubs/3.X``), assembled in a temporary folder;
* ``LD_LIBRARY_PATH`` = the wheel's ``nvidia_pytriton.libs`` + this
  interpreter's ``LIBDIR`` (without it the stub dies with
  ``'_thread.RLock' object has no attribute '_recursion_count'``);
* ``PATH`` with this interpreter's ``bin`` first, because the stub runs the
  ``python3`` it finds there (so the models import the same packages,
  deployres included).

The server listens on loopback only, on free ports; :meth:`TritonServer.stop`
ends it by its PID (SIGTERM, then SIGKILL after ``stop_timeout_s``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from deploy_res.core.errors import DeployResError

INSTALL_HINT = "pip install 'deployres[triton]' (nvidia-pytriton bundles tritonserver; glibc >= 2.35)"


def bundled_server() -> Path:
    """The ``pytriton`` package folder whose ``tritonserver/bin/tritonserver`` exists; one-line error if absent."""
    import importlib.util

    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise DeployResError(f"no bundled tritonserver: nvidia-pytriton is not installed; {INSTALL_HINT}")
    root = Path(list(spec.submodule_search_locations)[0])
    binary = root / "tritonserver" / "bin" / "tritonserver"
    if not binary.is_file():
        raise DeployResError(f"nvidia-pytriton at {root} has no tritonserver binary; reinstall it ({INSTALL_HINT})")
    return root


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(root: Path) -> dict[str, str]:
    """The environment the bundled server and its Python-backend stub need (see the module docstring)."""
    env = dict(os.environ)
    libs = [str(root.parent / "nvidia_pytriton.libs"), str(root / "tritonserver" / "external_libs"),
            str(sysconfig.get_config_var("LIBDIR") or "")]
    env["LD_LIBRARY_PATH"] = ":".join([p for p in libs if p and Path(p).is_dir()] + [p for p in [env.get("LD_LIBRARY_PATH")] if p])
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    return env


def _backend_dir(root: Path, into: Path) -> Path:
    """A backend folder with the Python backend and this interpreter's stub (pytriton's own layout)."""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = root / "tritonserver" / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise DeployResError(f"nvidia-pytriton has no Python-backend stub for Python {version}; use Python 3.8-3.13")
    python = into / "backends" / "python"
    python.mkdir(parents=True)
    for item in (root / "tritonserver" / "backends" / "python").iterdir():
        if item.is_file():
            shutil.copy2(item, python / item.name)
    shutil.copy2(stub, python / "triton_python_backend_stub")
    return into / "backends"


@dataclass
class TritonServer:
    """A running ``tritonserver`` on loopback: its PID, URLs and log file."""

    process: subprocess.Popen
    http_port: int
    grpc_port: int
    workdir: Path
    log_path: Path
    stop_timeout_s: float = 30.0
    _closed: bool = field(default=False, repr=False)
    _final_log: Optional[str] = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        """The server's log so far (kept after :meth:`stop` removes its work folder)."""
        if self._final_log is not None:
            return self._final_log
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> Optional[int]:
        """SIGTERM the server by its PID, SIGKILL its process group (it leads it) after ``stop_timeout_s``;
        stubs left in the group after the server exits are killed too. Returns the server's exit code."""
        if self._closed:
            return self.process.returncode
        self._closed = True
        if self.process.poll() is None:
            with _suppress_lookup():
                os.kill(self.pid, signal.SIGTERM)  # Triton unloads its models and ends their stubs itself
            try:
                self.process.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                with _suppress_lookup():
                    os.killpg(self.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        # Python-backend stubs the server started live in its process group: any still there once
        # the server has exited are ended too (the group outlives its leader only through them).
        deadline = time.monotonic() + 5
        while _group_alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_alive(self.pid):
            with _suppress_lookup():
                os.killpg(self.pid, signal.SIGKILL)
        self._final_log = self.log()
        shutil.rmtree(self.workdir, ignore_errors=True)
        return self.process.returncode

    def __enter__(self) -> "TritonServer":
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group ``pgid``, from ``/proc``; empty where there is no ``/proc``."""
    members = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _group_alive(pgid: int) -> bool:
    return bool(group_members(pgid))


class _suppress_lookup:
    def __enter__(self):
        return self

    def __exit__(self, kind, _value, _tb):
        return kind is not None and issubclass(kind, (ProcessLookupError, PermissionError))


def start_server(repository: str | Path, ready_timeout_s: float = 120.0, log_verbose: int = 0, exit_timeout_s: int = 5,
                 extra_args: tuple[str, ...] = ()) -> TritonServer:
    """Start the bundled ``tritonserver`` on ``repository`` (loopback, free ports) and wait until it is ready.

    Raises :class:`DeployResError` with the server log's last lines when it exits or is not
    ready within ``ready_timeout_s`` seconds (default 120; each Python-backend model starts
    its own stub process, which imports deployres). ``exit_timeout_s`` (default 5) bounds how long
    the server waits on open connections and in-flight requests when stopped.
    """
    repository = Path(repository).absolute()
    if not repository.is_dir():
        raise DeployResError(f"model repository {repository} is not a folder; write one with `deployres triton`")
    root = bundled_server()
    workdir = Path(tempfile.mkdtemp(prefix="deployres-triton-"))
    backends = _backend_dir(root, workdir)
    http_port, grpc_port = _free_port(), _free_port()
    log_path = workdir / "tritonserver.log"
    command = [str(root / "tritonserver" / "bin" / "tritonserver"), f"--model-repository={repository}",
               f"--backend-directory={backends}", f"--cache-directory={workdir / 'caches'}",
               "--http-address=127.0.0.1", f"--http-port={http_port}", "--grpc-address=127.0.0.1", f"--grpc-port={grpc_port}",
               "--allow-metrics=false", "--exit-on-error=true", f"--exit-timeout-secs={exit_timeout_s}", "--strict-readiness=true", f"--log-verbose={log_verbose}",
               *extra_args]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=server_env(root), cwd=workdir, start_new_session=True)
    server = TritonServer(process, http_port, grpc_port, workdir, log_path)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = _tail(server.log())
            server.stop()
            raise DeployResError(f"tritonserver exited with code {process.returncode} before it was ready: {tail}")
        if server.ready():
            return server
        time.sleep(0.5)
    tail = _tail(server.log())
    server.stop()
    raise DeployResError(f"tritonserver was not ready within {ready_timeout_s:.0f} s: {tail}")


def _tail(log: str, lines: int = 6) -> str:
    kept = [line.strip() for line in log.strip().splitlines() if line.strip()][-lines:]
    return " | ".join(kept)[-1500:] or "(empty log)"
