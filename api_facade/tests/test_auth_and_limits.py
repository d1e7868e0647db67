"""Bearer-token authentication (on and off) and the request body limit."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from audioproc_api.observability import configure_logging
from tests.facade_support import Media, local_settings, make_client

PROTECTED = [
    ("get", "/extractors"),
    ("get", "/tasks"),
    ("get", "/status/x"),
    ("post", "/process"),
    ("post", "/batch"),
    ("delete", "/tasks/x"),
    ("get", "/results/x/y"),
    ("get", "/openapi.json"),
    ("get", "/docs"),
    ("get", "/redoc"),
]
OPEN = ["/healthz", "/readyz", "/metrics"]


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text("# facade tokens\nalpha-token\n\nbeta-token\n")
    return path


def test_with_tokens_every_route_but_health_needs_one(
    tmp_path: Path, media: Media, tokens_file: Path
) -> None:
    with make_client(local_settings(tmp_path, media, api_tokens_file=tokens_file)) as client:
        for method, path in PROTECTED:
            response = getattr(client, method)(path)
            assert response.status_code == 401, (method, path)
            assert response.headers["www-authenticate"] == "Bearer"
            wrong = getattr(client, method)(path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
        for path in OPEN:
            assert client.get(path).status_code == 200, path
        for token in ("alpha-token", "beta-token"):
            assert (
                client.get("/extractors", headers={"Authorization": f"Bearer {token}"}).status_code
                == 200
            )
        body = {"input_uri": str(media.good[0]), "video_id": "auth", "extractors": ["loudness"]}
        accepted = client.post(
            "/process", json=body, headers={"Authorization": "Bearer alpha-token"}
        )
        assert accepted.status_code == 202


def test_a_rotated_token_file_takes_effect_without_restart(
    tmp_path: Path, media: Media, tokens_file: Path
) -> None:
    with make_client(local_settings(tmp_path, media, api_tokens_file=tokens_file)) as client:
        assert (
            client.get("/tasks", headers={"Authorization": "Bearer alpha-token"}).status_code == 200
        )
        tokens_file.write_text("gamma-token\n")
        stat = tokens_file.stat()
        os.utime(tokens_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        assert (
            client.get("/tasks", headers={"Authorization": "Bearer alpha-token"}).status_code == 401
        )
        assert (
            client.get("/tasks", headers={"Authorization": "Bearer gamma-token"}).status_code == 200
        )


def test_without_tokens_every_route_is_open(client) -> None:
    for method, path in PROTECTED:
        assert getattr(client, method)(path).status_code != 401, (method, path)


def test_a_body_over_the_limit_is_413_and_queues_nothing(tmp_path: Path, media: Media) -> None:
    with make_client(local_settings(tmp_path, media, api_max_body_bytes=2000)) as client:
        items = [{"input_uri": str(media.good[0]), "video_id": f"v{i}"} for i in range(100)]
        response = client.post("/batch", json={"items": items})
        assert response.status_code == 413
        assert "2000" in response.json()["detail"]

        def chunks():  # no Content-Length: the limit is enforced as the body streams in
            for _ in range(10):
                yield b" " * 1000

        streamed = client.post(
            "/batch", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        assert client.get("/tasks").json()["tasks"] == []
        small = client.post("/batch", json={"items": items[:2]})
        assert small.status_code == 202


def test_json_logs_carry_the_request_id(
    client, media: Media, capfd: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    configure_logging("INFO")
    try:
        body = {"input_uri": str(media.good[0]), "video_id": "logged", "extractors": ["loudness"]}
        task_id = client.post("/process", json=body, headers={"X-Request-ID": "trace-42"}).json()[
            "task_id"
        ]
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    records = [
        json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")
    ]
    mine = [r for r in records if r.get("request_id") == "trace-42"]
    assert {r["name"] for r in mine} >= {"audioproc_api.access", "audioproc_api.routes"}
    assert any(r.get("task_id") == task_id for r in mine)
    access = next(r for r in mine if r["name"] == "audioproc_api.access")
    assert (access["route"], access["status"]) == ("/process", 202)
