"""The Job builder: pure functions from an AudioJob to ConfigMaps and Indexed Jobs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from operator_refs import make_ref
from pydantic import ValidationError

from audioproc.extractors.catalog import DEFAULT_EXTRACTORS
from audioproc.models.audiojob import AudioJobSpec
from audioproc.models.pod_contract import ITEMS_DIR, ITEMS_FILE_NAME, load_items
from audioproc.settings import PipelineSettings
from audioproc_operator.builder import (
    MAX_NAME,
    Placement,
    build_configmap,
    build_job,
    child_name,
    chunk_bounds,
    plan_chunks,
    resolved_items,
)
from audioproc_operator.settings import OperatorSettings


def test_child_names_are_deterministic_and_bounded():
    assert child_name("batch", 0) == "batch-0"
    long = "a" * 80
    name = child_name(long, 12)
    assert len(name) <= MAX_NAME and name.endswith("-12") and name == child_name(long, 12)
    assert child_name("a" * 80, 0) != child_name("a" * 79 + "b", 0), (
        "names differing past the cut collide"
    )


def test_resolved_items_fill_in_extractors():
    assert resolved_items(make_ref(1).spec)[0].extractors == list(DEFAULT_EXTRACTORS)
    spec = AudioJobSpec.model_validate(
        {
            "extractors": ["tempo"],
            "items": [
                {"inputUri": "s3://media/v0.mp4", "videoId": "v0"},
                {"inputUri": "s3://media/v1.mp4", "videoId": "v1", "extractors": ["clap"]},
            ],
        }
    )
    assert [item.model_dump(by_alias=True) for item in resolved_items(spec)] == [
        {"inputUri": "s3://media/v0.mp4", "videoId": "v0", "extractors": ["tempo"]},
        {"inputUri": "s3://media/v1.mp4", "videoId": "v1", "extractors": ["clap"]},
    ]


def test_configmap_holds_the_items_a_pod_reads():
    ref = make_ref(3)
    items = resolved_items(ref.spec)
    assert load_items(build_configmap(ref, 0, items)["data"][ITEMS_FILE_NAME]) == items


def test_chunks_respect_item_count_and_bytes():
    items = resolved_items(make_ref(25).spec)
    assert plan_chunks(items, max_items=10, max_bytes=10**6) == [0, 10, 20]
    sizes = [
        len(json.dumps(item.model_dump(by_alias=True), separators=(",", ":"))) + 1 for item in items
    ]
    limit = sizes[-1] * 4
    starts = plan_chunks(items, max_items=1000, max_bytes=limit)
    for chunk in range(len(starts)):
        start, end = chunk_bounds(starts, len(items), chunk)
        assert sum(sizes[start:end]) <= limit  # fits
        if end < len(items):
            assert sum(sizes[start : end + 1]) > limit  # and is as full as it can be


def test_ten_thousand_items_fit_in_configmaps(settings):
    ref = make_ref(10_000)
    items = resolved_items(ref.spec)
    starts = plan_chunks(items, settings.chunk_size, settings.chunk_max_bytes)
    assert len(starts) == 10
    for chunk in range(len(starts)):
        start, end = chunk_bounds(starts, len(items), chunk)
        cm = build_configmap(ref, chunk, items[start:end])
        assert len(json.dumps(cm)) < 1024 * 1024  # the API server's object size limit is ~1.5 MiB


def test_cpu_job(settings):
    ref = make_ref(
        5, concurrency=3, retriesPerItem=2, maxDurationSeconds=600, output="s3://out/pre"
    )
    job = build_job(ref, 0, 0, 5, Placement("cpu", 3), settings)
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    assert job["metadata"]["name"] == "batch-0"
    assert (
        spec["completionMode"] == "Indexed"
        and spec["completions"] == 5
        and spec["parallelism"] == 3
    )
    assert (
        spec["backoffLimitPerIndex"] == 2
        and spec["ttlSecondsAfterFinished"] == settings.job_ttl_seconds
    )
    assert job["metadata"]["ownerReferences"][0] | {} == {
        "apiVersion": "audioproc.io/v1alpha1",
        "kind": "AudioJob",
        "name": "batch",
        "uid": "0000-uid",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert pod["restartPolicy"] == "Never"
    assert pod["nodeSelector"] == {"audioproc.io/pool": "cpu"} and "tolerations" not in pod
    (container,) = pod["containers"]
    assert container["command"] == [
        "audioproc",
        "run-index",
        "--items-file",
        f"{ITEMS_DIR}/items.json",
        "--output",
        "s3://out/pre/batch",
        "--device",
        "cpu",
        "--max-duration-s",
        "600",
    ]
    assert "nvidia.com/gpu" not in json.dumps(container["resources"])
    assert container["resources"]["requests"] == settings.cpu_requests
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["AUDIOPROC_TERMINATION_LOG"] == container["terminationMessagePath"]
    assert pod["volumes"][0]["configMap"]["name"] == "batch-0"


def test_gpu_job(settings):
    job = build_job(make_ref(4), 1, 1000, 4, Placement("gpu", 2), settings)
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"audioproc.io/pool": "gpu"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert container["command"][container["command"].index("--device") + 1] == "cuda"
    assert job["spec"]["parallelism"] == 2
    assert job["metadata"]["annotations"]["audioproc.io/first-index"] == "1000"
    assert job["metadata"]["labels"]["audioproc.io/device"] == "gpu"


def test_parallelism_never_exceeds_completions(settings):
    assert (
        build_job(make_ref(2), 0, 0, 2, Placement("cpu", 50), settings)["spec"]["parallelism"] == 2
    )


def test_failure_policy_does_not_retry_input_errors(settings):
    rules = build_job(make_ref(1), 0, 0, 1, Placement("cpu", 1), settings)["spec"][
        "podFailurePolicy"
    ]["rules"]
    assert rules[0] == {
        "action": "FailIndex",
        "onExitCodes": {"containerName": "worker", "operator": "In", "values": [3]},
    }
    assert rules[1] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}


@pytest.mark.parametrize("allowed", [True, False])
def test_pod_annotations_pass_only_when_allowed(allowed):
    settings = OperatorSettings(allow_pod_annotations=allowed)
    ref = make_ref(1)
    ref = type(ref)(**{**ref.__dict__, "pod_annotations": {"e2e.audioproc.io/exit-code": "3"}})
    annotations = build_job(ref, 0, 0, 1, Placement("cpu", 1), settings)["spec"]["template"][
        "metadata"
    ]["annotations"]
    assert (annotations == {"e2e.audioproc.io/exit-code": "3"}) is allowed


def test_suspended_audiojob_makes_a_suspended_job(settings):
    assert (
        build_job(make_ref(1, suspend=True), 0, 0, 1, Placement("cpu", 1), settings)["spec"][
            "suspend"
        ]
        is True
    )


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("MAX_GPU_WORKERS", "3")
    monkeypatch.setenv("OPERATOR_GPU_NODE_SELECTOR", '{"pool": "a100"}')
    settings = OperatorSettings()
    assert settings.max_gpu_workers == 3 and settings.gpu_node_selector == {"pool": "a100"}


def test_pods_are_locked_down_by_default(settings):
    pod = build_job(make_ref(1), 0, 0, 1, Placement("cpu", 1), settings)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_read_only_root_gets_a_writable_tmp(settings, device):
    pod = build_job(make_ref(1), 0, 0, 1, Placement(device, 1), settings)["spec"]["template"][
        "spec"
    ]
    (container,) = pod["containers"]
    (tmp_mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    (tmp_volume,) = [v for v in pod["volumes"] if v["name"] == tmp_mount["name"]]
    assert tmp_volume == {"name": tmp_mount["name"], "emptyDir": {}} and not tmp_mount.get(
        "readOnly"
    )
    assert {"name": "TMPDIR", "value": "/tmp"} in container["env"]


def test_security_contexts_from_environment_replace_the_defaults(monkeypatch):
    pod_context = {"runAsUser": 10001, "runAsGroup": 10001, "fsGroup": 10001, "runAsNonRoot": True}
    container_context = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
    }
    monkeypatch.setenv("OPERATOR_POD_SECURITY_CONTEXT", json.dumps(pod_context))
    monkeypatch.setenv("OPERATOR_CONTAINER_SECURITY_CONTEXT", json.dumps(container_context))
    settings = OperatorSettings(_env_file=None)  # type: ignore[call-arg]
    job = build_job(make_ref(2), 0, 0, 2, Placement("gpu", 1), settings)
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"] == pod_context
    assert pod["containers"][0]["securityContext"] == container_context
    pod["containers"][0]["securityContext"]["capabilities"]["drop"].clear()
    assert settings.container_security_context["capabilities"]["drop"] == ["ALL"], (
        "the Job shares the settings' dicts"
    )


def test_job_env_may_move_tmpdir(settings):
    settings = settings.model_copy(update={"job_env": {"TMPDIR": "/dev/shm"}})
    container = build_job(make_ref(1), 0, 0, 1, Placement("cpu", 1), settings)["spec"]["template"][
        "spec"
    ]["containers"][0]
    assert [e["value"] for e in container["env"] if e["name"] == "TMPDIR"] == ["/dev/shm"]


def worker(settings: OperatorSettings) -> tuple[dict, dict]:
    """The pod spec and worker container of a one-item CPU Job."""
    pod = build_job(make_ref(1), 0, 0, 1, Placement("cpu", 1), settings)["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


def roots_in_pod(settings: OperatorSettings, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """ALLOWED_ROOTS of the worker, as the pipeline's own settings read it in the pod."""
    (value,) = [e["value"] for e in worker(settings)[1]["env"] if e["name"] == "ALLOWED_ROOTS"]
    monkeypatch.setenv("ALLOWED_ROOTS", value)
    return PipelineSettings().allowed_roots


