"""Every endpoint, against a backend that really processes generated media."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
from fastapi.testclient import TestClient

from audioproc.models import Manifest

from tests.conftest import FAST_EXTRACTORS, Media, wait_finished


def process_body(path: Path, video_id: str, **extra) -> dict:
    return {"input_uri": str(path), "video_id": video_id, "extractors": FAST_EXTRACTORS, **extra}


def manifest_at(uri: str) -> Manifest:
    return Manifest.model_validate_json(Path(urlparse(uri).path).read_text())


def test_process_then_status_until_completed(client: TestClient, media: Media) -> None:
    response = client.post("/process", json=process_body(media.good[0], "vid-a"))
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    assert response.json()["status_url"] == f"/status/{task_id}"

    status = wait_finished(client, task_id)

    assert status["status"] == "completed"
    assert status["progress"] == 1.0
    assert status["kind"] == "process"
    [item] = status["items"]
    assert item["video_id"] == "vid-a" and item["status"] == "completed"
    manifest = manifest_at(item["manifest_uri"])
    assert manifest.video_id == "vid-a"
    assert manifest.input_uri == str(media.good[0])
    assert f"/{task_id}/vid-a/manifest.json" in item["manifest_uri"]
    result = client.get(f"/results/{task_id}/vid-a")
    assert result.status_code == 200
    assert result.json()["schema"] == "audio_manifest_v1"
    assert Manifest.model_validate(result.json()) == manifest


@pytest.mark.parametrize("how", ["query", "sync-field"])
def test_process_wait_returns_the_manifest(client: TestClient, media: Media, how: str) -> None:
    body = process_body(media.good[1], "vid-wait", **({"sync": True} if how == "sync-field" else {}))
    response = client.post("/process", params={"wait": "true"} if how == "query" else None, json=body)

    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["status"] == "completed"
    manifest = Manifest.model_validate(payload["manifest"])
    assert manifest.video_id == "vid-wait"
    status = client.get(f"/status/{payload['task_id']}").json()
    assert manifest_at(status["items"][0]["manifest_uri"]) == manifest


def test_process_wait_times_out_to_202(client: TestClient, media: Media) -> None:
    response = client.post("/process", params={"wait": "true", "timeout": 0.001},
                           json=process_body(media.good[0], "vid-quick"))
    assert response.status_code == 202
    assert wait_finished(client, response.json()["task_id"])["status"] == "completed"


def test_process_wait_on_a_broken_file_reports_the_failure(client: TestClient, media: Media) -> None:
    response = client.post("/process", params={"wait": "true"}, json=process_body(media.broken, "vid-broken"))
    assert response.status_code == 200
    payload = response.json()
    assert payload["status"] == "failed"
    assert payload["manifest"] is None
    assert payload["error"]
    assert client.get(f"/results/{payload['task_id']}/vid-broken").status_code == 409


def test_batch_of_20_with_one_broken_input(client: TestClient, media: Media) -> None:
    items = [process_body(media.good[i % len(media.good)], f"vid-{i:02d}") for i in range(19)]
    items.insert(7, process_body(media.broken, "vid-broken"))
    response = client.post("/batch", json={"items": items, "concurrency": 2})
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]

    status = wait_finished(client, task_id)

    assert status["status"] == "completed"  # finished; the broken item says so itself
    assert (status["total"], status["succeeded"], status["failed"]) == (20, 19, 1)
    assert "1 of 20 items failed" in status["error"]
    by_id = {item["video_id"]: item for item in status["items"]}
    assert by_id["vid-broken"]["status"] == "failed" and by_id["vid-broken"]["error"]
    for i in range(19):
        item = by_id[f"vid-{i:02d}"]
        assert item["status"] == "completed"
        assert manifest_at(item["manifest_uri"]).video_id == f"vid-{i:02d}"
    assert client.get(f"/results/{task_id}/vid-05").json()["video_id"] == "vid-05"
    assert client.get(f"/results/{task_id}/no-such-video").status_code == 404


def test_cancel_stops_queued_items_and_forgets_the_task(client: TestClient, media: Media, tmp_path: Path) -> None:
    items = [process_body(media.good[0], f"c-{i:02d}") for i in range(20)]
    task_id = client.post("/batch", json={"items": items, "concurrency": 1}).json()["task_id"]

    response = client.delete(f"/tasks/{task_id}")

    assert response.status_code == 200
    assert response.json() == {"task_id": task_id, "cancelled": True}
    assert client.get(f"/status/{task_id}").status_code == 404
    assert client.delete(f"/tasks/{task_id}").status_code == 404
    # the queue goes on with other work, and the cancelled task's queued items never ran
    other = client.post("/process", params={"wait": "true"}, json=process_body(media.good[1], "after"))
    assert other.json()["status"] == "completed"
    written = list((tmp_path / "out" / task_id).glob("*/manifest.json"))
    assert len(written) <= 2  # at most the item that was running when the cancel came


@pytest.mark.parametrize("path", ["/status/nope", "/results/nope/vid", "/tasks/nope"])
def test_unknown_task_is_404(client: TestClient, path: str) -> None:
    method = client.delete if path.startswith("/tasks/") else client.get
    response = method(path)
    assert response.status_code == 404
    assert "nope" in response.json()["detail"]


def _errors(response) -> list[tuple[tuple, str]]:
    assert response.status_code == 422, response.text
    return [(tuple(e["loc"]), e["msg"]) for e in response.json()["detail"]]


def test_422_cases_name_the_field_and_queue_nothing(client: TestClient, media: Media, tmp_path: Path) -> None:
    good = str(media.good[0])
    outside = tmp_path / "elsewhere.wav"
    cases = {
        "missing video_id": ({"input_uri": good}, ("body", "video_id")),
        "bad video_id": ({"input_uri": good, "video_id": "../etc"}, ("body", "video_id")),
        "unknown extractor": ({"input_uri": good, "video_id": "v", "extractors": ["nope"]}, ("body", "extractors", 0)),
        "unsupported scheme": ({"input_uri": "ftp://host/a.mp4", "video_id": "v"}, ("body", "input_uri")),
        "malformed URI": ({"input_uri": "file://[", "video_id": "v"}, ("body", "input_uri")),
        "outside allowed roots": ({"input_uri": str(outside), "video_id": "v"}, ("body", "input_uri")),
        "unknown field": ({"input_uri": good, "video_id": "v", "colour": "red"}, ("body", "colour")),
        "use_gpu without a GPU": ({"input_uri": good, "video_id": "v", "use_gpu": True}, ("body", "use_gpu")),
        "extractor unavailable here": ({"input_uri": good, "video_id": "v", "extractors": ["clap"]}, ("body", "extractors")),
    }
    for name, (body, loc) in cases.items():
        errors = _errors(client.post("/process", json=body))
        assert any(e_loc == loc for e_loc, _ in errors), (name, errors)
        assert all(msg for _, msg in errors), name

    batch_cases = {
        "no items": ({"items": []}, ("body", "items")),
        "duplicate video ids": (
            {"items": [{"input_uri": good, "video_id": "v"}, {"input_uri": good, "video_id": "v"}]},
            ("body", "items", 1, "video_id"),
        ),
        "bad item path": (
            {"items": [{"input_uri": good, "video_id": "a"}, {"input_uri": str(outside), "video_id": "b"}]},
            ("body", "items", 1, "input_uri"),
        ),
        "concurrency 0": ({"items": [{"input_uri": good, "video_id": "a"}], "concurrency": 0}, ("body", "concurrency")),
        "over 10,000 items": (
            {"items": [{"input_uri": good, "video_id": f"v{i}"} for i in range(10_001)]},
            ("body", "items"),
        ),
    }
    for name, (body, loc) in batch_cases.items():
        errors = _errors(client.post("/batch", json=body))
        assert any(e_loc == loc for e_loc, _ in errors), (name, errors)

    assert client.post("/process", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    assert client.get("/tasks").json()["tasks"] == []  # nothing was queued


def test_batch_of_10000_items_is_accepted(client: TestClient, media: Media) -> None:
    items = [{"input_uri": str(media.good[0]), "video_id": f"v{i:05d}", "extractors": ["loudness"]} for i in range(10_000)]
    response = client.post("/batch", json={"items": items, "concurrency": 1})
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    status = client.get(f"/status/{task_id}").json()
    assert status["total"] == 10_000 and len(status["items"]) == 10_000
    assert client.delete(f"/tasks/{task_id}").status_code == 200


def test_tasks_list_pages_and_filters(client: TestClient, media: Media) -> None:
    ids = [client.post("/process", json=process_body(media.good[0], f"l-{i}")).json()["task_id"] for i in range(3)]
    broken = client.post("/process", json=process_body(media.broken, "l-broken")).json()["task_id"]
    for task_id in [*ids, broken]:
        wait_finished(client, task_id)

    first = client.get("/tasks", params={"limit": 2}).json()
    second = client.get("/tasks", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [t["task_id"] for t in first["tasks"] + second["tasks"]] == [*ids, broken]
    assert second["next_cursor"] is None
    failed = client.get("/tasks", params={"status": "failed"}).json()["tasks"]
    assert [t["task_id"] for t in failed] == [broken]
    completed = client.get("/tasks", params={"status": "completed", "limit": 2}).json()
    assert [t["task_id"] for t in completed["tasks"]] == ids[:2]
    assert client.get("/tasks", params={"status": "bogus"}).status_code == 422


def test_extractors_say_what_this_deployment_can_run(client: TestClient) -> None:
    entries = {e["name"]: e for e in client.get("/extractors").json()["available"]}
    assert set(entries) >= {"loudness", "spectral", "mfcc", "tempo", "pitch", "clap"}
    assert entries["clap"]["available"] is False
    assert "CLAP" in entries["clap"]["reason"]
    assert all(entries[n]["available"] for n in FAST_EXTRACTORS)
    assert all(e["device"] == "cpu" for e in entries.values())  # no GPU on this deployment


def test_request_id_is_echoed_and_stored_with_the_task(client: TestClient, media: Media) -> None:
    response = client.post("/process", json=process_body(media.good[0], "rid"), headers={"X-Request-ID": "req-123"})
    assert response.headers["x-request-id"] == "req-123"
    assert client.get(f"/status/{response.json()['task_id']}").json()["request_id"] == "req-123"
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32 and generated != client.get("/healthz").headers["x-request-id"]


def test_health_ready_and_metrics(client: TestClient, media: Media) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["backend"] == "local"
    client.post("/process", json=process_body(media.good[0], "m"))
    client.get("/status/missing")

    text = client.get("/metrics").text

    assert 'audioproc_api_requests_total{method="POST",route="/process",status="202"} 1.0' in text
    assert 'audioproc_api_requests_total{method="GET",route="/status/{task_id}",status="404"} 1.0' in text
    assert 'audioproc_api_tasks_created_total{kind="process"} 1.0' in text
    assert 'audioproc_api_request_duration_seconds_bucket{le="0.005",method="POST",route="/process"}' in text
