"""The local backend: the pipeline in a bounded set of worker processes, task state in SQLite.

Items are the unit of work. Each item is a row whose state moves
``queued -> running -> succeeded | failed``; every move is committed, together with the
task's counts, before it takes effect elsewhere, so a service killed at any moment restarts
with nothing lost and nothing run twice:

- an item recorded as finished is never dispatched again;
- an item that was ``running`` is re-queued, unless its manifest is already in storage
  (written atomically, last, by the pipeline), in which case it is recorded as succeeded;
- worker processes die with the service, and a worker holds a lock per item while it runs
  it, so a new worker never runs an item while an old writer of it is alive (see
  ``local_worker``).

Workers: each lane has a fixed set of long-lived worker processes, forked from a forkserver,
each running one item at a time over its own pipe. A worker that dies (OOM-killed, say)
costs only the item it was running: that item is retried up to ``API_ITEM_RETRIES`` times
(attempts are counted in the database, so a restart does not reset them), and the worker is
replaced.

Lanes: one CPU lane of ``MAX_CONCURRENT_VIDEOS`` workers, and per GPU one lane of
``API_ITEMS_PER_GPU`` workers (GPU work serialised per GPU by default). ``device=gpu`` items
wait for a GPU lane, ``cpu`` items for the CPU lane, ``auto`` items take whichever frees first,
GPU preferred. A task's ``concurrency`` caps how many of its items run at once.

Reads: each task row carries its item counts and status, so ``get`` and ``list`` read task
rows and one page of items, on per-thread read connections (WAL), without the dispatcher's
lock. Waiters sleep on an event of their own task. Finished tasks older than
``API_TASK_RETENTION_S`` are deleted by a periodic sweep (their outputs stay in storage).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import queue
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from audioproc.errors import OutputError
from audioproc.extractors.registry import resolve_names
from audioproc.models import Manifest
from audioproc.models.audiojob import Device
from audioproc.models.pod_contract import manifest_uri
from audioproc.storage import LocalStorage, S3Storage, open_storage, probe_output
from audioproc_api.backends import local_worker
from audioproc_api.backends.base import (
    MAX_SEQUENCE,
    BackendUnavailable,
    Submission,
    TaskNotFound,
    UnsupportedRequest,
    item_artifact,
    item_manifest,
    load_manifest,
    parse_sequence_cursor,
)
from audioproc_api.backends.group_commit import GroupCommit
from audioproc_api.catalog import extractor_entries
from audioproc_api.schemas import (
    ClusterObjects,
    ExtractorEntry,
    ItemStatus,
    ItemView,
    TaskKind,
    TaskStatus,
    TaskView,
)
from audioproc_api.settings import ApiSettings

log = logging.getLogger(__name__)

#: ``PRAGMA user_version`` of the layout below. 0 with tables present: the first layout
#: (no counts on tasks, no attempts), migrated in place on start.
SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    device TEXT NOT NULL,
    concurrency INTEGER NOT NULL,
    output TEXT NOT NULL,
    request_id TEXT,
    created_at REAL NOT NULL,
    submitter TEXT,
    total INTEGER NOT NULL DEFAULT 0,
    queued INTEGER NOT NULL DEFAULT 0,
    running INTEGER NOT NULL DEFAULT 0,
    succeeded INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending',
    first_error TEXT,
    finished_at REAL
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
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, idx)
);
"""
INDEXES = """
DROP INDEX IF EXISTS items_by_state;
CREATE INDEX IF NOT EXISTS items_by_task_state ON items(task_id, state, idx);
CREATE INDEX IF NOT EXISTS tasks_with_queued ON tasks(seq) WHERE queued > 0;
CREATE INDEX IF NOT EXISTS tasks_with_running ON tasks(seq) WHERE running > 0;
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks(status, seq);
CREATE INDEX IF NOT EXISTS tasks_by_submitter ON tasks(submitter, seq);
CREATE INDEX IF NOT EXISTS tasks_by_finished_at ON tasks(finished_at) WHERE finished_at IS NOT NULL;
"""
#: From the first layout: new columns (their defaults are filled in by MIGRATE_COUNTS).
MIGRATE_COLUMNS = [
    "ALTER TABLE tasks ADD COLUMN submitter TEXT",
    *(
        f"ALTER TABLE tasks ADD COLUMN {c} INTEGER NOT NULL DEFAULT 0"
        for c in ("total", "queued", "running", "succeeded", "failed")
    ),
    "ALTER TABLE tasks ADD COLUMN status TEXT NOT NULL DEFAULT 'pending'",
    "ALTER TABLE tasks ADD COLUMN first_error TEXT",
    "ALTER TABLE tasks ADD COLUMN finished_at REAL",
    "ALTER TABLE items ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
]
MIGRATE_COUNTS = """
UPDATE tasks SET
  total = (SELECT count(*) FROM items i WHERE i.task_id = tasks.id),
  queued = (SELECT count(*) FROM items i WHERE i.task_id = tasks.id AND i.state = 'queued'),
  running = (SELECT count(*) FROM items i WHERE i.task_id = tasks.id AND i.state = 'running'),
  succeeded = (SELECT count(*) FROM items i WHERE i.task_id = tasks.id AND i.state = 'succeeded'),
  failed = (SELECT count(*) FROM items i WHERE i.task_id = tasks.id AND i.state = 'failed'),
  first_error = (SELECT min(error) FROM items i WHERE i.task_id = tasks.id AND i.state = 'failed');
"""

