"""Fair share of the GPU pool between namespaces, without Kueue, under load on kwok GPUs.

Two namespaces each submit 50 one-item ``gpu`` AudioJobs at once to one operator watching
both, capped (``MAX_GPU_WORKERS``) at the kwok GPU pool's capacity. The queue order of
``audioproc_operator.quota`` (the namespace holding the fewest GPUs first, then higher
``priority``, then fewer items, then the older; docs/operator.md, Device placement) must
give the two namespaces GPU pod-seconds within 10 % of each other over the contended period,
and a high-priority AudioJob submitted last must take the next GPU its namespace gets, ahead
of that namespace's 40-odd older AudioJobs.

GPU pod-seconds are read from the pods: ``status.startTime`` (kwok's pod-ready stage: Running)
to the container's ``finishedAt`` (e2e/kwok/pod-job-succeed.yaml, after the run duration).
The start order is observed by polling the AudioJobs: an AudioJob starts when its status
shows ``device: gpu`` (the operator writes its placement before its Job exists).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from audioproc.models.audiojob import GROUP, PLURAL, VERSION
from e2e.helpers import NAMESPACE_LABEL, RUN_DURATION_ANNOTATION, Kube, OperatorProcess, wait_for
from e2e.nodes import GPU_RESOURCE, POOL_LABEL

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

AUDIOJOBS_PER_NAMESPACE = 50
RUN_SECONDS = 5  # each pod's kwok run time: long against the API's 1 s timestamp resolution
HIGH_PRIORITY = 100
FAIR_SHARE_TOLERANCE = 0.10  # GPU pod-seconds of the two namespaces, relative to the larger


def gpu_audiojob(name: str, priority: int = 0) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AudioJob",
        "metadata": {
            "name": name,
            "annotations": {
                "audioproc.io/pod-annotations": json.dumps(
                    {RUN_DURATION_ANNOTATION: f"{RUN_SECONDS}s"}
                )
            },
        },
        "spec": {
            "items": [{"inputUri": f"s3://media/{name}.mp4", "videoId": name}],
            "device": "gpu",
            "concurrency": 1,
            "priority": priority,
        },
    }


def gpu_capacity(core: client.CoreV1Api) -> int:
    nodes = core.list_node(label_selector=f"{POOL_LABEL}=gpu").items
    return sum(int((n.status.allocatable or {}).get(GPU_RESOURCE, 0)) for n in nodes)


def gpus_in_use(core: client.CoreV1Api) -> int:
    """GPUs requested by unfinished pods anywhere (other tests' pods included)."""
    pods = core.list_pod_for_all_namespaces(
        field_selector="status.phase!=Succeeded,status.phase!=Failed"
    ).items
    return sum(
        int((c.resources.limits or {}).get(GPU_RESOURCE, 0))
        for p in pods
        for c in p.spec.containers
        if c.resources
    )


def parse_time(value: str) -> float:
    """An RFC 3339 timestamp of the API (whole seconds) as epoch seconds."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def pod_interval(pod: dict[str, Any]) -> tuple[float, float]:
    """(Running since, finished at) of a finished kwok pod, epoch seconds."""
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    return parse_time(pod["status"]["startTime"]), parse_time(terminated["finishedAt"])


def pod_seconds(intervals: list[tuple[float, float]], start: float, end: float) -> float:
    """Seconds of pod run time inside [start, end] (each pod holds one GPU)."""
    return sum(max(0.0, min(b, end) - max(a, start)) for a, b in intervals)


@dataclass
class StartOrder:
    """When each AudioJob was first seen with a status, and with ``device: gpu``, by poll round.

    A background thread lists the AudioJobs of every namespace once per round; within a
    namespace one list is one consistent snapshot, so rounds order that namespace's starts.
    """

    custom: client.CustomObjectsApi
    namespaces: list[str]
    seen: dict[tuple[str, str], int] = field(default_factory=dict)  # (ns, name) -> round
    started: dict[tuple[str, str], int] = field(default_factory=dict)
    rounds: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> StartOrder:
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(timeout=30)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.rounds += 1
            for namespace in self.namespaces:
                listed = self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL
                )
                for obj in listed["items"]:
                    key = (namespace, obj["metadata"]["name"])
                    status = obj.get("status") or {}
                    if status:
                        self.seen.setdefault(key, self.rounds)
                    if status.get("device") == "gpu":
                        self.started.setdefault(key, self.rounds)
            self._stop.wait(0.2)

    def sequence(self) -> list[tuple[str, str]]:
        """Every started AudioJob, in start order (ties: by namespace and name)."""
        return sorted(self.started, key=lambda key: (self.started[key], key))


@pytest.fixture
def two_namespaces(namespace: str, api_client: client.ApiClient) -> Iterator[list[str]]:
    """The test's namespace and a second one, deleted afterwards."""
    core = client.CoreV1Api(api_client)
    second = f"{namespace}-b"
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=second, labels={NAMESPACE_LABEL: "true"})
        )
    )
    wait_for(
        lambda: (
            core.list_namespaced_service_account(
                second, field_selector="metadata.name=default"
            ).items
        ),
        timeout=30,
        what=f"ServiceAccount default in {second}",
    )
    yield [namespace, second]
    core.delete_namespace(second)