def test_a_bare_operator_sets_the_roots_instead_of_the_pipelines_cwd(settings, monkeypatch):
    # Without ALLOWED_ROOTS the pipeline allows only its cwd (/work in the image): every
    # file:// input failed on a real node. Empty is explicit: only what the operator mounts.
    assert roots_in_pod(settings, monkeypatch) == []


def test_allowed_roots_are_the_configured_roots_and_every_data_mount(monkeypatch):
    monkeypatch.setenv("OPERATOR_ALLOWED_ROOTS", '["/srv/media", "/data"]')
    monkeypatch.setenv("OPERATOR_OUTPUT_VOLUME_CLAIM", "out")
    monkeypatch.setenv("OPERATOR_INPUT_VOLUME_CLAIM", "media")
    monkeypatch.setenv("OPERATOR_INPUT_MOUNT_PATH", "/media")
    settings = OperatorSettings(_env_file=None)  # type: ignore[call-arg]
    assert roots_in_pod(settings, monkeypatch) == [
        Path("/srv/media"),
        Path("/data"),
        Path("/media"),
    ]


def test_the_output_volume_is_an_input_root(settings, monkeypatch):
    settings = settings.model_copy(update={"output_volume_claim": "out"})
    assert roots_in_pod(settings, monkeypatch) == [Path("/data")]


