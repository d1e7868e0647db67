"""AudioJobs on real pods: the job image runs on the real node (e2e.realnode) over real media.

Nothing is simulated here: the operator (a subprocess on the host, as `audioproc-operator`
runs) creates Indexed Jobs whose pods the real kubelet runs from the image `make images`
built; the pods read generated media from a hostPath PersistentVolume and write manifests
there; exit codes and termination messages come from the pipeline itself. The tests skip,
with the reason, where the real node cannot run (not root, no Docker engine, no runc or CNI
plugins).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from audioproc import samples
from audioproc.models.pod_contract import PodExit, parse_termination_message
from e2e.helpers import COMPLETION_INDEX_ANNOTATION, REPO, Kube, OperatorProcess, phase_is, wait_for
from e2e.realnode import RealNode, container_pid, host_volume, operator_env

pytestmark = [pytest.mark.e2e, pytest.mark.real_node]

SCHEMA = json.loads((REPO / "docs" / "manifest.schema.json").read_text())
CLAIM = "media"
MOUNT = "/data"
BPM = 120.0
SR = 44100


def write_media(media: Path) -> dict[str, dict[str, Any]]:
    """One file per container format the issue names, and a corrupt one; what each should give."""
    drums = samples.drum_pattern(10.0, SR, BPM)
    files: dict[str, dict[str, Any]] = {
        "beat-mp4": {
            "file": samples.write_video(media / "beat.mp4", np.stack([drums, drums]), SR),
            "bpm": BPM,
        },
        "tone-mkv": {
            "file": samples.write_audio(media / "tone.mkv", samples.tone(6.0, 48000, 220.0), 48000),
            "f0": 220.0,
        },
        "tone-wav": {
            "file": samples.write_audio(media / "tone.wav", samples.tone(6.0, 16000, 330.0), 16000),
            "f0": 330.0,
        },
        "beat-mp3": {"file": samples.write_audio(media / "beat.mp3", drums, SR), "bpm": BPM},
        "corrupt": {"file": samples.write_garbage(media / "corrupt.mp4"), "error": True},
    }
    return files


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The volume's folder on the host: media/ (generated) and the pods' output."""
    root = tmp_path_factory.mktemp("real-pods-data")
    (root / "media").mkdir()
    root.chmod(0o777)  # the pods (uid 10001) create <output>/<audiojob>/ here
    return root


@pytest.fixture(scope="module")
def media(data_dir: Path) -> dict[str, dict[str, Any]]:
    return write_media(data_dir / "media")


@pytest.fixture
def real_operator(
    kube: Kube, real_node: RealNode, project_images: dict[str, str], data_dir: Path, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """The operator on the host, its CPU pods on the real node with the data volume at /data."""
    kube.run(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": host_volume(CLAIM, kube.namespace, data_dir),
            }
        ),
    )
    operator = OperatorProcess(
        kube.cluster.kubeconfig,
        kube.namespace,
        tmp_path,
        **operator_env(project_images["audioproc-job"], CLAIM, MOUNT),
    )
    operator.start()
    yield operator
    kube.run("delete", "audiojobs", "--all", "--timeout=60s", check=False)
    operator.stop()
    kube.cluster.kubectl(
        "delete", "pv", f"{kube.namespace}-{CLAIM}"[:63], "--wait=false", check=False
    )


def real_audiojob(name: str, items: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "audioproc.io/v1alpha1",
        "kind": "AudioJob",
        "metadata": {"name": name},
        "spec": {"device": "cpu", "output": f"file://{MOUNT}/out", "items": items, **spec},
    }


def host_path(uri: str, data_dir: Path) -> Path:
    """A ``file:///data/...`` URI as the pods wrote it, seen from the host."""
    return data_dir / Path(uri.removeprefix("file://")).relative_to(MOUNT)


def pods_by_index(kube: Kube, name: str) -> dict[int, list[dict[str, Any]]]:
    grouped: dict[int, list[dict[str, Any]]] = {}
    for pod in kube.pods(name):
        grouped.setdefault(
            int(pod["metadata"]["annotations"][COMPLETION_INDEX_ANNOTATION]), []
        ).append(pod)
    return grouped


def exit_code(pod: dict[str, Any]) -> int | None:
    for status in pod["status"].get("containerStatuses", []):
        terminated = status.get("state", {}).get("terminated")
        if terminated:
            return int(terminated["exitCode"])
    return None


