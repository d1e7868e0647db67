"""The local backend's worker processes: a dead worker costs only its own item (retried a
bounded number of times), a new worker never runs an item while an old writer of it lives,
and a cancel stops the task's running items and removes what they wrote.

Inputs are served by a real HTTP server whose gates the test opens (``gated_http``), so an
item is running for exactly as long as the test needs; workers are killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from audioproc.models import Manifest
from audioproc_api.backends import local_worker
from audioproc_api.backends.base import Submission, new_task_id
from audioproc_api.backends.local import LocalBackend
from audioproc_api.routes import build_spec
from audioproc_api.schemas import BatchItem, TaskKind
from tests.facade_support import (
    FAST_EXTRACTORS,
    Media,
    local_settings,
    make_client,
    wait_finished,
    wait_until,
)
from tests.gated_http import GatedFiles, gated_files


def children_of(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found |= set(map(int, (task / "children").read_text().split()))
        except FileNotFoundError:
            pass
    return found


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return b""


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def worker_pids() -> set[int]:
    """This test process's live pipeline workers: the children of its multiprocessing forkserver."""
    servers = [pid for pid in children_of(os.getpid()) if b"forkserver" in cmdline(pid)]
    return {worker for server in servers for worker in children_of(server) if running(worker)}


@pytest.fixture
def gated(media: Media) -> Iterator[GatedFiles]:
    with gated_files({f"g{i}.wav": media.good[0] for i in range(4)}) as files:
        yield files


def gated_client(tmp_path: Path, media: Media, **overrides) -> TestClient:
    return make_client(local_settings(tmp_path, media, http_allow_private=True, **overrides))


def submit_batch(client: TestClient, uris: list[str], concurrency: int | None = None) -> str:
    items = [
        {"input_uri": uri, "video_id": f"v{i}", "extractors": FAST_EXTRACTORS}
        for i, uri in enumerate(uris)
    ]
    body = {"items": items} | ({"concurrency": concurrency} if concurrency else {})
    response = client.post("/batch", json=body)
    assert response.status_code == 202, response.text
    return response.json()["task_id"]


def attempts(settings_dir: Path, task_id: str) -> list[int]:
    with sqlite3.connect(settings_dir / "tasks.sqlite3") as db:
        return [
            r[0]
            for r in db.execute(
                "SELECT attempts FROM items WHERE task_id = ? ORDER BY idx", (task_id,)
            )
        ]


def test_a_killed_worker_costs_only_its_own_item(
    tmp_path: Path, media: Media, gated: GatedFiles
) -> None:
    with gated_client(tmp_path, media, max_concurrent_videos=2) as client:
        task_id = submit_batch(client, [gated.url("g0.wav"), gated.url("g1.wav")])
        gated.wait_requested("g0.wav")
        gated.wait_requested("g1.wav")
        workers = wait_until(lambda: len(worker_pids()) == 2 and worker_pids(), what="two workers")
        os.kill(min(workers), signal.SIGKILL)  # either one: both are mid-item

        # the killed worker's item is handed to a new worker; the other item is left alone
        wait_until(lambda: sum(gated.requests.values()) == 3, what="the killed item's retry")
        gated.open()
        status = wait_finished(client, task_id)

        assert (status["status"], status["succeeded"], status["failed"]) == ("completed", 2, 0), (
            status
        )
        retried = [name for name, count in gated.requests.items() if count == 2]
        assert len(retried) == 1 and sorted(gated.requests.values()) == [1, 2]
        assert sorted(attempts(tmp_path / "state", task_id)) == [1, 2]


def test_an_item_whose_worker_keeps_dying_fails_after_the_retries(
    tmp_path: Path, media: Media, gated: GatedFiles
) -> None:
    with gated_client(tmp_path, media, max_concurrent_videos=1, api_item_retries=1) as client:
        task_id = submit_batch(client, [gated.url("g0.wav")])
        for attempt in (1, 2):
            gated.wait_requested("g0.wav", times=attempt)
            (worker,) = wait_until(worker_pids, what="the worker")
            os.kill(worker, signal.SIGKILL)
        status = wait_finished(client, task_id)

        assert status["status"] == "failed"
        assert (
            status["items"][0]["error"]
            == "internal error: worker process died (signal 9) on attempt 2 of 2"
        )
        assert gated.requests["g0.wav"] == 2
        # the lane has a fresh worker: the next item runs
        after = client.post(
            "/process",
            params={"wait": "true"},
            json={
                "input_uri": str(media.good[1]),
                "video_id": "after",
                "extractors": FAST_EXTRACTORS,
            },
        )
        assert after.json()["status"] == "completed"


