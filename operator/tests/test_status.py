"""Mirroring Jobs and pods into the AudioJob status (pure fold)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from operator_refs import make_ref

from audioproc.models.audiojob import MAX_STATUS_ITEMS, AudioJobPhase, AudioJobStatus, ItemPhase
from audioproc.models.pod_contract import TerminationMessage, parse_index_ranges
from audioproc_operator.status import (
    Observed,
    fold,
    job_view,
    next_chunk,
    pod_view,
)

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
UID = "0000-uid"


def job(chunk=0, first=0, completed="", failed="", active=0, conditions=()):
    return job_view(
        {
            "metadata": {
                "name": f"batch-{chunk}",
                "labels": {"audioproc.io/audiojob-uid": UID, "audioproc.io/chunk": str(chunk)},
                "annotations": {"audioproc.io/first-index": str(first)},
            },
            "spec": {"parallelism": 2, "suspend": False},
            "status": {
                "completedIndexes": completed,
                "failedIndexes": failed,
                "active": active,
                "conditions": [{"type": t, "status": "True", "message": m} for t, m in conditions],
            },
        }
    )


def pod(index, phase, exit_code, message=None, chunk=0, finished="2026-11-27T11:00:00Z"):
    return pod_view(
        {
            "metadata": {
                "labels": {"audioproc.io/audiojob-uid": UID, "audioproc.io/chunk": str(chunk)},
                "annotations": {"batch.kubernetes.io/job-completion-index": str(index)},
            },
            "status": {
                "phase": phase,
                "containerStatuses": [
                    {
                        "name": "worker",
                        "state": {
                            "terminated": {
                                "exitCode": exit_code,
                                "message": message,
                                "finishedAt": finished,
                                "reason": "Error",
                            }
                        },
                    }
                ],
            },
        }
    )


def failed_message(video_id: str, error: str) -> str:
    return TerminationMessage(
        video_id=video_id, status="error", manifest_uri=None, device="cpu", error=error
    ).to_line()


def placed(**update) -> AudioJobStatus:
    return AudioJobStatus(
        **{"phase": AudioJobPhase.processing, "device": "cpu", "chunk_starts": [0], **update}
    )


def observe(ref, jobs, pods=()):
    return Observed(ref.spec, "s3://out/batch/", list(jobs), list(pods), NOW)


def test_progress_and_counts_while_running():
    ref = make_ref(4)
    status = fold(placed(), observe(ref, [job(completed="0,2", active=2)]))
    assert status.phase == AudioJobPhase.processing
    assert status.progress == 0.5 and status.counts.succeeded == 2 and status.counts.active == 2
    assert status.succeeded_indexes == "0,2"
    assert [r.video_id for r in status.items] == ["v0", "v2"]


def test_manifest_uri_from_termination_message_or_contract_location():
    ref = make_ref(2)
    message = json.dumps(
        {
            "videoId": "v0",
            "status": "ok",
            "manifestUri": "s3://real/v0/manifest.json",
            "device": "cpu",
            "error": None,
        }
    )
    status = fold(
        placed(),
        observe(
            ref,
            [job(completed="0-1", conditions=[("Complete", None)])],
            [pod(0, "Succeeded", 0, message), pod(1, "Succeeded", 0)],
        ),
    )
    by_index = {r.index: r for r in status.items}
    assert by_index[0].manifest_uri == "s3://real/v0/manifest.json"
    assert (
        by_index[1].manifest_uri == "s3://out/batch/v1/manifest.json"
    )  # simulated pod: no message
    assert status.phase == AudioJobPhase.completed and status.progress == 1.0
    assert status.completion_time == NOW and status.conditions[-1].reason == "Completed"


def test_a_message_that_breaks_the_contract_is_recorded_not_ignored():
    """A renamed key (job image and operator out of step) is named on the item, never taken
    for a simulated pod's missing message."""
    ref = make_ref(2)
    renamed = json.dumps(
        {
            "videoId": "v0",
            "status": "ok",
            "manifestURL": "s3://real/v0/manifest.json",
            "device": "cpu",
            "error": None,
        }
    )
    status = fold(
        placed(),
        observe(
            ref,
            [job(completed="0", failed="1")],
            [pod(0, "Succeeded", 0, renamed), pod(1, "Failed", 1, renamed)],
        ),
    )
    by_index = {r.index: r for r in status.items}
    assert by_index[0].phase == ItemPhase.succeeded  # the Job says so
    assert by_index[0].manifest_uri == "s3://out/batch/v0/manifest.json"
    assert "breaks the pod contract" in by_index[0].error and "manifestURL" in by_index[0].error
    assert by_index[1].error.startswith("exit code 1: termination message breaks the pod contract")