# Some 100 AudioJobs through 4 GPUs one after another: 7 minutes on a shared 2-core machine.
@pytest.mark.timeout(1800)
def test_two_namespaces_share_the_gpus_and_priority_jumps_the_queue(
    cluster: Any,
    audiojob_crd: None,
    api_client: client.ApiClient,
    two_namespaces: list[str],
    tmp_path: Path,
) -> None:
    core = client.CoreV1Api(api_client)
    kubes = [Kube(cluster, ns) for ns in two_namespaces]
    gpus = gpu_capacity(core)
    assert gpus >= 2, "the kwok GPU pool needs two GPUs at least"
    wait_for(lambda: gpus_in_use(core) == 0, 120, "GPUs used by other tests to be released")
    operator = OperatorProcess(
        cluster.kubeconfig,
        two_namespaces[0],
        tmp_path,
        OPERATOR_NAMESPACES=json.dumps(two_namespaces),
        OPERATOR_ALLOW_POD_ANNOTATIONS="true",
        # The operator hands out what the pool has: every grant is a pod that runs at once.
        MAX_GPU_WORKERS=str(gpus),
    )
    operator.start()
    try:
        with StartOrder(client.CustomObjectsApi(api_client), two_namespaces) as order:
            names = [f"clip-{i:02d}" for i in range(AUDIOJOBS_PER_NAMESPACE)]
            batches = [
                {"apiVersion": "v1", "kind": "List", "items": [gpu_audiojob(n) for n in names]}
                for _ in kubes
            ]
            with ThreadPoolExecutor(len(kubes)) as pool:  # both namespaces at once
                list(pool.map(lambda kb: kb[0].create(kb[1]), zip(kubes, batches, strict=True)))
            # Contended: two rounds of GPUs handed out, some 45 AudioJobs waiting per namespace.
            wait_for(lambda: len(order.started) >= 2 * gpus, 120, f"{2 * gpus} AudioJobs started")
            hp_namespace = two_namespaces[0]
            kubes[0].create(gpu_audiojob("urgent", priority=HIGH_PRIORITY))
            hp = (hp_namespace, "urgent")
            total = len(kubes) * AUDIOJOBS_PER_NAMESPACE + 1

            def all_finished() -> bool:
                done = 0
                for kube in kubes:
                    for aj in kube.json("get", "audiojobs")["items"]:
                        phase = (aj.get("status") or {}).get("phase")
                        assert phase != "Failed", aj["metadata"]["name"]
                        done += phase == "Completed"
                return done == total

            wait_for(all_finished, 1500, f"all {total} AudioJobs Completed", interval=2)
        sequence = order.sequence()
        pods = {kube.namespace: kube.json("get", "pods")["items"] for kube in kubes}
    finally:
        # Deleted while the operator runs: it removes its finalizers, so the namespaces can go.
        for kube in kubes:
            kube.run("delete", "audiojobs", "--all", "--timeout=60s", check=False)
        operator.stop()

    # --- the high-priority AudioJob took its namespace's next GPU
    seen = order.seen[hp]
    placed_between = [
        key for key in sequence if key != hp and seen < order.started[key] < order.started[hp]
    ]
    same_namespace = [key for key in placed_between if key[0] == hp_namespace]
    older_waiting = [
        key
        for key in sequence
        if key[0] == hp_namespace and key != hp and order.started[key] > seen
    ]
    print(
        f"\n[fairshare] urgent: seen in round {seen}, started in round {order.started[hp]}; "
        f"started in between: {len(same_namespace)} of its namespace "
        f"({len(older_waiting)} older ones were waiting), "
        f"{len(placed_between) - len(same_namespace)} of the other"
    )
    # Two GPUs of its namespace freed in one moment: the AudioJob whose reconcile comes first
    # takes one, the urgent one the other; without priority it would wait for the older ones.
    assert len(same_namespace) <= 1, same_namespace
    assert len(older_waiting) >= AUDIOJOBS_PER_NAMESPACE // 2, "it was submitted to a long queue"

    # --- GPU pod-seconds over the contended period
    intervals = {ns: [pod_interval(p) for p in pods[ns]] for ns in two_namespaces}
    assert all(len(intervals[ns]) >= AUDIOJOBS_PER_NAMESPACE for ns in two_namespaces)
    start = min(a for ns in two_namespaces for a, _ in intervals[ns])
    # Contended until the first namespace has no AudioJob left waiting: its last start.
    end = min(max(a for a, _ in intervals[ns]) for ns in two_namespaces)
    share = {ns: pod_seconds(intervals[ns], start, end) for ns in two_namespaces}
    first, second = (share[ns] for ns in two_namespaces)
    letters = {ns: "AB"[i] for i, ns in enumerate(two_namespaces)}
    print(
        f"[fairshare] contended period {end - start:.0f} s on {gpus} GPUs: GPU pod-seconds "
        f"A {first:.0f}, B {second:.0f} (difference {abs(first - second) / max(first, second):.1%})"
    )
    print(
        "[fairshare] start order: "
        + "".join("*" if key == hp else letters[key[0]] for key in sequence)
    )
    assert abs(first - second) <= FAIR_SHARE_TOLERANCE * max(first, second), share
    assert end - start > 10 * RUN_SECONDS, "the namespaces must have contended for a while"
