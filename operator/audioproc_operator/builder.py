"""Pure builders of the Kubernetes objects an AudioJob becomes.

An AudioJob's items are cut into chunks; each chunk is one ConfigMap (its resolved item
list, ``items.json``) and one Indexed Job whose pod ``i`` processes item ``i`` of the chunk
(the pod contract in docs/architecture.md). An AudioJob with ``spec.itemsFrom`` has no
ConfigMaps: its pods read their own line of the item list, from their chunk's byte offset. Names are deterministic, so a restarted
operator finds what it created before instead of making duplicates. Nothing here talks
to the API server: every function maps plain data to plain dicts.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from audioproc.extractors.catalog import DEFAULT_EXTRACTORS
from audioproc.models.audiojob import API_VERSION, AUDIOJOB_UID_LABEL, KIND, AudioJobSpec
from audioproc.models.pod_contract import (
    ITEMS_DIR,
    ITEMS_FILE,
    ITEMS_FILE_NAME,
    TERMINATION_LOG,
    TERMINATION_LOG_ENV,
    PodExit,
    WorkItem,
    dump_items,
    item_json_bytes,
)
from audioproc_operator.settings import ALLOWED_ROOTS_ENV, GPU_RESOURCE, OperatorSettings

MAX_NAME: Final = 63  # Job names end up in label values (batch.kubernetes.io/job-name)
CONTAINER: Final = "worker"
TMP_DIR: Final = (
    "/tmp"  # an emptyDir: the root filesystem may be read-only, the pipeline writes temp files
)

MANAGED_BY: Final = "audioproc-operator"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_AUDIOJOB: Final = "audioproc.io/audiojob"
LABEL_AUDIOJOB_UID: Final = AUDIOJOB_UID_LABEL
LABEL_CHUNK: Final = "audioproc.io/chunk"
LABEL_DEVICE: Final = "audioproc.io/device"
ANNOTATION_FIRST_INDEX: Final = "audioproc.io/first-index"
#: Kueue manages a Job that carries this label (the LocalQueue's name) and admits it.
KUEUE_QUEUE_NAME_LABEL: Final = "kueue.x-k8s.io/queue-name"
#: Lets Kueue admit a Job with fewer pods at once than asked (Kueue's partial admission).
KUEUE_MIN_PARALLELISM_ANNOTATION: Final = "kueue.x-k8s.io/job-min-parallelism"

DeviceKind = Literal["gpu", "cpu"]


@dataclass(frozen=True)
class AudioJobRef:
    """What the builders need to know about one AudioJob."""

    name: str
    namespace: str
    uid: str
    spec: AudioJobSpec
    request_id: str | None = None
    pod_annotations: dict[str, str] = field(default_factory=dict)
    #: itemsFrom: the item list's length once the operator has counted it (status.counts.total).
    listed_total: int = 0

    @property
    def total(self) -> int:
        """The AudioJob's item count (0 for an item list not counted yet)."""
        return len(self.spec.items) if self.spec.items is not None else self.listed_total


@dataclass(frozen=True)
class Placement:
    """Where an AudioJob's pods run and how many at once."""

    device: DeviceKind
    parallelism: int


def child_name(audiojob: str, chunk: int) -> str:
    """``<audiojob>-<chunk>``; a long AudioJob name is cut and given a hash of the full name."""
    suffix = f"-{chunk}"
    if len(audiojob) + len(suffix) <= MAX_NAME:
        return audiojob + suffix
    digest = hashlib.sha256(audiojob.encode()).hexdigest()[:8]
    stem = audiojob[: MAX_NAME - len(suffix) - len(digest) - 1].rstrip("-.")
    return f"{stem}-{digest}{suffix}"


def label_value(text: str) -> str:
    """``text`` as a valid label value (at most 63 characters, hash-suffixed when cut)."""
    if len(text) <= MAX_NAME:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{text[: MAX_NAME - 9].rstrip('-._')}-{digest}"


def default_extractors(spec: AudioJobSpec) -> list[str]:
    """The extractors of an item that names none: ``spec.extractors``, else the standard set."""
    return [e.value for e in spec.extractors] if spec.extractors else list(DEFAULT_EXTRACTORS)


def resolved_items(spec: AudioJobSpec) -> list[WorkItem]:
    """The pods' work items (the pod contract): every inline item with its extractor list filled
    in (none for an itemsFrom AudioJob: its pods resolve their own line)."""
    default = default_extractors(spec)
    return [
        WorkItem(
            input_uri=item.input_uri,
            video_id=item.video_id,
            extractors=[e.value for e in item.extractors] if item.extractors else default,
        )
        for item in spec.items or []
    ]


