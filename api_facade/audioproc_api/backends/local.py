"""The local backend: the pipeline in a bounded pool of worker processes, task state in SQLite.

Items are the unit of work. Each item is a row whose state moves
``queued -> running -> succeeded | failed``; every move is committed before it takes effect
elsewhere, so a service killed at any moment restarts with nothing lost and nothing run
twice:

- an item recorded as finished is never dispatched again;
- an item that was ``running`` is re-queued, unless its manifest is already in storage
  (written atomically, last, by the pipeline), in which case it is recorded as succeeded;
- worker processes die with the service (see ``local_worker``), so no orphan finishes an
  item behind the restarted service's back.

Lanes: one CPU pool of ``MAX_CONCURRENT_VIDEOS`` processes, and per GPU one pool of
``MAX_GPU_WORKERS`` processes (GPU work serialised per GPU by default). ``device=gpu`` items
wait for a GPU lane, ``cpu`` items for the CPU lane, ``auto`` items take whichever frees first,
GPU preferred. A task's ``concurrency`` caps how many of its items run at once.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import sqlite3
import threading
import time
from collections import defaultdict
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from audioproc.extractors.registry import resolve_names
from audioproc.models import Manifest
from audioproc.models.audiojob import Device
from audioproc.storage import MANIFEST_NAME

from audioproc_api.backends import local_worker
from audioproc_api.backends.base import (
    BackendUnavailable,
    Submission,
    TaskNotFound,
    UnsupportedRequest,
    item_manifest,
    load_manifest,
    parse_sequence_cursor,
)
from audioproc_api.catalog import extractor_entries
from audioproc_api.schemas import (
    ExtractorEntry,
    ItemStatus,
    ItemView,
    TaskKind,
    TaskStatus,
    TaskView,
)
from audioproc_api.settings import ApiSettings

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    device TEXT NOT NULL,
    concurrency INTEGER NOT NULL,
    output TEXT NOT NULL,
    request_id TEXT,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    task_id TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    video_id TEXT NOT NULL,
    input_uri TEXT NOT NULL,
    extractors TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',
    manifest_uri TEXT,
    device TEXT,
    error TEXT,
    PRIMARY KEY (task_id, idx)
);
CREATE INDEX IF NOT EXISTS items_by_state ON items(state, task_id);
"""

#: Task status from item counts, in SQL, so that listing can filter and page in the database.
STATUS_SQL = """
CASE
  WHEN done = total AND succeeded = 0 THEN 'failed'
  WHEN done = total THEN 'completed'
  WHEN done > 0 OR running > 0 THEN 'processing'
  ELSE 'pending'
END
"""
TASK_ROWS_SQL = f"""
SELECT *, {STATUS_SQL} AS status FROM (
  SELECT t.seq, t.id, t.kind, t.device, t.created_at, t.request_id,
         count(*) AS total,
         sum(i.state = 'succeeded') AS succeeded,
         sum(i.state IN ('succeeded', 'failed')) AS done,
         sum(i.state = 'running') AS running,
         min(CASE WHEN i.state = 'failed' THEN i.error END) AS first_error
  FROM tasks t JOIN items i ON i.task_id = t.id
  GROUP BY t.seq
)
"""

ITEM_STATUS = {
    "queued": ItemStatus.pending,
    "running": ItemStatus.processing,
    "succeeded": ItemStatus.completed,
    "failed": ItemStatus.failed,
}


@dataclass
class _Lane:
    """A pool of worker processes for one device, and what is running on it."""

    name: str  # "cpu" or "cuda:N"
    device: str  # the device argument the pipeline gets: "cpu" or "cuda"
    size: int
    cuda_index: int | None
    threads: int
    executor: ProcessPoolExecutor | None = None
    running: int = 0

    @property
    def free(self) -> bool:
        return self.running < self.size

    def submit(self, *args: Any) -> Future:
        if self.executor is None:
            self.executor = ProcessPoolExecutor(
                max_workers=self.size,
                mp_context=_worker_context(),
                initializer=local_worker.init_worker,
                initargs=(self.cuda_index, self.threads),
            )
        return self.executor.submit(local_worker.run_item, *args)

    def discard_executor(self) -> None:
        """Stop this lane's processes now (a broken pool, or shutdown)."""
        if self.executor is None:
            return
        # ProcessPoolExecutor has no public way to stop busy workers; its process table does.
        processes = list(getattr(self.executor, "_processes", {}).values())
        self.executor.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.kill()
        self.executor = None


