"""Shutdown and slow clients, against ``audioproc-api serve`` (real uvicorn) in a subprocess."""

from __future__ import annotations

import signal
import socket
import threading
from pathlib import Path

import httpx
import pytest

from tests.facade_support import FAST_EXTRACTORS, Media, busy_batch, served, wait_until

pytestmark = pytest.mark.slow


def test_sigterm_during_a_wait_answers_202_with_the_task_id(tmp_path: Path, media: Media) -> None:
    with served(tmp_path, media) as service:
        httpx.post(f"{service.url}/batch", json=busy_batch(media), timeout=60).raise_for_status()
        body = {
            "input_uri": str(media.good[0]),
            "video_id": "waiting",
            "extractors": FAST_EXTRACTORS,
        }
        result: dict[str, httpx.Response] = {}
        waiter = threading.Thread(
            target=lambda: result.update(
                response=httpx.post(
                    f"{service.url}/process", params={"wait": "true"}, json=body, timeout=120
                )
            )
        )
        waiter.start()
        tasks = wait_until(
            lambda: [
                t
                for t in httpx.get(f"{service.url}/tasks", timeout=30).json()["tasks"]
                if t["kind"] == "process"
            ],
            60,
            "the waited task",
        )
        service.process.send_signal(signal.SIGTERM)
        waiter.join(60)
        exit_status = service.process.wait(60)

    response = result["response"]
    assert response.status_code == 202, response.text
    assert response.json()["task_id"] == tasks[0]["task_id"]
    assert response.json()["status_url"] == f"/status/{tasks[0]['task_id']}"
    assert exit_status in (0, -signal.SIGTERM)


def _closed_by_server(sock: socket.socket, limit_s: float) -> bool:
    """Whether the server closes ``sock`` (EOF or reset) within ``limit_s`` seconds, reading
    whatever it sends meanwhile."""
    sock.settimeout(limit_s)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass
    return True


@pytest.mark.parametrize(
    "partial",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",  # headers never finished
        b'POST /process HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"in',  # body
        b"",  # connected, nothing sent
    ],
)
def test_an_unfinished_request_is_dropped_after_api_read_timeout(
    tmp_path: Path, media: Media, partial: bytes
) -> None:
    with served(tmp_path, media, API_READ_TIMEOUT_S="1") as service:
        with socket.create_connection(("127.0.0.1", service.port)) as slow:
            slow.sendall(partial)
            closed = _closed_by_server(slow, limit_s=30)
            # the server still serves others meanwhile, and afterwards
            assert httpx.get(f"{service.url}/healthz", timeout=10).status_code == 200
    assert closed


def test_a_keep_alive_connection_times_its_next_request_too(tmp_path: Path, media: Media) -> None:
    with served(tmp_path, media, API_READ_TIMEOUT_S="1") as service:
        with socket.create_connection(("127.0.0.1", service.port)) as slow:
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            slow.settimeout(10)
            first = slow.recv(4096)
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the next one, never finished
            closed = _closed_by_server(slow, limit_s=30)
    assert first.startswith(b"HTTP/1.1 200")
    assert closed
