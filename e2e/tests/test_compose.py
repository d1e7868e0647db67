"""docker-compose.yml really run: `docker compose up -d api` serves the facade in local mode.

The compose v2 plugin is built from Go modules with the control plane's binaries
(e2e/controlplane/build-bins.sh) and handed to Debian's docker client through a
``DOCKER_CONFIG`` of the test's own (``cli-plugins/docker-compose``). The api service's image
is the job image `make images` built with the facade added (api_facade/local.Dockerfile),
which compose builds: a small layer.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from audioproc import samples
from chart_support import find_tool
from e2e.helpers import REPO, wait_for
from e2e.realnode import free_ports
from images.bases import ensure_bases
from images.build import build_all, ca_bundle, project_version
from images.engine import DockerEngine

pytestmark = pytest.mark.e2e

#: What a user behind a TLS-intercepting proxy adds (docs/deploy.md): the CA for the build's
#: downloads, as the build secret the Dockerfiles read.
CA_OVERRIDE = """\
services:
  api:
    build:
      secrets: [ca_bundle]
secrets:
  ca_bundle:
    file: {bundle}
"""


class Compose:
    def __init__(
        self, engine: DockerEngine, env: dict[str, str], project: str, files: list[Path]
    ) -> None:
        self.engine, self.env, self.project, self.files = engine, env, project, files

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                self.engine.client,
                "compose",
                *(arg for path in self.files for arg in ("-f", str(path))),
                "-p",
                self.project,
                *args,
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture
def compose(docker_engine: DockerEngine, tmp_path: Path) -> Iterator[tuple[Compose, Path, int]]:
    build_all(docker_engine, ["audioproc-job"])
    config = tmp_path / "docker-config"
    (config / "cli-plugins").mkdir(parents=True)
    (config / "cli-plugins" / "docker-compose").symlink_to(find_tool("docker-compose"))
    data = tmp_path / "data"
    for folder in ("media", "output", "models"):
        (data / folder).mkdir(parents=True)
    (data / "output").chmod(0o777)  # the service runs as uid 10001
    (port,) = free_ports(1)
    env = {
        **os.environ,
        "DOCKER_CONFIG": str(config),
        "DOCKER_BUILDKIT": "1",
        "AUDIOPROC_TAG": project_version(),
        # The facade layer copies uv from UV_IMAGE: the one made here (no registry reached).
        "UV_IMAGE": ensure_bases(docker_engine).uv,
        "AUDIOPROC_PORT": str(port),
        **{f"AUDIOPROC_{f.upper()}": str(data / f) for f in ("media", "output", "models")},
    }
    files = [REPO / "docker-compose.yml"]
    bundle = ca_bundle()
    if bundle is not None:  # behind a TLS-intercepting proxy, as `make images` does
        files.append(tmp_path / "ca-bundle.override.yml")
        files[-1].write_text(CA_OVERRIDE.format(bundle=json.dumps(str(bundle))))
    run = Compose(docker_engine, env, f"audioproc-e2e-{secrets.token_hex(3)}", files)
    local_image = f"audioproc-local:{project_version()}"
    replaced = docker_engine.image_id(local_image)
    yield run, data, port
    run("down", "--volumes", "--timeout", "10")
    if replaced is not None and docker_engine.image_id(local_image) != replaced:
        # Compose rebuilt the facade layer: the image it replaced is untagged now and goes, as
        # images.build does with its own, or each run would leave 6 GB on the disk.
        docker_engine.run("image", "rm", replaced, check=False)


def test_compose_up_serves_the_facade(compose: tuple[Compose, Path, int]) -> None:
    run, data, port = compose
    samples.write_audio(data / "media" / "tone.wav", samples.tone(4.0, 16000, 440.0), 16000)
    up = run("up", "--detach", "--build", "api", timeout=900)
    assert up.returncode == 0, up.stderr

    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, timeout=90, what="the compose api service's /healthz")
    except TimeoutError:
        pytest.fail(f"compose api never answered; logs:\n{run('logs', 'api').stdout[-3000:]}")
    response = httpx.post(
        f"http://127.0.0.1:{port}/process",
        params={"wait": "true"},
        timeout=300,
        json={
            "input_uri": "/data/input/tone.wav",
            "video_id": "tone",
            "extractors": ["loudness", "pitch"],
        },
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "completed", result
    manifest = result["manifest"]
    assert manifest["video_id"] == "tone"
    pitch = {e["name"]: e for e in manifest["extractors"]}["pitch"]
    assert pitch["features"]["f0_median_hz"] == pytest.approx(440.0, rel=0.01)
    written = json.loads(
        (data / "output" / result["task_id"] / "tone" / "manifest.json").read_text()
    )
    assert written["created_at"] == manifest["created_at"]