def test_real_media_on_real_pods(
    kube: Kube, real_operator: OperatorProcess, media: dict[str, dict[str, Any]], data_dir: Path
) -> None:
    """MP4/AAC, MKV/Opus, WAV, MP3 and a corrupt file: real manifests, values that match the
    signal, manifest URIs from the pods' termination messages, exit 3 for the corrupt one."""
    items = [
        {"inputUri": f"file://{MOUNT}/media/{m['file'].name}", "videoId": vid}
        for vid, m in media.items()
    ]
    kube.create(real_audiojob("formats", items, concurrency=2, retriesPerItem=1))
    status = wait_for(
        phase_is(kube, "formats", "Completed", "PartiallyCompleted", "Failed"),
        timeout=600,
        what="the AudioJob over real media to finish",
    )

    assert status["phase"] == "PartiallyCompleted", status
    results = {item["videoId"]: item for item in status["items"]}
    assert set(results) == set(media)
    for video_id, expected in media.items():
        item = results[video_id]
        if expected.get("error"):
            continue
        assert item["phase"] == "Succeeded", item
        assert item["manifestUri"] == f"file://{MOUNT}/out/formats/{video_id}/manifest.json"
        manifest = json.loads(host_path(item["manifestUri"], data_dir).read_text())
        jsonschema.validate(manifest, SCHEMA)
        assert manifest["video_id"] == video_id and manifest["errors"] == []
        features = {e["name"]: e["features"] for e in manifest["extractors"] if e["status"] == "ok"}
        assert set(features) == {"loudness", "spectral", "mfcc", "tempo", "pitch"}, manifest[
            "extractors"
        ]
        if "bpm" in expected:
            assert features["tempo"]["bpm"] == pytest.approx(expected["bpm"], rel=0.005), video_id
        if "f0" in expected:
            assert features["pitch"]["f0_median_hz"] == pytest.approx(expected["f0"], rel=0.01), (
                video_id
            )

    corrupt = results["corrupt"]
    assert corrupt["phase"] == "Failed" and corrupt.get("manifestUri") is None
    assert "corrupt.mp4" in corrupt["error"] or "decode" in corrupt["error"].lower(), corrupt
    index = [i for i, item in enumerate(items) if item["videoId"] == "corrupt"][0]
    corrupt_pods = pods_by_index(kube, "formats")[index]
    # Exit code 3 fails the index at once (podFailurePolicy FailIndex): no retry of a bad input.
    assert [exit_code(p) for p in corrupt_pods] == [PodExit.INPUT_ERROR]
    # The termination message the real pod wrote, read as the operator reads it (the pod contract).
    message = parse_termination_message(
        corrupt_pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
    )
    assert message is not None, "the real pod wrote no termination message"
    assert (message.video_id, message.status, message.manifest_uri) == ("corrupt", "error", None)
    assert message.error == corrupt["error"]


def test_killed_pod_is_retried_then_failed(
    kube: Kube, real_operator: OperatorProcess, real_node: RealNode, data_dir: Path
) -> None:
    """A worker killed by SIGKILL (as the OOM killer does) is retried retriesPerItem times, then
    its item fails; the kill is real: the container's process, found through containerd."""
    long_input = data_dir / "media" / "long.wav"
    if not long_input.exists():
        samples.write_audio(long_input, samples.tone(120.0, 16000, 440.0), 16000)
    item = {"inputUri": f"file://{MOUNT}/media/long.wav", "videoId": "long"}
    kube.create(real_audiojob("killed", [item], retriesPerItem=1))
    killed: list[str] = []

    def kill_the_running_worker() -> bool:
        for pod in kube.pods("killed"):
            if pod["metadata"]["name"] in killed:
                continue
            for container in pod["status"].get("containerStatuses", []):
                pid = (
                    container_pid(real_node, container.get("containerID", ""))
                    if "running" in container["state"]
                    else None
                )
                if pid:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pod["metadata"]["name"])
        return len(killed) == 2

    wait_for(kill_the_running_worker, timeout=300, interval=0.2, what="two worker pods to kill")
    status = wait_for(
        phase_is(kube, "killed", "Failed", "Completed"), timeout=120, what="the AudioJob to fail"
    )
    assert status["phase"] == "Failed", status
    (result,) = status["items"]
    assert result["phase"] == "Failed" and result.get("manifestUri") is None
    pods = pods_by_index(kube, "killed")[0]
    assert sorted(p["metadata"]["name"] for p in pods) == sorted(
        killed
    )  # one try + one retry, no more
    assert {exit_code(p) for p in pods} == {137}  # 128 + SIGKILL
    assert not (data_dir / "out" / "killed" / "long" / "manifest.json").exists()


def test_pods_really_run_on_the_real_node(
    kube: Kube,
    real_operator: OperatorProcess,
    real_node: RealNode,
    media: dict[str, dict[str, Any]],
) -> None:
    """The pods ran on the real node (not kwok), as the locked-down user, with logs to read."""
    item = {"inputUri": f"file://{MOUNT}/media/tone.wav", "videoId": "where"}
    kube.create(real_audiojob("where", [item]))
    wait_for(phase_is(kube, "where", "Completed"), timeout=300, what="the AudioJob to complete")
    (pod,) = kube.pods("where")
    assert pod["spec"]["nodeName"] == "audioproc-real-0"
    assert pod["status"]["podIP"].startswith("10.85.0.")
    message = parse_termination_message(
        pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
    )
    assert message is not None, "the real pod wrote no termination message"
    assert (message.video_id, message.status, message.device, message.error) == (
        "where",
        "ok",
        "cpu",
        None,
    )
    assert message.manifest_uri == f"file://{MOUNT}/out/where/where/manifest.json"
    logs = kube.run("logs", pod["metadata"]["name"]).stdout
    assert parse_termination_message(logs) == message  # the same line on stdout
