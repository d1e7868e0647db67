"""The local control plane behaves like a real cluster where operators break.

Scheduling by nvidia.com/gpu, ResourceQuota admission, Job success/failure/retries, garbage
collection, CRD schema validation and the status subresource. Pods are simulated by kwok
(stages in e2e/kwok/), steered by pod-template annotations.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e.cluster import Cluster
from e2e.helpers import (
    COMPLETION_INDEX_ANNOTATION,
    EXIT_CODE_ANNOTATION,
    FAIL_INDEXES_ANNOTATION,
    MANUAL_ANNOTATION,
    RUN_DURATION_ANNOTATION,
    finish_pod,
    job_condition,
    pods_of_job,
    wait_for,
)
from e2e.nodes import GPU_RESOURCE, GPU_TAINT, POOL_LABEL

pytestmark = pytest.mark.e2e

DATA = Path(__file__).parent / "data"
IMAGE = "e2e.invalid/noop:1"  # never pulled: kwok plays the kubelet
GPU_TOLERATION = {"key": GPU_TAINT["key"], "operator": "Exists", "effect": GPU_TAINT["effect"]}


@pytest.fixture
def batch(api_client: client.ApiClient) -> client.BatchV1Api:
    return client.BatchV1Api(api_client)


def job_manifest(
    name: str,
    completions: int = 1,
    annotations: dict[str, str] | None = None,
    backoff_limit: int | None = 0,
    **spec: Any,
) -> dict[str, Any]:
    """A Job running ``completions`` pods at once; ``spec`` adds or overrides Job spec fields."""
    if backoff_limit is not None:
        spec.setdefault("backoffLimit", backoff_limit)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completions": completions,
            "parallelism": completions,
            "template": {
                "metadata": {"annotations": annotations or {}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": IMAGE}],
                },
            },
            **spec,
        },
    }


def gpu_pod_manifest(name: str, gpus: int = 1, tolerate: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [
            {"name": "main", "image": IMAGE, "resources": {"limits": {GPU_RESOURCE: str(gpus)}}}
        ],
    }
    if tolerate:
        spec["tolerations"] = [GPU_TOLERATION]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def pool_nodes(core: client.CoreV1Api, pool: str) -> list[client.V1Node]:
    return core.list_node(label_selector=f"{POOL_LABEL}={pool}").items


def require_pool(core: client.CoreV1Api, pool: str) -> list[client.V1Node]:
    nodes = pool_nodes(core, pool)
    if not nodes:
        pytest.skip(
            f"no nodes labelled {POOL_LABEL}={pool} (not a cluster started by e2e.cluster?)"
        )
    return nodes


def unschedulable_reason(pod: client.V1Pod) -> str | None:
    """The scheduler's message when it could not place the pod, else None."""
    for cond in pod.status.conditions or []:
        if (
            cond.type == "PodScheduled"
            and cond.status == "False"
            and cond.reason == "Unschedulable"
        ):
            return cond.message
    return None


def terminated_state(pod: client.V1Pod) -> client.V1ContainerStateTerminated | None:
    statuses = pod.status.container_statuses or []
    return statuses[0].state.terminated if statuses else None


