"""Waiting requests (``?wait=true``) must not starve the server (real uvicorn, real workers).

The only worker is kept busy by a long batch, so every wait submitted after it stays pending.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.facade_support import FAST_EXTRACTORS, Media, busy_batch, served, wait_until

pytestmark = pytest.mark.slow

WAITERS = 45  # more than anyio's default pool of 40 threads, which plain-def handlers share


def wait_body(media: Media, video_id: str) -> dict:
    return {"input_uri": str(media.good[0]), "video_id": video_id, "extractors": FAST_EXTRACTORS}


def task_count(url: str) -> int:
    return len(httpx.get(f"{url}/tasks", params={"limit": 500}, timeout=120).json()["tasks"])


def test_health_readiness_and_status_answer_while_45_waits_are_pending(
    tmp_path: Path, media: Media
) -> None:
    with served(tmp_path, media) as service:
        url = service.url
        batch_id = httpx.post(f"{url}/batch", json=busy_batch(media), timeout=60).json()["task_id"]
        returned: list[int] = []  # waits in the order they came back

        def wait_for_manifest(index: int) -> httpx.Response:
            response = httpx.post(
                f"{url}/process",
                params={"wait": "true", "timeout": "60"},
                json=wait_body(media, f"w-{index}"),
                timeout=120,
            )
            returned.append(index)
            return response

        with ThreadPoolExecutor(WAITERS) as pool:
            waits = [pool.submit(wait_for_manifest, i) for i in range(WAITERS)]
            # Every wait has created its task (each call below may itself queue behind them).
            wait_until(lambda: task_count(url) == 1 + WAITERS, 120, "the waits' tasks")
            health = httpx.get(f"{url}/healthz", timeout=120)
            ready = httpx.get(f"{url}/readyz", timeout=120)
            status = httpx.get(f"{url}/status/{batch_id}", timeout=120)
            answered_while_pending = not returned
            # done: SIGTERM answers the waits at once (their tasks are queued behind the batch)
            service.stop()
            responses = [w.result() for w in waits]

        assert (health.status_code, ready.status_code, status.status_code) == (200, 200, 200)
        assert answered_while_pending, f"{len(returned)} waits returned before /healthz answered"
        assert all(r.status_code == 202 and r.json()["task_id"] for r in responses), [
            r.status_code for r in responses
        ]


def test_a_wait_beyond_api_max_waiters_is_503_and_creates_no_task(
    tmp_path: Path, media: Media
) -> None:
    with served(tmp_path, media, API_MAX_WAITERS="2") as service:
        url = service.url
        httpx.post(f"{url}/batch", json=busy_batch(media), timeout=60).raise_for_status()
        started = threading.Barrier(3)

        def wait_for_manifest(index: int) -> httpx.Response:
            started.wait()
            return httpx.post(
                f"{url}/process",
                params={"wait": "true", "timeout": "60"},
                json=wait_body(media, f"w-{index}"),
                timeout=120,
            )

        with ThreadPoolExecutor(2) as pool:
            waits = [pool.submit(wait_for_manifest, i) for i in range(2)]
            started.wait()
            wait_until(lambda: task_count(url) == 3, 60, "both waits' tasks")
            refused = httpx.post(
                f"{url}/process", params={"wait": "true"}, json=wait_body(media, "w-x"), timeout=60
            )
            tasks_after = task_count(url)
            not_waiting = httpx.post(f"{url}/process", json=wait_body(media, "w-y"), timeout=60)
            service.stop()
            responses = [w.result() for w in waits]

    assert refused.status_code == 503, refused.text
    assert int(refused.headers["retry-after"]) > 0
    assert "API_MAX_WAITERS" in refused.json()["detail"]
    assert tasks_after == 3  # the refused wait created nothing
    assert not_waiting.status_code == 202  # only waits are bounded
    assert [r.status_code for r in responses] == [202, 202]
