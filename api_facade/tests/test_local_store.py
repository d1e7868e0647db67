"""The local backend's task store: reads cost O(the page) whatever the store holds, waiters
wake on their own task only, finished tasks expire, items come in pages, tasks carry their
submitter, and a store of the first layout is migrated in place.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from audioproc_api.backends import local as local_module
from audioproc_api.backends.base import (
    ResultNotAvailable,
    Submission,
    TaskNotFound,
    UnsupportedRequest,
    new_task_id,
)
from audioproc_api.backends.local import LocalBackend, SchemaTooNew
from audioproc_api.routes import build_spec
from audioproc_api.schemas import BatchItem, TaskKind, TaskStatus
from tests.facade_support import (
    FAST_EXTRACTORS,
    Media,
    local_settings,
    make_client,
    wait_finished,
    wait_until,
)
from tests.gated_http import gated_files


def submit(
    backend: LocalBackend, uri: str, n: int, submitter: str | None = None, concurrency: int = 1
) -> str:
    items = [
        BatchItem(input_uri=uri, video_id=f"v{i}", extractors=FAST_EXTRACTORS) for i in range(n)
    ]
    task_id = new_task_id(TaskKind.batch)
    spec = build_spec(items, False, concurrency, backend.output)
    backend.submit(Submission(task_id, TaskKind.batch, spec, "r", submitter=submitter))
    return task_id


@pytest.fixture
def idle_backend(tmp_path: Path, media: Media):
    """A backend whose dispatcher is not started: what is stored stays as submitted."""
    settings = local_settings(tmp_path, media)
    backend = LocalBackend(settings, settings.output_uri)
    yield backend
    backend.close()


def assert_indexed(db: sqlite3.Connection, statements: list[str]) -> None:
    """Every query of ``statements`` reads items of one task by index, never all items."""
    queries = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert queries
    for query in queries:
        plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {query}")]
        for step in plan:
            assert not re.match(r"SCAN (items|i)\b", step), (query, plan)
            assert "TEMP B-TREE" not in step, (query, plan)
            if re.search(r"\bitems\b", step):
                assert "task_id=?" in step, (query, plan)


def test_status_and_list_reads_search_indexes_and_never_scan_all_items(
    tmp_path: Path, media: Media, monkeypatch: pytest.MonkeyPatch
) -> None:
    statements: list[str] = []
    connect = sqlite3.connect

    def traced_connect(*args, **kwargs) -> sqlite3.Connection:
        db = connect(*args, **kwargs)
        db.set_trace_callback(statements.append)
        return db

    monkeypatch.setattr(local_module.sqlite3, "connect", traced_connect)
    settings = local_settings(tmp_path, media)
    backend = LocalBackend(settings, settings.output_uri)
    store = connect(settings.api_state_dir / "tasks.sqlite3")  # not traced
    try:
        tasks = [
            submit(backend, str(media.good[0]), 10_000, submitter=f"s{n}") for n in range(3)
        ]  # 30,000 items
        statements.clear()
        backend.list_tasks(None, 50, None)
        backend.list_tasks(TaskStatus.pending, 50, "1")
        backend.get(tasks[0])
        with pytest.raises(ResultNotAvailable):  # pending
            backend.read_manifest(tasks[2], "v7")
        assert_indexed(store, statements)

        statements.clear()
        backend.list_tasks(TaskStatus.pending, 50, "1", submitter="s1")
        backend.get(tasks[1], items_offset=5_000, items_limit=100)
        assert_indexed(store, statements)
    finally:
        backend.close()
        store.close()


def test_waiters_sleep_until_their_own_task_finishes(tmp_path: Path, media: Media) -> None:
    with (
        gated_files({"slow.wav": media.good[0]}) as gated,
        make_client(
            local_settings(tmp_path, media, max_concurrent_videos=2, http_allow_private=True)
        ) as client,
    ):
        backend: LocalBackend = client.app.state.backend
        reads: Counter[str] = Counter()
        get = backend.get

        def counting_get(task_id: str, *args, **kwargs):
            reads[task_id] += 1
            return get(task_id, *args, **kwargs)

        backend.get = counting_get  # type: ignore[method-assign]
        waited = client.post(
            "/process",
            json={
                "input_uri": gated.url("slow.wav"),
                "video_id": "slow",
                "extractors": FAST_EXTRACTORS,
            },
        ).json()["task_id"]
        gated.wait_requested("slow.wav")
        views = []
        waiters = [
            threading.Thread(target=lambda: views.append(backend.wait(waited, 120)))
            for _ in range(3)
        ]
        for waiter in waiters:
            waiter.start()
        wait_until(lambda: reads[waited] >= 3, what="the waiters' first reads")
        reads_before = reads[waited]

        other = submit(backend, str(media.good[1]), 6, concurrency=1)  # six completions meanwhile
        status = wait_finished(client, other)
        assert status["succeeded"] == 6
        time.sleep(0.5)  # room for (wrong) rescans of the waited task to show
        assert reads[waited] == reads_before  # no waiter woke for another task's items

        gated.open()
        for waiter in waiters:
            waiter.join(60)
        assert [v.status for v in views] == [TaskStatus.completed] * 3


def test_finished_tasks_expire_and_their_outputs_stay(tmp_path: Path, media: Media) -> None:
    settings = local_settings(tmp_path, media, api_task_retention_s=3600, http_allow_private=True)
    with gated_files({"slow.wav": media.good[0]}) as gated, make_client(settings) as client:
        backend: LocalBackend = client.app.state.backend
        done = client.post(
            "/process",
            params={"wait": "true"},
            json={"input_uri": str(media.good[0]), "video_id": "d", "extractors": FAST_EXTRACTORS},
        )
        done_id = done.json()["task_id"]
        running = client.post(
            "/process",
            json={
                "input_uri": gated.url("slow.wav"),
                "video_id": "r",
                "extractors": FAST_EXTRACTORS,
            },
        ).json()["task_id"]
        gated.wait_requested("slow.wav")

        assert backend.sweep(now=time.time()) == 0  # not an hour old yet
        assert backend.sweep(now=time.time() + 3601) == 1

        assert client.get(f"/status/{done_id}").status_code == 404
        assert client.get(f"/status/{running}").status_code == 200  # unfinished: kept
        assert (tmp_path / "out" / done_id / "d" / "manifest.json").is_file()


def test_retention_zero_keeps_tasks_forever(tmp_path: Path, media: Media) -> None:
    with make_client(local_settings(tmp_path, media, api_task_retention_s=0)) as client:
        done = client.post(
            "/process",
            params={"wait": "true"},
            json={"input_uri": str(media.good[0]), "video_id": "d", "extractors": FAST_EXTRACTORS},
        )
        assert client.app.state.backend.sweep(now=time.time() + 10 * 365 * 86400) == 0
        assert client.get(f"/status/{done.json()['task_id']}").status_code == 200


def test_the_sweep_runs_on_its_own(tmp_path: Path, media: Media) -> None:
    settings = local_settings(tmp_path, media, api_task_retention_s=0.5)
    with make_client(settings) as client:
        done = client.post(
            "/process",
            params={"wait": "true"},
            json={"input_uri": str(media.good[0]), "video_id": "d", "extractors": FAST_EXTRACTORS},
        )
        task_id = done.json()["task_id"]
    finished_at = time.time()
    while time.time() < finished_at + 1:
        time.sleep(0.1)
    with make_client(settings) as client:  # the dispatcher sweeps when it starts, then periodically
        wait_until(
            lambda: client.get(f"/status/{task_id}").status_code == 404,
            what="the expired task gone",
        )


def test_items_come_in_pages(idle_backend: LocalBackend, media: Media) -> None:
    task_id = submit(idle_backend, str(media.good[0]), 250)
    pages, offset = [], 0
    while offset is not None:
        view = idle_backend.get(task_id, items_offset=offset, items_limit=100)
        pages.append([item.index for item in view.items])
        offset = view.items_next_offset
    assert [len(p) for p in pages] == [100, 100, 50]
    assert sum(pages, []) == list(range(250))
    everything = idle_backend.get(task_id)
    assert len(everything.items) == 250 and everything.items_next_offset is None
    assert idle_backend.get(task_id, items_offset=300, items_limit=10).items == []


def test_tasks_carry_their_submitter_and_list_filters_by_it(
    idle_backend: LocalBackend, media: Media
) -> None:
    alice = [submit(idle_backend, str(media.good[0]), 1, submitter="alice") for _ in range(3)]
    bob = submit(idle_backend, str(media.good[0]), 1, submitter="bob")
    anonymous = submit(idle_backend, str(media.good[0]), 1)

    assert idle_backend.get(alice[0]).submitter == "alice"
    assert idle_backend.get(anonymous).submitter is None
    page, cursor = idle_backend.list_tasks(None, 2, None, submitter="alice")
    rest, end = idle_backend.list_tasks(None, 2, cursor, submitter="alice")
    assert [v.task_id for v in page + rest] == alice and end is None
    assert [v.submitter for v in page] == ["alice", "alice"]
    assert [v.task_id for v in idle_backend.list_tasks(None, 10, None)[0]] == [
        *alice,
        bob,
        anonymous,
    ]
    assert [
        v.task_id for v in idle_backend.list_tasks(TaskStatus.pending, 10, None, submitter="bob")[0]
    ] == [bob]


@pytest.mark.parametrize("cursor", ["²", "9223372036854775808", "-1", "x"])
def test_an_invalid_cursor_is_rejected(idle_backend: LocalBackend, cursor: str) -> None:
    with pytest.raises(UnsupportedRequest):
        idle_backend.list_tasks(None, 10, cursor)


#: The first layout of the store (before per-task counts and attempts), as main wrote it.
FIRST_LAYOUT = """
CREATE TABLE tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL,
    device TEXT NOT NULL, concurrency INTEGER NOT NULL, output TEXT NOT NULL, request_id TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE items (
    task_id TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE, idx INTEGER NOT NULL,
    video_id TEXT NOT NULL, input_uri TEXT NOT NULL, extractors TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued', manifest_uri TEXT, device TEXT, error TEXT,
    PRIMARY KEY (task_id, idx)
);
CREATE INDEX items_by_state ON items(state, task_id);
"""


def test_a_store_of_the_first_layout_is_migrated(tmp_path: Path, media: Media) -> None:
    settings = local_settings(tmp_path, media)
    settings.api_state_dir.mkdir()
    with sqlite3.connect(settings.api_state_dir / "tasks.sqlite3") as db:
        db.executescript(FIRST_LAYOUT)
        db.execute(
            "INSERT INTO tasks (id, kind, device, concurrency, output, request_id, created_at) "
            "VALUES ('batc-old', 'batch', 'cpu', 2, ?, 'r', ?)",
            (settings.output_uri, time.time()),
        )
        extractors = '["loudness", "spectral"]'
        db.executemany(
            "INSERT INTO items (task_id, idx, video_id, input_uri, extractors, state, error) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                ("batc-old", 0, "a", str(media.good[0]), extractors, "failed", "input error: boom"),
                ("batc-old", 1, "b", str(media.good[1]), extractors, "running", None),
                ("batc-old", 2, "c", str(media.good[2]), extractors, "queued", None),
            ],
        )
    with make_client(settings) as client:
        status = wait_finished(client, "batc-old")
        assert (status["status"], status["total"], status["succeeded"], status["failed"]) == (
            "completed",
            3,
            2,
            1,
        )
        assert status["error"] == "1 of 3 items failed; first: input error: boom"
        assert [
            t["task_id"]
            for t in client.get("/tasks", params={"status": "completed"}).json()["tasks"]
        ] == ["batc-old"]
    with make_client(settings) as client:  # opened again: already the current layout
        assert client.get("/status/batc-old").json()["succeeded"] == 2


def test_a_store_of_a_newer_layout_is_refused(tmp_path: Path, media: Media) -> None:
    settings = local_settings(tmp_path, media)
    settings.api_state_dir.mkdir()
    with sqlite3.connect(settings.api_state_dir / "tasks.sqlite3") as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(SchemaTooNew, match="version 99.*API_STATE_DIR"):
        LocalBackend(settings, settings.output_uri)


def test_a_cancelled_task_is_gone(idle_backend: LocalBackend, media: Media) -> None:
    task_id = submit(idle_backend, str(media.good[0]), 3)
    idle_backend.cancel(task_id)
    with pytest.raises(TaskNotFound):
        idle_backend.get(task_id)
    with pytest.raises(TaskNotFound):
        idle_backend.cancel(task_id)