def plan_chunks(items: list[WorkItem], max_items: int, max_bytes: int) -> list[int]:
    """First index of each chunk: at most ``max_items`` items and ``max_bytes`` of JSON per chunk."""
    starts: list[int] = []
    count = size = 0
    for index, item in enumerate(items):
        item_bytes = item_json_bytes(item)
        if not starts or count == max_items or size + item_bytes > max_bytes:
            starts.append(index)
            count = size = 0
        count += 1
        size += item_bytes
    return starts


def chunk_bounds(chunk_starts: list[int], total: int, chunk: int) -> tuple[int, int]:
    """``[start, end)`` item indexes of ``chunk``."""
    end = chunk_starts[chunk + 1] if chunk + 1 < len(chunk_starts) else total
    return chunk_starts[chunk], end


def owner_reference(aj: AudioJobRef) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": aj.name,
        "uid": aj.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_labels(aj: AudioJobRef, chunk: int) -> dict[str, str]:
    return {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_AUDIOJOB: label_value(aj.name),
        LABEL_AUDIOJOB_UID: aj.uid,
        LABEL_CHUNK: str(chunk),
    }


def output_uri(aj: AudioJobRef) -> str:
    """Where the pods write: ``<spec.output>/<audiojob-name>`` (the pod contract)."""
    return f"{aj.spec.output.rstrip('/')}/{aj.name}"


def manifest_prefix(aj: AudioJobRef) -> str:
    return output_uri(aj) + "/"