def seconds_between(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()


# --- Jobs on the CPU pool ---------------------------------------------------------------------


def test_job_with_three_completions_completes_on_cpu_pool(core, batch, namespace):
    cpu_nodes = {n.metadata.name for n in require_pool(core, "cpu")}
    batch.create_namespaced_job(namespace, job_manifest("three", completions=3))

    wait_for(
        lambda: job_condition(batch, namespace, "three", "Complete"), 60, "Job three to complete"
    )

    assert batch.read_namespaced_job_status("three", namespace).status.succeeded == 3
    pods = pods_of_job(core, namespace, "three")
    assert [p.status.phase for p in pods] == ["Succeeded"] * 3
    for pod in pods:
        terminated = terminated_state(pod)
        assert terminated.exit_code == 0
        # kwok's default run duration (1s) applied: the pod did not finish the moment it started.
        assert seconds_between(pod.status.start_time, terminated.finished_at) >= 1
    # No node selector: the GPU pool's taint alone keeps these pods on CPU nodes.
    assert {p.spec.node_name for p in pods} <= cpu_nodes


def test_annotated_exit_code_fails_pods_and_job_retries(core, batch, namespace):
    annotations = {EXIT_CODE_ANNOTATION: "3", RUN_DURATION_ANNOTATION: "2s"}
    batch.create_namespaced_job(
        namespace, job_manifest("fails", annotations=annotations, backoff_limit=1)
    )

    failed = wait_for(
        lambda: job_condition(batch, namespace, "fails", "Failed"), 90, "Job fails to fail"
    )

    assert failed.reason == "BackoffLimitExceeded"
    # backoffLimit 1: the first failure was retried once, so two pods failed.
    assert batch.read_namespaced_job_status("fails", namespace).status.failed == 2
    pods = pods_of_job(core, namespace, "fails")
    assert len(pods) == 2
    for pod in pods:
        assert pod.status.phase == "Failed"
        terminated = terminated_state(pod)
        assert terminated.exit_code == 3
        # The run-duration annotation held the pod Running for at least 2s (both from server clocks).
        assert seconds_between(pod.status.start_time, terminated.finished_at) >= 2


def test_pod_failure_policy_fails_index_without_retry(core, batch, namespace):
    """The Job features the operator relies on: backoffLimitPerIndex + podFailurePolicy FailIndex."""
    job = job_manifest(
        "input-error",
        annotations={EXIT_CODE_ANNOTATION: "3"},
        completionMode="Indexed",
        backoff_limit=None,
        backoffLimitPerIndex=3,
        podFailurePolicy={
            "rules": [{"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [3]}}]
        },
    )
    batch.create_namespaced_job(namespace, job)

    wait_for(
        lambda: job_condition(batch, namespace, "input-error", "Failed"),
        60,
        "Job input-error to fail",
    )

    status = batch.read_namespaced_job_status("input-error", namespace).status
    assert status.failed_indexes == "0"
    assert status.failed == 1  # exit code 3 is not retried despite backoffLimitPerIndex 3


@pytest.mark.parametrize(
    ("annotations", "exit_code"),
    [
        ({FAIL_INDEXES_ANNOTATION: "1,3"}, 1),
        ({FAIL_INDEXES_ANNOTATION: "3, 1", EXIT_CODE_ANNOTATION: "2"}, 2),
    ],
    ids=["default-exit-code", "annotated-exit-code"],
)
def test_fail_indexes_fails_only_the_listed_indexes(core, batch, namespace, annotations, exit_code):
    """One pod template, per-index outcomes: the listed indexes fail (and are retried), the others succeed."""
    job = job_manifest(
        "some-fail",
        completions=4,
        annotations=annotations,
        completionMode="Indexed",
        backoff_limit=None,
        backoffLimitPerIndex=1,
    )
    batch.create_namespaced_job(namespace, job)

    wait_for(
        lambda: job_condition(batch, namespace, "some-fail", "Failed"), 90, "Job some-fail to fail"
    )

    status = batch.read_namespaced_job_status("some-fail", namespace).status
    assert status.failed_indexes == "1,3" and status.completed_indexes == "0,2"
    assert (status.succeeded, status.failed) == (2, 4)  # each listed index: one try and one retry
    outcomes = Counter(
        (
            p.metadata.annotations[COMPLETION_INDEX_ANNOTATION],
            p.status.phase,
            terminated_state(p).exit_code,
        )
        for p in pods_of_job(core, namespace, "some-fail")
    )
    assert outcomes == {
        ("0", "Succeeded", 0): 1,
        ("2", "Succeeded", 0): 1,
        ("1", "Failed", exit_code): 2,
        ("3", "Failed", exit_code): 2,
    }


def test_deleting_a_job_garbage_collects_its_pods(core, batch, namespace):
    job = job_manifest("long", completions=2, annotations={RUN_DURATION_ANNOTATION: "1h"})
    batch.create_namespaced_job(namespace, job)
    wait_for(
        lambda: [p.status.phase for p in pods_of_job(core, namespace, "long")] == ["Running"] * 2,
        30,
        "two Running pods",
    )

    batch.delete_namespaced_job("long", namespace, propagation_policy="Background")

    wait_for(
        lambda: not pods_of_job(core, namespace, "long"),
        60,
        "the garbage collector to delete the pods",
    )
    with pytest.raises(ApiException) as gone:
        batch.read_namespaced_job("long", namespace)
    assert gone.value.status == 404


# --- a test playing the kubelet ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("exit_code", "outcome"),
    [(0, "Complete"), (3, "Failed")],
    ids=["succeeds", "input-error"],
)
def test_manual_pod_is_finished_by_the_test(core, batch, namespace, exit_code, outcome):
    job = job_manifest(
        "manual",
        annotations={MANUAL_ANNOTATION: "true"},
        podFailurePolicy={
            "rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [3]}}]
        },
    )
    batch.create_namespaced_job(namespace, job)
    pod = wait_for(
        lambda: next(
            (p for p in pods_of_job(core, namespace, "manual") if p.status.phase == "Running"), None
        ),
        30,
        "the manual pod to run",
    )
    message = json.dumps({"videoId": "v1", "status": "ok" if exit_code == 0 else "error"})

    finish_pod(core, namespace, pod.metadata.name, exit_code=exit_code, message=message)

    wait_for(
        lambda: job_condition(batch, namespace, "manual", outcome),
        30,
        f"Job manual to be {outcome}",
    )
    status = batch.read_namespaced_job_status("manual", namespace).status
    assert (status.succeeded or 0, status.failed or 0) == ((1, 0) if exit_code == 0 else (0, 1))
    terminated = terminated_state(core.read_namespaced_pod(pod.metadata.name, namespace))
    assert (terminated.exit_code, terminated.message) == (exit_code, message)


# --- GPUs: scheduling and quota ---------------------------------------------------------------


def _gpus_in_use(core: client.CoreV1Api, nodes: set[str]) -> int:
    pods = core.list_pod_for_all_namespaces(
        field_selector="status.phase!=Succeeded,status.phase!=Failed"
    ).items
    return sum(
        int((c.resources.limits or {}).get(GPU_RESOURCE, 0))
        for p in pods
        if p.spec.node_name in nodes
        for c in p.spec.containers
        if c.resources
    )


def test_gpu_pods_land_on_gpu_nodes_and_extra_ones_stay_pending(core, namespace):
    gpu_nodes = require_pool(core, "gpu")
    capacity = {n.metadata.name: int(n.status.allocatable.get(GPU_RESOURCE, 0)) for n in gpu_nodes}
    total = sum(capacity.values())
    wait_for(
        lambda: _gpus_in_use(core, set(capacity)) == 0,
        60,
        "GPUs used by other tests to be released",
    )

    core.create_namespaced_pod(namespace, gpu_pod_manifest("no-toleration", tolerate=False))
    names = [f"gpu-{i}" for i in range(total + 1)]
    for name in names:
        core.create_namespaced_pod(namespace, gpu_pod_manifest(name))

    def settled() -> dict[str, list[client.V1Pod]] | None:
        pods = {p.metadata.name: p for p in core.list_namespaced_pod(namespace).items}
        running = [pods[n] for n in names if pods[n].status.phase == "Running"]
        pending = [pods[n] for n in names if unschedulable_reason(pods[n])]
        if (
            len(running) == total
            and len(pending) == 1
            and unschedulable_reason(pods["no-toleration"])
        ):
            return {"running": running, "pending": pending, "untolerated": [pods["no-toleration"]]}
        return None

    pods = wait_for(settled, 60, f"{total} GPU pods Running and one Unschedulable")

    per_node = Counter(p.spec.node_name for p in pods["running"])
    assert set(per_node) <= set(capacity)
    assert all(per_node[node] <= capacity[node] for node in per_node)
    assert f"Insufficient {GPU_RESOURCE}" in unschedulable_reason(pods["pending"][0])
    assert "untolerated taint" in unschedulable_reason(pods["untolerated"][0])


def test_resource_quota_rejects_second_gpu_pod_and_reports_usage(core, namespace):
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "gpus"},
        "spec": {"hard": {f"requests.{GPU_RESOURCE}": "1"}},
    }
    core.create_namespaced_resource_quota(namespace, quota)
    # Admission counts against status.hard, which the resourcequota controller fills in.
    wait_for(
        lambda: core.read_namespaced_resource_quota("gpus", namespace).status.hard,
        30,
        "quota status",
    )

    core.create_namespaced_pod(namespace, gpu_pod_manifest("first"))
    with pytest.raises(ApiException) as rejected:
        core.create_namespaced_pod(namespace, gpu_pod_manifest("second"))

    assert rejected.value.status == 403
    assert "exceeded quota: gpus" in rejected.value.body
    used = wait_for(
        lambda: (core.read_namespaced_resource_quota("gpus", namespace).status.used or {}).get(
            f"requests.{GPU_RESOURCE}"
        ),
        30,
        "quota usage",
    )
    assert used == "1"


