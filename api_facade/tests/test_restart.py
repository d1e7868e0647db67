"""The local service killed (SIGKILL) mid-batch and restarted: every item completes, none twice."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from audioproc.models import Manifest
from tests.facade_support import Media, ServedFacade, wait_until
from tests.gated_http import gated_files

pytestmark = pytest.mark.slow


def descendants_of(pid: int) -> set[int]:
    """Children, grandchildren, ... (the forkserver and the workers it forked)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        text = (task / "children").read_text() if (task / "children").exists() else ""
        for child in map(int, text.split()):
            found |= {child} | descendants_of(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.fixture
def service(tmp_path: Path, media: Media) -> Iterator[ServedFacade]:
    svc = ServedFacade(tmp_path, media, MAX_CONCURRENT_VIDEOS="2")
    yield svc
    svc.stop()


def finished_status(service: ServedFacade, task_id: str) -> dict:
    """The task's status once it is completed or failed (three minutes at most)."""

    def finished() -> dict | None:
        status = httpx.get(f"{service.url}/status/{task_id}", timeout=60).json()
        return status if status["status"] in ("completed", "failed") else None

    return wait_until(finished, 180, f"task {task_id} to finish")


def survivors(processes: set[int], within_s: float) -> dict[int, bytes]:
    """Those of ``processes`` still alive after ``within_s`` seconds (with their command lines)."""
    deadline = time.monotonic() + within_s
    while any(alive(pid) for pid in processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    return {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:200] for pid in processes if alive(pid)}


def test_sigkill_mid_batch_then_restart_completes_every_item_once(
    service: ServedFacade, media: Media
) -> None:
    service.start()
    items = [
        {
            "input_uri": str(media.good[i % len(media.good)]),
            "video_id": f"k-{i:02d}",
            "extractors": ["loudness", "spectral"],
        }
        for i in range(12)
    ]
    task_id = httpx.post(f"{service.url}/batch", json={"items": items}, timeout=30).json()[
        "task_id"
    ]

    # Let some items finish, then kill the service while others are queued or running.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = httpx.get(f"{service.url}/status/{task_id}", timeout=60).json()
        if status["succeeded"] >= 2:
            break
        time.sleep(0.05)
    done_before = {
        i["video_id"]: i["manifest_uri"] for i in status["items"] if i["status"] == "completed"
    }
    assert 2 <= len(done_before) < len(items), status
    created_before = {
        v: Manifest.model_validate_json(Path(urlparse(u).path).read_text()).created_at
        for v, u in done_before.items()
    }
    workers = descendants_of(service.process.pid)
    assert len(workers) >= 3  # the forkserver and two workers
    service.process.send_signal(signal.SIGKILL)
    service.process.wait()

    # The workers die with the service: nothing finishes behind the restarted service's back.
    assert not survivors(workers, within_s=10)

    service.start()
    status = finished_status(service, task_id)

    assert status["status"] == "completed", status
    assert status["succeeded"] == len(items)
    for item in status["items"]:
        manifest = Manifest.model_validate_json(
            Path(urlparse(item["manifest_uri"]).path).read_text()
        )
        assert manifest.video_id == item["video_id"]
        if item["video_id"] in created_before:  # finished before the kill: not run again
            assert manifest.created_at == created_before[item["video_id"]]
    assert (
        len(
            list(
                Path(urlparse(done_before[next(iter(done_before))]).path)
                .parents[1]
                .glob("*/manifest.json")
            )
        )
        == 12
    )


def test_sigkill_mid_item_leaves_no_orphan_and_no_late_write(tmp_path: Path, media: Media) -> None:
    """Workers die with the killed service, before they can finish (the inputs they are reading
    arrive right after the kill), and after the restart each item completes once."""
    service = ServedFacade(tmp_path, media, MAX_CONCURRENT_VIDEOS="2", HTTP_ALLOW_PRIVATE="true")
    try:
        with gated_files({"a.wav": media.good[0], "b.wav": media.good[3]}) as gated:
            service.start()
            uris = [gated.url("a.wav"), gated.url("b.wav"), str(media.good[1]), str(media.good[2])]
            items = [
                {"input_uri": uri, "video_id": f"m-{i}", "extractors": ["loudness", "spectral"]}
                for i, uri in enumerate(uris)
            ]
            task_id = httpx.post(f"{service.url}/batch", json={"items": items}, timeout=30).json()[
                "task_id"
            ]
            gated.wait_requested("a.wav")
            gated.wait_requested("b.wav")  # both workers are mid-item, the other two items queued
            processes = descendants_of(service.process.pid)

            service.process.send_signal(signal.SIGKILL)
            service.process.wait()
            gated.open()  # an orphan would now get its input and finish its item

            assert not survivors(processes, within_s=5)
            output = tmp_path / "out" / task_id
            assert not list(
                output.glob("*/manifest.json")
            )  # nothing written behind the dead service's back

            restarted_at = time.time()
            service.start()
            status = finished_status(service, task_id)
    finally:
        service.stop()

    assert (status["status"], status["succeeded"]) == ("completed", 4), status
    for item in status["items"]:  # written once, by the restarted service
        manifest = Manifest.model_validate_json(
            Path(urlparse(item["manifest_uri"]).path).read_text()
        )
        assert manifest.created_at.timestamp() >= restarted_at
    with sqlite3.connect(tmp_path / "state" / "tasks.sqlite3") as db:
        attempts = [
            r[0]
            for r in db.execute(
                "SELECT attempts FROM items WHERE task_id = ? ORDER BY idx", (task_id,)
            )
        ]
    assert attempts == [2, 2, 1, 1]  # the two killed mid-item ran once more; none ran twice after
    assert dict(gated.requests) == {"a.wav": 2, "b.wav": 2}


def test_every_accepted_submission_survives_a_sigkill_during_a_burst(
    service: ServedFacade, media: Media
) -> None:
    """A 202 means the task is in the database: submissions arriving together share commits
    (group commit), and none that was answered is lost when the service is killed among them."""
    service.start()
    accepted: list[str] = []
    accepted_lock = threading.Lock()
    killed = threading.Event()

    def submit(index: int) -> None:
        body = {
            "input_uri": str(media.good[0]),
            "video_id": f"s-{index}",
            "extractors": ["loudness"],
        }
        try:
            response = httpx.post(f"{service.url}/process", json=body, timeout=30)
        except httpx.TransportError:  # in flight when the service died: not accepted
            return
        if response.status_code == 202:
            with accepted_lock:
                accepted.append(response.json()["task_id"])
                if len(accepted) == 40:
                    service.process.send_signal(signal.SIGKILL)
                    killed.set()

    with ThreadPoolExecutor(32) as pool:
        list(pool.map(submit, range(300)))
    assert killed.is_set()
    service.process.wait()
    answered = list(accepted)  # no 202 after the kill

    service.start()
    for task_id in answered:
        assert httpx.get(f"{service.url}/status/{task_id}", timeout=60).status_code == 200, task_id
    assert len(answered) >= 40
