"""Pure mirroring of Jobs and pods into an AudioJob's status.

The operator keeps slim views of its Jobs and pods (``JobView``, ``PodView``: what the
watch delivered, minus everything else) and folds them into the previous status. The fold
is monotonic: an item recorded as finished stays finished, so a Job deleted by its TTL or
a restarted operator loses nothing; a finished phase is final and is never rewritten.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from audioproc.models.audiojob import (
    MAX_LISTED_FAILURES,
    MAX_STATUS_ITEMS,
    AudioJobItemStatus,
    AudioJobPhase,
    AudioJobSpec,
    AudioJobStatus,
    Condition,
    ItemCounts,
    ItemPhase,
)
from audioproc.models.pod_contract import (
    PodContractError,
    TerminationMessage,
    format_index_ranges,
    manifest_uri,
    parse_index_ranges,
    parse_termination_message,
)
from audioproc_operator.builder import (
    ANNOTATION_FIRST_INDEX,
    CONTAINER,
    LABEL_AUDIOJOB_UID,
    LABEL_CHUNK,
    chunk_bounds,
)

COMPLETION_INDEX_ANNOTATION: Final = "batch.kubernetes.io/job-completion-index"
MAX_ERROR_CHARS: Final = 300

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- slim views of children


@dataclass(frozen=True)
class JobView:
    name: str
    owner_uid: str
    chunk: int
    first_index: int
    completed: str  # completedIndexes, chunk-local
    failed: str  # failedIndexes, chunk-local
    active: int
    finished: bool
    failure_message: str | None  # the Failed condition's message, if the Job failed
    suspend: bool
    parallelism: int


def job_view(job: dict[str, Any]) -> JobView:
    meta, spec, st = job["metadata"], job.get("spec") or {}, job.get("status") or {}
    conditions = {c["type"]: c for c in st.get("conditions") or [] if c.get("status") == "True"}
    failed = conditions.get("Failed")
    return JobView(
        name=meta["name"],
        owner_uid=(meta.get("labels") or {}).get(LABEL_AUDIOJOB_UID, ""),
        chunk=int((meta.get("labels") or {}).get(LABEL_CHUNK, "0")),
        first_index=int((meta.get("annotations") or {}).get(ANNOTATION_FIRST_INDEX, "0")),
        completed=st.get("completedIndexes") or "",
        failed=st.get("failedIndexes") or "",
        active=int(st.get("active") or 0),
        finished="Complete" in conditions or failed is not None,
        failure_message=(failed.get("message") or failed.get("reason")) if failed else None,
        suspend=bool(spec.get("suspend")),
        parallelism=int(spec.get("parallelism") or 0),
    )


@dataclass(frozen=True)
class PodView:
    owner_uid: str
    chunk: int
    index: int  # chunk-local completion index
    phase: str
    exit_code: int | None
    message: str | None  # the worker's termination message
    reason: str | None
    finished_at: str  # RFC 3339, "" while running (sorts first)


def pod_view(pod: dict[str, Any]) -> PodView:
    meta, st = pod["metadata"], pod.get("status") or {}
    terminated: dict[str, Any] = {}
    for cs in st.get("containerStatuses") or []:
        if cs.get("name") == CONTAINER:
            terminated = (cs.get("state") or {}).get("terminated") or {}
    labels, annotations = meta.get("labels") or {}, meta.get("annotations") or {}
    return PodView(
        owner_uid=labels.get(LABEL_AUDIOJOB_UID, ""),
        chunk=int(labels.get(LABEL_CHUNK, "0")),
        index=int(
            annotations.get(
                COMPLETION_INDEX_ANNOTATION, labels.get(COMPLETION_INDEX_ANNOTATION, "-1")
            )
        ),
        phase=st.get("phase") or "Pending",
        exit_code=terminated.get("exitCode"),
        message=terminated.get("message"),
        reason=terminated.get("reason") or st.get("reason"),
        finished_at=terminated.get("finishedAt") or "",
    )


# ---------------------------------------------------------------- the fold


@dataclass(frozen=True)
class Observed:
    """Everything the fold looks at besides the previous status."""

    spec: AudioJobSpec
    manifest_prefix: str
    jobs: list[JobView]
    pods: list[PodView]
    now: datetime
    #: Every item's video id by index (``items_source.video_ids``); None: from ``spec.items``.
    video_ids: Sequence[str] | None = None

    def ids(self) -> Sequence[str]:
        if self.video_ids is not None:
            return self.video_ids
        return [item.video_id for item in self.spec.items or []]

    @property
    def failures_only(self) -> bool:
        """An item list's status lists failures only (succeeded items: index ranges and
        manifests)."""
        return self.spec.items_from is not None


def _pod_result(pod: PodView | None) -> tuple[TerminationMessage | None, str | None]:
    """(the worker's result, why its message breaks the pod contract) for ``pod``.

    Simulated (kwok) pods write no message: (None, None). A message that breaks the contract
    (operator and job image disagree) is logged and recorded on the item, never taken for
    "no message".
    """
    if pod is None:
        return None, None
    try:
        return parse_termination_message(pod.message), None
    except PodContractError as exc:
        log.error("pod termination message breaks the pod contract", extra={"error": str(exc)})
        return None, str(exc)


def _item_result(
    index: int,
    video_id: str,
    succeeded: bool,
    obs: Observed,
    device: str | None,
    pods: list[PodView],
    job_failure: str | None,
) -> AudioJobItemStatus:
    # The most recent finished pod of this item tells its story.
    pods = sorted(pods, key=lambda p: p.finished_at)
    wanted = "Succeeded" if succeeded else "Failed"
    pod = next((p for p in reversed(pods) if p.phase == wanted), None)
    result, contract_error = _pod_result(pod)
    item_device = (result.device if result else None) or ("cuda" if device == "gpu" else device)
    if succeeded:
        return AudioJobItemStatus(
            index=index,
            video_id=video_id,
            phase=ItemPhase.succeeded,
            device=item_device,
            # Simulated pods leave no message: the pod contract fixes where the manifest is.
            manifest_uri=(result.manifest_uri if result else None)
            or manifest_uri(obs.manifest_prefix, video_id),
            error=contract_error[:MAX_ERROR_CHARS] if contract_error else None,
        )
    if result is not None and result.error:
        error = result.error
    elif pod is not None:
        detail = (contract_error or pod.message or pod.reason or "").strip()
        error = f"exit code {pod.exit_code}" + (f": {detail}" if detail else "")
    else:
        error = job_failure or "failed (no pod left to say why)"
    return AudioJobItemStatus(
        index=index,
        video_id=video_id,
        phase=ItemPhase.failed,
        device=item_device,
        error=error[:MAX_ERROR_CHARS],
    )


def _finished_condition(phase: AudioJobPhase, message: str, now: datetime) -> Condition:
    return Condition(
        type="Finished",
        status="True",
        reason=phase.value,
        message=message,
        last_transition_time=now,
    )


def fold(prev: AudioJobStatus, obs: Observed) -> AudioJobStatus:
    """The new status: ``prev`` plus what the Jobs and pods in ``obs`` show now."""
    if prev.phase.finished:
        return prev  # the final phase is set exactly once
    video_ids = obs.ids()
    total = len(video_ids)
    progress = _progress(prev, obs.jobs, total)
    done = len(progress.succeeded) + len(progress.failed)
    results = _item_results(prev, obs, progress, video_ids)
    unlisted = len(progress.failed) - sum(r.phase is ItemPhase.failed for r in results)
    status = prev.model_copy(
        update={
            "counts": ItemCounts(
                total=total,
                succeeded=len(progress.succeeded),
                failed=len(progress.failed),
                active=progress.active,
            ),
            "progress": round(done / total, 4) if total else 1.0,
            "succeeded_indexes": format_index_ranges(progress.succeeded) or None,
            "failed_indexes": format_index_ranges(progress.failed) or None,
            "items": results or None,
            "failures_not_listed": (unlisted or None) if obs.failures_only else None,
        }
    )
    if done == total:
        return _finished(prev, status, progress, obs.now, unlisted if obs.failures_only else 0)
    if obs.spec.suspend:
        return status.model_copy(
            update={"phase": AudioJobPhase.suspended, "message": "suspended (spec.suspend)"}
        )
    if prev.device is not None:
        return status.model_copy(
            update={
                "phase": AudioJobPhase.processing,
                "message": f"{done} of {total} items finished on {prev.device}",
            }
        )
    return status


@dataclass(frozen=True)
class _Progress:
    """Items (AudioJob indexes) finished by the previous status and the Jobs together."""

    succeeded: set[int]
    failed: set[int]  # never also in ``succeeded``
    newly: set[int]  # finished now, not in the previous status
    job_failures: dict[int, str]  # chunk -> why its Job gave up (deadline, backoff limit)
    active: int  # pods running in unfinished Jobs


def _progress(prev: AudioJobStatus, jobs: list[JobView], total: int) -> _Progress:
    succeeded = parse_index_ranges(prev.succeeded_indexes)
    failed = parse_index_ranges(prev.failed_indexes)
    before = succeeded | failed  # a new set: the in-place unions below leave it alone
    chunk_starts = prev.chunk_starts or [0]
    job_failures: dict[int, str] = {}
    active = 0
    for job in jobs:
        start, end = chunk_bounds(chunk_starts, total, job.chunk)
        succeeded |= {start + i for i in parse_index_ranges(job.completed) if start + i < end}
        failed |= {start + i for i in parse_index_ranges(job.failed) if start + i < end}
        if job.finished and job.failure_message:
            # A Job that gave up fails its unfinished items too.
            job_failures[job.chunk] = job.failure_message
            failed |= set(range(start, end)) - succeeded
        if not job.finished:
            active += job.active
    failed -= succeeded
    return _Progress(succeeded, failed, (succeeded | failed) - before, job_failures, active)


def _item_results(
    prev: AudioJobStatus, obs: Observed, progress: _Progress, video_ids: Sequence[str]
) -> list[AudioJobItemStatus]:
    """``status.items``: the previous results plus one per newly finished item (failed
    ones only for an item list), failed first, at most ``MAX_STATUS_ITEMS`` (an item list:
    ``MAX_LISTED_FAILURES``)."""
    known = {r.index: r for r in prev.items or []}
    chunk_starts = prev.chunk_starts or [0]
    pods_by_item = _pods_by_item(obs.pods, chunk_starts) if progress.newly else {}
    for index in sorted(progress.newly):
        if obs.failures_only and index in progress.succeeded:
            continue
        chunk = bisect.bisect_right(chunk_starts, index) - 1
        known[index] = _item_result(
            index,
            video_ids[index],
            index in progress.succeeded,
            obs,
            prev.device,
            pods_by_item.get(index, []),
            progress.job_failures.get(chunk),
        )
    results = sorted(known.values(), key=lambda r: (r.phase != ItemPhase.failed, r.index))
    return results[: MAX_LISTED_FAILURES if obs.failures_only else MAX_STATUS_ITEMS]


def _pods_by_item(pods: list[PodView], chunk_starts: list[int]) -> dict[int, list[PodView]]:
    """The pods of each item (by AudioJob index)."""
    by_item: dict[int, list[PodView]] = {}
    for pod in pods:
        if 0 <= pod.chunk < len(chunk_starts):
            by_item.setdefault(chunk_starts[pod.chunk] + pod.index, []).append(pod)
    return by_item


def _finished(
    prev: AudioJobStatus,
    status: AudioJobStatus,
    progress: _Progress,
    now: datetime,
    unlisted: int,
) -> AudioJobStatus:
    """``status`` with its final phase, message, completion time and Finished condition;
    ``unlisted``: failed items of an item list not in ``status.items``."""
    total = len(progress.succeeded) + len(progress.failed)
    if not progress.failed:
        phase, message = AudioJobPhase.completed, f"{total} items succeeded"
    elif not progress.succeeded:
        phase, message = AudioJobPhase.failed, f"all {total} items failed"
    else:
        phase = AudioJobPhase.partially_completed
        message = f"{len(progress.failed)} of {total} items failed"
    if unlisted:
        message += (
            f" ({len(progress.failed) - unlisted} listed in status.items, {unlisted} more in "
            "status.failedIndexes)"
        )
    return status.model_copy(
        update={
            "phase": phase,
            "message": message,
            "completion_time": now,
            "conditions": [*(prev.conditions or []), _finished_condition(phase, message, now)],
        }
    )


def next_chunk(status: AudioJobStatus, total: int) -> int | None:
    """The first chunk with unfinished items (chunks run one after another), or None."""
    finished = parse_index_ranges(status.succeeded_indexes) | parse_index_ranges(
        status.failed_indexes
    )
    starts = status.chunk_starts or [0]
    for chunk in range(len(starts)):
        start, end = chunk_bounds(starts, total, chunk)
        if not set(range(start, end)) <= finished:
            return chunk
    return None