#: Task status from its counts (also ``_status_of``, for the same rule in Python).
STATUS_SQL = """
CASE
  WHEN succeeded + failed = total AND succeeded = 0 THEN 'failed'
  WHEN succeeded + failed = total THEN 'completed'
  WHEN succeeded + failed > 0 OR running > 0 THEN 'processing'
  ELSE 'pending'
END
"""

ITEM_STATUS = {
    "queued": ItemStatus.pending,
    "running": ItemStatus.processing,
    "succeeded": ItemStatus.completed,
    "failed": ItemStatus.failed,
}
#: Item states, each also a count column of ``tasks``.
ITEM_STATES = tuple(ITEM_STATUS)

#: How often the retention sweep runs (seconds), and how many tasks it deletes per transaction.
SWEEP_INTERVAL_S = 60.0
SWEEP_BATCH = 100
#: Seconds between probes of the output (see ``LocalBackend._output_problem``).
OUTPUT_PROBE_TTL_S = 10.0


def _status_of(total: int, running: int, succeeded: int, failed: int) -> TaskStatus:
    done = succeeded + failed
    if done == total:
        return TaskStatus.completed if succeeded else TaskStatus.failed
    return TaskStatus.processing if done or running else TaskStatus.pending


@dataclass(frozen=True)
class _Insert:
    """One submission's rows: the task's, and its items' (see ``LocalBackend._insert_all``)."""

    task: tuple[Any, ...]
    items: list[tuple[Any, ...]]


@dataclass(eq=False)
class _Job:
    """One attempt at one item, from claim to recorded outcome."""

    task_id: str
    index: int
    video_id: str
    input_uri: str
    extractors: list[str]
    output: str
    attempt: int  # 1-based, counted in the database
    lane: _Lane = field(repr=False)
    worker: _Worker = field(repr=False)
    # Set (by the thread that cancels the task) when the outcome and the outputs are to be discarded.
    cancelled: threading.Event = field(default_factory=threading.Event, repr=False)
    settled: threading.Event = field(default_factory=threading.Event, repr=False)

    def payload(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "index": self.index,
            "video_id": self.video_id,
            "input_uri": self.input_uri,
            "extractors": self.extractors,
            "output": self.output,
            "device": self.lane.device,
        }