def test_failed_item_carries_error_of_its_last_pod():
    ref = make_ref(3)
    pods = [
        pod(1, "Failed", 1, "decoder crashed", finished="2026-11-27T11:00:00Z"),
        pod(
            1,
            "Failed",
            1,
            failed_message("v1", "corrupt mp4 header"),
            finished="2026-11-27T11:00:09Z",
        ),
    ]
    status = fold(
        placed(),
        observe(
            ref, [job(completed="0,2", failed="1", conditions=[("Failed", "FailedIndexes")])], pods
        ),
    )
    assert status.phase == AudioJobPhase.partially_completed
    assert status.items[0].phase == ItemPhase.failed and status.items[0].index == 1  # failed first
    assert status.items[0].error == "corrupt mp4 header"
    assert status.counts.failed == 1 and status.counts.succeeded == 2


def test_error_without_result_line_names_exit_code():
    ref = make_ref(1)
    status = fold(
        placed(), observe(ref, [job(failed="0")], [pod(0, "Failed", 3, "simulated by kwok")])
    )
    assert status.items[0].error == "exit code 3: simulated by kwok"
    assert status.phase == AudioJobPhase.failed


def test_finished_items_survive_deleted_jobs():
    ref = make_ref(3)
    first = fold(placed(), observe(ref, [job(completed="0-1", active=1)]))
    later = fold(first, observe(ref, []))  # the Job is gone (TTL) and no pods are left
    assert later.succeeded_indexes == "0-1" and later.items == first.items


def test_final_phase_is_written_once():
    ref = make_ref(1)
    done = fold(placed(), observe(ref, [job(completed="0")]))
    assert done.phase == AudioJobPhase.completed
    again = fold(
        done, Observed(ref.spec, "x", [job(failed="0")], [], datetime(2030, 1, 1, tzinfo=UTC))
    )
    assert again == done


def test_job_that_gave_up_fails_its_unfinished_items():
    ref = make_ref(3)
    status = fold(
        placed(),
        observe(
            ref,
            [
                job(
                    completed="0",
                    conditions=[("Failed", "Job was active longer than specified deadline")],
                )
            ],
        ),
    )
    assert parse_index_ranges(status.failed_indexes) == {1, 2}
    assert status.items[0].error == "Job was active longer than specified deadline"


def test_chunks_offset_indexes_and_run_in_order():
    ref = make_ref(25)
    start = placed(chunk_starts=[0, 10, 20])
    assert next_chunk(start, 25) == 0
    status = fold(
        start,
        observe(
            ref,
            [job(0, 0, completed="0-9"), job(1, 10, completed="0-4", failed="5")],
            [pod(5, "Failed", 3, chunk=1)],
        ),
    )
    assert parse_index_ranges(status.succeeded_indexes) == set(range(15))
    assert status.failed_indexes == "15" and status.items[0].video_id == "v15"
    assert next_chunk(status, 25) == 1


def test_status_stays_small_for_ten_thousand_items():
    ref = make_ref(10_000)
    status = fold(
        placed(chunk_starts=list(range(0, 10_000, 1000))),
        observe(ref, [job(c, c * 1000, completed="0-998", failed="999") for c in range(10)]),
    )
    assert status.phase == AudioJobPhase.partially_completed
    assert len(status.items) == MAX_STATUS_ITEMS
    assert all(r.phase == ItemPhase.failed for r in status.items[:10])
    assert len(json.dumps(status.wire())) < 256 * 1024


def test_suspended_phase():
    ref = make_ref(2, suspend=True)
    assert fold(placed(), observe(ref, [job(active=0)])).phase == AudioJobPhase.suspended