def test_the_input_volume_is_mounted_read_only(settings, monkeypatch):
    settings = settings.model_copy(
        update={"input_volume_claim": "media", "output_volume_claim": "out"}
    )
    pod, container = worker(settings)
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["input"] == {"name": "input", "mountPath": "/data/media", "readOnly": True}
    assert volumes["input"]["persistentVolumeClaim"] == {"claimName": "media", "readOnly": True}
    assert mounts["output"] == {"name": "output", "mountPath": "/data"}
    assert volumes["output"]["persistentVolumeClaim"] == {"claimName": "out"}
    assert roots_in_pod(settings, monkeypatch) == [Path("/data"), Path("/data/media")]


@pytest.mark.parametrize("name", ["ALLOWED_ROOTS", "allowed_roots"])
def test_job_env_may_not_set_the_roots(monkeypatch, name):
    # The pipeline reads its settings case-insensitively: either spelling would override.
    monkeypatch.setenv("OPERATOR_JOB_ENV", json.dumps({name: '["/elsewhere"]'}))
    with pytest.raises(ValidationError, match="set OPERATOR_ALLOWED_ROOTS instead"):
        OperatorSettings(_env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "update",
    [
        {"allowed_roots": ["data/media"]},
        {"output_mount_path": "data"},
        {"input_volume_claim": "media", "output_volume_claim": "out", "input_mount_path": "/data"},
    ],
    ids=["relative-root", "relative-mount", "same-mount-path"],
)
def test_bad_paths_are_refused_at_start_up(update):
    with pytest.raises(ValidationError):
        OperatorSettings(_env_file=None, **update)  # type: ignore[call-arg]
