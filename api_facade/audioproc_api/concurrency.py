"""How the handlers block without starving one another.

Handlers are ``async``. What blocks runs in threads, each kind under its own anyio
``CapacityLimiter`` and none in anyio's default pool (40 threads, which FastAPI uses for any
sync dependency or handler):

- ``backend``: short backend calls (SQLite, one Kubernetes API call, URI checks);
- ``submits``: submissions, which mostly sleep until their group commit is durable (local
  backend) or their AudioJob is created; a pool as large as a burst, so that one group commit
  takes every submission that arrived together instead of ``BACKEND_THREADS`` at a time;
- ``probes``: the readiness check, so ``/readyz`` never queues behind the backend calls;
- ``waits``: ``?wait=true`` waits, at most ``API_MAX_WAITERS``; a wait beyond that is refused
  (503) *before* its task is created.

``/healthz`` and ``/metrics`` run on the event loop and block on nothing.

A wait runs in slices of ``WAIT_SLICE_S`` seconds and is abandoned as soon as the server
starts shutting down (``ShutdownNotice``): the waiting client gets its 202 and task id at
once, and the thread ends within one slice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

import anyio
from anyio import CapacityLimiter, to_thread

from audioproc_api.backends import Backend
from audioproc_api.schemas import TaskView

T = TypeVar("T")

#: Threads for short backend calls. SQLite serialises on one lock and the Kubernetes client
#: on its connection pool, so more would only queue there instead of here.
BACKEND_THREADS = 16
#: Threads for submissions (each sleeps on its commit; see the module docstring).
SUBMIT_THREADS = 128
#: Threads for readiness checks (a probe hitting a slow API server holds one for its timeout).
PROBE_THREADS = 2
#: Seconds of one backend.wait call; between slices a wait notices shutdown.
WAIT_SLICE_S = 5.0


def threads_at_most(max_waiters: int, submits: int = SUBMIT_THREADS) -> int:
    """Threads that may be in a backend call at once: every limiter full, ``max_waiters``
    waits, and ``submits`` submissions (a backend may let fewer in at once)."""
    return BACKEND_THREADS + submits + PROBE_THREADS + max_waiters


class WaitersFull(RuntimeError):
    """API_MAX_WAITERS waits are already in progress (HTTP 503 with Retry-After)."""


class ShutdownNotice:
    """Set once when the server starts shutting down; handlers may subscribe to it.

    ``set`` may be called from any thread; subscribers are called on their own event loop.
    Lock-free (a lock could be held by the very code a signal interrupts): a subscriber is
    registered before the flag is checked, and the flag set before subscribers are called, so
    none is missed.
    """

    def __init__(self) -> None:
        self._set = False
        self._subscribers: dict[object, Callable[[], object]] = {}

    @property
    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        for notify in list(self._subscribers.values()):
            notify()

    def subscribe(self, callback: Callable[[], Any]) -> Callable[[], object]:
        """Call ``callback`` on the current event loop once the notice is set (at once if it
        is); returns the function that unsubscribes."""
        loop = asyncio.get_running_loop()
        key = object()
        self._subscribers[key] = partial(loop.call_soon_threadsafe, callback)
        if self._set:
            loop.call_soon(callback)
        return partial(self._subscribers.pop, key, None)


class Concurrency:
    """The facade's thread limiters, its wait slots and its shutdown notice (one per app)."""

    def __init__(self, max_waiters: int) -> None:
        self.backend = CapacityLimiter(BACKEND_THREADS)
        self.submits = CapacityLimiter(SUBMIT_THREADS)
        self.probes = CapacityLimiter(PROBE_THREADS)
        self.waits = CapacityLimiter(max_waiters)
        self.max_waiters = max_waiters
        self.waiting = 0  # touched only on the event loop: no lock needed
        self.shutdown = ShutdownNotice()

    async def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)`` in a backend thread."""
        return await to_thread.run_sync(partial(function, *args, **kwargs), limiter=self.backend)

    async def submit(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` (a backend's ``submit``) in a submission thread."""
        return await to_thread.run_sync(partial(function, *args), limiter=self.submits)

    async def probe(self, function: Callable[[], T]) -> T:
        """``function()`` in a probe thread."""
        return await to_thread.run_sync(function, limiter=self.probes)

    @contextmanager
    def wait_slot(self) -> Iterator[None]:
        """One of the API_MAX_WAITERS slots, for the duration of a wait; WaitersFull if none is free."""
        if self.waiting >= self.max_waiters:
            raise WaitersFull(
                f"{self.max_waiters} requests are already waiting (API_MAX_WAITERS); "
                "retry later or poll /status without waiting"
            )
        self.waiting += 1
        try:
            yield
        finally:
            self.waiting -= 1

    async def wait_for(self, backend: Backend, task_id: str, timeout_s: float) -> TaskView | None:
        """The task once finished or when ``timeout_s`` (seconds) pass; None if the server
        started shutting down meanwhile. Hold a ``wait_slot`` while calling this."""
        with anyio.CancelScope() as scope:
            unsubscribe = self.shutdown.subscribe(scope.cancel)
            try:
                return await to_thread.run_sync(
                    self._wait_in_slices,
                    backend,
                    task_id,
                    timeout_s,
                    limiter=self.waits,
                    abandon_on_cancel=True,
                )
            finally:
                unsubscribe()
        return None

    def _wait_in_slices(self, backend: Backend, task_id: str, timeout_s: float) -> TaskView:
        deadline = time.monotonic() + timeout_s
        while True:
            view = backend.wait(task_id, max(0.0, min(WAIT_SLICE_S, deadline - time.monotonic())))
            if view.status.finished or time.monotonic() >= deadline or self.shutdown.is_set:
                return view
