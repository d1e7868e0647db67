"""The endpoint tests on the local backend (worker processes, SQLite), plus what only it does."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from fastapi.testclient import TestClient

from audioproc_api.app import create_app
from tests.facade_support import (
    FAST_EXTRACTORS,
    Media,
    Service,
    busy_batch,
    local_settings,
    make_client,
    wait_finished,
)
from tests.shared_endpoints import SharedEndpointTests, manifest_at, process_body


class LocalService(Service):
    name = "local"

    def __init__(self, tmp_path: Path, media: Media) -> None:
        self.settings = local_settings(tmp_path, media)
        self.client = make_client(self.settings)
        self.media = media
        self.output_dir = tmp_path / "out"

    def make_client(self, **settings_overrides) -> TestClient:
        settings = self.settings.model_copy(update=settings_overrides)
        return TestClient(
            create_app(
                settings, backend=self.client.app.state.backend, output=self.settings.output_uri
            )
        )

    def stored_request_id(self, task_id: str) -> str | None:
        with sqlite3.connect(self.settings.api_state_dir / "tasks.sqlite3") as db:
            return db.execute("SELECT request_id FROM tasks WHERE id = ?", (task_id,)).fetchone()[0]

    def assert_work_stopped(self, task_id: str) -> None:
        # concurrency 1: at most the item running when the cancel came was finished
        assert len(list((self.output_dir / task_id).glob("*/manifest.json"))) <= 1


@pytest.fixture
def service(tmp_path: Path, media: Media) -> Iterator[LocalService]:
    local = LocalService(tmp_path, media)
    with local.client:
        yield local


class TestLocalEndpoints(SharedEndpointTests):
    """The shared endpoint tests, on the local backend (``service`` above)."""


def test_process_wait_on_a_broken_file_reports_the_failure(service: LocalService) -> None:
    client = service.client
    response = client.post(
        "/process", params={"wait": "true"}, json=process_body(service.media.broken, "vid-broken")
    )
    assert response.status_code == 200
    payload = response.json()
    assert payload["status"] == "failed"
    assert payload["manifest"] is None
    assert payload["error"]
    assert client.get(f"/results/{payload['task_id']}/vid-broken").status_code == 409
    assert [
        t["task_id"] for t in client.get("/tasks", params={"status": "failed"}).json()["tasks"]
    ] == [payload["task_id"]]


def test_a_broken_input_fails_its_item_not_the_batch(service: LocalService) -> None:
    media = service.media
    items = [process_body(media.good[i], f"vid-{i}") for i in range(3)]
    items.insert(1, process_body(media.broken, "vid-broken"))
    task_id = service.client.post("/batch", json={"items": items}).json()["task_id"]

    status = wait_finished(service.client, task_id)

    assert status["status"] == "completed"
    assert (status["total"], status["succeeded"], status["failed"]) == (4, 3, 1)
    assert "1 of 4 items failed" in status["error"]
    by_id = {item["video_id"]: item for item in status["items"]}
    assert by_id["vid-broken"]["status"] == "failed" and by_id["vid-broken"]["error"]
    assert by_id["vid-broken"]["manifest_uri"] is None
    assert all(
        manifest_at(by_id[f"vid-{i}"]["manifest_uri"]).video_id == f"vid-{i}" for i in range(3)
    )


def test_use_gpu_without_a_gpu_is_422(service: LocalService) -> None:
    response = service.client.post(
        "/process", json=process_body(service.media.good[0], "g", use_gpu=True)
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "use_gpu"]
    assert service.client.get("/tasks").json()["tasks"] == []


def test_extractors_run_on_cpu_here(service: LocalService) -> None:
    assert {e["device"] for e in service.client.get("/extractors").json()["available"]} == {"cpu"}


def test_batch_of_10000_items_is_accepted(service: LocalService) -> None:
    items = [
        {"input_uri": str(service.media.good[0]), "video_id": f"v{i:05d}"} for i in range(10_000)
    ]
    response = service.client.post("/batch", json={"items": items, "concurrency": 1})
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    first = service.client.get(f"/status/{task_id}")
    status = first.json()
    # a page of items by default (the whole task was 1.4 MB), and the offset of the next page
    assert (
        status["total"] == 10_000
        and len(status["items"]) == 100
        and status["items_next_offset"] == 100
    )
    assert len(first.content) < 100_000
    last = service.client.get(
        f"/status/{task_id}", params={"items_offset": 9_500, "items_limit": 1000}
    ).json()
    assert [i["index"] for i in last["items"]] == list(range(9_500, 10_000))
    assert last["items_next_offset"] is None
    too_many = service.client.get(f"/status/{task_id}", params={"items_limit": 1001})
    assert too_many.status_code == 422
    assert service.client.delete(f"/tasks/{task_id}").status_code == 200


def test_output_path_is_output_uri_task_video(service: LocalService) -> None:
    task_id = service.client.post(
        "/process", params={"wait": "true"}, json=process_body(service.media.good[0], "p")
    ).json()["task_id"]
    uri = service.client.get(f"/status/{task_id}").json()["items"][0]["manifest_uri"]
    assert Path(urlparse(uri).path) == service.output_dir / task_id / "p" / "manifest.json"


def test_status_wait_returns_once_the_task_finishes(service: LocalService) -> None:
    task_id = service.client.post(
        "/process", json=process_body(service.media.good[0], "lp-done")
    ).json()["task_id"]
    status = service.client.get(f"/status/{task_id}", params={"wait": 120}).json()
    assert status["status"] == "completed", status  # one request, no polling
    assert status["items"][0]["status"] == "completed" and status["items"][0]["manifest_uri"]


def test_status_wait_returns_the_unfinished_task_when_the_wait_runs_out(
    service: LocalService,
) -> None:
    media = service.media
    busy = service.client.post("/batch", json=busy_batch(media, items=200)).json()["task_id"]
    queued = service.client.post("/process", json=process_body(media.good[0], "lp-queued")).json()[
        "task_id"
    ]
    response = service.client.get(f"/status/{queued}", params={"wait": 0.5})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "pending"  # behind the busy batch's 200 items
    assert service.client.get("/status/no-such-task", params={"wait": 0.5}).status_code == 404
    assert service.client.get(f"/status/{queued}", params={"wait": 0}).status_code == 422
    assert service.client.delete(f"/tasks/{busy}").status_code == 200


def parse_events(text: str) -> list[tuple[str, dict]]:
    """(event name, data) of each server-sent event in ``text``."""
    events = []
    for block in filter(None, text.strip().split("\n\n")):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def test_events_stream_progress_then_the_end_state_then_closes(service: LocalService) -> None:
    items = [
        {
            "input_uri": str(service.media.good[0]),
            "video_id": f"ev-{i}",
            "extractors": FAST_EXTRACTORS,
        }
        for i in range(3)
    ]
    task_id = service.client.post("/batch", json={"items": items}).json()["task_id"]
    with service.client.stream("GET", f"/tasks/{task_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())  # returns only once the server closes the stream
    events = parse_events(text)
    names = [name for name, _ in events]
    assert names[0] == "progress" and names[-1] == "end" and set(names[:-1]) == {"progress"}, names
    done = [data["succeeded"] + data["failed"] for _, data in events]
    assert done == sorted(done)  # progress only moves forward
    end = events[-1][1]
    assert (end["task_id"], end["status"], end["succeeded"], end["progress"]) == (
        task_id,
        "completed",
        3,
        1.0,
    )
    assert service.client.get("/tasks/no-such-task/events").status_code == 404
