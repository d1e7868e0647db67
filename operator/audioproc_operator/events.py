"""Kubernetes Events on an AudioJob: what happened, aggregated, as pure functions.

``kubectl describe aj NAME`` lists them. Decisions the reconciler makes (placement, a wait
for GPUs, a Job created, deletion) are one event each. What the status fold observes is
summarised by ``fold_events``: suspend and resume, each finished chunk of a multi-chunk
AudioJob with its counts, and the final outcome. Failed items are batched
(``FailureBatch``): one ``ItemsFailed`` event names at most ``LISTED_FAILURES`` video ids
with their errors and counts the rest, and is posted at most every
``FAILURE_EVENT_INTERVAL_S`` per AudioJob (flushed at once when the AudioJob finishes or
is suspended). Successes are only counted. So the number of events of an AudioJob grows
with its chunks and its running time, never with its items: a 10,000-item AudioJob whose
items all fail within a minute writes a handful.

Events are posted by kopf (``kopf.event``): in the background, off the reconcile path, with
kopf's retries; its poster cuts a message to 1,024 characters, so messages here are built
to fit (``MAX_MESSAGE_CHARS``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Literal

from audioproc.models.audiojob import AudioJobPhase, AudioJobStatus, ItemPhase
from audioproc.models.pod_contract import parse_index_ranges
from audioproc_operator.builder import chunk_bounds
from audioproc_operator.quota import Shortage

#: Video ids (with their errors) named in one ItemsFailed event; the rest are counted.
LISTED_FAILURES: Final = 8
#: Error text kept per listed failure (characters).
ERROR_CHARS: Final = 80
#: Least seconds between two ItemsFailed events of one AudioJob (a final flush excepted).
FAILURE_EVENT_INTERVAL_S: Final = 30.0
#: kopf cuts longer messages in the middle (kopf._cogs.clients.events.MAX_MESSAGE_LENGTH).
MAX_MESSAGE_CHARS: Final = 1024


class Reason(StrEnum):
    """The ``reason`` of each event: what ``kubectl get events --field-selector reason=X`` filters on."""

    placed = "Placed"
    queued = "Queued"  # submitted to Kueue, or queued again by it
    admitted = "Admitted"  # Kueue admitted the current Job
    waiting = "Waiting"
    quota_rejected = "QuotaRejected"
    job_created = "JobCreated"
    job_finished = "JobFinished"
    items_failed = "ItemsFailed"
    suspended = "Suspended"
    resumed = "Resumed"
    completed = "Completed"
    partially_completed = "PartiallyCompleted"
    failed = "Failed"
    deleting = "Deleting"


EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class Event:
    type: EventType
    reason: Reason
    message: str


#: Posts one event about an AudioJob: (the AudioJob as ``apiVersion/kind/metadata``, event).
EventSink = Callable[[dict[str, Any], Event], None]


def normal(reason: Reason, message: str) -> Event:
    return Event("Normal", reason, message[:MAX_MESSAGE_CHARS])


def warning(reason: Reason, message: str) -> Event:
    return Event("Warning", reason, message[:MAX_MESSAGE_CHARS])


def wait_event(message: str, no_gpu: Shortage) -> Event:
    """Waiting for a GPU: a QuotaRejected warning when the namespace's quota is what stops it."""
    return (
        warning(Reason.quota_rejected, message) if no_gpu.quota else normal(Reason.waiting, message)
    )


# ---------------------------------------------------------------- failed items, batched


@dataclass
class FailureBatch:
    """Failures of one AudioJob not yet posted: the first ``LISTED_FAILURES`` named, the rest counted.

    Memory stays bounded whatever the number of failures; ``last_posted_s`` is a monotonic
    clock reading (seconds) of the last ItemsFailed event, None before the first.
    """

    listed: list[tuple[str, str]] = field(default_factory=list)  # (videoId, error)
    unlisted: int = 0
    last_posted_s: float | None = None

    def add(self, failures: Sequence[tuple[str, str]]) -> None:
        room = max(0, LISTED_FAILURES - len(self.listed))
        self.listed.extend(failures[:room])
        self.unlisted += max(0, len(failures) - room)

    @property
    def pending(self) -> int:
        return len(self.listed) + self.unlisted

    def take(
        self, now_s: float, flush: bool, succeeded: int, failed: int, total: int
    ) -> Event | None:
        """The ItemsFailed event due now (and forget its failures), or None.

        Due when failures are pending and either ``flush`` (the AudioJob finished or was
        suspended), none was posted yet (the first failure is news), or the last one is at
        least ``FAILURE_EVENT_INTERVAL_S`` old. ``succeeded``/``failed``/``total`` are the
        AudioJob's counts after this fold.
        """
        if not self.pending:
            return None
        if (
            not flush
            and self.last_posted_s is not None
            and now_s - self.last_posted_s < FAILURE_EVENT_INTERVAL_S
        ):
            return None
        event = warning(
            Reason.items_failed,
            failure_message(self.listed, self.unlisted, succeeded, failed, total),
        )
        self.listed, self.unlisted, self.last_posted_s = [], 0, now_s
        return event


def failure_message(
    listed: Sequence[tuple[str, str]], unlisted: int, succeeded: int, failed: int, total: int
) -> str:
    """``"3 items failed: v2: decoder crashed; v7: exit code 3; and 1 more (failed 3, succeeded 40 of 50)"``."""
    n = len(listed) + unlisted
    named = "; ".join(f"{video_id}: {_short(error)}" for video_id, error in listed)
    more = f"; and {unlisted} more" if unlisted else ""
    return (
        f"{n} item{'s' if n != 1 else ''} failed: {named}{more} "
        f"(failed {failed}, succeeded {succeeded} of {total}; all errors: status.items)"
    )


