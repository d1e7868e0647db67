"""Events on an AudioJob (pure): failures batched, successes counted, transitions once."""

from __future__ import annotations

from datetime import UTC, datetime

from operator_refs import make_ref

from audioproc.models.audiojob import AudioJobPhase, AudioJobStatus, ItemCounts
from audioproc.models.pod_contract import format_index_ranges
from audioproc_operator.events import (
    FAILURE_EVENT_INTERVAL_S,
    LISTED_FAILURES,
    MAX_MESSAGE_CHARS,
    Event,
    FailureBatch,
    Reason,
    events_of_fold,
    fold_events,
    new_failures,
    wait_event,
)
from audioproc_operator.quota import shortage
from audioproc_operator.status import JobView, Observed, fold

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def placed(total: int, chunk_size: int = 1000, **fields: object) -> AudioJobStatus:
    starts = list(range(0, total, chunk_size))
    return AudioJobStatus.model_validate(
        {
            "phase": "Processing",
            "device": "cpu",
            "gpus": 0,
            "chunkStarts": starts,
            "jobs": [f"big-{c}" for c in range(len(starts))],
            "manifestPrefix": "s3://out/big/",
            "counts": {"total": total},
            **fields,
        }
    )


def chunk_job(chunk: int, completed: set[int], failed: set[int], finished: bool) -> JobView:
    """Job ``big-<chunk>`` with chunk-local completed and failed indexes."""
    return JobView(
        name=f"big-{chunk}",
        owner_uid="0000-uid",
        chunk=chunk,
        first_index=0,
        completed=format_index_ranges(completed),
        failed=format_index_ranges(failed),
        active=0,
        finished=finished,
        failure_message=None,
        suspend=False,
        parallelism=4,
    )


def reasons(events: list[Event]) -> list[str]:
    return [e.reason.value for e in events]


def test_ten_thousand_failures_in_one_fold_are_one_event_naming_a_few():
    batch = FailureBatch()
    batch.add([(f"v{i}", f"exit code 3: no audio stream in v{i}") for i in range(10_000)])
    event = batch.take(now_s=0.0, flush=False, succeeded=0, failed=10_000, total=10_000)
    assert event is not None and event.type == "Warning" and event.reason is Reason.items_failed
    assert event.message.startswith(
        "10000 items failed: v0: exit code 3: no audio stream in v0; v1:"
    )
    assert (
        f"v{LISTED_FAILURES - 1}:" in event.message and f"v{LISTED_FAILURES}:" not in event.message
    )
    assert f"and {10_000 - LISTED_FAILURES} more" in event.message
    assert len(event.message) <= MAX_MESSAGE_CHARS  # kopf would cut it in the middle
    assert (
        batch.pending == 0
        and batch.take(now_s=100.0, flush=True, succeeded=0, failed=1, total=1) is None
    )


def test_failures_are_posted_at_most_every_interval_unless_flushed():
    batch = FailureBatch()
    batch.add([("a", "boom")])
    assert (
        batch.take(0.0, flush=False, succeeded=0, failed=1, total=9) is not None
    )  # the first is news
    batch.add([("b", "boom")])
    assert (
        batch.take(FAILURE_EVENT_INTERVAL_S - 1, flush=False, succeeded=0, failed=2, total=9)
        is None
    )
    batch.add([("c", "bang " * 100)])
    later = batch.take(FAILURE_EVENT_INTERVAL_S, flush=False, succeeded=0, failed=3, total=9)
    assert later is not None and later.message.startswith("2 items failed: b: boom; c: bang bang")
    assert len(later.message) < 300  # a long error is cut
    batch.add([("d", "x")])
    flushed = batch.take(FAILURE_EVENT_INTERVAL_S + 1, flush=True, succeeded=5, failed=4, total=9)
    assert (
        flushed is not None and "1 item failed: d: x (failed 4, succeeded 5 of 9" in flushed.message
    )


def test_new_failures_name_each_item_once_with_its_error():
    ref = make_ref(4)
    prev = placed(4, failedIndexes="1")
    status = placed(
        4,
        failedIndexes="1-3",
        items=[
            {"index": 1, "videoId": "v1", "phase": "Failed", "error": "old"},
            {"index": 3, "videoId": "v3", "phase": "Failed", "error": "exit code 3: unreadable"},
        ],
    )
    video_ids = [item.video_id for item in ref.spec.items]
    assert new_failures(prev, status, video_ids) == [
        ("v2", "error not kept in the status"),
        ("v3", "exit code 3: unreadable"),
    ]
    assert new_failures(status, status, video_ids) == []


