"""The operator in Kueue mode against a real Kueue controller (e2e/kueue.py) on the local
control plane: kwok's CPU and GPU pools are two ResourceFlavors, each of two namespaces has a
ClusterQueue (both in one cohort, fair sharing on) and a LocalQueue ``team``.

The operator creates every Job suspended with the queue-name label; Kueue admits what the
quotas allow (borrowing within the cohort), the rest waits with its position from the
visibility API, and a namespace reclaiming its lent quota preempts the borrower. Pods are
kwok's: GPU pods stay Running (``e2e.audioproc.io/manual``) until the test finishes them.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from e2e.helpers import NAMESPACE_LABEL, Kube, OperatorProcess, finish_pod, wait_for
from e2e.kueue import JOB_NAMESPACE_LABEL, KueueController, kueue_missing
from e2e.operator_support import operator_service_account_kubeconfig

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RBAC = ROOT / "crds" / "rbac.yaml"
KUEUE_API = "kueue.x-k8s.io/v1beta2"
COHORT = "audioproc-e2e"
GPUS_PER_QUEUE = 2  # nominal GPU quota of each ClusterQueue; kwok's GPU pool has 4 GPUs
MANUAL = {"e2e.audioproc.io/manual": "true"}


# ---------------------------------------------------------------------- objects


def flavors() -> list[dict[str, Any]]:
    """The GPU and CPU pools (kwok nodes labelled audioproc.io/pool) as ResourceFlavors."""
    return [
        {
            "apiVersion": KUEUE_API,
            "kind": "ResourceFlavor",
            "metadata": {"name": f"{pool}-pool"},
            "spec": {"nodeLabels": {"audioproc.io/pool": pool}},
        }
        for pool in ("gpu", "cpu")
    ]


def cluster_queue(name: str, namespace: str) -> dict[str, Any]:
    """A ClusterQueue for one namespace in the shared cohort: it lends what it does not use and
    reclaims it by preemption; GPU pods may only use the gpu-pool flavor (node selector)."""

    def quota(cpu: int, memory: str, gpus: int) -> list[dict[str, Any]]:
        return [
            {"name": "cpu", "nominalQuota": cpu},
            {"name": "memory", "nominalQuota": memory},
            {"name": "nvidia.com/gpu", "nominalQuota": gpus},
        ]

    return {
        "apiVersion": KUEUE_API,
        "kind": "ClusterQueue",
        "metadata": {"name": name},
        "spec": {
            "cohortName": COHORT,
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "queueingStrategy": "BestEffortFIFO",
            "preemption": {"reclaimWithinCohort": "Any", "withinClusterQueue": "Never"},
            "resourceGroups": [
                {
                    "coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
                    "flavors": [
                        {"name": "gpu-pool", "resources": quota(8, "64Gi", GPUS_PER_QUEUE)},
                        {"name": "cpu-pool", "resources": quota(8, "32Gi", 0)},
                    ],
                }
            ],
        },
    }


def local_queue(namespace: str, cluster_queue_name: str) -> dict[str, Any]:
    return {
        "apiVersion": KUEUE_API,
        "kind": "LocalQueue",
        "metadata": {"name": "team", "namespace": namespace},
        "spec": {"clusterQueue": cluster_queue_name},
    }


def audiojob(name: str, n_items: int, queue: str | None = "team", **spec: Any) -> dict[str, Any]:
    items = [
        {"inputUri": f"s3://media/{name}/v{i}.mp4", "videoId": f"v{i}"} for i in range(n_items)
    ]
    return {
        "apiVersion": "audioproc.io/v1alpha1",
        "kind": "AudioJob",
        "metadata": {
            "name": name,
            "annotations": {"audioproc.io/pod-annotations": json.dumps(MANUAL)},
        },
        "spec": {"items": items, **({"queueName": queue} if queue else {}), **spec},
    }


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def kueue(
    cluster: Any, audiojob_crd: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[KueueController]:
    missing = kueue_missing()
    if missing:
        pytest.skip(missing)
    controller = KueueController(cluster, tmp_path_factory.mktemp("kueue")).start()
    yield controller
    controller.stop()


@pytest.fixture
def team_namespaces(cluster: Any, kueue: KueueController) -> Iterator[tuple[str, str]]:
    """Two namespaces, each with its ClusterQueue in the cohort and a LocalQueue ``team``."""
    suffix = secrets.token_hex(3)
    names = (f"e2e-kueue-a-{suffix}", f"e2e-kueue-b-{suffix}")
    label_key, label_value = JOB_NAMESPACE_LABEL
    objects: list[dict[str, Any]] = [*flavors()]
    for namespace in names:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": namespace,
                    "labels": {NAMESPACE_LABEL: "true", label_key: label_value},
                },
            }
        )
        objects.append(cluster_queue(f"cq-{namespace}", namespace))
        objects.append(local_queue(namespace, f"cq-{namespace}"))
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))
    for namespace in names:
        wait_for(
            lambda ns=namespace: (
                cluster.kubectl(
                    "get", "serviceaccount", "default", "-n", ns, check=False
                ).returncode
                == 0
            ),
            timeout=30,
            what=f"ServiceAccount default in {namespace}",
        )
    yield names
    for namespace in names:
        Kube(cluster, namespace).run("delete", "audiojobs", "--all", "--timeout=30s", check=False)
    cluster.kubectl("delete", "namespace", *names, "--wait=false", check=False)
    cluster.kubectl(
        "delete", "clusterqueue", *(f"cq-{ns}" for ns in names), "--wait=false", check=False
    )


@pytest.fixture
def operator_kubeconfig(cluster: Any, tmp_path: Path) -> Path:
    """The operator's ServiceAccount token (crds/rbac.yaml): its visibility rule is tested."""
    return operator_service_account_kubeconfig(cluster, tmp_path / "operator-kubeconfig")


