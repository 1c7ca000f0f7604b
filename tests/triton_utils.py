"""Start a real ``tritonserver`` for tests: the one shipped inside the nvidia-pytriton 0.7.0 wheel (Triton 2.51.0,
Python backend only), unpacked once into the cache folder.

    server_dir = ensure_tritonserver()             # <cache>/tritonserver/pytriton-0.7.0
    with start_tritonserver(repo_dir) as server:   # binds 127.0.0.1 on free ports
        server.http_url, server.grpc_url

Recipe (shared/REFERENCE.md, checked here): the Python backend stub is built for Python 3.11 and must run in an
environment with numpy<2 (numpy 2 lets models report READY and then hands them corrupted inputs), so the stub gets
its own small virtualenv (:func:`ensure_stub_env`), put first on the server's PATH.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from zoo.atomic import atomic_dir
from zoo.vocabulary import cache_root

PYTRITON = "nvidia-pytriton==0.7.0"
STUB_PACKAGES = ("numpy<2", "onnxruntime", "pillow")


class TritonUnavailable(RuntimeError):
    """The server could not be installed or started here (tests skip on it)."""


def tritonserver_cache() -> Path:
    return cache_root() / "tritonserver"


def _pip(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                            capture_output=True, text=True, check=False, timeout=900)
    if result.returncode != 0:
        raise TritonUnavailable(f"pip {' '.join(args)} failed: {result.stderr.strip()[-800:]}")


def ensure_tritonserver() -> Path:
    """The unpacked server folder (``bin/tritonserver``, ``backends/python`` with the 3.11 stub); installed on
    first use with ``pip install --no-deps --target``, atomically."""
    target = tritonserver_cache() / "pytriton-0.7.0"
    server = target / "pytriton" / "tritonserver"
    if not (server / "bin" / "tritonserver").is_file():
        with atomic_dir(target) as tmp:
            _pip("install", "--no-deps", "--target", str(tmp), PYTRITON)
            stub = tmp / "pytriton" / "tritonserver" / "python_backend_stubs" / "3.11" / "triton_python_backend_stub"
            if not stub.is_file():
                raise TritonUnavailable(f"{PYTRITON} has no Python 3.11 backend stub at {stub}")
            shutil.copy2(stub, tmp / "pytriton" / "tritonserver" / "backends" / "python" / stub.name)
    return server


def ensure_stub_env(packages: tuple[str, ...] = STUB_PACKAGES) -> Path:
    """A Python 3.11 virtualenv with numpy<2 (and onnxruntime, Pillow for our models) for the backend stub."""
    env = tritonserver_cache() / "stub-env"
    python = env / "bin" / "python"
    marker = env / ".packages"
    wanted = "\n".join(packages)
    if not python.is_file() or not marker.is_file() or marker.read_text() != wanted:
        if sys.version_info[:2] != (3, 11):
            raise TritonUnavailable("the Triton Python backend stub needs Python 3.11")
        shutil.rmtree(env, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(env)], check=True, timeout=300)
        result = subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", "-q", "install",
                                 *packages], capture_output=True, text=True, check=False, timeout=900)
        if result.returncode != 0:
            raise TritonUnavailable(f"stub env install failed: {result.stderr.strip()[-800:]}")
        marker.write_text(wanted)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TritonServer:
    """A running server; ``stop()`` ends it (also on leaving a ``with`` block)."""

    def __init__(self, process: subprocess.Popen, http_port: int, grpc_port: int, log_path: Path) -> None:
        self.process = process
        self.http_url = f"127.0.0.1:{http_port}"
        self.grpc_url = f"127.0.0.1:{grpc_port}"
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def stop(self) -> None:
        """End the server and remove its cache folder (where its log lives)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.log_path.parent, ignore_errors=True)

    def __enter__(self) -> TritonServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_tritonserver(repo_dir: str | Path, *, timeout: float = 60.0, stub_env: Path | None = None,
                       extra_args: tuple[str, ...] = ()) -> TritonServer:
    """Start ``tritonserver`` on ``repo_dir`` (127.0.0.1, free ports, ``--exit-on-error=false`` so a model that
    cannot load here, e.g. an ONNX Runtime backend model, does not stop the others) and wait until it is live."""
    server_dir = ensure_tritonserver()
    env = dict(os.environ)
    env_dir = stub_env or ensure_stub_env()
    env["PATH"] = f"{env_dir / 'bin'}:{env.get('PATH', '')}"
    http_port, grpc_port, metrics_port = _free_port(), _free_port(), _free_port()
    cache = Path(tempfile.mkdtemp(prefix="triton-cache."))
    log_path = cache / "server.log"
    cmd = [
        str(server_dir / "bin" / "tritonserver"), f"--model-repository={Path(repo_dir).resolve()}",
        f"--backend-directory={server_dir / 'backends'}", f"--cache-directory={cache}",
        "--http-address=127.0.0.1", f"--http-port={http_port}", "--grpc-address=127.0.0.1",
        f"--grpc-port={grpc_port}", "--metrics-address=127.0.0.1", f"--metrics-port={metrics_port}",
        "--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0", "--exit-on-error=false",
        "--exit-timeout-secs=5", *extra_args,
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = TritonServer(process, http_port, grpc_port, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise TritonUnavailable(f"tritonserver exited with {process.returncode}:\n{server.log()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://{server.http_url}/v2/health/live", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            time.sleep(0.3)
    log_tail = server.log()[-3000:]
    server.stop()
    raise TritonUnavailable(f"tritonserver not live after {timeout:.0f} s:\n{log_tail}")


def start_or_skip(repo_dir: str | Path, *, timeout: float = 90.0) -> TritonServer:
    """:func:`start_tritonserver` in a test: skip it, with the reason, where the server cannot run here."""
    import pytest

    try:
        return start_tritonserver(repo_dir, timeout=timeout)
    except TritonUnavailable as exc:
        pytest.skip(f"tritonserver unavailable here (tests/triton_utils.py installs {PYTRITON} and a numpy<2 stub "
                    f"env): {exc}")

