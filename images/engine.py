"""The Docker engine that builds and runs the images: the one running, or Debian's, started by us.

``DockerEngine.ensure()`` finds a daemon that answers; when none does and we are root with
Debian's ``dockerd`` installed (``apt-get install docker.io``), it starts one and remembers
that it did, so that ``stop()`` ends exactly that daemon and nothing else.

The client is Debian's ``/usr/bin/docker`` when present: with ``DOCKER_BUILDKIT=1`` it builds
with the daemon's built-in BuildKit (``RUN --mount``, build secrets), where a newer client
without the buildx plugin cannot build at all. ``AUDIOPROC_DOCKER`` names another client.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CACHE_DIR = Path(os.environ.get("AUDIOPROC_CACHE", Path.home() / ".cache" / "audioprocessor"))
DEBIAN_CLIENT = Path("/usr/bin/docker")
DEBIAN_DAEMON = Path("/usr/sbin/dockerd")
START_TIMEOUT_S = 60


class EngineError(RuntimeError):
    """No Docker engine could be found or started; the message says why."""


def docker_client() -> str:
    """The docker client to use (see the module docstring)."""
    named = os.environ.get("AUDIOPROC_DOCKER")
    if named:
        return named
    if DEBIAN_CLIENT.exists():
        return str(DEBIAN_CLIENT)
    found = shutil.which("docker")
    if not found:
        raise EngineError(
            "no docker client: install Debian's docker.io (apt-get install docker.io)"
        )
    return found


@dataclass
class DockerEngine:
    """A reachable Docker daemon, and whether we started it (then ``stop()`` ends it)."""

    client: str = field(default_factory=docker_client)
    started_pid: int | None = None

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_BUILDKIT": "1"}

    def run(
        self, *args: str, check: bool = True, capture: bool = True, input: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """``docker ARGS``; raises EngineError with its stderr when it fails and ``check``."""
        result = subprocess.run(
            [self.client, *args], env=self.env(), input=input, capture_output=capture, check=False
        )
        if check and result.returncode != 0:
            detail = (
                result.stderr.decode(errors="replace").strip()
                if capture
                else f"exit code {result.returncode}"
            )
            raise EngineError(f"docker {' '.join(args[:3])} ... failed: {detail}")
        return result

    def answers(self) -> bool:
        return self.run("info", "--format", "{{.ServerVersion}}", check=False).returncode == 0

    @classmethod
    def ensure(cls, log_dir: Path = CACHE_DIR / "logs") -> DockerEngine:
        """The running daemon, or Debian's dockerd started now (as root); EngineError otherwise."""
        engine = cls()
        if engine.answers():
            return engine
        if os.geteuid() != 0:
            raise EngineError("no Docker daemon answers, and starting one needs root")
        if not DEBIAN_DAEMON.exists():
            raise EngineError(
                f"no Docker daemon answers and {DEBIAN_DAEMON} is missing (apt-get install docker.io)"
            )
        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir / "dockerd.log", "ab") as log:
            daemon = subprocess.Popen(
                [str(DEBIAN_DAEMON)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        engine.started_pid = daemon.pid
        deadline = time.monotonic() + START_TIMEOUT_S
        while not engine.answers():
            if daemon.poll() is not None:
                raise EngineError(
                    f"dockerd exited with code {daemon.returncode}; see {log_dir / 'dockerd.log'}"
                )
            if time.monotonic() > deadline:
                engine.stop()
                raise EngineError(
                    f"dockerd did not answer within {START_TIMEOUT_S}s; see {log_dir / 'dockerd.log'}"
                )
            time.sleep(0.5)
        return engine

    def stop(self) -> None:
        """End the daemon if we started it (SIGTERM, then wait: it stops its containers first)."""
        if self.started_pid is None:
            return
        pid, self.started_pid = self.started_pid, None
        try:
            os.kill(pid, 15)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                finished, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:  # not our child (started by another process): poll /proc
                finished = 0 if Path(f"/proc/{pid}").exists() else pid
            if finished:
                return
            time.sleep(0.2)
        os.kill(pid, 9)

    # -- images ------------------------------------------------------------------------------

    def image(self, ref: str) -> dict[str, Any] | None:
        """``docker image inspect`` of ``ref``, or None when there is no such image."""
        result = self.run("image", "inspect", ref, check=False)
        if result.returncode != 0:
            return None
        return json.loads(result.stdout)[0]

    def image_id(self, ref: str) -> str | None:
        found = self.image(ref)
        return found["Id"] if found else None

    def label(self, ref: str, key: str) -> str | None:
        return image_labels(self.image(ref)).get(key)


def image_labels(image: dict[str, Any] | None) -> dict[str, str]:
    """The labels of a ``docker image inspect`` result (none for a missing image)."""
    labels: dict[str, str] = ((image or {}).get("Config") or {}).get("Labels") or {}
    return labels