def build_configmap(aj: AudioJobRef, chunk: int, items: list[WorkItem]) -> dict[str, Any]:
    """The ConfigMap holding one chunk's ``items.json``."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": child_name(aj.name, chunk),
            "namespace": aj.namespace,
            "labels": child_labels(aj, chunk),
            "ownerReferences": [owner_reference(aj)],
        },
        "data": {ITEMS_FILE_NAME: dump_items(items)},
    }


def item_source_args(aj: AudioJobRef, first_index: int, chunk_offset: int | None) -> list[str]:
    """Where a pod finds its item: its chunk's ConfigMap, or the item list from the chunk's
    byte offset (``chunk_offset``, from ``status.chunkOffsets``) with the default extractors."""
    if aj.spec.items_from is None:
        return ["--items-file", ITEMS_FILE]
    assert chunk_offset is not None, "an itemsFrom chunk has its byte offset"
    return [
        "--items-from",
        aj.spec.items_from.uri,
        "--items-offset",
        str(chunk_offset),
        "--first-index",
        str(first_index),
        "--extractors",
        ",".join(default_extractors(aj.spec)),
    ]


def worker_command(
    aj: AudioJobRef, device: DeviceKind, first_index: int = 0, chunk_offset: int | None = None
) -> list[str]:
    return [
        "audioproc",
        "run-index",
        *item_source_args(aj, first_index, chunk_offset),
        "--output",
        output_uri(aj),
        "--device",
        "cuda" if device == "gpu" else "cpu",
        "--max-duration-s",
        str(aj.spec.max_duration_seconds),
    ]


@dataclass(frozen=True)
class DataVolume:
    """A PVC the worker pods mount for media or manifests."""

    name: str
    claim: str
    mount_path: str
    read_only: bool


def data_volumes(settings: OperatorSettings) -> list[DataVolume]:
    """The configured PVCs: output (read-write) and input (read-only: the pods never write media)."""
    volumes = []
    if settings.output_volume_claim:
        volumes.append(
            DataVolume("output", settings.output_volume_claim, settings.output_mount_path, False)
        )
    if settings.input_volume_claim:
        volumes.append(
            DataVolume("input", settings.input_volume_claim, settings.input_mount_path, True)
        )
    return volumes


def allowed_roots(settings: OperatorSettings) -> list[str]:
    """The worker's ALLOWED_ROOTS: the configured roots, then every data volume's mount path.

    Set in every pod, even empty: without it the pipeline falls back to its working
    directory (/work in the image), where no media are, and every ``file://`` item fails
    as outside the allowed roots.
    """
    return list(
        dict.fromkeys([*settings.allowed_roots, *(v.mount_path for v in data_volumes(settings))])
    )


def worker_env(
    aj: AudioJobRef, device: DeviceKind, settings: OperatorSettings
) -> list[dict[str, Any]]:
    env = {
        TERMINATION_LOG_ENV: TERMINATION_LOG,
        "AUDIOJOB_NAMESPACE": aj.namespace,
        "AUDIOJOB_NAME": aj.name,
        "USE_GPU": "true" if device == "gpu" else "false",
        "TMPDIR": TMP_DIR,
        **({"AUDIOPROC_REQUEST_ID": aj.request_id} if aj.request_id else {}),
        **settings.job_env,
        # After job_env, which the settings forbid to set it: the roots must match the mounts.
        ALLOWED_ROOTS_ENV: json.dumps(allowed_roots(settings)),
    }
    return [{"name": key, "value": value} for key, value in env.items()]


def worker_resources(device: DeviceKind, settings: OperatorSettings) -> dict[str, Any]:
    if device == "gpu":
        # An extended resource is requested by its limit alone; requests default to it.
        return {
            "requests": dict(settings.gpu_requests),
            "limits": {**settings.gpu_limits, GPU_RESOURCE: "1"},
        }
    return {"requests": dict(settings.cpu_requests), "limits": dict(settings.cpu_limits)}


def pod_spec(
    aj: AudioJobRef,
    chunk: int,
    device: DeviceKind,
    settings: OperatorSettings,
    first_index: int = 0,
    chunk_offset: int | None = None,
) -> dict[str, Any]:
    mounts: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    if aj.spec.items_from is None:  # an item list's pods read their own line instead
        mounts.append({"name": "items", "mountPath": ITEMS_DIR, "readOnly": True})
        volumes.append({"name": "items", "configMap": {"name": child_name(aj.name, chunk)}})
    mounts.append({"name": "tmp", "mountPath": TMP_DIR})
    volumes.append({"name": "tmp", "emptyDir": {}})
    for data in data_volumes(settings):
        read_only = {"readOnly": True} if data.read_only else {}
        mounts.append({"name": data.name, "mountPath": data.mount_path, **read_only})
        volumes.append(
            {"name": data.name, "persistentVolumeClaim": {"claimName": data.claim, **read_only}}
        )
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": settings.job_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": worker_command(aj, device, first_index, chunk_offset),
        "env": worker_env(aj, device, settings),
        "resources": worker_resources(device, settings),
        "volumeMounts": mounts,
        "securityContext": copy.deepcopy(settings.container_security_context),
        "terminationMessagePath": TERMINATION_LOG,
        # A crash before the result line is written still leaves the log tail as the message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if settings.job_env_secret:
        container["envFrom"] = [{"secretRef": {"name": settings.job_env_secret}}]
    spec: dict[str, Any] = {
        "restartPolicy": "Never",  # retries are the Job's, per index
        "securityContext": copy.deepcopy(settings.pod_security_context),
        "containers": [container],
        "volumes": volumes,
        "nodeSelector": dict(
            settings.gpu_node_selector if device == "gpu" else settings.cpu_node_selector
        ),
    }
    tolerations = settings.gpu_tolerations if device == "gpu" else settings.cpu_tolerations
    if tolerations:
        spec["tolerations"] = [dict(t) for t in tolerations]
    if settings.service_account:
        spec["serviceAccountName"] = settings.service_account
    return spec


def failure_policy() -> dict[str, Any]:
    """Input errors (PodExit.INPUT_ERROR) fail their index at once; node disruptions are not failures."""
    return {
        "rules": [
            {
                "action": "FailIndex",
                "onExitCodes": {
                    "containerName": CONTAINER,
                    "operator": "In",
                    "values": [int(PodExit.INPUT_ERROR)],
                },
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]
    }


def build_job(
    aj: AudioJobRef,
    chunk: int,
    first_index: int,
    completions: int,
    placement: Placement,
    settings: OperatorSettings,
    chunk_offset: int | None = None,
    local_queue: str | None = None,
) -> dict[str, Any]:
    """The Indexed Job of one chunk: pod ``i`` runs item ``first_index + i`` of the AudioJob
    (itemsFrom: ``chunk_offset`` is the byte offset of item ``first_index``'s line).

    With ``local_queue`` (Kueue mode) the Job is created suspended with Kueue's queue-name
    label and Kueue admits it.
    """
    labels = {**child_labels(aj, chunk), LABEL_DEVICE: placement.device}
    pod_annotations = dict(aj.pod_annotations) if settings.allow_pod_annotations else {}
    parallelism = min(placement.parallelism, completions)
    job_labels, job_annotations = dict(labels), {ANNOTATION_FIRST_INDEX: str(first_index)}
    if local_queue is not None:
        job_labels[KUEUE_QUEUE_NAME_LABEL] = local_queue
        if parallelism > 1:  # Kueue refuses a minimum that is not below the parallelism
            job_annotations[KUEUE_MIN_PARALLELISM_ANNOTATION] = "1"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": child_name(aj.name, chunk),
            "namespace": aj.namespace,
            "labels": job_labels,
            "annotations": job_annotations,
            "ownerReferences": [owner_reference(aj)],
        },
        "spec": {
            "completionMode": "Indexed",
            "completions": completions,
            "parallelism": parallelism,
            "backoffLimitPerIndex": aj.spec.retries_per_item,
            "podFailurePolicy": failure_policy(),
            "ttlSecondsAfterFinished": settings.job_ttl_seconds,
            "suspend": aj.spec.suspend or local_queue is not None,
            "template": {
                "metadata": {"labels": labels, "annotations": pod_annotations},
                "spec": pod_spec(aj, chunk, placement.device, settings, first_index, chunk_offset),
            },
        },
    }
