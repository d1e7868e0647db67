"""The AudioJob operator against the local control plane (etcd, kube-apiserver,
controller-manager, scheduler, kwok CPU and GPU nodes).

Each test starts the operator as a subprocess watching only its own namespace, so tests
do not share GPU bookkeeping. kwok plays the kubelet: pods of Jobs succeed after a short
run, or fail with the exit code of the pod annotation ``e2e.audioproc.io/exit-code`` (only
the completion indexes listed in ``e2e.audioproc.io/fail-indexes`` when that is set); pods
annotated ``e2e.audioproc.io/manual`` are left Running for the test to finish itself. Pod
annotations reach the pods through the AudioJob annotation ``audioproc.io/pod-annotations``
(operator setting ``OPERATOR_ALLOW_POD_ANNOTATIONS``).
GPUs are kwok capacity (``nvidia.com/gpu``): no GPU code runs here.
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import wave
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from audioproc.models.pod_contract import TerminationMessage, parse_termination_message
from e2e.helpers import (
    COMPLETION_INDEX_ANNOTATION,
    Kube,
    OperatorProcess,
    finish_pod,
    phase_is,
    wait_for,
)
from e2e.operator_support import ROOT, audiojob, gpu_quota, node_pools

pytestmark = pytest.mark.e2e


def test_cpu_batch_completes_with_manifest_uris(
    kube: Kube, start_operator: Callable[..., OperatorProcess], operator_kubeconfig: Path
) -> None:
    # The operator runs with its ServiceAccount's token: crds/rbac.yaml must be enough.
    start_operator(kubeconfig=operator_kubeconfig)
    kube.create(audiojob("cpu5", 5, device="cpu", concurrency=2, output="s3://features/runs"))
    status = wait_for(
        what="cpu5 Completed",
        check=phase_is(kube, "cpu5", "Completed", "Failed", "PartiallyCompleted"),
        timeout=90,
    )
    assert (
        status["phase"] == "Completed" and status["progress"] == 1.0 and status["device"] == "cpu"
    )
    assert status["counts"] == {"total": 5, "succeeded": 5, "failed": 0, "active": 0}
    assert sorted(item["manifestUri"] for item in status["items"]) == [
        f"s3://features/runs/cpu5/v{i}/manifest.json" for i in range(5)
    ]
    pools = node_pools(kube)
    assert {pools[p["spec"]["nodeName"]] for p in kube.pods("cpu5")} == {"cpu"}
    table = kube.run("get", "aj").stdout.splitlines()
    assert table[0].split() == "NAME PHASE PROGRESS DEVICE ITEMS SUCCEEDED FAILED AGE".split()
    assert table[1].split()[:7] == ["cpu5", "Completed", "1", "cpu", "5", "5", "0"]


def test_auto_takes_gpus_while_the_quota_allows(
    kube: Kube, start_operator: Callable[..., OperatorProcess]
) -> None:
    gpu_quota(kube, 2)
    start_operator(MAX_GPU_WORKERS="8")
    for i in range(3):
        kube.create(
            audiojob(
                f"auto{i}",
                2,
                device="auto",
                concurrency=1,
                pod_annotations={"e2e.audioproc.io/run-duration": "2s"},
            )
        )

    def devices() -> list[str] | None:
        placed = [(kube.audiojob(f"auto{i}").get("status") or {}).get("device") for i in range(3)]
        return placed if all(placed) else None

    assert sorted(wait_for(what="all three placed", check=devices, timeout=60)) == [
        "cpu",
        "gpu",
        "gpu",
    ]
    pools = node_pools(kube)
    for i in range(3):
        status = wait_for(
            what=f"auto{i} finished",
            check=phase_is(kube, f"auto{i}", "Completed", "Failed"),
            timeout=90,
        )
        assert status["phase"] == "Completed"
        assert {pools[p["spec"]["nodeName"]] for p in kube.pods(f"auto{i}")} == {status["device"]}
        for pod in kube.pods(f"auto{i}"):
            limits = pod["spec"]["containers"][0]["resources"].get("limits", {})
            assert ("nvidia.com/gpu" in limits) is (status["device"] == "gpu")


def test_gpu_request_waits_for_a_free_gpu(
    kube: Kube, start_operator: Callable[..., OperatorProcess]
) -> None:
    gpu_quota(kube, 2)
    start_operator(MAX_GPU_WORKERS="8")
    names = ["gpu0", "gpu1", "gpu2"]
    for i, name in enumerate(names):
        kube.create(
            audiojob(
                name,
                1,
                device="gpu",
                concurrency=1,
                priority=10 - i,
                pod_annotations={"e2e.audioproc.io/run-duration": "5s"},
            )
        )

    def third_waits() -> dict[str, Any] | None:
        status = kube.audiojob("gpu2").get("status") or {}
        return status if "waiting for a GPU" in (status.get("message") or "") else None

    waiting = wait_for(third_waits, timeout=30, what="gpu2 waiting for a GPU")
    assert waiting["phase"] == "Pending" and "device" not in waiting
    assert {kube.audiojob(n)["status"].get("device") for n in names[:2]} == {"gpu"}
    finals = {
        n: wait_for(
            what=f"{n} finished", check=phase_is(kube, n, "Completed", "Failed"), timeout=90
        )
        for n in names
    }
    assert all(s["phase"] == "Completed" and s["device"] == "gpu" for s in finals.values())
    # The third started only once one of the first two had finished and freed its GPU.
    first_free = min(datetime.fromisoformat(finals[n]["completionTime"]) for n in names[:2])
    assert datetime.fromisoformat(finals["gpu2"]["startTime"]) >= first_free
    pools = node_pools(kube)
    assert {pools[p["spec"]["nodeName"]] for n in names for p in kube.pods(n)} == {"gpu"}


def running_pods(kube: Kube, name: str, done: set[str]) -> list[dict[str, Any]]:
    return [
        p
        for p in kube.pods(name)
        if p["status"].get("phase") == "Running" and p["metadata"]["name"] not in done
    ]


def test_failing_item_is_retried_then_recorded_while_others_complete(
    kube: Kube, core: client.CoreV1Api, start_operator: Callable[..., OperatorProcess]
) -> None:
    start_operator()
    kube.create(
        audiojob(
            "flaky",
            4,
            device="cpu",
            concurrency=4,
            retriesPerItem=1,
            pod_annotations={"e2e.audioproc.io/manual": "true"},
        )
    )
    done: set[str] = set()
    finished = phase_is(kube, "flaky", "Completed", "PartiallyCompleted", "Failed")

    def play_kubelet() -> dict[str, Any] | None:
        for pod in running_pods(kube, "flaky", done):
            name, index = (
                pod["metadata"]["name"],
                int(pod["metadata"]["annotations"][COMPLETION_INDEX_ANNOTATION]),
            )
            if index == 2:  # an internal error (exit 1): worth a retry
                result = TerminationMessage(
                    video_id="v2",
                    status="error",
                    manifest_uri=None,
                    device=None,
                    error="decoder crashed",
                )
            else:
                result = TerminationMessage(
                    video_id=f"v{index}",
                    status="ok",
                    device="cpu",
                    error=None,
                    manifest_uri=f"file:///data/audioproc/flaky/v{index}/manifest.json",
                )
            finish_pod(
                core, kube.namespace, name, 0 if result.status == "ok" else 1, result.to_line()
            )
            done.add(name)
        return finished()

    wait_for(play_kubelet, timeout=90, what="flaky to finish", interval=0.5)
    status = kube.audiojob("flaky")["status"]
    assert status["phase"] == "PartiallyCompleted"
    assert status["counts"]["succeeded"] == 3 and status["counts"]["failed"] == 1
    failed = [item for item in status["items"] if item["phase"] == "Failed"]
    assert failed == [
        {
            "index": 2,
            "videoId": "v2",
            "phase": "Failed",
            "device": "cpu",
            "error": "decoder crashed",
        }
    ]
    tries = Counter(
        p["metadata"]["annotations"][COMPLETION_INDEX_ANNOTATION] for p in kube.pods("flaky")
    )
    assert tries == {
        "0": 1,
        "1": 1,
        "2": 2,
        "3": 1,
    }  # retried once (retriesPerItem: 1), others ran once


@pytest.mark.parametrize(
    ("exit_code", "pods_per_item"),
    [("1", 2), ("3", 1)],
    ids=["internal-retried", "input-not-retried"],
)
def test_exit_code_decides_retries(
    kube: Kube, start_operator: Callable[..., OperatorProcess], exit_code: str, pods_per_item: int
) -> None:
    start_operator()
    kube.create(
        audiojob(
            "bad",
            2,
            device="cpu",
            concurrency=2,
            retriesPerItem=1,
            pod_annotations={"e2e.audioproc.io/exit-code": exit_code},
        )
    )
    status = wait_for(
        what="bad finished",
        check=phase_is(kube, "bad", "Completed", "PartiallyCompleted", "Failed"),
        timeout=120,
    )
    assert status["phase"] == "Failed" and status["counts"]["failed"] == 2
    assert all(item["error"].startswith(f"exit code {exit_code}") for item in status["items"])
    tries = Counter(
        p["metadata"]["annotations"][COMPLETION_INDEX_ANNOTATION] for p in kube.pods("bad")
    )
    assert tries == {"0": pods_per_item, "1": pods_per_item}


@pytest.mark.parametrize(
    ("exit_code", "tries"), [(None, 2), ("3", 1)], ids=["internal-retried", "input-not-retried"]
)
def test_one_failing_item_through_kwok_fails_only_itself(
    kube: Kube, start_operator: Callable[..., OperatorProcess], exit_code: str | None, tries: int
) -> None:
    """kwok fails index 1 alone (stage pod-fail-indexes): no test code plays the kubelet."""
    start_operator()
    annotations = {"e2e.audioproc.io/fail-indexes": "1"}
    if exit_code:
        annotations["e2e.audioproc.io/exit-code"] = exit_code
    kube.create(
        audiojob(
            "one-bad", 4, device="cpu", concurrency=4, retriesPerItem=1, pod_annotations=annotations
        )
    )
    status = wait_for(
        what="one-bad finished",
        timeout=120,
        check=phase_is(kube, "one-bad", "Completed", "PartiallyCompleted", "Failed"),
    )
    assert status["phase"] == "PartiallyCompleted"
    assert status["counts"] == {"total": 4, "succeeded": 3, "failed": 1, "active": 0}
    (failed,) = [item for item in status["items"] if item["phase"] == "Failed"]
    assert failed["index"] == 1 and failed["videoId"] == "v1"
    assert failed["error"].startswith(f"exit code {exit_code or 1}")
    assert sorted(item["index"] for item in status["items"] if item["phase"] == "Succeeded") == [
        0,
        2,
        3,
    ]
    job = kube.json("get", "job", "one-bad-0")
    assert job["status"]["failedIndexes"] == "1" and job["status"]["failed"] == tries
    tries_per_index = Counter(
        p["metadata"]["annotations"][COMPLETION_INDEX_ANNOTATION] for p in kube.pods("one-bad")
    )
    assert tries_per_index == {"0": 1, "1": tries, "2": 1, "3": 1}


def test_operator_killed_mid_batch_loses_and_repeats_nothing(
    kube: Kube, start_operator: Callable[..., OperatorProcess]
) -> None:
    operator = start_operator(OPERATOR_CHUNK_SIZE="10")
    kube.create(audiojob("big", 50, device="cpu", concurrency=5))

    def jobs_recorded(n: int) -> Callable[[], bool]:
        return lambda: len((kube.audiojob("big").get("status") or {}).get("jobs") or []) >= n

    # Killed twice, each time while a chunk is running and the next is still to be made.
    for chunks in (2, 4):
        wait_for(jobs_recorded(chunks), timeout=90, what=f"Job {chunks} of 5")
        operator.kill()
        operator.start()
    status = wait_for(
        what="big finished",
        check=phase_is(kube, "big", "Completed", "PartiallyCompleted", "Failed"),
        timeout=150,
    )
    assert status["phase"] == "Completed" and status["counts"]["succeeded"] == 50
    assert status["succeededIndexes"] == "0-49"
    jobs = kube.json("get", "jobs")["items"]
    assert sorted(j["metadata"]["name"] for j in jobs) == [f"big-{c}" for c in range(5)]
    assert status["jobs"] == [f"big-{c}" for c in range(5)]
    assert all(j["status"].get("succeeded") == 10 for j in jobs)
    # Every item ran in exactly one pod: nothing lost, nothing run twice.
    runs = Counter(
        (
            p["metadata"]["labels"]["audioproc.io/chunk"],
            p["metadata"]["annotations"][COMPLETION_INDEX_ANNOTATION],
        )
        for p in kube.pods("big")
    )
    assert len(runs) == 50 and set(runs.values()) == {1}
    configmaps = kube.json("get", "configmaps", "-l", "audioproc.io/audiojob=big")["items"]
    assert len(configmaps) == 5


def test_suspend_stops_the_pods_and_resume_finishes(
    kube: Kube, start_operator: Callable[..., OperatorProcess]
) -> None:
    start_operator()
    kube.create(
        audiojob(
            "pausable",
            6,
            device="cpu",
            concurrency=1,
            pod_annotations={"e2e.audioproc.io/run-duration": "3s"},
        )
    )
    wait_for(
        lambda: (kube.audiojob("pausable").get("status") or {}).get("jobs"),
        timeout=60,
        what="its Job",
    )
    kube.run("patch", "audiojob", "pausable", "--type=merge", "-p", '{"spec": {"suspend": true}}')
    suspended = wait_for(
        phase_is(kube, "pausable", "Suspended"), timeout=60, what="phase Suspended"
    )
    assert suspended["progress"] < 1.0
    wait_for(
        lambda: kube.json("get", "job", "pausable-0")["spec"]["suspend"],
        timeout=30,
        what="the Job suspended",
    )

    def no_pod_left_running() -> bool:
        return not [
            p
            for p in kube.pods("pausable")
            if p["status"].get("phase") in ("Pending", "Running")
            and not p["metadata"].get("deletionTimestamp")
        ]

    wait_for(no_pod_left_running, timeout=60, what="the running pod stopped")
    kube.run("patch", "audiojob", "pausable", "--type=merge", "-p", '{"spec": {"suspend": false}}')
    final = wait_for(
        phase_is(kube, "pausable", "Completed", "PartiallyCompleted", "Failed"),
        timeout=120,
        what="pausable finished after resume",
    )
    assert final["phase"] == "Completed" and final["counts"]["succeeded"] == 6


@pytest.mark.parametrize("recovery", ["operator-returns", "finalizer-removed-by-hand"])
def test_deleting_an_unfinished_audiojob_while_the_operator_is_down(
    kube: Kube, start_operator: Callable[..., OperatorProcess], recovery: str
) -> None:
    """kopf's timer finalizer holds the deletion until an operator runs, or until it is removed by
    hand (docs/operator.md); either way the children go by garbage collection."""
    operator = start_operator()
    kube.create(
        audiojob(
            "orphan",
            2,
            device="cpu",
            concurrency=2,
            pod_annotations={"e2e.audioproc.io/run-duration": "1h"},
        )
    )
    wait_for(
        lambda: len([p for p in kube.pods("orphan") if p["status"].get("phase") == "Running"]) == 2,
        timeout=60,
        what="both pods running",
    )
    assert kube.audiojob("orphan")["metadata"]["finalizers"] == ["audioproc.io/operator"]
    operator.kill()

    kube.run("delete", "audiojob", "orphan", "--wait=false")
    held = kube.audiojob("orphan")["metadata"]
    assert held.get("deletionTimestamp") and held["finalizers"] == ["audioproc.io/operator"]
    if recovery == "operator-returns":
        operator.start()
    else:
        kube.run(
            "patch",
            "audiojob",
            "orphan",
            "--type=json",
            "-p",
            '[{"op": "remove", "path": "/metadata/finalizers"}]',
        )

    def all_gone() -> bool:
        left = kube.run(
            "get", "jobs,configmaps,pods", "-l", "audioproc.io/audiojob=orphan", "-o", "name"
        ).stdout.split()
        return not left and kube.run("get", "audiojob", "orphan", check=False).returncode != 0

    wait_for(all_gone, timeout=60, what="the AudioJob and its Jobs, ConfigMaps and pods deleted")


def test_ten_thousand_items_reach_the_pods_in_chunks(
    kube: Kube, start_operator: Callable[..., OperatorProcess]
) -> None:
    """The largest AudioJob the CRD allows is stored, placed and cut into ConfigMap-sized chunks."""
    start_operator()
    kube.create(audiojob("huge", 10_000, device="cpu", concurrency=2))
    status = wait_for(
        lambda: (s := kube.audiojob("huge").get("status") or {}).get("jobs") and s,
        timeout=90,
        what="huge placed with its first Job",
    )
    assert status["counts"]["total"] == 10_000
    assert status["chunkStarts"] == list(range(0, 10_000, 1000))
    items = json.loads(kube.json("get", "configmap", "huge-0")["data"]["items.json"])
    assert [i["videoId"] for i in items] == [f"v{i}" for i in range(1000)]
    job = kube.json("get", "job", "huge-0")
    assert job["spec"]["completions"] == 1000 and job["spec"]["parallelism"] == 2
    name, phase, _progress, device, total, *_ = (
        kube.run("get", "aj", "huge").stdout.splitlines()[1].split()
    )
    assert (name, phase, device, total) == ("huge", "Processing", "cpu", "10000")


INVALID = {  # spec -> what the API server's message must name
    "video-id": (
        {"items": [{"inputUri": "s3://m/a.mp4", "videoId": "bad id!"}]},
        "spec.items[0].videoId",
    ),
    "device": (
        {"device": "tpu", "items": [{"inputUri": "s3://m/a.mp4", "videoId": "a"}]},
        'Unsupported value: "tpu"',
    ),
    "empty-items": ({"items": []}, "spec.items in body should have at least 1 items"),
    "input-scheme": (
        {"items": [{"inputUri": "ftp://m/a.mp4", "videoId": "a"}]},
        "spec.items[0].inputUri",
    ),
    "output-scheme": (
        {"output": "gs://bucket", "items": [{"inputUri": "/m/a.mp4", "videoId": "a"}]},
        "spec.output",
    ),
    "concurrency": (
        {"concurrency": 0, "items": [{"inputUri": "/m/a.mp4", "videoId": "a"}]},
        "spec.concurrency",
    ),
    "extractor": (
        {"extractors": ["vibes"], "items": [{"inputUri": "/m/a.mp4", "videoId": "a"}]},
        "spec.extractors[0]",
    ),
}


def test_invalid_audiojobs_are_rejected_by_the_api_server(kube: Kube) -> None:
    # One namespace for all cases: each is a single create call.
    for case, (spec, message) in INVALID.items():
        result = kube.create(
            {
                "apiVersion": "audioproc.io/v1alpha1",
                "kind": "AudioJob",
                "metadata": {"name": case},
                "spec": spec,
            },
            check=False,
        )
        assert result.returncode != 0, f"{case} was accepted"
        assert "is invalid" in result.stderr and message in result.stderr, (
            f"{case}: {result.stderr}"
        )
    assert kube.json("get", "audiojobs")["items"] == []


def write_tone(path: Path, seconds: float = 2.0, rate: int = 16000, hz: float = 440.0) -> None:
    """A real PCM WAV file: a sine tone at ``hz`` Hz, ``rate`` samples per second, mono."""
    frames = b"".join(
        struct.pack("<h", int(12000 * math.sin(2 * math.pi * hz * n / rate)))
        for n in range(int(seconds * rate))
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(frames)


def test_pod_command_runs_the_real_pipeline(
    kube: Kube,
    core: client.CoreV1Api,
    start_operator: Callable[..., OperatorProcess],
    tmp_path: Path,
) -> None:
    """The test is the kubelet: it runs the pod's exact command and environment as a local
    process (ConfigMap materialised as the items file, output on local disk), then reports
    the real termination message; the AudioJob must point at the real manifest."""
    media, output = tmp_path / "media", tmp_path / "out"
    media.mkdir()
    output.mkdir()
    write_tone(media / "tone.wav")
    start_operator(OPERATOR_ALLOWED_ROOTS=json.dumps([str(media)]))
    manifest = audiojob(
        "real",
        1,
        device="cpu",
        output=f"file://{output}",
        extractors=["loudness", "spectral"],
        pod_annotations={"e2e.audioproc.io/manual": "true"},
    )
    manifest["spec"]["items"][0] = {"inputUri": f"file://{media}/tone.wav", "videoId": "tone-440"}
    kube.create(manifest)
    (pod,) = wait_for(
        what="the pod Running", check=lambda: running_pods(kube, "real", set()) or None, timeout=90
    )

    container = pod["spec"]["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    local_paths: dict[str, str] = {}
    for name, mount_path in mounts.items():
        if "configMap" not in volumes[name]:
            continue
        cm = kube.json("get", "configmap", volumes[name]["configMap"]["name"])
        folder = tmp_path / "mounts" / name
        folder.mkdir(parents=True)
        for key, value in cm["data"].items():
            (folder / key).write_text(value)
        local_paths[mount_path] = str(folder)
    termination_log = tmp_path / "termination-log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(ROOT / p) for p in (".", "job_image"))}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        else:  # downward API: Kubernetes gives Indexed Job pods JOB_COMPLETION_INDEX this way
            field, _, key = var["valueFrom"]["fieldRef"]["fieldPath"].partition("['")
            env[var["name"]] = pod["metadata"][field.removeprefix("metadata.")][
                key.removesuffix("']")
            ]
    env["AUDIOPROC_TERMINATION_LOG"] = str(termination_log)  # the container's path, on this disk
    args = container["command"] + container.get("args", [])
    for mount_path, local in local_paths.items():
        args = [a.replace(mount_path, local, 1) if a.startswith(mount_path) else a for a in args]
    assert args[0] == "audioproc"
    result = subprocess.run(
        [sys.executable, "-m", "audioproc", *args[1:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    message = termination_log.read_text()
    finish_pod(core, kube.namespace, pod["metadata"]["name"], result.returncode, message)

    status = wait_for(
        what="real finished",
        check=phase_is(kube, "real", "Completed", "Failed", "PartiallyCompleted"),
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    assert status["phase"] == "Completed"
    (item,) = status["items"]
    result = parse_termination_message(message)
    assert result is not None and result.status == "ok", message
    assert item["manifestUri"] == result.manifest_uri
    manifest_path = Path(item["manifestUri"].removeprefix("file://"))
    assert manifest_path == output / "real" / "tone-440" / "manifest.json"
    written = json.loads(manifest_path.read_text())
    assert written["video_id"] == "tone-440"
    assert {e["name"] for e in written["extractors"]} == {"loudness", "spectral"}
