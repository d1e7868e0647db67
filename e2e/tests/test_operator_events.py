"""Events, suspend and cancel of AudioJobs on the local control plane (kwok pods and GPUs).

Fixtures are e2e/tests/conftest.py's, helpers e2e/operator_support.py's: each test starts the operator as a subprocess
watching only its own namespace. Events are read as ``kubectl describe aj`` and ``kubectl get
events`` show them; kopf posts them in the background, so the tests wait for them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client, watch

from e2e.helpers import Kube, OperatorProcess, phase_is, wait_for
from e2e.operator_support import audiojob, event_with, events_of, gpu_quota, reasons_of

pytestmark = pytest.mark.e2e

FINISHED = ("Completed", "PartiallyCompleted", "Failed")


def test_describe_shows_placement_jobs_failures_batched_and_the_outcome(
    kube: Kube, start_operator: Callable[..., OperatorProcess]
) -> None:
    """7 items in 2-item Jobs; kwok fails completion index 1 of each Job (items 1, 3, 5) with
    exit code 3 (not retried)."""
    start_operator(OPERATOR_CHUNK_SIZE="2")
    kube.create(
        audiojob(
            "story",
            7,
            device="cpu",
            concurrency=2,
            pod_annotations={
                "e2e.audioproc.io/fail-indexes": "1",
                "e2e.audioproc.io/exit-code": "3",
            },
        )
    )
    status = wait_for(phase_is(kube, "story", *FINISHED), timeout=120, what="story finished")
    assert status["phase"] == "PartiallyCompleted" and status["counts"]["failed"] == 3
    final = wait_for(
        event_with(kube, "story", "PartiallyCompleted"), timeout=30, what="the outcome event"
    )
    assert (
        final["type"] == "Warning"
        and final["message"] == "3 of 7 items failed: 4 succeeded, 3 failed"
    )
    assert final["source"]["component"] == "kopf"

    events = events_of(kube, "story")
    reasons = [e["reason"] for e in events]
    assert reasons[0] == "Placed" and reasons[-1] == "PartiallyCompleted"
    assert events[0]["message"] == "placed on cpu, 2 pods at once; 7 items in 4 Job(s)"
    created = [e["message"].split()[2] for e in events if e["reason"] == "JobCreated"]
    assert created == ["story-0", "story-1", "story-2", "story-3"]
    assert [e["message"].split()[1] for e in events if e["reason"] == "JobFinished"] == [
        "story-0",
        "story-1",
        "story-2",
    ]
    # Every failure is in exactly one ItemsFailed event, with its video id and reason.
    failures = [e for e in events if e["reason"] == "ItemsFailed"]
    assert 1 <= len(failures) <= 3 and all(e["type"] == "Warning" for e in failures)
    assert sum(int(e["message"].split()[0]) for e in failures) == 3
    named = " ".join(e["message"] for e in failures)
    for video_id in ("v1", "v3", "v5"):
        assert f"{video_id}: exit code 3" in named
    assert "Succeeded" not in reasons  # successes are counted, never listed one by one

    described = kube.run("describe", "aj", "story").stdout
    events_table = described[described.index("Events:") :]
    for reason in ("Placed", "JobCreated", "ItemsFailed", "JobFinished", "PartiallyCompleted"):
        assert reason in events_table
    assert "v1: exit code 3" in events_table


def test_a_wait_on_the_quota_is_a_quota_rejection(
    kube: Kube, start_operator: Callable[..., OperatorProcess]
) -> None:
    gpu_quota(kube, 0)
    start_operator(MAX_GPU_WORKERS="8")
    kube.create(audiojob("needs-gpu", 1, device="gpu"))
    kube.create(audiojob("any-device", 1, device="auto"))
    rejected = wait_for(
        event_with(kube, "needs-gpu", "QuotaRejected"), timeout=60, what="QuotaRejected"
    )
    assert rejected["type"] == "Warning"
    assert rejected["message"] == (
        f"waiting for a GPU: the ResourceQuota requests.nvidia.com/gpu of namespace "
        f"{kube.namespace} has no room left"
    )
    assert kube.audiojob("needs-gpu")["status"]["phase"] == "Pending"
    wait_for(
        phase_is(kube, "any-device", "Completed"), timeout=60, what="the auto AudioJob done on cpu"
    )
    assert reasons_of(kube, "any-device")[:2] == ["QuotaRejected", "Placed"]
    assert "(device auto, no GPU: the ResourceQuota" in events_of(kube, "any-device")[1]["message"]
    # Waiting is said once, not at every reconcile.
    assert reasons_of(kube, "needs-gpu") == ["QuotaRejected"]


def running_pods(kube: Kube, name: str) -> list[dict[str, Any]]:
    return [
        p
        for p in kube.pods(name)
        if p["status"].get("phase") in ("Pending", "Running")
        and not p["metadata"].get("deletionTimestamp")
    ]


def test_suspend_gives_the_gpus_back_and_resume_waits_for_them(
    kube: Kube, start_operator: Callable[..., OperatorProcess]
) -> None:
    """Two GPUs in all (MAX_GPU_WORKERS): ``first`` holds both; suspended, it gives them back and
    ``second`` gets them; resumed meanwhile, ``first`` waits, and runs again once ``second`` is done."""
    start_operator(MAX_GPU_WORKERS="2")
    kube.create(
        audiojob(
            "first",
            4,
            device="gpu",
            concurrency=2,
            pod_annotations={"e2e.audioproc.io/run-duration": "5s"},
        )
    )
    wait_for(
        lambda: len(running_pods(kube, "first")) == 2, timeout=60, what="first running on 2 GPUs"
    )
    assert kube.audiojob("first")["status"]["gpus"] == 2
    kube.create(
        audiojob(
            "second",
            2,
            device="gpu",
            concurrency=2,
            pod_annotations={"e2e.audioproc.io/run-duration": "20s"},
        )
    )
    waiting = wait_for(event_with(kube, "second", "Waiting"), timeout=30, what="second waiting")
    assert (
        waiting["message"]
        == "waiting for a GPU: all 2 GPUs of MAX_GPU_WORKERS are held by other AudioJobs"
    )

    kube.run("patch", "aj", "first", "--type=merge", "-p", '{"spec": {"suspend": true}}')
    suspended = wait_for(phase_is(kube, "first", "Suspended"), timeout=30, what="first suspended")
    assert suspended["gpus"] == 0 and suspended["device"] == "gpu"
    assert kube.json("get", "job", "first-0")["spec"]["suspend"] is True
    event = wait_for(event_with(kube, "first", "Suspended"), timeout=30, what="the Suspended event")
    assert event["message"].endswith("2 GPUs given back")
    second = wait_for(
        lambda: (s := kube.audiojob("second").get("status") or {}).get("gpus") and s,
        timeout=30,
        what="second granted the GPUs first gave back",
    )
    assert second["gpus"] == 2

    kube.run("patch", "aj", "first", "--type=merge", "-p", '{"spec": {"suspend": false}}')
    pending = wait_for(
        phase_is(kube, "first", "Pending"), timeout=30, what="first waiting after resume"
    )
    assert (
        pending["message"]
        == "waiting for a GPU: all 2 GPUs of MAX_GPU_WORKERS are held by other AudioJobs"
    )
    assert pending["gpus"] == 0
    assert kube.json("get", "job", "first-0")["spec"]["suspend"] is True  # held while it waits
    assert running_pods(kube, "first") == []
    assert wait_for(event_with(kube, "first", "Waiting"), timeout=30, what="first's Waiting event")

    wait_for(phase_is(kube, "second", *FINISHED), timeout=90, what="second finished")
    resumed = wait_for(event_with(kube, "first", "Resumed"), timeout=60, what="first resumed")
    assert resumed["message"].startswith("resumed on gpu with 2 GPUs")
    final = wait_for(phase_is(kube, "first", *FINISHED), timeout=120, what="first finished")
    assert final["phase"] == "Completed" and final["counts"]["succeeded"] == 4
    reasons = reasons_of(kube, "first")
    assert (
        reasons.index("Suspended")
        < reasons.index("Waiting")
        < reasons.index("Resumed")
        < reasons.index("Completed")
    )


def test_deleting_mid_run_deletes_jobs_in_the_foreground_at_once(
    kube: Kube, api_client: client.ApiClient, start_operator: Callable[..., OperatorProcess]
) -> None:
    """The operator deletes the Jobs of an unfinished AudioJob itself, in the foreground (pods
    first), though ``kubectl delete`` asked for background propagation."""
    start_operator(OPERATOR_CHUNK_SIZE="2")
    kube.create(
        audiojob(
            "doomed",
            4,
            device="cpu",
            concurrency=2,
            pod_annotations={"e2e.audioproc.io/run-duration": "1h"},
        )
    )
    wait_for(lambda: len(running_pods(kube, "doomed")) == 2, timeout=60, what="both pods running")
    seen: list[tuple[str, str, list[str]]] = []  # (event type, Job, its finalizers)
    stream = watch.Watch()
    listening = threading.Event()

    def watch_jobs() -> None:
        batch = client.BatchV1Api(api_client)
        version = batch.list_namespaced_job(kube.namespace).metadata.resource_version
        listening.set()
        for event in stream.stream(
            batch.list_namespaced_job, kube.namespace, resource_version=version, timeout_seconds=60
        ):
            meta = event["object"].metadata
            seen.append((event["type"], meta.name, list(meta.finalizers or [])))
            if event["type"] == "DELETED":
                return

    watcher = threading.Thread(target=watch_jobs, daemon=True)
    watcher.start()
    listening.wait(10)
    kube.run("delete", "aj", "doomed", "--wait=false")

    def all_gone() -> bool:
        left = kube.run(
            "get", "jobs,pods", "-l", "audioproc.io/audiojob=doomed", "-o", "name"
        ).stdout.split()
        return not left and kube.run("get", "aj", "doomed", check=False).returncode != 0

    wait_for(all_gone, timeout=30, what="the AudioJob, its Job and its pods gone")
    watcher.join(10)
    stream.stop()
    assert ("MODIFIED", "doomed-0", ["foregroundDeletion"]) in seen, seen
    assert seen[-1][:2] == ("DELETED", "doomed-0"), seen
    deleting = events_of(kube, "doomed")[-1]
    assert deleting["reason"] == "Deleting" and deleting["message"].startswith(
        "deleting Job(s) doomed-0 and their pods (foreground); manifests already written stay under "
    )