class _Worker:
    """One worker process, and the service thread that hands it items one at a time.

    The process starts on the first item and is replaced when it dies; a death before the
    worker acknowledged the item is not the item's (the item is handed to the replacement).
    """

    def __init__(self, backend: LocalBackend, lane: _Lane, number: int) -> None:
        self._backend = backend
        self.lane = lane
        self.name = f"{lane.name}/{number}"
        self._inbox: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._serve, name=f"local-worker-{self.name}", daemon=True
        )
        self.process: multiprocessing.process.BaseProcess | None = None
        self._jobs: Any = None  # the service's end of the job pipe
        self._alive: Any = None  # the only write end of the worker's alive pipe

    def start(self) -> None:
        self._thread.start()

    def give(self, job: _Job) -> None:
        self._inbox.put(job)

    def kill(self) -> None:
        """SIGKILL the process now (the item it runs, if any, ends as a death)."""
        process = self.process
        if process is not None and process.pid is not None and process.exitcode is None:
            process.kill()

    def stop(self) -> None:
        self._inbox.put(None)
        self.kill()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _serve(self) -> None:
        while (job := self._inbox.get()) is not None:
            try:
                result = self._run(job)
            except Exception as exc:  # this thread must outlive any one item
                log.exception("worker thread failed", extra={"worker": self.name})
                result = {"status": "died", "error": f"internal: {type(exc).__name__}: {exc}"}
            self._backend._finished(job, result)
        if self.process is not None:
            self._reap()

    def _run(self, job: _Job) -> dict[str, Any]:
        """The item's result, or ``{"status": "died", ...}`` when the worker died on it."""
        for _ in range(3):  # a worker found dead before it took the item: a fresh one
            if job.cancelled.is_set():
                return {"status": "died", "error": "cancelled"}
            try:
                if self.process is None or self.process.exitcode is not None:
                    self._spawn()
                self._jobs.send(job.payload())
                self._jobs.recv()  # local_worker.ACK: from here on, a death is the item's
                if job.cancelled.is_set():  # cancelled while this worker was being started
                    self.kill()
            except (EOFError, OSError):
                self._reap()
                continue
            except Exception as exc:  # the forkserver could not start a process
                log.exception("cannot start a worker process", extra={"worker": self.name})
                return {
                    "status": "died",
                    "error": f"cannot start a worker process: {type(exc).__name__}: {exc}",
                }
            try:
                result: dict[str, Any] = self._jobs.recv()  # local_worker.run_item's
                return result
            except (EOFError, OSError):
                return {"status": "died", "error": self._describe_death(self._reap())}
        return {"status": "died", "error": "worker processes die before taking the item"}

    def _spawn(self) -> None:
        context = _worker_context()
        _ForkserverKeeper.ensure_running()
        self._jobs, jobs_child = context.Pipe()
        alive_child, self._alive = context.Pipe(duplex=False)
        lane = self.lane
        self.process = context.Process(
            target=local_worker.serve,
            args=(
                jobs_child,
                alive_child,
                lane.cuda_index,
                lane.parallel_items,
                self._backend._settings_json,
                str(self._backend._lock_dir),
                self._backend.settings.api_worker_niceness,
            ),
            name=f"audioproc-worker-{self.name}",
            daemon=True,
        )
        self.process.start()
        jobs_child.close()  # the worker has its own copies now
        alive_child.close()

    def _reap(self) -> int | None:
        """Close the pipes and wait for the process to be gone; its exit code."""
        for end in (self._jobs, self._alive):
            if end is not None:
                end.close()
        self._jobs = self._alive = None
        process, self.process = self.process, None
        if process is None or process.pid is None:  # never started (the forkserver failed)
            return None
        process.join(timeout=5)
        if process.exitcode is None:  # alive though its pipe broke: make sure it is gone
            process.kill()
            process.join()
        return process.exitcode

    @staticmethod
    def _describe_death(exitcode: int | None) -> str:
        if exitcode is not None and exitcode < 0:
            return f"worker process died (signal {-exitcode})"
        return f"worker process died (exit code {exitcode})"


@dataclass(eq=False)
class _Lane:
    """The worker processes of one device."""

    name: str  # "cpu" or "cuda:N"
    device: str  # the device argument the pipeline gets: "cpu" or "cuda"
    size: int
    cuda_index: int | None
    parallel_items: int  # items the service runs at once: sets each worker's torch threads
    idle: list[_Worker] = field(default_factory=list)
    workers: list[_Worker] = field(default_factory=list)

    @property
    def free(self) -> bool:
        return bool(self.idle)