@pytest.fixture
def operator(
    team_namespaces: tuple[str, str], operator_kubeconfig: Path, tmp_path: Path
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(
        operator_kubeconfig,
        team_namespaces[0],
        tmp_path,
        OPERATOR_NAMESPACES=json.dumps(list(team_namespaces)),
        OPERATOR_ALLOW_POD_ANNOTATIONS="true",
        MAX_GPU_WORKERS="0",  # the operator's own GPU placement would grant none: Kueue does
        OPERATOR_DEFAULT_QUEUE_NAME="team",  # for AudioJobs without spec.queueName
    )
    process.start()
    yield process
    process.stop()


# ---------------------------------------------------------------------- helpers


def status_of(kube: Kube, name: str) -> dict[str, Any]:
    return kube.audiojob(name).get("status") or {}


def admitted(kube: Kube, name: str) -> Callable[[], dict[str, Any] | None]:
    def probe() -> dict[str, Any] | None:
        status = status_of(kube, name)
        return status if (status.get("queue") or {}).get("admitted") else None

    return probe


def queued_with_position(kube: Kube, name: str) -> Callable[[], Any]:
    def probe() -> dict[str, Any] | None:
        status = status_of(kube, name)
        queue = status.get("queue") or {}
        if status.get("phase") != "Pending" or queue.get("admitted") is not False:
            return None
        if queue.get("positionInLocalQueue") is None:
            return None
        return status

    return probe


def finish_running_pods(core: client.CoreV1Api, namespace: str) -> int:
    """Play the kubelet: the manual pods that run now exit 0. Returns how many."""
    finished = 0
    for pod in core.list_namespaced_pod(namespace, field_selector="status.phase=Running").items:
        if pod.metadata.deletion_timestamp is None:
            finish_pod(core, namespace, pod.metadata.name, 0)
            finished += 1
    return finished


def gpu_pods(core: client.CoreV1Api, namespace: str, audiojob: str) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(
        namespace, label_selector=f"audioproc.io/audiojob={audiojob}"
    ).items
    return [
        p for p in pods if p.status.phase == "Running" and p.metadata.deletion_timestamp is None
    ]


# ---------------------------------------------------------------------- the test


def test_kueue_admits_within_quota_queues_the_rest_lends_and_reclaims(
    cluster: Any,
    api_client: client.ApiClient,
    kueue: KueueController,
    team_namespaces: tuple[str, str],
    operator: OperatorProcess,
) -> None:
    ns_a, ns_b = team_namespaces
    a, b = Kube(cluster, ns_a), Kube(cluster, ns_b)
    core = client.CoreV1Api(api_client)

    # Namespace a: two GPU AudioJobs of 2 pods each fill its quota (2 GPUs) and borrow b's
    # idle 2 GPUs through the cohort; two more wait, with their positions.
    for name in ("a1", "a2"):
        a.create(audiojob(name, 2, device="gpu", concurrency=2))
        wait_for(admitted(a, name), timeout=90, what=f"{name} admitted by Kueue")
    job = a.json("get", "job", "a1-0")
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team"
    assert not job["spec"].get("suspend"), "Kueue unsuspends the Job it admits"
    wait_for(
        lambda: len(gpu_pods(core, ns_a, "a1")) + len(gpu_pods(core, ns_a, "a2")) == 4 or None,
        timeout=60,
        what="4 GPU pods running in namespace a (2 of its own quota, 2 borrowed)",
    )
    usage = cluster.kubectl("get", "clusterqueue", f"cq-{ns_a}", "-o", "json").stdout
    reserved = {
        (f["name"], r["name"]): r
        for f in json.loads(usage)["status"]["flavorsReservation"]
        for r in f["resources"]
    }
    assert reserved[("gpu-pool", "nvidia.com/gpu")]["total"] == "4"
    assert reserved[("gpu-pool", "nvidia.com/gpu")]["borrowed"] == "2"

    for name in ("a3", "a4"):
        a.create(audiojob(name, 1, device="auto", concurrency=1))
    waiting = {
        name: wait_for(queued_with_position(a, name), timeout=60, what=f"{name} queued in Kueue")
        for name in ("a3", "a4")
    }
    for name, status in waiting.items():
        assert status["message"].startswith("queued in Kueue (LocalQueue team)"), status
        assert status["device"] == "gpu", "auto waits in Kueue for GPU quota"
        assert a.json("get", "job", f"{name}-0")["spec"]["suspend"] is True
    positions = sorted(s["queue"]["positionInLocalQueue"] for s in waiting.values())
    assert positions == [0, 1], waiting
    print("\n" + a.run("get", "aj", "-o", "wide").stdout)
    print(a.run("describe", "aj", "a4").stdout)

    # Namespace b: a CPU AudioJob runs on the cpu-pool flavor; then a GPU AudioJob reclaims
    # b's lent GPUs: Kueue preempts a borrower in a, whose AudioJob is queued again.
    b.create(audiojob("b-cpu", 1, device="cpu", concurrency=1))
    wait_for(admitted(b, "b-cpu"), timeout=60, what="b-cpu admitted")
    b.create(audiojob("b-gpu", 2, device="gpu", concurrency=2))
    wait_for(admitted(b, "b-gpu"), timeout=90, what="b-gpu admitted by reclaiming b's quota")
    preempted = wait_for(
        lambda: (
            [n for n in ("a1", "a2") if not (status_of(a, n).get("queue") or {}).get("admitted")]
            or None
        ),
        timeout=60,
        what="a borrower in namespace a preempted",
    )
    status = status_of(a, preempted[0])
    assert status["phase"] == "Pending" and status["message"].startswith("queued in Kueue")
    events = a.json("get", "events", "--field-selector", f"involvedObject.name={preempted[0]}")
    reasons = {e["reason"] for e in events["items"]}
    assert {"Queued", "Admitted"} <= reasons, reasons

    # Finish every running pod until all AudioJobs complete: the queued ones get admitted.
    names = {ns_a: ["a1", "a2", "a3", "a4"], ns_b: ["b-cpu", "b-gpu"]}

    def all_completed() -> bool | None:
        for namespace in names:
            finish_running_pods(core, namespace)
        phases = [
            status_of(Kube(cluster, ns), n).get("phase")
            for ns, ns_names in names.items()
            for n in ns_names
        ]
        assert "Failed" not in phases and "PartiallyCompleted" not in phases, phases
        return all(p == "Completed" for p in phases) or None

    wait_for(all_completed, timeout=240, what="every AudioJob Completed", interval=1.0)
    pools = {
        n["metadata"]["name"]: n["metadata"]["labels"].get("audioproc.io/pool")
        for n in a.json("get", "nodes")["items"]
    }
    for namespace, ns_names in names.items():
        for name in ns_names:
            device = status_of(Kube(cluster, namespace), name)["device"]
            pods = Kube(cluster, namespace).pods(name)
            assert {pools[p["spec"]["nodeName"]] for p in pods} == {device}, (name, device)


def test_suspend_deactivates_the_workload_and_resume_queues_it_again(
    cluster: Any,
    api_client: client.ApiClient,
    kueue: KueueController,
    team_namespaces: tuple[str, str],
    operator: OperatorProcess,
) -> None:
    ns_a, _ = team_namespaces
    a = Kube(cluster, ns_a)
    core = client.CoreV1Api(api_client)
    a.create(audiojob("s1", 2, queue=None, device="gpu", concurrency=2))
    status = wait_for(admitted(a, "s1"), timeout=90, what="s1 admitted by Kueue")
    assert status["queue"]["localQueue"] == "team", "the operator's default LocalQueue"
    wait_for(lambda: len(gpu_pods(core, ns_a, "s1")) == 2 or None, timeout=60, what="2 pods")

    a.run("patch", "aj", "s1", "--type=merge", "-p", '{"spec":{"suspend":true}}')

    def suspended() -> bool | None:
        job_suspended = a.json("get", "job", "s1-0")["spec"].get("suspend")
        return (job_suspended and status_of(a, "s1").get("phase") == "Suspended") or None

    wait_for(suspended, timeout=60, what="s1 Suspended, its Job suspended by Kueue")
    workloads = [
        w
        for w in a.json("get", "workloads.kueue.x-k8s.io")["items"]
        if any(o["name"] == "s1-0" for o in w["metadata"].get("ownerReferences", []))
    ]
    assert [w["spec"]["active"] for w in workloads] == [False]
    wait_for(lambda: not gpu_pods(core, ns_a, "s1") or None, timeout=60, what="s1's pods gone")

    a.run("patch", "aj", "s1", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    wait_for(admitted(a, "s1"), timeout=90, what="s1 admitted again after resume")

    def completed() -> bool | None:
        finish_running_pods(core, ns_a)
        return status_of(a, "s1").get("phase") == "Completed" or None

    wait_for(completed, timeout=120, what="s1 Completed", interval=1.0)
    reasons = [
        e["reason"]
        for e in a.json("get", "events", "--field-selector", "involvedObject.name=s1")["items"]
    ]
    assert {"Queued", "Admitted", "Suspended", "Resumed", "Completed"} <= set(reasons), reasons
