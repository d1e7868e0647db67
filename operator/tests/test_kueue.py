"""Kueue mode's pure parts: the queue chosen, the Job Kueue manages, the position read back.

The whole mode runs against a real Kueue controller in e2e/tests/test_kueue.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from operator_refs import make_ref
from pydantic import ValidationError

from audioproc.models.audiojob import AudioJobSpec, AudioJobStatus, QueueStatus
from audioproc_operator.builder import Placement, build_job
from audioproc_operator.events import Reason
from audioproc_operator.kueue import (
    PendingWorkloads,
    Position,
    admission_events,
    kueue_device,
    position_of,
    queue_name,
    queue_state,
    queued_message,
    with_position,
)
from audioproc_operator.reconcile import audiojob_entry, gpu_ledger
from audioproc_operator.settings import OperatorSettings
from audioproc_operator.status import JobView

ITEM = {"inputUri": "s3://media/v0.mp4", "videoId": "v0"}


def job(name: str, suspend: bool, finished: bool = False) -> JobView:
    return JobView(name, "0000-uid", 0, 0, "", "", 0, finished, None, suspend, 2)


def summary(*owners: tuple[str, int, int]) -> dict[str, Any]:
    """A PendingWorkloadsSummary as Kueue's visibility API answers: (Job, in LQ, in CQ)."""
    return {
        "kind": "PendingWorkloadsSummary",
        "apiVersion": "visibility.kueue.x-k8s.io/v1beta2",
        "items": [
            {
                "metadata": {
                    "name": f"job-{name}-1a2b3",
                    "ownerReferences": [
                        {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": "u"}
                    ],
                },
                "localQueueName": "team",
                "priority": 0,
                "positionInLocalQueue": in_lq,
                "positionInClusterQueue": in_cq,
            }
            for name, in_lq, in_cq in owners
        ],
    }


def test_spec_queue_name_wins_over_the_operator_default(settings: OperatorSettings) -> None:
    named = AudioJobSpec.model_validate({"items": [ITEM], "queueName": "team-a"})
    plain = AudioJobSpec.model_validate({"items": [ITEM]})
    assert queue_name(named, settings) == "team-a"
    assert queue_name(plain, settings) is None
    with_default = settings.model_copy(update={"default_queue_name": "shared"})
    assert queue_name(named, with_default) == "team-a"
    assert queue_name(plain, with_default) == "shared"


def test_a_default_queue_that_is_no_label_value_stops_the_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPERATOR_DEFAULT_QUEUE_NAME", "Team_A")
    with pytest.raises(ValidationError, match="default_queue_name"):
        OperatorSettings(_env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize("bad", ["Team", "team_a", "-team", "a" * 64])
def test_a_queue_name_that_is_no_label_value_is_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        AudioJobSpec.model_validate({"items": [ITEM], "queueName": bad})


def test_auto_waits_in_kueue_for_a_gpu() -> None:
    assert kueue_device(make_ref(1, device="auto").spec) == "gpu"
    assert kueue_device(make_ref(1, device="gpu").spec) == "gpu"
    assert kueue_device(make_ref(1, device="cpu").spec) == "cpu"


def test_kueue_job_is_created_suspended_with_the_queue_label(settings: OperatorSettings) -> None:
    ref = make_ref(4, concurrency=3)
    job_manifest = build_job(ref, 0, 0, 4, Placement("gpu", 3), settings, local_queue="team-a")
    assert job_manifest["spec"]["suspend"] is True
    assert job_manifest["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    # Partial admission: Kueue may start it with fewer GPUs than the 3 asked.
    assert job_manifest["metadata"]["annotations"]["kueue.x-k8s.io/job-min-parallelism"] == "1"
    assert job_manifest["spec"]["parallelism"] == 3
    single = build_job(ref, 0, 0, 4, Placement("gpu", 1), settings, local_queue="team-a")
    assert "kueue.x-k8s.io/job-min-parallelism" not in single["metadata"]["annotations"]
    plain = build_job(ref, 0, 0, 4, Placement("gpu", 3), settings)
    assert plain["spec"]["suspend"] is False
    assert "kueue.x-k8s.io/queue-name" not in plain["metadata"]["labels"]


def test_position_is_found_by_the_owning_job() -> None:
    pending = summary(("other-0", 0, 0), ("batch-0", 1, 3))
    assert position_of(pending, "batch-0") == Position(1, 3)
    assert position_of(pending, "batch-1") is None
    assert position_of(None, "batch-0") is None  # no visibility API here


def test_a_job_unsuspended_by_kueue_is_admitted() -> None:
    assert not queue_state("q", [job("batch-0", suspend=True)], "batch-0", False).admitted
    running = queue_state("q", [job("batch-0", suspend=False)], "batch-0", False)
    assert running.admitted and running.job == "batch-0"
    assert not queue_state("q", [], "batch-0", False).admitted  # not created yet
    # The user suspended the AudioJob: whatever the Job shows, it is not running for Kueue.
    assert not queue_state("q", [job("batch-0", suspend=False)], "batch-0", True).admitted


def test_queued_message_names_the_queue_and_the_position() -> None:
    queue = QueueStatus(local_queue="team-a")
    assert queued_message(queue) == "queued in Kueue (LocalQueue team-a)"
    placed = with_position(queue, Position(2, 5))
    assert placed.position_in_local_queue == 2 and placed.position_in_cluster_queue == 5
    assert queued_message(placed) == (
        "queued in Kueue (LocalQueue team-a), position 2 in the LocalQueue, 5 in the ClusterQueue"
    )
    assert with_position(queue, None) == queue


def test_admission_and_its_withdrawal_are_events() -> None:
    def status(job: str, admitted: bool) -> AudioJobStatus:
        queue = QueueStatus(local_queue="q", job=job, admitted=admitted)
        return AudioJobStatus(queue=queue, message=None if admitted else queued_message(queue))

    queued, running = status("batch-0", False), status("batch-0", True)
    assert [e.reason for e in admission_events(queued, running)] == [Reason.admitted]
    assert [e.reason for e in admission_events(running, queued)] == [Reason.queued]  # preempted
    assert admission_events(running, running) == []
    assert admission_events(AudioJobStatus(), AudioJobStatus()) == []
    # The next chunk's Job waits: no withdrawal; its admission is news.
    next_queued, next_running = status("batch-1", False), status("batch-1", True)
    assert admission_events(running, next_queued) == []
    assert [e.reason for e in admission_events(running, next_running)] == [Reason.admitted]


def test_kueue_audiojobs_stay_out_of_the_gpu_ledger() -> None:
    gpu_status = {"device": "gpu", "gpus": 0, "phase": "Pending"}
    waiting = {
        "metadata": {"namespace": "ns", "name": "w", "uid": "w"},
        "spec": {"items": [ITEM], "device": "gpu"},
        "status": gpu_status,
    }
    queued = {
        "metadata": {"namespace": "ns", "name": "q", "uid": "q"},
        "spec": {"items": [ITEM], "device": "gpu"},
        "status": {**gpu_status, "queue": {"localQueue": "team"}},
    }
    held, demands = gpu_ledger([audiojob_entry(waiting), audiojob_entry(queued)], {}, {})
    assert held == {} and [d.key for d in demands] == [("ns", "w")]

    body = {
        "metadata": {"namespace": "ns", "name": "a", "uid": "u"},
        "spec": {"items": [ITEM], "queueName": "q"},
    }
    assert audiojob_entry(body).kueue
    placed_by_default = {
        **body,
        "spec": {"items": [ITEM]},
        "status": {"queue": {"localQueue": "q"}},
    }
    assert audiojob_entry(placed_by_default).kueue
    assert not audiojob_entry({**body, "spec": {"items": [ITEM]}}).kueue


def test_one_visibility_read_per_local_queue_per_interval() -> None:
    reads: list[tuple[str, str]] = []
    clock = [100.0]

    def read(namespace: str, local_queue: str) -> dict[str, Any] | None:
        reads.append((namespace, local_queue))
        return summary(("batch-0", len(reads), 0))

    cache = PendingWorkloads(read, max_age_s=5.0, clock=lambda: clock[0])
    first = cache.summary("ns", "q")
    assert cache.summary("ns", "q") is first  # a second AudioJob of the queue, same tick
    cache.summary("ns", "other")
    clock[0] += 5.0
    assert position_of(cache.summary("ns", "q"), "batch-0") == Position(3, 0)
    assert reads == [("ns", "q"), ("ns", "other"), ("ns", "q")]
