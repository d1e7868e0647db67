"""`docker run` smoke tests of the three images `make images` builds: cheap checks that fail fast.

- the job image: `audioproc process` exits 0 with a manifest; `run-index` exits 3 for a corrupt
  input and 1 for an item that does not exist, leaving its termination message either way;
- the facade image: `/healthz` answers (kubernetes backend, a kubeconfig for the local cluster);
- the operator image: it starts with a kubeconfig and reconciles an AudioJob into a Job.

All run as the images' own non-root user, with a read-only root filesystem and a /tmp tmpfs,
as the chart and the operator run them.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from audioproc import samples
from e2e.helpers import Kube, wait_for
from e2e.realnode import free_ports
from images.build import BuildResult, build_all
from images.engine import DockerEngine

pytestmark = pytest.mark.e2e

LOCKED_DOWN = [
    "--read-only",
    "--tmpfs",
    "/tmp",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
]


@pytest.fixture(scope="module")
def images(docker_engine: DockerEngine) -> dict[str, str]:
    """``{name: name:version}``, built when their sources changed (as `make images` does)."""
    results: list[BuildResult] = build_all(docker_engine)
    return {r.ref.split(":", 1)[0]: r.ref for r in results}


def docker(
    engine: DockerEngine, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [engine.client, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture
def container_names(docker_engine: DockerEngine) -> Iterator[list[str]]:
    """Names of detached containers a test starts; removed afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        docker(docker_engine, "rm", "--force", name)


@pytest.fixture
def flat_kubeconfig(cluster: Any, tmp_path: Path) -> Path:
    """The cluster's kubeconfig with its CA inlined, readable by the images' user."""
    path = tmp_path / "kubeconfig"
    path.write_text(cluster.kubectl("config", "view", "--raw", "--minify", "--flatten").stdout)
    path.chmod(0o644)
    return path


def test_job_image_exit_codes(
    docker_engine: DockerEngine, images: dict[str, str], tmp_path: Path
) -> None:
    media, out = tmp_path / "media", tmp_path / "out"
    media.mkdir()
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    samples.write_audio(media / "tone.wav", samples.tone(3.0, 16000, 440.0), 16000)
    samples.write_garbage(media / "corrupt.mp4")
    (media / "items.json").write_text(
        json.dumps(
            [
                {
                    "inputUri": "file:///data/corrupt.mp4",
                    "videoId": "corrupt",
                    "extractors": ["loudness"],
                },
            ]
        )
    )
    run = [
        "run",
        "--rm",
        *LOCKED_DOWN,
        "-v",
        f"{media}:/data:ro",
        "-v",
        f"{out}:/out",
        "-e",
        'ALLOWED_ROOTS=["/data"]',
        "-e",
        "AUDIOPROC_TERMINATION_LOG=/out/termination-log",
        images["audioproc-job"],
    ]

    ok = docker(
        docker_engine,
        *run,
        "process",
        "/data/tone.wav",
        "--out",
        "/out",
        "--extractors",
        "loudness,pitch",
    )
    assert ok.returncode == 0, ok.stderr
    manifest = json.loads((out / "tone" / "manifest.json").read_text())
    assert {e["name"]: e["status"] for e in manifest["extractors"]} == {
        "loudness": "ok",
        "pitch": "ok",
    }

    corrupt = docker(
        docker_engine,
        *run,
        "run-index",
        "--items-file",
        "/data/items.json",
        "--output",
        "/out",
        "--index",
        "0",
    )
    assert corrupt.returncode == 3, corrupt.stderr
    message = json.loads((out / "termination-log").read_text())
    assert message["videoId"] == "corrupt" and message["status"] == "error" and message["error"]

    missing = docker(
        docker_engine,
        *run,
        "run-index",
        "--items-file",
        "/data/items.json",
        "--output",
        "/out",
        "--index",
        "5",
    )
    assert missing.returncode == 1, missing.stderr
    assert "IndexError" in json.loads((out / "termination-log").read_text())["error"]


