"""A real Triton Inference Server (the one bundled in nvidia-pytriton) for the tests.

It lives in its own virtual environment, ``.triton-venv`` (``make test``
creates it): PyTriton needs NumPy < 2, and the Python-backend stub links the
system libpython3.11, so the venv is built from ``/usr/bin/python3.11``. The
production onnxruntime and libtorch backends are not in that wheel; the
stand-ins in ``tests/helpers/triton_backends`` take their names (see its README).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".triton-venv"
STAND_INS = Path(__file__).resolve().parent / "triton_backends"


def triton_home() -> Path | None:
    found = sorted(VENV.glob("lib/python3*/site-packages/pytriton/tritonserver/bin/tritonserver"))
    return found[0].parent.parent if found else None


def unavailable_reason() -> str | None:
    if triton_home() is None:
        return f"no Triton server in {VENV} (`make test` creates it with /usr/bin/python3.11 and nvidia-pytriton)"
    return None


class TritonServer:
    """``tritonserver`` on free loopback ports for one model repository; a context manager that always stops it."""

    def __init__(self, repository: Path, http_port: int, grpc_port: int, metrics_port: int):
        home = triton_home()
        self.workdir = Path(tempfile.mkdtemp(prefix="triton-"))
        backends = self.workdir / "backends"
        shutil.copytree(home / "backends" / "python", backends / "python")
        version = next(VENV.glob("lib/python3*")).name.removeprefix("python")
        shutil.copy(home / "python_backend_stubs" / version / "triton_python_backend_stub", backends / "python")
        for stand_in in ("onnxruntime", "pytorch"):  # copied, not linked: Triton resolves backends by real path
            shutil.copytree(STAND_INS / stand_in, backends / stand_in)
        env = dict(os.environ)
        # The stub embeds libpython and finds its packages through the first python3 on PATH (as PyTriton does).
        env["PATH"] = f"{VENV / 'bin'}:{env.get('PATH', '')}"
        env["LD_LIBRARY_PATH"] = f"{home.parent.parent / 'nvidia_pytriton.libs'}:{env.get('LD_LIBRARY_PATH', '')}"
        self.url = f"http://127.0.0.1:{http_port}"
        self.log = open(self.workdir / "triton.log", "wb")
        cmd = [
            str(home / "bin" / "tritonserver"), f"--model-repository={repository}", f"--backend-directory={backends}",
            f"--http-port={http_port}", f"--grpc-port={grpc_port}", f"--metrics-port={metrics_port}", "--http-address=127.0.0.1",
            "--grpc-address=127.0.0.1", "--exit-on-error=true", "--strict-readiness=true",
        ]
        self.process = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Triton exited with {self.process.returncode}: {self.output()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/health/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"Triton not ready within {timeout:g} s: {self.output()[-2000:]}")

    def output(self) -> str:
        self.log.flush()
        return (self.workdir / "triton.log").read_text(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
        return self.process.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()