def _worker_context() -> multiprocessing.context.ForkServerContext:
    """Workers fork from a forkserver that has imported the pipeline once (torch, librosa), so
    a new worker starts in milliseconds, not seconds; and nothing is forked from this
    multi-threaded process itself. The forkserver dies with the service (``local_forkserver``)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["audioproc_api.backends.local_forkserver"])
    return context


class _ForkserverKeeper:
    """Starts the forkserver from one thread that lasts as long as this process.

    The forkserver dies with the thread that started it (``PR_SET_PDEATHSIG``, see
    ``local_forkserver``), so that must not be a worker's thread, which ends with its backend.
    """

    _requests: queue.SimpleQueue[tuple[threading.Event, list[BaseException]]] = queue.SimpleQueue()
    _thread: threading.Thread | None = None
    _start_lock = threading.Lock()

    @classmethod
    def ensure_running(cls) -> None:
        """Start the forkserver (again, if it died) and return once it runs."""
        with cls._start_lock:
            if cls._thread is None:
                cls._thread = threading.Thread(
                    target=cls._serve, name="forkserver-keeper", daemon=True
                )
                cls._thread.start()
        done = threading.Event()
        errors: list[BaseException] = []
        cls._requests.put((done, errors))
        done.wait()
        if errors:
            raise errors[0]

    @classmethod
    def _serve(cls) -> None:
        from multiprocessing import forkserver

        while True:
            done, errors = cls._requests.get()
            try:
                forkserver.ensure_running()
            except BaseException as exc:  # handed to the caller
                errors.append(exc)
            finally:
                done.set()


#: Present where the NVIDIA kernel driver is loaded; without it there is no CUDA device.
NVIDIA_DRIVER = Path("/proc/driver/nvidia")


def _count_gpus() -> int:
    """CUDA devices this process may use (CUDA_VISIBLE_DEVICES applies), counted without
    importing torch here: the service's start stays fast and the service process stays free
    of torch, which only its workers need. Without the NVIDIA driver there are none; with it,
    a child process asks torch (which is then what the workers will see)."""
    if not NVIDIA_DRIVER.exists():
        return 0
    count = subprocess.run(
        [
            sys.executable,
            "-c",
            "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if count.returncode != 0:
        log.warning(
            "cannot count CUDA devices; running on CPU", extra={"stderr": count.stderr[-500:]}
        )
        return 0
    return int(count.stdout.strip() or 0)


class SchemaTooNew(RuntimeError):
    """The task store was written by a newer version of the service."""


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
        self._max_attempts = settings.api_item_retries + 1
        gpus = (_count_gpus() if settings.use_gpu else 0) if gpus is None else gpus
        parallel = settings.max_concurrent_videos
        self._cpu_lane = _Lane("cpu", "cpu", settings.max_concurrent_videos, None, parallel)
        self._gpu_lanes = [
            _Lane(f"cuda:{i}", "cuda", settings.api_items_per_gpu, i, parallel) for i in range(gpus)
        ]
        for lane in self._lanes:
            lane.workers = [_Worker(self, lane, n) for n in range(lane.size)]
            lane.idle = list(lane.workers)
        settings.api_state_dir.mkdir(parents=True, exist_ok=True)
        self._lock_dir = settings.api_state_dir / "locks"
        self._lock_dir.mkdir(exist_ok=True)
        self._db_path = settings.api_state_dir / "tasks.sqlite3"
        self._db = self._connect()
        self._db.execute("PRAGMA journal_mode=WAL")
        # Every commit is on disk before it returns (WAL's default NORMAL may lose the last
        # ones on power loss): a 202 means the task is stored. Group commits share the cost.
        self._db.execute("PRAGMA synchronous=FULL")
        self._open_schema()
        # The write connection and the dispatch state: the dispatcher sleeps on this until an
        # item finishes, a task arrives or the retention sweep is due. Readers do not take it.
        self._lock = threading.Condition()
        self._probe_lock = threading.Lock()
        self._output_probed_at = -OUTPUT_PROBE_TTL_S
        self._output_problem_text: str | None = None
        self._running_per_task: dict[str, int] = defaultdict(int)
        self._in_flight: dict[tuple[str, int], _Job] = {}
        self._waiters: dict[str, threading.Event] = {}  # per task id: set when it finishes or goes
        self._readers = threading.local()
        self._reader_connections: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._dispatcher: threading.Thread | None = None
        self._committer: GroupCommit[_Insert] = GroupCommit(
            self._insert_all, name="local-group-commit"
        )
        self._stopping = False
        self._extractors: list[ExtractorEntry] = []

    # -- the database ----------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._db_path, check_same_thread=False, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=10000")
        return db

    def _open_schema(self) -> None:
        """Create the tables, or migrate a store of the first layout in place."""
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"{self._db_path} has task store version {version}, newer than this service's "
                f"({SCHEMA_VERSION}); run a newer service, or use another API_STATE_DIR"
            )
        has_tasks = self._db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tasks'"
        ).fetchone()
        with self._write():
            if has_tasks and version < SCHEMA_VERSION:
                log.info("migrating the task store", extra={"from": version, "to": SCHEMA_VERSION})
                for statement in MIGRATE_COLUMNS:
                    self._db.execute(statement)
                self._db.execute(MIGRATE_COUNTS)
                self._db.execute(f"UPDATE tasks SET status = {STATUS_SQL}")
                self._db.execute(
                    "UPDATE tasks SET finished_at = ? WHERE status IN ('completed', 'failed')",
                    (time.time(),),
                )  # retention counts from the migration
            for statement in filter(str.strip, (SCHEMA + INDEXES).split(";")):
                self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on the write connection (callers hold ``_lock``, or own it)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot on this thread's read connection (WAL: writers do not block it)."""
        db = getattr(self._readers, "db", None)
        if db is None:
            db = self._readers.db = self._connect()
            db.execute("PRAGMA query_only=ON")
            with self._readers_lock:
                self._reader_connections.append(db)
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    def _move_item(
        self, task_id: str, index: int, old: str, new: str, **columns: Any
    ) -> TaskStatus | None:
        """Move an item from state ``old`` to ``new`` and update its task's counts and status, in
        the caller's transaction; the task's new status, or None if the item was not ``old``."""
        assignments = ", ".join(f"{name} = ?" for name in ("state", *columns))
        moved = self._db.execute(
            f"UPDATE items SET {assignments} WHERE task_id = ? AND idx = ? AND state = ?",
            (new, *columns.values(), task_id, index, old),
        ).rowcount
        if not moved:
            return None
        assert old in ITEM_STATES and new in ITEM_STATES  # they name count columns
        error = columns.get("error") if new == "failed" else None
        row = self._db.execute(
            f"UPDATE tasks SET {old} = {old} - 1, {new} = {new} + 1, first_error = coalesce(first_error, ?) "
            "WHERE id = ? RETURNING total, running, succeeded, failed",
            (error, task_id),
        ).fetchone()
        status = _status_of(row["total"], row["running"], row["succeeded"], row["failed"])
        self._db.execute(
            "UPDATE tasks SET status = ?, finished_at = ? WHERE id = ?",
            (status.value, time.time() if status.finished else None, task_id),
        )
        return status

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._extractors = extractor_entries(self.settings, gpu=bool(self._gpu_lanes), probe=True)
        self._recover()
        for lane in self._lanes:
            for worker in lane.workers:
                worker.start()
        self._dispatcher = threading.Thread(
            target=self._dispatch_forever, name="local-dispatcher", daemon=True
        )
        self._dispatcher.start()

    def close(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
            for event in self._waiters.values():
                event.set()
        self._committer.stop()
        if self._dispatcher is not None:
            self._dispatcher.join(timeout=10)
        for lane in self._lanes:
            for worker in lane.workers:
                worker.stop()
        with self._readers_lock:
            for db in self._reader_connections:
                db.close()
        self._db.close()

    def not_ready_reason(self) -> str | None:
        if self._dispatcher is None or not self._dispatcher.is_alive():
            return "local dispatcher is not running"
        return self._output_problem()

    def _output_problem(self) -> str | None:
        """Why results cannot be written to the output now (None: they can).

        Probed (a file or object written and removed) at most once per ``OUTPUT_PROBE_TTL_S``,
        so readiness checks and submissions pay for a probe only once in a while, and an
        output that breaks (a full or read-only volume, a bucket that refuses writes) makes
        ``/readyz`` fail and submissions get 503 instead of tasks that fail after the work.
        """
        with self._probe_lock:
            if time.monotonic() - self._output_probed_at >= OUTPUT_PROBE_TTL_S:
                try:
                    probe_output(self.output, self.settings)
                    self._output_problem_text = None
                except OutputError as exc:
                    self._output_problem_text = str(exc)
                self._output_probed_at = time.monotonic()
            return self._output_problem_text

    @property
    def _lanes(self) -> list[_Lane]:
        return [*self._gpu_lanes, self._cpu_lane]

    def _recover(self) -> None:
        """Items left ``running`` by a stopped service: finished if their manifest exists, else re-queued.

        An item whose lock is still held has a writer that has not died yet: it is re-queued,
        and the worker it goes to waits for that lock, then finds the manifest if the writer
        finished (``local_worker.run_item``).
        """
        rows = self._db.execute(
            "SELECT i.task_id, i.idx, i.video_id, i.attempts, t.output FROM tasks t "
            "JOIN items i ON i.task_id = t.id AND i.state = 'running' WHERE t.running > 0"
        ).fetchall()
        for row in rows:
            lock = local_worker.lock_item(self._item_lock(row["task_id"], row["idx"]), wait=False)
            try:
                self._recover_item(row, checked=lock is not None)
            finally:
                if lock is not None:
                    os.close(lock)
        if rows:
            log.info("recovered items left running after a restart", extra={"items": len(rows)})

    def _recover_item(self, row: sqlite3.Row, checked: bool) -> None:
        task_id, index = row["task_id"], row["idx"]
        item_manifest_uri = manifest_uri(f"{row['output']}/{task_id}", row["video_id"])
        try:
            manifest = load_manifest(item_manifest_uri, self.settings) if checked else None
        except BackendUnavailable:  # absent (or unreadable): the item did not finish
            manifest = None
        with self._write():
            if manifest is not None:
                log.info(
                    "recovered finished item",
                    extra={"task_id": task_id, "video_id": row["video_id"]},
                )
                self._move_item(
                    task_id,
                    index,
                    "running",
                    "succeeded",
                    manifest_uri=item_manifest_uri,
                    device=manifest.device,
                )
            elif row["attempts"] >= self._max_attempts and checked:
                self._move_item(
                    task_id,
                    index,
                    "running",
                    "failed",
                    error=(
                        f"internal error: interrupted by a service restart on attempt {row['attempts']} "
                        f"of {self._max_attempts}"
                    ),
                )
            else:
                self._move_item(task_id, index, "running", "queued")

    def _item_lock(self, task_id: str, index: int) -> Path:
        return local_worker.item_lock_path(self._lock_dir, task_id, index)

    # -- submission and reading ------------------------------------------------------------

    def submit(self, submission: Submission) -> str:
        spec = submission.spec
        if problem := self._output_problem():
            raise BackendUnavailable(f"results cannot be written now: {problem}")
        if spec.device is Device.gpu and not self._gpu_lanes:
            raise UnsupportedRequest("use_gpu", "use_gpu is true but this deployment has no GPU")
        task_id = submission.task_id
        default_extractors = tuple(e.value for e in spec.extractors) if spec.extractors else None
        resolved: dict[tuple[str, ...] | None, str] = {}  # a batch's items mostly ask for the same

        def extractors_json(requested: tuple[str, ...] | None) -> str:
            if requested not in resolved:
                resolved[requested] = json.dumps(
                    resolve_names(list(requested) if requested else None)
                )
            return resolved[requested]

        rows = [
            (
                task_id,
                index,
                item.video_id,
                item.input_uri,
                extractors_json(
                    tuple(e.value for e in item.extractors)
                    if item.extractors
                    else default_extractors
                ),
            )
            for index, item in enumerate(spec.items or [])
        ]
        task_row = (
            task_id,
            submission.kind.value,
            spec.device.value,
            spec.concurrency,
            self.output,
            submission.request_id,
            time.time(),
            submission.submitter,
            len(rows),
            len(rows),
        )
        self._committer.commit(_Insert(task_row, rows))
        return task_id

    def _insert_all(self, inserts: list[_Insert]) -> None:
        """Write ``inserts`` in one transaction (the group commit's ``write``) and wake the
        dispatcher."""
        with self._lock:
            with self._write() as db:
                for insert in inserts:
                    db.execute(
                        "INSERT INTO tasks (id, kind, device, concurrency, output, request_id, created_at, "
                        "submitter, total, queued) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        insert.task,
                    )
                    db.executemany(
                        "INSERT INTO items (task_id, idx, video_id, input_uri, extractors) VALUES (?, ?, ?, ?, ?)",
                        insert.items,
                    )
            self._lock.notify_all()

    def _view(
        self, row: sqlite3.Row, items: list[sqlite3.Row], next_offset: int | None
    ) -> TaskView:
        failed = row["failed"]
        error = (
            f"{failed} of {row['total']} items failed; first: {row['first_error']}"
            if failed
            else None
        )
        return TaskView(
            task_id=row["id"],
            kind=TaskKind(row["kind"]),
            status=TaskStatus(row["status"]),
            progress=(row["succeeded"] + failed) / row["total"],
            error=error,
            device=Device(row["device"]),
            created_at=datetime.fromtimestamp(row["created_at"], UTC),
            request_id=row["request_id"],
            submitter=row["submitter"],
            total=row["total"],
            succeeded=row["succeeded"],
            failed=failed,
            running=row["running"],
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
                for i in items
            ],
            items_next_offset=next_offset,
        )

    def get(self, task_id: str, items_offset: int = 0, items_limit: int | None = None) -> TaskView:
        """The task row and items ``items_offset`` onwards (at most ``items_limit``): an index
        search each, whatever else the store holds."""
        with self._read() as db:
            row = db.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
            if row is None:
                raise TaskNotFound(task_id)
            items = db.execute(
                "SELECT * FROM items WHERE task_id = ? AND idx >= ? ORDER BY idx LIMIT ?",
                (task_id, items_offset, -1 if items_limit is None else items_limit),
            ).fetchall()
        end = items_offset + len(items)
        next_offset = end if items_limit is not None and end < row["total"] else None
        return self._view(row, items, next_offset)

    def wait(self, task_id: str, timeout_s: float) -> TaskView:
        """Sleep on this task's own event (set when it finishes or is cancelled), not on every
        item's completion."""
        with self._lock:
            event = self._waiters.setdefault(task_id, threading.Event())
        view = self.get(task_id)  # after registering: a finish from here on sets the event
        if view.status.finished or self._stopping:
            return view
        event.wait(timeout_s)
        return self.get(task_id)

    def _wake_waiters(self, task_id: str) -> None:
        """Called with ``_lock`` held when the task finished or is gone."""
        event = self._waiters.pop(task_id, None)
        if event is not None:
            event.set()

    def cancel(self, task_id: str) -> None:
        """Forget the task: queued items never start; running ones are stopped (their worker is
        killed) and what they wrote is removed. Outputs of items finished before stay."""
        with self._lock:
            with self._write() as db:
                deleted = db.execute("DELETE FROM tasks WHERE id = ?", (task_id,)).rowcount
            if not deleted:
                raise TaskNotFound(task_id)
            running = [job for job in self._in_flight.values() if job.task_id == task_id]
            for job in running:
                job.cancelled.set()
                job.worker.kill()
            self._wake_waiters(task_id)
            self._lock.notify_all()
        for job in running:  # their outputs are removed once the killed worker is gone
            if not job.settled.wait(timeout=30):
                log.warning(
                    "a cancelled item did not stop in time",
                    extra={"task_id": task_id, "index": job.index},
                )

    def list_tasks(
        self,
        status: TaskStatus | None,
        limit: int,
        cursor: str | None,
        submitter: str | None = None,
        newest_first: bool = False,
    ) -> tuple[list[TaskView], str | None]:
        """Task rows only (their counts are stored), by index: O(the page), not O(all items)."""
        params: list[int | str]
        if newest_first:
            after = parse_sequence_cursor(cursor) if cursor is not None else MAX_SEQUENCE
            query, params = "SELECT * FROM tasks WHERE seq < ?", [after]
        else:
            query, params = "SELECT * FROM tasks WHERE seq > ?", [parse_sequence_cursor(cursor)]
        if status is not None:
            query += " AND status = ?"
            params.append(status.value)
        if submitter is not None:
            query += " AND submitter = ?"
            params.append(submitter)
        query += f" ORDER BY seq {'DESC' if newest_first else 'ASC'} LIMIT ?"
        params.append(limit + 1)
        with self._read() as db:
            rows = db.execute(query, params).fetchall()
        page = rows[:limit]
        next_cursor = str(page[-1]["seq"]) if len(rows) > limit else None
        return [self._view(row, [], None) for row in page], next_cursor

    def _item_row(
        self, task_id: str, video_id: str
    ) -> tuple[ItemStatus | None, str | None, str | None]:
        """Item ``video_id``'s status, manifest URI and error (all None: no such item)."""
        with self._read() as db:
            if db.execute("SELECT 1 FROM tasks WHERE id = ?", (task_id,)).fetchone() is None:
                raise TaskNotFound(task_id)
            item = db.execute(
                "SELECT state, manifest_uri, error FROM items WHERE task_id = ? AND video_id = ?",
                (task_id, video_id),
            ).fetchone()
        if item is None:
            return None, None, None
        return ITEM_STATUS[item["state"]], item["manifest_uri"], item["error"]

    def read_manifest(self, task_id: str, video_id: str) -> Manifest:
        return item_manifest(task_id, video_id, *self._item_row(task_id, video_id), self.settings)

    def read_artifact(self, task_id: str, video_id: str, file_name: str) -> bytes:
        return item_artifact(
            task_id, video_id, *self._item_row(task_id, video_id), file_name, self.settings
        )

    def extractors(self) -> list[ExtractorEntry]:
        """Probed once at start: loading the implementations imports the pipeline's stack."""
        return self._extractors

    def cluster_objects(self, task_id: str) -> ClusterObjects | None:
        """None: the local backend runs no Kubernetes objects (the route answers 404)."""
        return None

    # -- retention -----------------------------------------------------------------------

    def sweep(self, now: float | None = None) -> int:
        """Delete tasks finished more than ``API_TASK_RETENTION_S`` before ``now`` (their
        outputs stay), a batch per transaction; how many were deleted."""
        retention = self.settings.api_task_retention_s
        if not retention:
            return 0
        cutoff = (time.time() if now is None else now) - retention
        deleted = 0
        while True:
            with self._lock:
                if self._stopping:
                    return deleted
                with self._write() as db:
                    count = db.execute(
                        "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE finished_at IS NOT NULL "
                        "AND finished_at < ? LIMIT ?)",
                        (cutoff, SWEEP_BATCH),
                    ).rowcount
            deleted += count
            if count < SWEEP_BATCH:
                if deleted:
                    log.info("deleted expired tasks", extra={"tasks": deleted})
                return deleted

    # -- dispatching -----------------------------------------------------------------------

    def _dispatch_forever(self) -> None:
        next_sweep = 0.0
        while True:
            if time.monotonic() >= next_sweep:
                self.sweep()
                next_sweep = time.monotonic() + SWEEP_INTERVAL_S
            with self._lock:
                if self._stopping:
                    return
                job = self._claim_next()
                if job is None:
                    self._lock.wait(max(0.0, next_sweep - time.monotonic()))
                    continue
                job.worker.give(job)

    def _claim_next(self) -> _Job | None:
        """Mark the oldest queued item that has a free lane and room in its task as running."""
        if self._stopping or not any(lane.free for lane in self._lanes):
            return None
        devices = {"cpu"} if self._cpu_lane.free else set()
        if any(lane.free for lane in self._gpu_lanes):
            devices |= {"gpu", "auto"}
        elif self._cpu_lane.free:
            devices.add("auto")
        tasks = self._db.execute(
            "SELECT id, device, concurrency, output FROM tasks "
            f"WHERE queued > 0 AND device IN ({','.join('?' * len(devices))}) ORDER BY seq",
            sorted(devices),
        ).fetchall()
        task = next((t for t in tasks if self._running_per_task[t["id"]] < t["concurrency"]), None)
        if task is None:
            return None
        with self._write() as db:
            item = db.execute(
                "SELECT idx, video_id, input_uri, extractors, attempts FROM items "
                "WHERE task_id = ? AND state = 'queued' ORDER BY idx LIMIT 1",
                (task["id"],),
            ).fetchone()
            attempt = item["attempts"] + 1
            self._move_item(task["id"], item["idx"], "queued", "running", attempts=attempt)
        lane = self._pick_lane(Device(task["device"]))
        job = _Job(
            task["id"],
            item["idx"],
            item["video_id"],
            item["input_uri"],
            json.loads(item["extractors"]),
            task["output"],
            attempt,
            lane,
            lane.idle.pop(),
        )
        self._in_flight[(job.task_id, job.index)] = job
        self._running_per_task[job.task_id] += 1
        return job

    def _pick_lane(self, device: Device) -> _Lane:
        gpu = next((lane for lane in self._gpu_lanes if lane.free), None)
        if device is Device.gpu or (device is Device.auto and gpu is not None):
            assert gpu is not None
            return gpu
        return self._cpu_lane

    def _finished(self, job: _Job, result: dict[str, Any]) -> None:
        """Record an attempt's outcome (called on the worker's service thread)."""
        with self._lock:
            if self._stopping:
                return  # the item stays 'running' and is recovered on the next start
            self._in_flight.pop((job.task_id, job.index), None)
            job.lane.idle.append(job.worker)
            self._running_per_task[job.task_id] -= 1
            if not self._running_per_task[job.task_id]:
                del self._running_per_task[job.task_id]
            if not job.cancelled.is_set():
                with self._write():
                    status = self._record(job, result)
                if status is not None and status.finished:
                    self._wake_waiters(job.task_id)
            self._lock.notify_all()
        if job.cancelled.is_set():
            self._remove_outputs(job)
        job.settled.set()
        if (
            result["status"] != "died" or job.cancelled.is_set()
        ):  # a retry takes the lock file again
            self._item_lock(job.task_id, job.index).unlink(missing_ok=True)

    def _record(self, job: _Job, result: dict[str, Any]) -> TaskStatus | None:
        if result["status"] != "died":
            return self._move_item(
                job.task_id,
                job.index,
                "running",
                "succeeded" if result["status"] == "ok" else "failed",
                manifest_uri=result.get("manifest_uri"),
                device=result.get("device"),
                error=result.get("error"),
            )
        death = f"{result['error']} on attempt {job.attempt} of {self._max_attempts}"
        if job.attempt < self._max_attempts:
            log.warning(
                "retrying an item whose worker died",
                extra={"task_id": job.task_id, "index": job.index, "error": death},
            )
            return self._move_item(job.task_id, job.index, "running", "queued", error=death)
        return self._move_item(
            job.task_id, job.index, "running", "failed", error=f"internal error: {death}"
        )

    def _remove_outputs(self, job: _Job) -> None:
        """Remove what a cancelled item wrote (its worker is gone: nothing writes any more)."""
        try:
            storage = open_storage(f"{job.output}/{job.task_id}", self.settings)
            if isinstance(storage, LocalStorage):
                shutil.rmtree(storage.item_dir(job.video_id), ignore_errors=True)
                try:
                    storage.root.rmdir()  # the task's folder, once nothing of it is left
                except OSError:
                    pass
            elif isinstance(storage, S3Storage):
                prefix = storage.key(job.video_id, "")
                listing = storage.client.list_objects_v2(Bucket=storage.bucket, Prefix=prefix)
                for entry in listing.get("Contents", []):
                    storage.client.delete_object(Bucket=storage.bucket, Key=entry["Key"])
        except Exception:  # the cancel stands; what is left is logged
            log.exception(
                "cannot remove a cancelled item's outputs",
                extra={"task_id": job.task_id, "video_id": job.video_id},
            )