def test_a_ten_thousand_item_audiojob_writes_events_by_time_and_chunks_not_by_items():
    """The real fold over ten 1,000-item Jobs: 100 items finish per second, every tenth fails."""
    total, spec = 10_000, make_ref(10_000).spec
    video_ids = [item.video_id for item in spec.items]
    status, batch, events = placed(total), FailureBatch(), []
    done = 0
    for second in range(1, total // 100 + 1):
        done = second * 100
        jobs = []
        for chunk in range(10):
            local = range(max(0, min(1000, done - chunk * 1000)))
            jobs.append(
                chunk_job(
                    chunk,
                    {i for i in local if i % 10},
                    {i for i in local if not i % 10},
                    finished=len(local) == 1000,
                )
            )
        new = fold(status, Observed(spec, "s3://out/big/", jobs, [], NOW))
        events += events_of_fold(status, new, video_ids, batch, now_s=float(second))
        status = new
    assert status.phase is AudioJobPhase.partially_completed
    counted = reasons(events)
    assert counted.count("JobFinished") == 9 and counted[-1] == "PartiallyCompleted"
    # 100 s of failures: the first at once, then one per interval, the rest flushed at the end.
    assert counted.count("ItemsFailed") <= 2 + 100 / FAILURE_EVENT_INTERVAL_S
    assert len(events) < 20
    failed_in_events = sum(
        int(e.message.split(" ", 1)[0]) for e in events if e.reason is Reason.items_failed
    )
    assert failed_in_events == 1000  # every failure counted once
    assert (
        events[-1].type == "Warning"
        and events[-1].message == "1000 of 10000 items failed: 9000 succeeded, 1000 failed"
    )
    first_chunk = next(e for e in events if e.reason is Reason.job_finished)
    assert first_chunk.message == (
        "Job big-0 finished items 0-999: 900 succeeded, 100 failed; 1000 of 10000 items finished"
    )


def test_suspend_gives_gpus_back_and_resume_says_how_many():
    running = placed(6, device="gpu", gpus=2, counts={"total": 6, "succeeded": 2})
    suspended = running.model_copy(
        update={"phase": AudioJobPhase.suspended, "gpus": 0, "message": "suspended (spec.suspend)"}
    )
    (event,) = fold_events(running, suspended, 6)
    assert (event.reason, event.type) == (Reason.suspended, "Normal")
    assert event.message.endswith("2 of 6 items finished; 2 GPUs given back")
    assert fold_events(suspended, suspended, 6) == []  # nothing new: nothing posted
    resumed = suspended.model_copy(update={"phase": AudioJobPhase.processing, "gpus": 1})
    (event,) = fold_events(suspended, resumed, 6)
    assert (
        event.reason is Reason.resumed
        and event.message == "resumed on gpu with 1 GPU; 2 of 6 items finished"
    )
    # resumed, then waiting for a GPU (Pending, no GPUs): the grant that comes later is the resume
    waiting = suspended.model_copy(
        update={"phase": AudioJobPhase.pending, "message": "waiting for a GPU: x"}
    )
    assert fold_events(suspended, waiting, 6) == []
    assert reasons(fold_events(waiting, resumed, 6)) == ["Resumed"]


def test_placement_is_not_mistaken_for_a_resume():
    unplaced = AudioJobStatus(phase=AudioJobPhase.pending, counts=ItemCounts(total=3))
    assert fold_events(unplaced, placed(3, device="gpu", gpus=2), 3) == []
    assert fold_events(unplaced, placed(3), 3) == []


def test_outcome_is_one_event_normal_only_when_all_succeeded():
    done = placed(3, counts={"total": 3, "succeeded": 3}).model_copy(
        update={"phase": AudioJobPhase.completed, "message": "3 items succeeded"}
    )
    (event,) = fold_events(placed(3), done, 3)
    assert (event.type, event.reason, event.message) == (
        "Normal",
        Reason.completed,
        "3 items succeeded: 3 succeeded, 0 failed",
    )
    failed = done.model_copy(
        update={"phase": AudioJobPhase.failed, "message": "all 3 items failed"}
    )
    assert [(e.type, e.reason) for e in fold_events(placed(3), failed, 3)] == [
        ("Warning", Reason.failed)
    ]
    assert fold_events(done, done, 3) == []


def test_a_wait_on_the_namespace_quota_is_a_quota_rejection():
    quota = shortage("team-a", room=0, free=5, cap=8)
    assert (
        quota.quota and "requests.nvidia.com/gpu of namespace team-a has no room" in quota.message
    )
    assert wait_event("waiting for a GPU: " + quota.message, quota).reason is Reason.quota_rejected
    cap = shortage("team-a", room=None, free=0, cap=8)
    assert (
        not cap.quota and cap.message == "all 8 GPUs of MAX_GPU_WORKERS are held by other AudioJobs"
    )
    assert wait_event(cap.message, cap) == Event("Normal", Reason.waiting, cap.message)
    queue = shortage("team-a", room=3, free=1, cap=8)
    assert queue.message == "the 1 free GPU went to AudioJobs ahead in the queue"
