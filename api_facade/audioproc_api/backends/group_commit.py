"""Group commit: one writer thread turns many concurrent writes into one transaction.

A durable SQLite commit costs an fsync of the write-ahead log and holds the write lock, so
100 submissions arriving at once, each in its own transaction, queue behind one another on
that lock and pay 100 fsyncs. Here each caller hands its write to ``GroupCommit.commit`` and
sleeps; the writer thread takes everything that is pending, writes it in one transaction
(one fsync), and wakes every caller whose write is now durable. A caller returns only after
the commit, so an accepted submission is in the database whatever happens next.

While the writer is committing one group, the next one collects: under load, groups grow
with the arrival rate; alone, a write is committed at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from audioproc_api.backends.base import BackendUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(eq=False)
class _Pending(Generic[T]):
    value: T
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


class GroupCommit(Generic[T]):
    """Calls ``write(values)`` on its own thread with every value pending at that moment.

    ``write`` must write all its values in one transaction, or raise and write none. When a
    group of several fails, each value is retried alone, so one bad value fails only its
    own caller.
    """

    def __init__(self, write: Callable[[list[T]], None], name: str = "group-commit") -> None:
        self._write = write
        self._pending: list[_Pending[T]] = []
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)

    def stop(self) -> None:
        """Commit what is pending, then stop; later ``commit`` calls raise BackendUnavailable."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def commit(self, value: T) -> None:
        """Return once ``value`` is committed; raise what ``write`` raised for it."""
        pending = _Pending(value)
        with self._wake:
            if self._stopping:
                raise BackendUnavailable("the service is shutting down")
            if not self._thread.is_alive():  # the writer starts with the first commit
                self._thread.start()
            self._pending.append(pending)
            self._wake.notify()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error

    def _serve(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._stopping:
                    self._wake.wait()
                group, self._pending = self._pending, []
                if not group and self._stopping:
                    return
            self._commit_group(group)

    def _commit_group(self, group: list[_Pending[T]]) -> None:
        try:
            self._write([p.value for p in group])
        except Exception as exc:  # any failure is handed to the callers
            if len(group) == 1:
                group[0].error = exc
            else:
                log.warning(
                    "a group commit failed; committing its writes one by one",
                    extra={"writes": len(group), "error": repr(exc)},
                )
                for pending in group:
                    self._commit_group([pending])
                return
        for pending in group:
            pending.done.set()
