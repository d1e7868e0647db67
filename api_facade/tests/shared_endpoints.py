"""Endpoint tests shared by every backend.

A test module subclasses ``SharedEndpointTests`` and provides a ``service`` fixture (see
``Service`` in facade_support): the local backend in ``test_api_local.py``, the kubernetes
backend on the real control plane with the operator running in ``e2e/tests/test_facade.py``.
Media are real generated files, and manifests are written by the real pipeline (on
kubernetes, by the test standing in for the pods).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest

from audioproc.models import Manifest
from tests.facade_support import FAST_EXTRACTORS, Service, wait_until


def process_body(path: Path, video_id: str, **extra) -> dict:
    return {"input_uri": str(path), "video_id": video_id, "extractors": FAST_EXTRACTORS, **extra}


def manifest_at(uri: str) -> Manifest:
    return Manifest.model_validate_json(Path(urlparse(uri).path).read_text())


def _error_locs(response) -> list[tuple]:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert all(e["msg"] for e in detail)
    return [tuple(e["loc"]) for e in detail]


class SharedEndpointTests:
    """The endpoint tests; a backend's test module subclasses this and defines ``service``."""

    def test_process_then_status_until_completed(self, service: Service) -> None:
        client, media = service.client, service.media
        response = client.post("/process", json=process_body(media.good[0], "vid-a"))
        assert response.status_code == 202, response.text
        task_id = response.json()["task_id"]
        assert response.json()["status_url"] == f"/status/{task_id}"

        status = service.wait_finished(task_id)

        assert status["status"] == "completed"
        assert status["progress"] == 1.0
        assert status["kind"] == "process"
        [item] = status["items"]
        assert item["video_id"] == "vid-a" and item["status"] == "completed"
        assert item["manifest_uri"].endswith(f"/{task_id}/vid-a/manifest.json")
        manifest = manifest_at(item["manifest_uri"])
        assert manifest.video_id == "vid-a"
        assert manifest.input_uri == str(media.good[0])
        result = client.get(f"/results/{task_id}/vid-a")
        assert result.status_code == 200
        assert result.json()["schema"] == "audio_manifest_v1"
        assert Manifest.model_validate(result.json()) == manifest

    @pytest.mark.parametrize("how", ["query", "sync-field"])
    def test_process_wait_returns_the_manifest(self, service: Service, how: str) -> None:
        body = process_body(
            service.media.good[1], "vid-wait", **({"sync": True} if how == "sync-field" else {})
        )
        params = {"wait": "true"} if how == "query" else None

        response = service.client.post("/process", params=params, json=body)

        assert response.status_code == 200, response.text
        payload = response.json()
        assert payload["status"] == "completed"
        manifest = Manifest.model_validate(payload["manifest"])
        assert manifest.video_id == "vid-wait"
        names = {e.name for e in manifest.extractors}
        assert names >= set(FAST_EXTRACTORS) or not manifest.extractors
        status = service.client.get(f"/status/{payload['task_id']}").json()
        assert manifest_at(status["items"][0]["manifest_uri"]) == manifest

    def test_process_wait_times_out_to_202(self, service: Service) -> None:
        response = service.client.post(
            "/process",
            params={"wait": "true", "timeout": 0.001},
            json=process_body(service.media.good[0], "vid-quick"),
        )
        assert response.status_code == 202
        assert service.wait_finished(response.json()["task_id"])["status"] == "completed"

    def test_batch_of_20(self, service: Service) -> None:
        client, media = service.client, service.media
        items = [process_body(media.good[i % len(media.good)], f"vid-{i:02d}") for i in range(20)]
        response = client.post("/batch", json={"items": items, "concurrency": 4})
        assert response.status_code == 202, response.text
        task_id = response.json()["task_id"]

        status = service.wait_finished(task_id)

        assert status["status"] == "completed", status
        assert (status["kind"], status["total"], status["succeeded"], status["failed"]) == (
            "batch",
            20,
            20,
            0,
        )
        by_id = {item["video_id"]: item for item in status["items"]}
        assert set(by_id) == {f"vid-{i:02d}" for i in range(20)}
        for video_id, item in by_id.items():
            assert item["status"] == "completed"
            assert manifest_at(item["manifest_uri"]).video_id == video_id
        assert client.get(f"/results/{task_id}/vid-05").json()["video_id"] == "vid-05"
        assert client.get(f"/results/{task_id}/no-such-video").status_code == 404

    def test_cancel_stops_the_task_and_forgets_it(self, service: Service) -> None:
        client, media = service.client, service.media
        items = [process_body(media.good[0], f"c-{i:02d}") for i in range(20)]
        task_id = client.post("/batch", json={"items": items, "concurrency": 1}).json()["task_id"]

        response = client.delete(f"/tasks/{task_id}")

        assert response.status_code == 200
        assert response.json() == {"task_id": task_id, "cancelled": True}
        wait_until(
            lambda: client.get(f"/status/{task_id}").status_code == 404, what=f"{task_id} gone"
        )
        assert client.delete(f"/tasks/{task_id}").status_code == 404
        # the service goes on with other work, and the cancelled task's queued items never run
        other = client.post(
            "/process", params={"wait": "true"}, json=process_body(media.good[1], "after")
        )
        assert other.json()["status"] == "completed"
        service.assert_work_stopped(task_id)

    @pytest.mark.parametrize("path", ["/status/nope", "/results/nope/vid", "/tasks/nope"])
    def test_unknown_task_is_404(self, service: Service, path: str) -> None:
        method = service.client.delete if path.startswith("/tasks/") else service.client.get
        response = method(path)
        assert response.status_code == 404
        assert "nope" in response.json()["detail"]

    def test_422_cases_name_the_field_and_queue_nothing(
        self, service: Service, tmp_path: Path
    ) -> None:
        client, good = service.client, str(service.media.good[0])
        outside = str(tmp_path / "elsewhere.wav")
        cases = {
            "missing video_id": ({"input_uri": good}, ("body", "video_id")),
            "bad video_id": ({"input_uri": good, "video_id": "../etc"}, ("body", "video_id")),
            "unknown extractor": (
                {"input_uri": good, "video_id": "v", "extractors": ["nope"]},
                ("body", "extractors", 0),
            ),
            "unsupported scheme": (
                {"input_uri": "ftp://host/a.mp4", "video_id": "v"},
                ("body", "input_uri"),
            ),
            "malformed URI": ({"input_uri": "file://[", "video_id": "v"}, ("body", "input_uri")),
            "outside allowed roots": (
                {"input_uri": outside, "video_id": "v"},
                ("body", "input_uri"),
            ),
            "unknown field": (
                {"input_uri": good, "video_id": "v", "colour": "red"},
                ("body", "colour"),
            ),
            "extractor unavailable here": (
                {"input_uri": good, "video_id": "v", "extractors": ["clap"]},
                ("body", "extractors"),
            ),
        }
        for name, (body, loc) in cases.items():
            assert loc in _error_locs(client.post("/process", json=body)), name

        batch_cases = {
            "no items": ({"items": []}, ("body", "items")),
            "duplicate video ids": (
                {
                    "items": [
                        {"input_uri": good, "video_id": "v"},
                        {"input_uri": good, "video_id": "v"},
                    ]
                },
                ("body", "items", 1, "video_id"),
            ),
            "bad item path": (
                {
                    "items": [
                        {"input_uri": good, "video_id": "a"},
                        {"input_uri": outside, "video_id": "b"},
                    ]
                },
                ("body", "items", 1, "input_uri"),
            ),
            "concurrency 0": (
                {"items": [{"input_uri": good, "video_id": "a"}], "concurrency": 0},
                ("body", "concurrency"),
            ),
            "over 10,000 items": (
                {"items": [{"input_uri": good, "video_id": f"v{i}"} for i in range(10_001)]},
                ("body", "items"),
            ),
        }
        for name, (body, loc) in batch_cases.items():
            assert loc in _error_locs(client.post("/batch", json=body)), name

        not_json = client.post(
            "/process", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert not_json.status_code == 422
        assert client.get("/tasks").json()["tasks"] == []  # nothing was queued

    def test_tasks_list_pages_and_filters(self, service: Service) -> None:
        client, media = service.client, service.media
        ids = [
            client.post("/process", json=process_body(media.good[0], f"l-{i}")).json()["task_id"]
            for i in range(3)
        ]
        for task_id in ids:
            service.wait_finished(task_id)

        first = client.get("/tasks", params={"limit": 2}).json()
        second = client.get("/tasks", params={"limit": 2, "cursor": first["next_cursor"]}).json()
        assert [t["task_id"] for t in first["tasks"] + second["tasks"]] == ids
        assert second["next_cursor"] is None
        completed = client.get("/tasks", params={"status": "completed", "limit": 2}).json()
        assert [t["task_id"] for t in completed["tasks"]] == ids[:2]
        assert client.get("/tasks", params={"status": "pending"}).json()["tasks"] == []
        assert client.get("/tasks", params={"status": "bogus"}).status_code == 422
        bad_cursor = client.get("/tasks", params={"cursor": "not-a-cursor"})
        assert bad_cursor.status_code == 422 and bad_cursor.json()["detail"][0]["loc"] == [
            "query",
            "cursor",
        ]

    def test_extractors_say_what_this_deployment_can_run(self, service: Service) -> None:
        entries = {e["name"]: e for e in service.client.get("/extractors").json()["available"]}
        assert set(entries) >= {"loudness", "spectral", "mfcc", "tempo", "pitch", "clap"}
        assert entries["clap"]["available"] is False
        assert entries["clap"]["reason"]  # e.g. no checkpoint configured (CLAP_CHECKPOINT)
        assert all(entries[n]["available"] for n in FAST_EXTRACTORS)
        assert entries["loudness"]["version"] and entries["loudness"]["description"]

    def test_request_id_is_echoed_and_stored_with_the_task(self, service: Service) -> None:
        client = service.client
        response = client.post(
            "/process",
            json=process_body(service.media.good[0], "rid"),
            headers={"X-Request-ID": "req-123"},
        )
        assert response.headers["x-request-id"] == "req-123"
        task_id = response.json()["task_id"]
        assert client.get(f"/status/{task_id}").json()["request_id"] == "req-123"
        assert service.stored_request_id(task_id) == "req-123"
        generated = client.get("/healthz").headers["x-request-id"]
        assert len(generated) == 32 and generated != client.get("/healthz").headers["x-request-id"]

    def test_health_ready_and_metrics(self, service: Service) -> None:
        client = service.client
        assert client.get("/healthz").json()["status"] == "ok"
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["backend"] == service.name
        client.post("/process", json=process_body(service.media.good[0], "m"))
        client.get("/status/missing")

        text = client.get("/metrics").text

        assert (
            'audioproc_api_requests_total{method="POST",route="/process",status="202"} 1.0' in text
        )
        assert (
            'audioproc_api_requests_total{method="GET",route="/status/{task_id}",status="404"} 1.0'
            in text
        )
        assert 'audioproc_api_tasks_created_total{kind="process"} 1.0' in text
        assert (
            'audioproc_api_request_duration_seconds_bucket{le="0.005",method="POST",route="/process"}'
            in text
        )

    def test_auth_on_and_off(self, service: Service, tmp_path: Path) -> None:
        tokens = tmp_path / "tokens"
        tokens.write_text("# facade tokens\nalpha-token\n")
        body = process_body(service.media.good[0], "auth")
        client = service.make_client(api_tokens_file=tokens)
        assert client.post("/process", json=body).status_code == 401
        assert client.get("/tasks", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/healthz").status_code == 200
        accepted = client.post(
            "/process", json=body, headers={"Authorization": "Bearer alpha-token"}
        )
        assert accepted.status_code == 202
        task_id = accepted.json()["task_id"]
        assert client.get(f"/status/{task_id}").status_code == 401
        # the same deployment without tokens: open
        assert service.client.get(f"/status/{task_id}").status_code == 200
        service.wait_finished(task_id)