def test_a_new_worker_waits_for_an_old_writer_of_the_item(tmp_path: Path, media: Media) -> None:
    """An orphan that outlived a killed service still holds its item's lock: the restarted
    service's worker waits for it and then finds its manifest instead of writing another."""
    settings = local_settings(tmp_path, media, max_concurrent_videos=1)
    first = LocalBackend(settings, settings.output_uri)  # the killed service: the item left running
    task_id = new_task_id(TaskKind.batch)
    spec = build_spec(
        [BatchItem(input_uri=str(media.good[0]), video_id="v0", extractors=FAST_EXTRACTORS)],
        False,
        1,
        settings.output_uri,
    )
    first.submit(Submission(task_id, TaskKind.batch, spec, "r"))
    assert first._claim_next() is not None
    first.close()

    lock = local_worker.lock_item(
        local_worker.item_lock_path(tmp_path / "state" / "locks", task_id, 0)
    )
    try:
        with make_client(settings) as client:  # the restarted service
            # the orphan finishes the item meanwhile
            from audioproc.runner import ItemRequest, process_item

            written = process_item(
                ItemRequest(
                    input_uri=str(media.good[0]), video_id="v0", extractors=FAST_EXTRACTORS
                ),
                output=f"{settings.output_uri}/{task_id}",
                device="cpu",
                settings=settings,
            )
            assert written.status == "ok"
            assert client.get(f"/status/{task_id}").json()["items"][0]["status"] == "processing"
            os.close(lock)
            lock = None
            status = wait_finished(client, task_id)
    finally:
        if lock is not None:
            os.close(lock)

    assert status["status"] == "completed", status
    stored = Manifest.model_validate_json(
        (tmp_path / "out" / task_id / "v0" / "manifest.json").read_text()
    )
    assert stored.created_at == written.manifest.created_at  # the orphan's, not written twice


def test_cancel_stops_running_items_and_removes_their_outputs(
    tmp_path: Path, media: Media, gated: GatedFiles
) -> None:
    with gated_client(tmp_path, media, max_concurrent_videos=2) as client:
        task_id = submit_batch(
            client, [gated.url("g0.wav"), gated.url("g1.wav"), gated.url("g2.wav")]
        )
        gated.wait_requested("g0.wav")
        gated.wait_requested("g1.wav")
        partial = (
            tmp_path / "out" / task_id / "v0" / "partial.npy"
        )  # what a running item wrote so far
        partial.parent.mkdir(parents=True)
        partial.write_bytes(b"\x93NUMPY")

        assert client.delete(f"/tasks/{task_id}").status_code == 200
        gated.open()
        # two more items take both workers: the cancelled ones are not running any more
        others = [
            client.post(
                "/process",
                json={
                    "input_uri": str(media.good[i]),
                    "video_id": f"o{i}",
                    "extractors": FAST_EXTRACTORS,
                },
            ).json()["task_id"]
            for i in (1, 2)
        ]
        assert all(wait_finished(client, t)["status"] == "completed" for t in others)

    assert not (tmp_path / "out" / task_id).exists()
    assert dict(gated.requests) == {
        "g0.wav": 1,
        "g1.wav": 1,
    }  # stopped, never retried; g2 never started


def test_workers_run_below_the_server_in_cpu_priority(
    tmp_path: Path, media: Media, gated: GatedFiles
) -> None:
    """On busy CPUs the server's requests come first (bench/soak.py: /healthz p99 1.4 s with
    workers at the server's priority, 35 ms below it)."""

    def niceness(pid: int) -> int:
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[16])

    with gated_client(tmp_path, media, max_concurrent_videos=1) as client:
        submit_batch(client, [gated.url("g0.wav")])
        gated.wait_requested("g0.wav")  # the worker is running the item: its start-up is done
        (worker,) = wait_until(worker_pids, what="the worker")
        assert (
            niceness(worker)
            == niceness(os.getpid()) + client.app.state.settings.api_worker_niceness
        )
        assert client.app.state.settings.api_worker_niceness == 10  # the default
        gated.open()