# --- CustomResourceDefinition -----------------------------------------------------------------

WIDGETS = {"group": "e2e.audioproc.io", "version": "v1", "plural": "widgets"}


@pytest.fixture
def widget_crd(cluster: Cluster, api_client: client.ApiClient) -> Iterator[None]:
    crd_file = DATA / "widgets-crd.yaml"
    cluster.kubectl("apply", "-f", str(crd_file))
    cluster.kubectl("wait", "--for=condition=Established", "-f", str(crd_file), "--timeout=30s")
    yield
    cluster.kubectl("delete", "-f", str(crd_file), "--wait=true", "--timeout=60s")


def widget(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "e2e.audioproc.io/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_crd_is_served_validates_and_has_a_status_subresource(api_client, namespace, widget_crd):
    custom = client.CustomObjectsApi(api_client)
    created = custom.create_namespaced_custom_object(
        **WIDGETS, namespace=namespace, body=widget("ok", size=2)
    )
    assert created["spec"] == {"size": 2}

    for invalid, field in [
        (widget("zero", size=0), "spec.size"),
        (widget("green", size=1, color="green"), "spec.color"),
    ]:
        with pytest.raises(ApiException) as rejected:
            custom.create_namespaced_custom_object(**WIDGETS, namespace=namespace, body=invalid)
        assert rejected.value.status == 422
        assert field in rejected.value.body

    # Status goes through /status only: the main resource ignores it, and neither bumps the other.
    custom.patch_namespaced_custom_object(
        **WIDGETS, namespace=namespace, name="ok", body={"status": {"phase": "Ignored"}}
    )
    assert "status" not in custom.get_namespaced_custom_object(
        **WIDGETS, namespace=namespace, name="ok"
    )
    updated = custom.patch_namespaced_custom_object_status(
        **WIDGETS, namespace=namespace, name="ok", body={"status": {"phase": "Done"}}
    )
    assert updated["status"] == {"phase": "Done"}
    assert updated["metadata"]["generation"] == created["metadata"]["generation"]
    assert custom.get_namespaced_custom_object(**WIDGETS, namespace=namespace, name="ok")[
        "status"
    ] == {"phase": "Done"}