@dataclass
class _Dispatch:
    task_id: str
    index: int
    video_id: str
    input_uri: str
    extractors: list[str]
    output: str
    lane: _Lane = field(repr=False)


def _worker_context() -> multiprocessing.context.BaseContext:
    """Workers fork from a forkserver that has imported the pipeline once (torch, librosa), so
    a new worker starts in milliseconds, not seconds; and nothing is forked from this
    multi-threaded process itself. The forkserver exits when this process does."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["audioproc.runner"])
    return context


def _count_gpus() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class LocalBackend:
    name = "local"

    def __init__(
        self,
        settings: ApiSettings,
        output: str,
        gpus: int | None = None,
    ) -> None:
        self.settings = settings
        self.output = output
        self._settings_json = settings.model_dump_json()
        gpus = (_count_gpus() if settings.use_gpu else 0) if gpus is None else gpus
        cpu_threads = max(1, (os.cpu_count() or 1) // settings.max_concurrent_videos)
        self._cpu_lane = _Lane("cpu", "cpu", settings.max_concurrent_videos, None, cpu_threads)
        self._gpu_lanes = [
            _Lane(f"cuda:{i}", "cuda", max(1, settings.max_gpu_workers), i, cpu_threads) for i in range(gpus)
        ]
        settings.api_state_dir.mkdir(parents=True, exist_ok=True)
        self._db_path = settings.api_state_dir / "tasks.sqlite3"
        self._db = sqlite3.connect(self._db_path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        # One lock for the database and the in-memory dispatch state; waiters and the
        # dispatcher sleep on it until an item finishes or a task arrives.
        self._changed = threading.Condition()
        self._running_per_task: dict[str, int] = defaultdict(int)
        self._dispatcher: threading.Thread | None = None
        self._stopping = False
        self._extractors: list[ExtractorEntry] = []

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._extractors = extractor_entries(self.settings, gpu=bool(self._gpu_lanes), probe=True)
        self._recover()
        self._dispatcher = threading.Thread(target=self._dispatch_forever, name="local-dispatcher", daemon=True)
        self._dispatcher.start()

    def close(self) -> None:
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._dispatcher is not None:
            self._dispatcher.join(timeout=10)
        for lane in self._lanes:
            lane.discard_executor()
        self._db.close()

    def not_ready_reason(self) -> str | None:
        if self._dispatcher is None or not self._dispatcher.is_alive():
            return "local dispatcher is not running"
        return None

    @property
    def _lanes(self) -> list[_Lane]:
        return [*self._gpu_lanes, self._cpu_lane]

    def _recover(self) -> None:
        """Items left ``running`` by a stopped service: finished if their manifest exists, else re-queued."""
        rows = self._db.execute(
            "SELECT i.task_id, i.idx, i.video_id, t.output FROM items i JOIN tasks t ON t.id = i.task_id "
            "WHERE i.state = 'running'"
        ).fetchall()
        for row in rows:
            manifest_uri = f"{row['output']}/{row['task_id']}/{row['video_id']}/{MANIFEST_NAME}"
            try:
                manifest = load_manifest(manifest_uri, self.settings)
            except BackendUnavailable:  # absent (or unreadable): the item did not finish
                self._set_item(row["task_id"], row["idx"], state="queued")
                continue
            log.info("recovered finished item", extra={"task_id": row["task_id"], "video_id": row["video_id"]})
            self._set_item(
                row["task_id"], row["idx"], state="succeeded", manifest_uri=manifest_uri, device=manifest.device
            )
        if rows:
            log.info("re-queued unfinished items after restart", extra={"items": len(rows)})

    # -- submission and reading ------------------------------------------------------------

    def submit(self, submission: Submission) -> str:
        spec = submission.spec
        if spec.device is Device.gpu and not self._gpu_lanes:
            raise UnsupportedRequest("use_gpu", "use_gpu is true but this deployment has no GPU")
        task_id = submission.task_id
        default_extractors = [e.value for e in spec.extractors] if spec.extractors else None
        rows = [
            (
                task_id,
                index,
                item.video_id,
                item.input_uri,
                json.dumps(resolve_names([e.value for e in item.extractors] if item.extractors else default_extractors)),
            )
            for index, item in enumerate(spec.items)
        ]
        with self._changed:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO tasks (id, kind, device, concurrency, output, request_id, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (task_id, submission.kind.value, spec.device.value, spec.concurrency, self.output,
                 submission.request_id, time.time()),
            )
            self._db.executemany(
                "INSERT INTO items (task_id, idx, video_id, input_uri, extractors) VALUES (?, ?, ?, ?, ?)", rows
            )
            self._db.execute("COMMIT")
            self._changed.notify_all()
        return task_id

    def _task_row(self, task_id: str) -> sqlite3.Row:
        row = self._db.execute(f"{TASK_ROWS_SQL} WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            raise TaskNotFound(task_id)
        return row

    def _view(self, row: sqlite3.Row, items: list[sqlite3.Row] | None) -> TaskView:
        failed = row["done"] - row["succeeded"]
        error = None
        if failed:
            error = f"{failed} of {row['total']} items failed; first: {row['first_error']}"
        return TaskView(
            task_id=row["id"],
            kind=TaskKind(row["kind"]),
            status=TaskStatus(row["status"]),
            progress=row["done"] / row["total"],
            error=error,
            device=Device(row["device"]),
            created_at=datetime.fromtimestamp(row["created_at"], UTC),
            request_id=row["request_id"],
            total=row["total"],
            succeeded=row["succeeded"],
            failed=failed,
            items=[
                ItemView(
                    index=i["idx"],
                    video_id=i["video_id"],
                    input_uri=i["input_uri"],
                    status=ITEM_STATUS[i["state"]],
                    manifest_uri=i["manifest_uri"],
                    device=i["device"],
                    error=i["error"],
                )
                for i in items or ()
            ],
        )

    def get(self, task_id: str) -> TaskView:
        with self._changed:
            row = self._task_row(task_id)
            items = self._db.execute("SELECT * FROM items WHERE task_id = ? ORDER BY idx", (task_id,)).fetchall()
            return self._view(row, items)

    def wait(self, task_id: str, timeout_s: float) -> TaskView:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                view = self.get(task_id)
                remaining = deadline - time.monotonic()
                if view.status.finished or remaining <= 0:
                    return view
                self._changed.wait(remaining)

    def cancel(self, task_id: str) -> None:
        """Forget the task: queued items never start; running ones finish and are discarded."""
        with self._changed:
            deleted = self._db.execute("DELETE FROM tasks WHERE id = ?", (task_id,)).rowcount
            if not deleted:
                raise TaskNotFound(task_id)
            self._changed.notify_all()

    def list(
        self, status: TaskStatus | None, limit: int, cursor: str | None, submitter: str | None = None
    ) -> tuple[list[TaskView], str | None]:
        after = parse_sequence_cursor(cursor)
        query, params = f"{TASK_ROWS_SQL} WHERE seq > ?", [after]
        if status is not None:
            query += " AND status = ?"
            params.append(status.value)
        query += " ORDER BY seq LIMIT ?"
        params.append(limit + 1)
        with self._changed:
            rows = self._db.execute(query, params).fetchall()
        page = rows[:limit]
        next_cursor = str(page[-1]["seq"]) if len(rows) > limit else None
        return [self._view(row, None) for row in page], next_cursor

    def read_manifest(self, task_id: str, video_id: str) -> Manifest:
        with self._changed:
            self._task_row(task_id)
            item = self._db.execute(
                "SELECT state, manifest_uri, error FROM items WHERE task_id = ? AND video_id = ?",
                (task_id, video_id),
            ).fetchone()
        if item is None:
            return item_manifest(task_id, video_id, None, None, None, self.settings)
        return item_manifest(task_id, video_id, ITEM_STATUS[item["state"]], item["manifest_uri"], item["error"],
                             self.settings)

    def extractors(self) -> list[ExtractorEntry]:
        """Probed once at start: loading the implementations imports the pipeline's stack."""
        return self._extractors

    # -- dispatching -----------------------------------------------------------------------

    def _dispatch_forever(self) -> None:
        while True:
            with self._changed:
                job = self._claim_next()
                while job is None and not self._stopping:
                    self._changed.wait()
                    job = self._claim_next()
                if self._stopping:
                    return
            self._submit(job)  # outside the lock: starting a worker process may take a while

    def _claim_next(self) -> _Dispatch | None:
        """Mark the oldest queued item that has a free lane and room in its task as running."""
        if self._stopping or not any(lane.free for lane in self._lanes):
            return None
        devices = {"cpu"} if self._cpu_lane.free else set()
        if any(lane.free for lane in self._gpu_lanes):
            devices |= {"gpu", "auto"}
        elif self._cpu_lane.free:
            devices.add("auto")
        tasks = self._db.execute(
            "SELECT t.id, t.device, t.concurrency, t.output FROM tasks t "
            f"WHERE t.device IN ({','.join('?' * len(devices))}) "
            "AND EXISTS (SELECT 1 FROM items i WHERE i.task_id = t.id AND i.state = 'queued') ORDER BY t.seq",
            sorted(devices),
        ).fetchall()
        task = next((t for t in tasks if self._running_per_task[t["id"]] < t["concurrency"]), None)
        if task is None:
            return None
        item = self._db.execute(
            "SELECT idx, video_id, input_uri, extractors FROM items "
            "WHERE task_id = ? AND state = 'queued' ORDER BY idx LIMIT 1",
            (task["id"],),
        ).fetchone()
        job = _Dispatch(task["id"], item["idx"], item["video_id"], item["input_uri"],
                        json.loads(item["extractors"]), task["output"], self._pick_lane(Device(task["device"])))
        self._set_item(job.task_id, job.index, state="running")
        job.lane.running += 1
        self._running_per_task[job.task_id] += 1
        return job

    def _pick_lane(self, device: Device) -> _Lane:
        gpu = next((lane for lane in self._gpu_lanes if lane.free), None)
        if device is Device.gpu or (device is Device.auto and gpu is not None):
            assert gpu is not None
            return gpu
        return self._cpu_lane

    def _submit(self, job: _Dispatch) -> None:
        args = (job.task_id, job.input_uri, job.video_id, job.extractors, job.output, job.lane.device,
                self._settings_json)
        try:
            future = job.lane.submit(*args)
        except (BrokenProcessPool, RuntimeError):  # a pool broken or shut down meanwhile: a fresh one
            with self._changed:
                job.lane.discard_executor()
            future = job.lane.submit(*args)
        future.add_done_callback(lambda f: self._finished(job, f))

    def _finished(self, job: _Dispatch, future: Future) -> None:
        """Record an item's outcome (called on the pool's thread)."""
        pool_broke = False
        try:
            result = future.result()
        except BrokenProcessPool as exc:
            pool_broke = True
            result = {"status": "error", "error": f"internal: a worker process died ({exc})"}
        except Exception as exc:  # the runner itself raised: an internal error, not the input's fault
            result = {"status": "error", "error": f"internal: {type(exc).__name__}: {exc}"}
        with self._changed:
            if self._stopping:
                return  # the item stays 'running' and is recovered on the next start
            job.lane.running -= 1
            self._running_per_task[job.task_id] -= 1
            if not self._running_per_task[job.task_id]:
                del self._running_per_task[job.task_id]
            if pool_broke:
                job.lane.discard_executor()
            self._set_item(
                job.task_id,
                job.index,
                state="succeeded" if result["status"] == "ok" else "failed",
                manifest_uri=result.get("manifest_uri"),
                device=result.get("device"),
                error=result.get("error"),
            )
            self._changed.notify_all()

    def _set_item(self, task_id: str, index: int, state: str, **columns: Any) -> None:
        assignments = ", ".join(f"{name} = ?" for name in ("state", *columns))
        self._db.execute(
            f"UPDATE items SET {assignments} WHERE task_id = ? AND idx = ?",
            (state, *columns.values(), task_id, index),
        )
