"""Helpers of the facade's tests (fixtures are in conftest.py): generated media, settings and
clients on the local backend, a served facade in a subprocess, polling.

Importing this module points ``PYTHONPATH`` at this working tree, for the processes the tests
start (see ``WORKTREE_PYTHONPATH``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from audioproc import samples
from audioproc_api.app import create_app
from audioproc_api.backends.local import LocalBackend
from audioproc_api.settings import ApiSettings

REPO = Path(__file__).resolve().parents[2]
#: This working tree's sources, for the Python processes the tests start (the local
#: backend's forkserver too: on Python 3.11 it does not inherit sys.path, only the environment).
WORKTREE_PYTHONPATH = os.pathsep.join(
    str(REPO / p) for p in (".", "job_image", "operator", "api_facade")
)
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(None, [WORKTREE_PYTHONPATH, os.environ.get("PYTHONPATH")])
)

#: Fast extractors, to keep the suite short; the pipeline's own tests cover the rest.
FAST_EXTRACTORS = ["loudness", "spectral"]


def write_tone(path: Path, seconds: float = 1.0, rate: int = 16000, f0: float = 440.0) -> Path:
    """A real encoded tone (the container and codec follow the file extension)."""
    samples.write_audio(path, samples.tone(seconds, rate, f0=f0), rate)
    return path


@dataclass
class Media:
    root: Path
    good: list[Path]
    broken: Path


def make_media(root: Path) -> Media:
    """Real encoded media in ``root``: an audio file, a video, two more formats, a broken file."""
    # one audio file, one video, and two more formats: what clients send
    good = [
        write_tone(root / "tone-0.wav", f0=220.0),
        root / "clip-1.mp4",
        write_tone(root / "tone-2.mp3", f0=330.0, rate=44100),
        write_tone(root / "tone-3.flac", f0=440.0),
    ]
    samples.write_video(good[1], samples.tone(1.0, 44100, f0=275.0), 44100)
    broken = samples.write_garbage(root / "broken.mp4", n_bytes=16 * 1024)
    return Media(root, good, broken)


def local_settings(tmp_path: Path, media: Media, **overrides) -> ApiSettings:
    values: dict[str, Any] = {
        "api_backend": "local",
        "allowed_roots": [media.root],
        "api_state_dir": tmp_path / "state",
        "output_uri": (tmp_path / "out").as_uri(),
        "max_concurrent_videos": 2,
        "use_gpu": False,
    }
    values.update(overrides)
    return ApiSettings(**values)


class Service:
    """A facade under test, as the shared endpoint tests see it (one per backend)."""

    name: str
    client: TestClient  # started: its lifespan runs for the whole test
    media: Media

    def make_client(self, **settings_overrides) -> TestClient:
        """Another app on the same backend (already started), with other settings."""
        raise NotImplementedError

    def wait_finished(self, task_id: str) -> dict:
        """GET /status once the task has finished (and its manifests are in storage)."""
        return wait_finished(self.client, task_id)

    def stored_request_id(self, task_id: str) -> str | None:
        """The request id as the backend stored it (not via the API)."""
        raise NotImplementedError

    def assert_work_stopped(self, task_id: str) -> None:
        """After a cancel: nothing of the task runs or will run."""
        raise NotImplementedError


def wait_until(check, timeout_s: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)
    return result


def make_client(settings: ApiSettings) -> TestClient:
    backend = LocalBackend(settings, settings.output_uri)
    return TestClient(create_app(settings, backend=backend, output=settings.output_uri))


def wait_finished(
    client: TestClient, task_id: str, timeout_s: float = 180.0, **request_kwargs
) -> dict:
    """Poll GET /status until the task is completed or failed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = client.get(f"/status/{task_id}", **request_kwargs)
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] in ("completed", "failed"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} not finished after {timeout_s} s: {body}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServedFacade:
    """``python -m audioproc_api serve`` (real uvicorn) in a subprocess, on the local backend."""

    def __init__(self, tmp_path: Path, media: Media, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PYTHONPATH": WORKTREE_PYTHONPATH,
            "API_BACKEND": "local",
            "API_STATE_DIR": str(tmp_path / "state"),
            "OUTPUT_URI": (tmp_path / "out").as_uri(),
            "ALLOWED_ROOTS": f'["{media.root}"]',
            "MAX_CONCURRENT_VIDEOS": "1",
            "USE_GPU": "false",
            **env,
        }
        self.log_path = tmp_path / "service.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> ServedFacade:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "audioproc_api",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def ready() -> bool:
            assert self.process.poll() is None, (
                f"service exited during start-up: {self.log_path.read_text()}"
            )
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, 60, "the service to answer /healthz")
        return self

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it has not exited after 30 s; the exit status."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


@contextmanager
def served(tmp_path: Path, media: Media, **env: str) -> Iterator[ServedFacade]:
    service = ServedFacade(tmp_path, media, **env).start()
    try:
        yield service
    finally:
        service.stop()


def busy_batch(media: Media, items: int = 1000) -> dict:
    """A batch body that keeps one worker busy for minutes (hundreds of real items ahead of
    anything submitted after it; cancel it when done)."""
    return {
        "items": [
            {
                "input_uri": str(media.good[0]),
                "video_id": f"busy-{i}",
                "extractors": FAST_EXTRACTORS,
            }
            for i in range(items)
        ]
    }
