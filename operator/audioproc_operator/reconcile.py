"""One AudioJob's reconcile: place it once, create its chunks' objects, mirror their state.

Level-based and idempotent, so it is safe to run at any time and after any crash:

1. A finished AudioJob is left alone.
2. An AudioJob without ``status.device`` is placed (CPU, GPU with N GPUs, or waits for a
   GPU); the decision and the chunk plan are written to its status *before* any Job exists,
   so a restarted operator never decides twice.
3. The first chunk with unfinished items gets its ConfigMap and Job (deterministic names:
   a 409 means the object is already there and is adopted when its owner is this AudioJob).
4. Job and pod state is folded into the status (``status.fold``), and ``spec.suspend`` and
   ``spec.concurrency`` are carried to the running Job.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from audioproc.models.audiojob import (
    GROUP,
    PLURAL,
    POD_ANNOTATIONS_ANNOTATION,
    REQUEST_ID_ANNOTATION,
    VERSION,
    AudioJobPhase,
    AudioJobSpec,
    AudioJobStatus,
    Device,
    ItemCounts,
)
from audioproc_operator import metrics
from audioproc_operator.builder import (
    LABEL_AUDIOJOB_UID,
    AudioJobRef,
    Placement,
    build_configmap,
    build_job,
    child_name,
    chunk_bounds,
    manifest_prefix,
    plan_chunks,
    resolved_items,
)
from audioproc_operator.logs import audiojob_logger
from audioproc_operator.quota import Demand, grant_gpus, namespace_room
from audioproc_operator.settings import OperatorSettings
from audioproc_operator.status import JobView, Observed, PodView, fold, next_chunk


@dataclass(frozen=True)
class AudioJobEntry:
    """What the GPU placement needs to know about every AudioJob (kept in a kopf index)."""

    namespace: str
    name: str
    uid: str
    wants: str  # spec.device
    device: str | None  # status.device
    gpus: int
    finished: bool
    suspended: bool
    priority: int
    items: int
    concurrency: int
    created: str
    phase: str | None


def audiojob_entry(body: dict[str, Any]) -> AudioJobEntry:
    meta, spec, st = body["metadata"], body.get("spec") or {}, body.get("status") or {}
    phase = st.get("phase")
    return AudioJobEntry(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta["uid"],
        wants=spec.get("device", Device.auto.value),
        device=st.get("device"),
        gpus=int(st.get("gpus") or 0),
        finished=phase is not None and AudioJobPhase(phase).finished,
        suspended=bool(spec.get("suspend")),
        priority=int(spec.get("priority") or 0),
        items=len(spec.get("items") or []),
        concurrency=int(spec.get("concurrency") or 1),
        created=meta.get("creationTimestamp") or "",
        phase=phase,
    )


def audiojob_ref(body: dict[str, Any]) -> AudioJobRef:
    meta = body["metadata"]
    annotations = meta.get("annotations") or {}
    pod_annotations: dict[str, str] = {}
    if POD_ANNOTATIONS_ANNOTATION in annotations:
        try:
            parsed = json.loads(annotations[POD_ANNOTATIONS_ANNOTATION])
            pod_annotations = {str(k): str(v) for k, v in parsed.items()}
        except (ValueError, AttributeError) as exc:
            raise kopf.PermanentError(f"annotation {POD_ANNOTATIONS_ANNOTATION} is not a JSON object") from exc
    return AudioJobRef(
        name=meta["name"],
        namespace=meta["namespace"],
        uid=meta["uid"],
        spec=AudioJobSpec.model_validate(body["spec"]),
        request_id=annotations.get(REQUEST_ID_ANNOTATION),
        pod_annotations=pod_annotations,
    )


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


class Reconciler:
    def __init__(self, settings: OperatorSettings, api: client.ApiClient) -> None:
        self.settings = settings
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        # Placement must see every earlier decision, including those whose status patch
        # has not come back through the watch yet: decisions are serialised and remembered.
        self._placement_lock = threading.Lock()
        self._decisions: dict[str, dict[str, Any]] = {}  # uid -> status fields of the decision
        self._finished: set[str] = set()  # uids we finished, until the watch shows it
        # What each placed AudioJob looked like at its last complete reconcile: a tick that
        # sees the same AudioJob, Jobs and pods has nothing to do (most ticks of a big batch).
        self._last_seen: dict[str, int] = {}
        metrics.GPU_CAP.set(settings.max_gpu_workers)

    # ------------------------------------------------------------------ entry point

    def reconcile(self, body: dict[str, Any], entries: Iterable[AudioJobEntry],
                  jobs: list[JobView], pods: list[PodView]) -> None:
        meta = body["metadata"]
        raw_status = body.get("status") or {}
        if raw_status.get("phase") and AudioJobPhase(raw_status["phase"]).finished:
            self.forget(meta["uid"])
            return
        if meta["uid"] in self._finished:
            return  # our final patch is still in flight: the final phase is written once
        fingerprint = hash((meta.get("resourceVersion"), tuple(jobs), tuple(pods)))
        if self._last_seen.get(meta["uid"]) == fingerprint:
            return
        ref = audiojob_ref(body)
        log = audiojob_logger(ref.namespace, ref.name, ref.request_id)
        prev = AudioJobStatus.model_validate(raw_status)
        if prev.device is None and ref.uid in self._decisions:
            prev = prev.model_copy(update=self._decisions[ref.uid])  # our patch is still in flight
        if prev.device is None:
            prev = self._place(ref, prev, list(entries), meta.get("generation"), log)
            if prev.device is None:
                return
        status = fold(prev, Observed(ref.spec, manifest_prefix(ref), jobs, pods, now()))
        chunk = next_chunk(status, len(ref.spec.items))
        if chunk is not None:
            name = child_name(ref.name, chunk)
            if not any(job.chunk == chunk for job in jobs):
                self._create_chunk(ref, status, chunk, log)
            if name not in (status.jobs or []):
                status = status.model_copy(update={"jobs": [*(status.jobs or []), name]})
        self._sync_jobs(ref, status, jobs)
        status = status.model_copy(update={"observed_generation": meta.get("generation")})
        self._count_items(prev, status)
        if status.wire() != prev.wire():
            self._patch_status(ref, status)
        if status.phase.finished:
            self._finished.add(ref.uid)
            log.info("AudioJob %s: %s", status.phase.value, status.message)
        elif status.wire() == prev.wire():
            self._last_seen[ref.uid] = fingerprint  # settled: skip until something changes

    def forget(self, uid: str) -> None:
        """Drop what is remembered about one AudioJob (it finished or was deleted)."""
        self._decisions.pop(uid, None)
        self._finished.discard(uid)
        self._last_seen.pop(uid, None)

    # ------------------------------------------------------------------ placement

    def _place(self, ref: AudioJobRef, prev: AudioJobStatus, entries: list[AudioJobEntry],
               generation: int | None, log: Any) -> AudioJobStatus:
        """Decide the pool once and write the decision before any child exists."""
        spec = ref.spec
        if spec.suspend:
            return self._wait(ref, prev, AudioJobPhase.suspended, "suspended before placement")
        with self._placement_lock:  # the next grant must see this decision
            placement = self._choose(ref, entries)
            if placement is not None:
                decision = self._decisions[ref.uid] = self._decision(ref, placement)
        if placement is None:
            return self._wait(ref, prev, AudioJobPhase.pending,
                              "waiting for a GPU: the namespace quota or MAX_GPU_WORKERS is used up")
        gpus = f" with {placement.parallelism} GPUs" if placement.device == "gpu" else ""
        status = prev.model_copy(update={
            **decision,
            "phase": AudioJobPhase.processing,
            "message": f"placed on {placement.device}{gpus}",
            "counts": ItemCounts(total=len(spec.items)),
            "observed_generation": generation,
        })
        self._patch_status(ref, status)
        log.info("placed on %s, parallelism %d, %d chunks", placement.device, placement.parallelism,
                 len(decision["chunk_starts"]))
        return status

    def _choose(self, ref: AudioJobRef, entries: list[AudioJobEntry]) -> Placement | None:
        """CPU, GPU with the GPUs granted, or None: a ``gpu`` AudioJob waits."""
        spec = ref.spec
        if spec.device == Device.cpu:
            return Placement("cpu", spec.concurrency)
        granted = self._grant(ref, entries)
        if granted:
            return Placement("gpu", granted)
        return Placement("cpu", spec.concurrency) if spec.device == Device.auto else None

    def _decision(self, ref: AudioJobRef, placement: Placement) -> dict[str, Any]:
        chunk_starts = plan_chunks(resolved_items(ref.spec), self.settings.chunk_size, self.settings.chunk_max_bytes)
        return {
            "device": placement.device,
            "gpus": placement.parallelism if placement.device == "gpu" else 0,
            "chunk_starts": chunk_starts,
            "jobs": [child_name(ref.name, 0)],  # created right after this is written
            "manifest_prefix": manifest_prefix(ref),
            "start_time": now(),
        }

    def _grant(self, ref: AudioJobRef, entries: list[AudioJobEntry]) -> int:
        held: dict[str, int] = {}
        waiting: list[Demand] = []
        for entry in entries:
            if entry.finished:
                continue
            # A decision whose status patch has not come back through the watch yet counts too.
            decided = self._decisions.get(entry.uid) or {}
            device = entry.device or decided.get("device")
            gpus = entry.gpus or decided.get("gpus", 0)
            if device == "gpu":
                held[entry.namespace] = held.get(entry.namespace, 0) + gpus
            elif device is None and entry.wants != Device.cpu.value and not entry.suspended:
                waiting.append(Demand(entry.namespace, entry.name, max(1, min(entry.concurrency, entry.items)),
                                      entry.priority, entry.items, entry.created))
        if not any(d.key == (ref.namespace, ref.name) for d in waiting):  # not in the index yet
            waiting.append(Demand(ref.namespace, ref.name, min(ref.spec.concurrency, len(ref.spec.items)),
                                  ref.spec.priority, len(ref.spec.items), ""))
        rooms = {ns: self._namespace_room(ns, held.get(ns, 0)) for ns in {d.namespace for d in waiting}}
        metrics.GPUS_IN_USE.set(sum(held.values()))
        grants = grant_gpus(waiting, held, rooms, self.settings.max_gpu_workers)
        return grants.get((ref.namespace, ref.name), 0)

    def _namespace_room(self, namespace: str, held: int) -> int | None:
        quotas = self.core.list_namespaced_resource_quota(namespace).to_dict()["items"]
        room = namespace_room([_camel_quota(q) for q in quotas], held)
        if room is not None:
            metrics.GPU_QUOTA.labels(namespace).set(room)
        return room

    def _wait(self, ref: AudioJobRef, prev: AudioJobStatus, phase: AudioJobPhase, message: str) -> AudioJobStatus:
        status = prev.model_copy(update={
            "phase": phase, "message": message, "counts": ItemCounts(total=len(ref.spec.items)),
        })
        if status.wire() != prev.wire():
            self._patch_status(ref, status)
        return status

    # ------------------------------------------------------------------ children

    def _create_chunk(self, ref: AudioJobRef, status: AudioJobStatus, chunk: int, log: Any) -> None:
        starts = status.chunk_starts or [0]
        start, end = chunk_bounds(starts, len(ref.spec.items), chunk)
        assert status.device is not None
        parallelism = status.gpus if status.device == "gpu" else ref.spec.concurrency
        configmap = build_configmap(ref, chunk, resolved_items(ref.spec)[start:end])
        job = build_job(ref, chunk, start, end - start, Placement(status.device, parallelism or 1), self.settings)
        self._create_or_adopt(ref, "ConfigMap", configmap,
                              # The client takes manifests as plain dicts too (it serialises
                              # either); its annotations name only the generated models.
                              lambda: self.core.create_namespaced_config_map(
                                  ref.namespace, configmap  # type: ignore[arg-type]
                              ),
                              lambda: self.core.read_namespaced_config_map(configmap["metadata"]["name"], ref.namespace))
        created = self._create_or_adopt(ref, "Job", job,
                                        lambda: self.batch.create_namespaced_job(
                                            ref.namespace, job  # type: ignore[arg-type]  # as above
                                        ),
                                        lambda: self.batch.read_namespaced_job(job["metadata"]["name"], ref.namespace))
        if created:
            metrics.JOBS_CREATED.labels(status.device).inc()
            log.info("created Job %s for items %d..%d on %s", job["metadata"]["name"], start, end - 1, status.device)
        else:
            log.info("Job %s already existed (created before a restart): adopted", job["metadata"]["name"])

    def _create_or_adopt(self, ref: AudioJobRef, kind: str, manifest: dict[str, Any],
                         create: Callable[[], Any], read: Callable[[], Any]) -> bool:
        """Create; on 409 adopt the existing object if this AudioJob owns it. True if created."""
        try:
            create()
            return True
        except ApiException as exc:
            if exc.status != 409:
                raise
        existing = read()
        owner = (existing.metadata.labels or {}).get(LABEL_AUDIOJOB_UID)
        if owner != ref.uid:
            raise kopf.TemporaryError(
                f"{kind} {manifest['metadata']['name']} belongs to an earlier AudioJob of this name "
                f"(uid {owner}); waiting for its garbage collection", delay=5)
        return False

    def _sync_jobs(self, ref: AudioJobRef, status: AudioJobStatus, jobs: list[JobView]) -> None:
        """Carry spec.suspend and spec.concurrency (CPU) to the Jobs still running."""
        starts, total = status.chunk_starts or [0], len(ref.spec.items)
        wanted = status.gpus if status.device == "gpu" else ref.spec.concurrency
        for job in jobs:
            if job.finished or job.chunk >= len(starts):
                continue
            start, end = chunk_bounds(starts, total, job.chunk)
            parallelism = min(wanted or 1, end - start)
            if job.suspend != ref.spec.suspend or job.parallelism != parallelism:
                self.batch.patch_namespaced_job(
                    job.name, ref.namespace, {"spec": {"suspend": ref.spec.suspend, "parallelism": parallelism}})

    # ------------------------------------------------------------------ status

    def _patch_status(self, ref: AudioJobRef, status: AudioJobStatus) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, ref.namespace, PLURAL, ref.name, {"status": status.wire()})

    @staticmethod
    def _count_items(prev: AudioJobStatus, status: AudioJobStatus) -> None:
        before, after = prev.counts or ItemCounts(), status.counts or ItemCounts()
        if after.succeeded > before.succeeded:
            metrics.ITEMS.labels("succeeded").inc(after.succeeded - before.succeeded)
        if after.failed > before.failed:
            metrics.ITEMS.labels("failed").inc(after.failed - before.failed)


def _camel_quota(quota: dict[str, Any]) -> dict[str, Any]:
    """The client's snake_case ResourceQuota dict, reduced to the camelCase fields we read."""
    return {"spec": {"hard": (quota.get("spec") or {}).get("hard") or {}},
            "status": {"hard": (quota.get("status") or {}).get("hard") or {},
                       "used": (quota.get("status") or {}).get("used") or {}}}