def _short(error: str) -> str:
    text = " ".join(error.split())
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 1] + "…"


def new_failures(
    prev: AudioJobStatus, status: AudioJobStatus, video_ids: Sequence[str]
) -> list[tuple[str, str]]:
    """(videoId, error) of the items this fold recorded as failed, in index order.

    The error comes from ``status.items`` (failed items come first there, so all of them
    up to MAX_STATUS_ITEMS); beyond that an item is named without one.
    """
    if status.failed_indexes == prev.failed_indexes:
        return []  # most folds: no range text to parse
    newly = sorted(
        parse_index_ranges(status.failed_indexes) - parse_index_ranges(prev.failed_indexes)
    )
    if not newly:
        return []
    errors = {r.index: r.error or "" for r in status.items or [] if r.phase is ItemPhase.failed}
    return [(video_ids[i], errors.get(i) or "error not kept in the status") for i in newly]


# ---------------------------------------------------------------- transitions seen by a fold


def events_of_fold(
    seen: AudioJobStatus,
    status: AudioJobStatus,
    video_ids: Sequence[str],
    failures: FailureBatch,
    now_s: float,
) -> list[Event]:
    """Every event one reconcile's fold gives: a batch of failed items when one is due
    (``failures`` keeps the rest for later), then ``fold_events``.

    ``seen``: the status before this reconcile; ``status``: the one written;
    ``video_ids``: ``spec.items[*].videoId``; ``now_s``: a monotonic clock reading (s).
    """
    failures.add(new_failures(seen, status, video_ids))
    counts = status.counts
    succeeded, failed, total = (
        (counts.succeeded, counts.failed, counts.total) if counts else (0, 0, 0)
    )
    flush = status.phase.finished or status.phase is AudioJobPhase.suspended
    batch = failures.take(now_s, flush, succeeded, failed, total or len(video_ids))
    return ([batch] if batch else []) + fold_events(seen, status, len(video_ids))


def fold_events(prev: AudioJobStatus, status: AudioJobStatus, total: int) -> list[Event]:
    """Events for what changed between the status at the start of a reconcile and the new one.

    ``prev`` is the status as read (before this reconcile's placement or GPU decisions),
    ``status`` the one being written; ``total`` the AudioJob's item count. ItemsFailed is
    not here: it is batched across folds (``FailureBatch``).
    """
    events: list[Event] = []
    counts = status.counts
    succeeded, failed = (counts.succeeded, counts.failed) if counts else (0, 0)
    if status.phase is AudioJobPhase.suspended and prev.phase is not AudioJobPhase.suspended:
        released = (prev.gpus or 0) - (status.gpus or 0)
        gave_back = (
            f"; {released} GPU{'s' if released != 1 else ''} given back" if released > 0 else ""
        )
        events.append(
            normal(
                Reason.suspended,
                f"{status.message or 'suspended'}: Jobs suspended, running pods "
                f"deleted, {succeeded + failed} of {total} items finished{gave_back}",
            )
        )
    gpus_given_back = prev.device == "gpu" and not prev.gpus  # suspended, or resumed and waiting
    if status.phase is AudioJobPhase.processing and (
        prev.phase is AudioJobPhase.suspended or gpus_given_back
    ):
        on = (
            f"gpu with {status.gpus} GPU{'s' if status.gpus != 1 else ''}"
            if status.device == "gpu"
            else "cpu"
        )
        events.append(
            normal(
                Reason.resumed, f"resumed on {on}; {succeeded + failed} of {total} items finished"
            )
        )
    events.extend(_finished_chunks(prev, status, total))
    if status.phase.finished and not prev.phase.finished:
        message = f"{status.message}: {succeeded} succeeded, {failed} failed"
        event = normal if status.phase is AudioJobPhase.completed else warning
        events.append(event(Reason(status.phase.value), message))
    return events


def _finished_chunks(prev: AudioJobStatus, status: AudioJobStatus, total: int) -> list[Event]:
    """JobFinished for each chunk this fold finished, but the last (the final event counts it)."""
    starts = status.chunk_starts or [0]
    unchanged = (status.succeeded_indexes, status.failed_indexes) == (
        prev.succeeded_indexes,
        prev.failed_indexes,
    )
    if len(starts) < 2 or not status.jobs or unchanged:
        return []
    before = parse_index_ranges(prev.succeeded_indexes) | parse_index_ranges(prev.failed_indexes)
    ok, bad = (
        parse_index_ranges(status.succeeded_indexes),
        parse_index_ranges(status.failed_indexes),
    )
    events = []
    for chunk in range(len(starts) - 1):
        start, end = chunk_bounds(starts, total, chunk)
        items = set(range(start, end))
        if items <= ok | bad and not items <= before:
            name = status.jobs[chunk] if chunk < len(status.jobs) else f"chunk {chunk}"
            events.append(
                normal(
                    Reason.job_finished,
                    (
                        f"Job {name} finished items {start}-{end - 1}: {len(items & ok)} succeeded, "
                        f"{len(items & bad)} failed; {len(ok) + len(bad)} of {total} items finished"
                    ),
                )
            )
    return events
