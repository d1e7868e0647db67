"""What runs inside the local backend's worker processes (forked from a forkserver).

A worker is a long-lived process that runs items one at a time, back to back: it receives an
item over its job pipe, acknowledges it, processes it with the pipeline's ``process_item`` and
sends the result back. One worker per item at a time means the service knows exactly which
item a dead worker was running; no other item is affected.

Workers must not outlive a killed (SIGKILL) service: an orphan would finish an item behind the
restarted service's back. Each worker

- watches an "alive" pipe whose only write end the service holds, and ``os._exit`` s the moment
  it reads EOF (the kernel closes the service's end when the service dies, however it dies);
- dies with the forkserver, its parent (``PR_SET_PDEATHSIG``).

For that, a worker must not hold a copy of the forkserver's alive pipe, which multiprocessing
hands every forked child (so it could start processes of its own): it closes it.

Exactly once: while a worker runs an item it holds an exclusive ``flock`` on the item's lock
file (the kernel releases it when the process dies). A worker that is handed an item first
takes that lock, waiting for any older writer of the item (an orphan that has not died yet),
then skips the work if the item's manifest is already in storage.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal, overload

_PR_SET_PDEATHSIG = 1

#: The first message a worker sends for an item: it has the item (a death after this is the item's).
ACK = "started"


def item_lock_path(lock_dir: Path, task_id: str, index: int) -> Path:
    """The lock file of item ``index`` of ``task_id`` (held by the worker that runs it)."""
    return lock_dir / f"{task_id}.{index}.lock"


@overload
def lock_item(path: Path, wait: Literal[True] = True) -> int: ...


@overload
def lock_item(path: Path, wait: bool) -> int | None: ...


def lock_item(path: Path, wait: bool = True) -> int | None:
    """An open descriptor holding the exclusive lock on ``path``; None if ``wait`` is False and
    another process holds it. Closing the descriptor (or dying) releases the lock."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def die_with_parent() -> None:
    """SIGKILL this process when its parent (thread) ends (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    # The parent died before prctl took effect. (Not "parent == 1": in a container the service
    # itself is PID 1, the forkserver's parent. A parent gone before the first getppid is
    # caught by the forkserver's alive pipe, whose EOF ends it.)
    if os.getppid() != parent:
        os._exit(1)


def exit_when_service_dies(alive: Connection) -> None:
    """Exit at once, from a watchdog thread, when the service's end of ``alive`` closes."""

    def watch() -> None:
        try:
            alive.poll(None)  # returns on EOF: nothing is ever sent on this pipe
        finally:
            os._exit(1)  # no clean-up: an orphan must not write anything more

    threading.Thread(target=watch, name="service-watchdog", daemon=True).start()


def _release_forkserver() -> None:
    """Close this child's copy of the forkserver's alive pipe (see the module docstring)."""
    from multiprocessing import forkserver

    server: Any = forkserver._forkserver  # private and untyped: no public API for this
    if getattr(server, "_forkserver_alive_fd", None) is not None:
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None


def serve(
    jobs: Connection,
    alive: Connection,
    cuda_device: int | None,
    parallel_items: int,
    settings_json: str,
    lock_dir: str,
    niceness: int,
) -> None:
    """The worker process: run the items received on ``jobs`` until the pipe closes."""
    _release_forkserver()
    die_with_parent()
    exit_when_service_dies(alive)
    # CUDA is initialised lazily, on first use in this process: this still takes effect.
    os.environ["CUDA_VISIBLE_DEVICES"] = "" if cuda_device is None else str(cuda_device)
    import torch  # already imported by the forkserver's preload

    from audioproc.runner import configure_threads
    from audioproc.settings import PipelineSettings

    # cpu_count // parallel_items torch threads: the workers share the cores, not oversubscribe
    # them (run_item hands the same number to the pipeline for each item).
    configure_threads(parallel_items)
    threads = torch.get_num_threads()
    # Below the server in CPU priority (API_WORKER_NICENESS): when the CPUs are busy, requests
    # (health probes, status reads, submissions) are served first; the workers still get every
    # idle cycle.
    os.nice(niceness)
    settings = PipelineSettings.model_validate_json(settings_json)
    while True:
        try:
            job = jobs.recv()
        except EOFError:  # the service closed the pipe: stop
            return
        jobs.send(ACK)
        lock = lock_item(item_lock_path(Path(lock_dir), job["task_id"], job["index"]))
        try:
            jobs.send(run_item(job, settings, threads))
        finally:
            os.close(lock)


def run_item(job: dict[str, Any], settings: Any, threads: int | None = None) -> dict[str, Any]:
    """Process one item into ``<output>/<task_id>/<video_id>/manifest.json``; return its result.

    An item whose manifest is already there (written by an earlier worker that died before it
    could report) is not processed again.
    """
    from audioproc.runner import ItemRequest, process_items
    from audioproc.storage import open_storage

    output = f"{job['output']}/{job['task_id']}"
    try:
        storage = open_storage(output, settings)
        existing = storage.read_manifest(job["video_id"])
        if existing is not None:
            return {
                "status": "ok",
                "manifest_uri": storage.manifest_uri(job["video_id"]),
                "device": existing.device,
                "error": None,
            }
        # the worker's share of the cores; without ``threads`` the pipeline would set torch to
        # all the cores on every item (N workers x all cores: oversubscribed)
        (result,) = process_items(
            [
                ItemRequest(
                    input_uri=job["input_uri"],
                    video_id=job["video_id"],
                    extractors=job["extractors"],
                )
            ],
            output=output,
            device=job["device"],
            settings=settings,
            threads=threads,
        )
    except Exception as exc:  # the runner itself raised: an internal error, not the input's fault
        return {
            "status": "error",
            "manifest_uri": None,
            "device": None,
            "error": f"internal: {type(exc).__name__}: {exc}",
        }
    return {
        "status": result.status,
        "manifest_uri": result.manifest_uri,
        "device": result.device,
        "error": f"{result.error_kind} error: {result.error}" if result.error else None,
    }