def test_facade_image_answers_healthz(
    docker_engine: DockerEngine,
    images: dict[str, str],
    flat_kubeconfig: Path,
    container_names: list[str],
) -> None:
    (port,) = free_ports(1)
    name = f"audioproc-api-smoke-{secrets.token_hex(3)}"
    container_names.append(name)
    started = docker(
        docker_engine,
        "run",
        "--detach",
        "--name",
        name,
        *LOCKED_DOWN,
        "--network",
        "host",
        "-v",
        f"{flat_kubeconfig}:/etc/audioproc/kubeconfig:ro",
        "-e",
        "API_BACKEND=kubernetes",
        "-e",
        "KUBECONFIG=/etc/audioproc/kubeconfig",
        "-e",
        "API_NAMESPACE=default",
        images["audioproc-api"],
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    )
    assert started.returncode == 0, started.stderr

    def healthz() -> dict[str, Any] | None:
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    try:
        assert wait_for(healthz, timeout=60, what="the facade's /healthz")["status"] == "ok"
    except TimeoutError:
        pytest.fail(
            f"no /healthz; container log:\n{docker(docker_engine, 'logs', name).stderr[-3000:]}"
        )


def test_operator_image_starts_with_a_kubeconfig(
    docker_engine: DockerEngine,
    images: dict[str, str],
    flat_kubeconfig: Path,
    cluster: Any,
    namespace: str,
    audiojob_crd: None,
    container_names: list[str],
) -> None:
    name = f"audioproc-operator-smoke-{secrets.token_hex(3)}"
    container_names.append(name)
    started = docker(
        docker_engine,
        "run",
        "--detach",
        "--name",
        name,
        *LOCKED_DOWN,
        "--network",
        "host",
        "-v",
        f"{flat_kubeconfig}:/etc/audioproc/kubeconfig:ro",
        "-e",
        "KUBECONFIG=/etc/audioproc/kubeconfig",
        "-e",
        f"OPERATOR_NAMESPACES={json.dumps([namespace])}",
        "-e",
        "OPERATOR_METRICS_PORT=0",
        images["audioproc-operator"],
    )
    assert started.returncode == 0, started.stderr
    kube = Kube(cluster, namespace)
    kube.create(
        {
            "apiVersion": "audioproc.io/v1alpha1",
            "kind": "AudioJob",
            "metadata": {"name": "smoke"},
            "spec": {"device": "cpu", "items": [{"inputUri": "s3://media/a.mp4", "videoId": "a"}]},
        }
    )
    try:
        wait_for(
            lambda: kube.json("get", "jobs")["items"],
            timeout=90,
            what="the operator container to create a Job",
        )
    except TimeoutError:
        pytest.fail(f"no Job; container log:\n{docker(docker_engine, 'logs', name).stderr[-3000:]}")
    finally:
        kube.run("delete", "audiojob", "smoke", "--timeout=30s", check=False)


def test_the_build_secret_is_in_no_image(
    docker_engine: DockerEngine, images: dict[str, str]
) -> None:
    """The host's CA bundle reached the download steps as a BuildKit secret: no layer, no
    environment variable and no file of any image keeps it."""
    for ref in images.values():
        config = docker_engine.image(ref)
        assert config is not None
        env = dict(e.split("=", 1) for e in config["Config"]["Env"])
        assert "SSL_CERT_FILE" not in env and "UV_NATIVE_TLS" not in env, ref
        probe = docker(
            docker_engine,
            "run",
            "--rm",
            "--entrypoint",
            "python",
            ref,
            "-c",
            "import os; print(os.path.exists('/run/secrets/ca_bundle'))",
        )
        assert probe.returncode == 0 and probe.stdout.strip() == "False", (ref, probe.stderr)
        history = docker(
            docker_engine, "history", "--no-trunc", "--format", "{{.CreatedBy}}", ref
        ).stdout
        assert "ca-certificates.crt" not in history, ref
