"""One AudioJob's reconcile: place it once, create its chunks' objects, mirror their state.

Level-based and idempotent, so it is safe to run at any time and after any crash:

1. A finished AudioJob is left alone.
2. An AudioJob without ``status.device`` is placed (CPU, GPU with N GPUs, or waits for a
   GPU); the decision and the chunk plan are written to its status *before* any Job exists,
   so a restarted operator never decides twice (written as the fold will show it, so that
   creating the first Job needs no second patch).
3. The first chunk with unfinished items gets its ConfigMap and Job (deterministic names:
   a 409 means the object is already there and is adopted when its owner is this AudioJob).
4. Job and pod state is folded into the status (``status.fold``), and ``spec.suspend`` and
   ``spec.concurrency`` are carried to the running Job.

A suspended GPU AudioJob gives its GPUs back (``status.gpus`` 0); resumed, it is granted GPUs
again like a waiting one, or waits (phase Pending, its Jobs kept suspended). Each decision
and each change the fold shows is posted as an Event (``events``).

What one tick leaves for the next is in the AudioJob's kopf memo (``memos.AudioJobMemo``);
the API server is reached only through ``cluster.ClusterApi``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from logging import LoggerAdapter
from typing import Any, Final

import kopf
from kubernetes.client.exceptions import ApiException

from audioproc.models.audiojob import (
    API_VERSION,
    KIND,
    MAX_LISTED_ITEMS,
    POD_ANNOTATIONS_ANNOTATION,
    REQUEST_ID_ANNOTATION,
    AudioJobPhase,
    AudioJobSpec,
    AudioJobStatus,
    Device,
    ItemCounts,
    QueueStatus,
)
from audioproc.models.pod_contract import ItemListError, ItemListScan
from audioproc_operator import metrics
from audioproc_operator.builder import (
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
from audioproc_operator.cluster import ChildKind, ClusterApi
from audioproc_operator.events import (
    Event,
    EventSink,
    Reason,
    events_of_fold,
    normal,
    wait_event,
    warning,
)
from audioproc_operator.items_source import list_failed, scan, scan_fields, video_ids
from audioproc_operator.kueue import (
    PendingWorkloads,
    admission_events,
    kueue_device,
    position_of,
    queue_name,
    queue_state,
    queued_message,
    with_position,
)
from audioproc_operator.logs import audiojob_logger
from audioproc_operator.memos import AudioJobMemo, GpuLedger
from audioproc_operator.quota import Demand, Shortage, grant_gpus, namespace_room, shortage
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
    kueue: bool = False  # admitted by Kueue (spec.queueName or status.queue): no GPU ledger entry


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
        # An item list counts once placed; until then it asks like a large batch.
        items=len(spec.get("items") or [])
        or int((st.get("counts") or {}).get("total") or 0)
        or MAX_LISTED_ITEMS,
        concurrency=int(spec.get("concurrency") or 1),
        created=meta.get("creationTimestamp") or "",
        phase=phase,
        kueue=bool(spec.get("queueName") or st.get("queue")),
    )


def gpu_ledger(
    entries: Iterable[AudioJobEntry], devices: Mapping[str, str], gpus: Mapping[str, int]
) -> tuple[dict[str, int], list[Demand]]:
    """GPUs held per namespace, and the AudioJobs waiting for GPUs.

    ``devices`` and ``gpus`` (uid -> device, uid -> GPUs) are this process's own decisions,
    fresher than the entries while their status patches come back through the watch. A
    placed GPU AudioJob holds its GPUs until it finishes or is suspended; suspended it holds
    and wants none; resumed without GPUs it waits like an unplaced one.
    """
    held: dict[str, int] = {}
    waiting: list[Demand] = []
    for entry in entries:
        if entry.finished or entry.kueue:  # Kueue holds the quota of Kueue-admitted ones
            continue
        device = entry.device or devices.get(entry.uid)
        holds = gpus.get(entry.uid, entry.gpus) if device == "gpu" else 0
        if holds:
            held[entry.namespace] = held.get(entry.namespace, 0) + holds
        elif not entry.suspended and (
            device == "gpu" or (device is None and entry.wants != Device.cpu.value)
        ):
            waiting.append(
                Demand(
                    entry.namespace,
                    entry.name,
                    max(1, min(entry.concurrency, entry.items)),
                    entry.priority,
                    entry.items,
                    entry.created,
                )
            )
    return held, waiting


def gpu_change(suspend: bool, status: AudioJobStatus) -> str | None:
    """``"release"`` (a suspended GPU AudioJob gives its GPUs back), ``"claim"`` (resumed, it
    asks again) or None."""
    if status.device != "gpu" or status.phase.finished:
        return None
    if suspend and status.gpus:
        return "release"
    if not suspend and not status.gpus:
        return "claim"
    return None


def audiojob_ref(body: dict[str, Any]) -> AudioJobRef:
    meta = body["metadata"]
    annotations = meta.get("annotations") or {}
    pod_annotations: dict[str, str] = {}
    if POD_ANNOTATIONS_ANNOTATION in annotations:
        try:
            parsed = json.loads(annotations[POD_ANNOTATIONS_ANNOTATION])
            pod_annotations = {str(k): str(v) for k, v in parsed.items()}
        except (ValueError, AttributeError) as exc:
            raise kopf.PermanentError(
                f"annotation {POD_ANNOTATIONS_ANNOTATION} is not a JSON object"
            ) from exc
    return AudioJobRef(
        name=meta["name"],
        namespace=meta["namespace"],
        uid=meta["uid"],
        spec=AudioJobSpec.model_validate(body["spec"]),
        request_id=annotations.get(REQUEST_ID_ANNOTATION),
        pod_annotations=pod_annotations,
        listed_total=int(((body.get("status") or {}).get("counts") or {}).get("total") or 0),
    )


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


WAITING_FOR_A_GPU: Final = "waiting for a GPU"

Logger = LoggerAdapter[Any]


def wanted_gpus(ref: AudioJobRef) -> int:
    """GPUs an AudioJob can use at once: one per pod, ``concurrency`` pods, at most one per
    item (an item list not counted yet: as a large batch)."""
    return max(1, min(ref.spec.concurrency, ref.total or MAX_LISTED_ITEMS))


def placed_message(placement: Placement, wanted: int, no_gpu: Shortage | None) -> str:
    """``status.message`` of a fresh placement; ``no_gpu``: why an ``auto`` AudioJob got none."""
    if placement.device == "gpu":
        gpus = placement.parallelism
        of = f" of {wanted} wanted" if gpus < wanted else ""
        return f"placed on gpu with {gpus} GPU{'s' if gpus != 1 else ''}{of}"
    message = f"placed on cpu, {placement.parallelism} pods at once"
    if no_gpu is not None:
        message += f" (device auto, no GPU: {no_gpu.message})"
    return message


def involved_object(ref: AudioJobRef) -> dict[str, Any]:
    """The AudioJob as an event's ``involvedObject`` needs it."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": ref.name, "namespace": ref.namespace, "uid": ref.uid},
    }


class Reconciler:
    """Reconciles AudioJobs through ``api``; operator-wide, one per process (in kopf's
    operator memo). Each call gets the AudioJob's own ``AudioJobMemo``."""

    def __init__(
        self,
        settings: OperatorSettings,
        api: ClusterApi,
        post_event: EventSink,
        ledger: GpuLedger | None = None,
    ) -> None:
        self.settings = settings
        self.api = api
        self.post_event = post_event
        self.ledger = ledger or GpuLedger()
        self.pending_workloads = PendingWorkloads(api.pending_workloads)
        metrics.GPU_CAP.set(settings.max_gpu_workers)

    # ------------------------------------------------------------------ entry point

    def reconcile(
        self,
        body: dict[str, Any],
        memo: AudioJobMemo,
        entries: Iterable[AudioJobEntry],
        jobs: list[JobView],
        pods: list[PodView],
    ) -> None:
        """One tick: place (once), hold or give back GPUs, fold, start the next chunk, write.

        ``body``: the AudioJob as the watch shows it; ``entries``: every AudioJob's
        placement facts (the kopf index); ``jobs``/``pods``: this AudioJob's children.
        """
        raw_status = body.get("status") or {}
        if raw_status.get("phase") and AudioJobPhase(raw_status["phase"]).finished:
            memo.finish()
        if memo.finished:
            return  # the final phase is written once, also while our patch is in flight
        meta = body["metadata"]
        fingerprint = hash((meta.get("resourceVersion"), tuple(jobs), tuple(pods)))
        if memo.settled == fingerprint:
            return
        ref = audiojob_ref(body)
        log = audiojob_logger(ref.namespace, ref.name, ref.request_id)
        prev = AudioJobStatus.model_validate(raw_status)
        if prev.device is None and memo.decision is not None:
            prev = prev.model_copy(update=memo.decision)  # our patch is still in flight
        seen = memo.written if memo.written is not None else prev  # what the events compare with
        if prev.device is None:
            prev = self._place(ref, memo, prev, entries, meta.get("generation"), log)
            if prev.device is None:
                return
            ref = replace(ref, listed_total=prev.counts.total if prev.counts else 0)
        held, no_gpu = prev, None
        if prev.queue is None:  # Kueue holds the quota of Kueue-admitted AudioJobs
            held, no_gpu = self._hold_gpus(ref, memo, prev, entries)
        ids = video_ids(ref.spec, held)
        status = self._advance(
            ref, held, Observed(ref.spec, manifest_prefix(ref), jobs, pods, now(), ids), no_gpu, log
        )
        status = status.model_copy(update={"observed_generation": meta.get("generation")})
        self._count_items(held, status)
        if self._write(ref, memo, seen, prev, status, no_gpu, ids, log):
            memo.settled = fingerprint  # settled: skip until something changes

    def delete_jobs(self, body: dict[str, Any], names: list[str]) -> None:
        """Delete an AudioJob's Jobs with foreground propagation: pods first, then each Job."""
        ref = audiojob_ref(body)
        for name in names:
            try:
                self.api.delete_job(ref.namespace, name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        prefix = (body.get("status") or {}).get("manifestPrefix") or manifest_prefix(ref)
        self._post(
            ref,
            normal(
                Reason.deleting,
                (
                    f"deleting Job(s) {', '.join(names) or '(none)'} and their pods (foreground); "
                    f"manifests already written stay under {prefix}"
                ),
            ),
        )
        audiojob_logger(ref.namespace, ref.name, ref.request_id).info(
            "deleted: Jobs %s deleted in the foreground", names
        )

    # ------------------------------------------------------------------ one tick's steps

    def _advance(
        self,
        ref: AudioJobRef,
        prev: AudioJobStatus,
        observed: Observed,
        no_gpu: Shortage | None,
        log: Logger,
    ) -> AudioJobStatus:
        """Fold the children into the status; then, unless waiting for GPUs (or suspended in
        Kueue mode), start the next chunk; carry suspend and parallelism to the running Jobs
        (in Kueue mode: suspend to the current Job's Workload)."""
        status = fold(prev, observed)
        jobs = observed.jobs
        if status.queue is not None and not status.phase.finished:
            status = self._kueue_status(ref, status, jobs)
        if status.queue is not None:
            self._carry_suspend_to_kueue(ref, prev, status, jobs)
        kueue_hold = status.queue is not None and ref.spec.suspend  # Kueue would admit it
        if no_gpu is None and not kueue_hold:
            status = self._start_next_chunk(ref, status, jobs, log)
        elif no_gpu is not None and not status.phase.finished:
            status = status.model_copy(
                update={
                    "phase": AudioJobPhase.pending,
                    "message": f"{WAITING_FOR_A_GPU}: {no_gpu.message}",
                }
            )
        self._sync_jobs(ref, status, jobs, hold=no_gpu is not None)
        return status

    def _start_next_chunk(
        self, ref: AudioJobRef, status: AudioJobStatus, jobs: list[JobView], log: Logger
    ) -> AudioJobStatus:
        """Create the first unfinished chunk's objects unless its Job is there; list its Job."""
        chunk = next_chunk(status, ref.total)
        if chunk is None:
            return status
        if not any(job.chunk == chunk for job in jobs):
            self._create_chunk(ref, status, chunk, log)
        name = child_name(ref.name, chunk)
        if name in (status.jobs or []):
            return status
        return status.model_copy(update={"jobs": [*(status.jobs or []), name]})

    def _write(
        self,
        ref: AudioJobRef,
        memo: AudioJobMemo,
        seen: AudioJobStatus,
        stored: AudioJobStatus,
        status: AudioJobStatus,
        no_gpu: Shortage | None,
        ids: Sequence[str],
        log: Logger,
    ) -> bool:
        """Patch the status if it changed from ``stored`` (as the API server has it, or will
        once our patches are seen) and post the events; True if the AudioJob is settled
        (nothing written, nothing waiting, no failure left to report)."""
        events = self._fold_events(memo, seen, status, no_gpu, ids)
        unchanged = status.wire() == stored.wire()
        if not unchanged:
            self._patch_status(ref, memo, status)
        for event in events:
            self._post(ref, event)
        if status.phase.finished:
            memo.finish()
            log.info("AudioJob %s: %s", status.phase.value, status.message)
            return False
        queued = status.queue is not None and not status.queue.admitted  # its position moves
        return unchanged and no_gpu is None and memo.failures.pending == 0 and not queued

    # ------------------------------------------------------------------ events

    def _post(self, ref: AudioJobRef, event: Event) -> None:
        self.post_event(involved_object(ref), event)

    @staticmethod
    def _fold_events(
        memo: AudioJobMemo,
        seen: AudioJobStatus,
        status: AudioJobStatus,
        no_gpu: Shortage | None,
        ids: Sequence[str],
    ) -> list[Event]:
        """Failed items (batched), suspend/resume, finished chunks, the outcome, a new wait;
        ``ids``: every item's video id by index."""
        events = events_of_fold(seen, status, ids, memo.failures, time.monotonic())
        if no_gpu is not None and (seen.phase, seen.message) != (status.phase, status.message):
            events.append(wait_event(status.message or WAITING_FOR_A_GPU, no_gpu))
        return events + admission_events(seen, status)

    # ------------------------------------------------------------------ placement

    def _place(
        self,
        ref: AudioJobRef,
        memo: AudioJobMemo,
        prev: AudioJobStatus,
        entries: Iterable[AudioJobEntry],
        generation: int | None,
        log: Logger,
    ) -> AudioJobStatus:
        """Decide the pool once and write the decision before any child exists (an item list is
        validated and counted first: an unusable one fails the AudioJob)."""
        spec = ref.spec
        listed: ItemListScan | None = None
        if spec.items_from is not None:
            try:
                listed = self._scan(ref, memo, log)
            except ItemListError as exc:
                return self._list_failed(ref, memo, prev, exc)
            ref = replace(ref, listed_total=listed.count)
        if spec.suspend:
            return self._wait(
                ref,
                memo,
                prev,
                AudioJobPhase.suspended,
                "suspended before placement",
                normal(
                    Reason.suspended,
                    "suspended before placement: nothing runs until spec.suspend is false",
                ),
            )
        local_queue = queue_name(spec, self.settings)
        if local_queue is not None:
            return self._submit_to_kueue(ref, memo, prev, local_queue, listed, generation, log)
        with self.ledger.lock:  # the next grant must see this decision
            placement, no_gpu = self._choose(ref, entries)
            if placement is not None:
                memo.decision = self._decision(ref, placement, listed)
                if placement.device == "gpu":
                    memo.gpus = placement.parallelism
                self.ledger.track(ref.uid, memo)
        if placement is None:
            assert no_gpu is not None
            message = f"{WAITING_FOR_A_GPU}: {no_gpu.message}"
            return self._wait(
                ref, memo, prev, AudioJobPhase.pending, message, wait_event(message, no_gpu)
            )
        return self._write_placement(ref, memo, prev, placement, no_gpu, generation, log)

    def _write_placement(
        self,
        ref: AudioJobRef,
        memo: AudioJobMemo,
        prev: AudioJobStatus,
        placement: Placement,
        no_gpu: Shortage | None,
        generation: int | None,
        log: Logger,
    ) -> AudioJobStatus:
        """Patch the decision into the status and post the Placed event (after QuotaRejected
        when an ``auto`` AudioJob went to the CPU for want of quota)."""
        assert memo.decision is not None
        message = placed_message(placement, wanted_gpus(ref), no_gpu)
        if no_gpu is not None and no_gpu.quota:
            self._post(
                ref, warning(Reason.quota_rejected, f"no GPU for device auto: {no_gpu.message}")
            )
        decided = prev.model_copy(
            update={
                **memo.decision,
                "counts": ItemCounts(total=ref.total),
                "observed_generation": generation,
            }
        )
        # Written as the fold sees it before any Job exists (phase Processing, "0 of N items
        # finished on <device>"), so that creating the first Job needs no second patch;
        # ``message`` (why this placement) goes in the Placed event.
        ids = video_ids(ref.spec, decided)
        status = fold(decided, Observed(ref.spec, manifest_prefix(ref), [], [], now(), ids))
        self._patch_status(ref, memo, status)
        chunks = len(memo.decision["chunk_starts"])
        self._post(ref, normal(Reason.placed, f"{message}; {ref.total} items in {chunks} Job(s)"))
        log.info(
            "placed on %s, parallelism %d, %d chunks",
            placement.device,
            placement.parallelism,
            chunks,
        )
        return status

    # ------------------------------------------------------------------ Kueue mode

    def _submit_to_kueue(
        self,
        ref: AudioJobRef,
        memo: AudioJobMemo,
        prev: AudioJobStatus,
        local_queue: str,
        listed: ItemListScan | None,
        generation: int | None,
        log: Logger,
    ) -> AudioJobStatus:
        """Kueue mode: fix the pool and the LocalQueue; Kueue decides when the Jobs run."""
        device = kueue_device(ref.spec)
        decision = self._decision(ref, Placement(device, ref.spec.concurrency), listed)
        decision.update(gpus=0, queue=QueueStatus(local_queue=local_queue))
        with self.ledger.lock:  # placement must leave it out before the watch shows its queue
            memo.decision = decision
            self.ledger.track(ref.uid, memo)
        status = prev.model_copy(
            update={
                **decision,
                "phase": AudioJobPhase.pending,
                "message": queued_message(decision["queue"]),
                "counts": ItemCounts(total=ref.total),
                "observed_generation": generation,
            }
        )
        self._patch_status(ref, memo, status)
        self._post(
            ref,
            normal(
                Reason.queued,
                f"submitted to Kueue (LocalQueue {local_queue}) for the {device} pool; "
                f"{ref.total} items in {len(decision['chunk_starts'])} Job(s)",
            ),
        )
        log.info("submitted to Kueue LocalQueue %s on %s", local_queue, device)
        return status

    def _kueue_status(
        self, ref: AudioJobRef, status: AudioJobStatus, jobs: list[JobView]
    ) -> AudioJobStatus:
        """Admitted by Kueue (the fold's phase stands), or Pending, queued, with its position."""
        assert status.queue is not None
        chunk = next_chunk(status, ref.total)
        current = child_name(ref.name, chunk) if chunk is not None else None
        queue = queue_state(status.queue.local_queue, jobs, current, ref.spec.suspend)
        if queue.admitted or ref.spec.suspend or current is None:
            return status.model_copy(update={"queue": queue})
        summary = self.pending_workloads.summary(ref.namespace, queue.local_queue)
        queue = with_position(queue, position_of(summary, current))
        return status.model_copy(
            update={
                "queue": queue,
                "phase": AudioJobPhase.pending,
                "message": queued_message(queue),
            }
        )

    def _carry_suspend_to_kueue(
        self, ref: AudioJobRef, stored: AudioJobStatus, status: AudioJobStatus, jobs: list[JobView]
    ) -> None:
        """spec.suspend in Kueue mode: deactivate the current Job's Workload (Kueue suspends
        the Job and gives its quota back); resumed, activate it again (it queues anew)."""
        if status.phase.finished or ref.spec.suspend == (stored.phase == AudioJobPhase.suspended):
            return
        chunk = next_chunk(status, ref.total)
        current = child_name(ref.name, chunk) if chunk is not None else None
        if current is None or not any(job.name == current for job in jobs):
            return  # no Job yet: none is created while suspended
        if not self.api.set_workload_active(ref.namespace, current, not ref.spec.suspend):
            raise kopf.TemporaryError(
                f"waiting for Kueue's Workload of Job {current} to carry spec.suspend", delay=2
            )

    # ------------------------------------------------------------------ placement (ours)

    def _choose(
        self, ref: AudioJobRef, entries: Iterable[AudioJobEntry]
    ) -> tuple[Placement | None, Shortage | None]:
        """CPU, GPU with the GPUs granted, or None (a ``gpu`` AudioJob waits); and why no GPU."""
        spec = ref.spec
        if spec.device == Device.cpu:
            return Placement("cpu", spec.concurrency), None
        granted, no_gpu = self._grant(ref, entries)
        if granted:
            return Placement("gpu", granted), None
        return (Placement("cpu", spec.concurrency) if spec.device == Device.auto else None), no_gpu

    def _hold_gpus(
        self,
        ref: AudioJobRef,
        memo: AudioJobMemo,
        status: AudioJobStatus,
        entries: Iterable[AudioJobEntry],
    ) -> tuple[AudioJobStatus, Shortage | None]:
        """Give a suspended GPU AudioJob's GPUs back; on resume grant them again or say why not."""
        change = gpu_change(ref.spec.suspend, status)
        if change is None:
            return status, None
        if change == "release":
            with self.ledger.lock:
                memo.gpus = 0
                self.ledger.track(ref.uid, memo)
            return status.model_copy(update={"gpus": 0}), None
        with self.ledger.lock:
            granted, no_gpu = self._grant(ref, entries)
            if granted:
                memo.gpus = granted
                self.ledger.track(ref.uid, memo)
        if not granted:
            return status, no_gpu
        return status.model_copy(update={"gpus": granted}), None

    def _decision(
        self, ref: AudioJobRef, placement: Placement, listed: ItemListScan | None
    ) -> dict[str, Any]:
        if listed is not None:
            chunks = scan_fields(listed)
        else:
            chunks = {
                "chunk_starts": plan_chunks(
                    resolved_items(ref.spec),
                    self.settings.chunk_size,
                    self.settings.chunk_max_bytes,
                )
            }
        return {
            "device": placement.device,
            "gpus": placement.parallelism if placement.device == "gpu" else 0,
            **chunks,
            "jobs": [child_name(ref.name, 0)],  # created right after this is written
            "manifest_prefix": manifest_prefix(ref),
            "start_time": now(),
        }

    def _grant(
        self, ref: AudioJobRef, entries: Iterable[AudioJobEntry]
    ) -> tuple[int, Shortage | None]:
        """GPUs granted to ``ref`` now (under the ledger's lock), and why none when 0."""
        # Kueue-admitted AudioJobs whose status.queue the watch has not shown yet: left out too.
        queued = self.ledger.queued()
        ours = [entry for entry in entries if entry.uid not in queued]
        held, waiting = gpu_ledger(ours, self.ledger.devices(), self.ledger.gpus())
        key = (ref.namespace, ref.name)
        if not any(d.key == key for d in waiting):  # not in the index yet, or resumed a moment ago
            waiting.append(
                Demand(
                    ref.namespace,
                    ref.name,
                    wanted_gpus(ref),
                    ref.spec.priority,
                    ref.total or MAX_LISTED_ITEMS,
                    "",
                )
            )
        rooms = {
            ns: self._namespace_room(ns, held.get(ns, 0)) for ns in {d.namespace for d in waiting}
        }
        metrics.GPUS_IN_USE.set(sum(held.values()))
        granted = grant_gpus(waiting, held, rooms, self.settings.max_gpu_workers).get(key, 0)
        if granted:
            return granted, None
        free = self.settings.max_gpu_workers - sum(held.values())
        return 0, shortage(
            ref.namespace, rooms.get(ref.namespace), free, self.settings.max_gpu_workers
        )

    def _namespace_room(self, namespace: str, held: int) -> int | None:
        room = namespace_room(self.api.resource_quotas(namespace), held)
        if room is not None:
            metrics.GPU_QUOTA.labels(namespace).set(room)
        return room

    def _wait(
        self,
        ref: AudioJobRef,
        memo: AudioJobMemo,
        prev: AudioJobStatus,
        phase: AudioJobPhase,
        message: str,
        event: Event,
    ) -> AudioJobStatus:
        """Not placed (yet): the phase and message in the status, and an event when they change."""
        status = prev.model_copy(
            update={
                "phase": phase,
                "message": message,
                "counts": ItemCounts(total=ref.total),
            }
        )
        last = (
            memo.written if memo.written is not None else prev
        )  # the watch may not show our last patch yet
        if status.wire() != prev.wire():
            self._patch_status(ref, memo, status)
        if (last.phase, last.message) != (status.phase, status.message):
            self._post(ref, event)
        return status

    # ------------------------------------------------------------------ item lists

    def _scan(self, ref: AudioJobRef, memo: AudioJobMemo, log: Logger) -> ItemListScan:
        """The item list validated and counted (once per AudioJob: a GPU AudioJob waiting for
        placement does not read it again each tick). Raises ItemListError: it cannot be used."""
        assert ref.spec.items_from is not None
        if memo.scan is None:
            started = time.perf_counter()
            memo.scan = scan(ref.spec.items_from.uri, self.settings.chunk_size)
            log.info(
                "item list %s: %d items, read in %.2f s",
                ref.spec.items_from.uri,
                memo.scan.count,
                time.perf_counter() - started,
            )
        return memo.scan

    def _list_failed(
        self, ref: AudioJobRef, memo: AudioJobMemo, prev: AudioJobStatus, error: ItemListError
    ) -> AudioJobStatus:
        """Fail an AudioJob whose item list cannot be used: final status and a warning event."""
        status = list_failed(prev, error, now())
        self._patch_status(ref, memo, status)
        self._post(ref, warning(Reason.failed, str(error)))
        memo.finish()
        return status

    # ------------------------------------------------------------------ children

    def _create_chunk(
        self, ref: AudioJobRef, status: AudioJobStatus, chunk: int, log: Logger
    ) -> None:
        starts = status.chunk_starts or [0]
        start, end = chunk_bounds(starts, ref.total, chunk)
        assert status.device is not None
        granted = status.device == "gpu" and status.queue is None  # Kueue mode: Kueue grants
        parallelism = status.gpus if granted else ref.spec.concurrency
        offsets = status.chunk_offsets
        job = build_job(
            ref,
            chunk,
            start,
            end - start,
            Placement(status.device, parallelism or 1),
            self.settings,
            chunk_offset=offsets[chunk] if offsets and ref.spec.items_from else None,
            local_queue=status.queue.local_queue if status.queue else None,
        )
        if ref.spec.items is not None:  # an item list's pods read their own lines: no ConfigMap
            configmap = build_configmap(ref, chunk, resolved_items(ref.spec)[start:end])
            self._create_or_adopt(ref, "ConfigMap", configmap)
        name = job["metadata"]["name"]
        if not self._create_or_adopt(ref, "Job", job):
            log.info("Job %s already existed (created before a restart): adopted", name)
            return
        metrics.JOBS_CREATED.labels(status.device).inc()
        self._post(
            ref,
            normal(
                Reason.job_created,
                (
                    f"created Job {name} for items {start}-{end - 1} on {status.device}, "
                    f"{job['spec']['parallelism']} pods at once"
                ),
            ),
        )
        log.info("created Job %s for items %d..%d on %s", name, start, end - 1, status.device)

    def _create_or_adopt(self, ref: AudioJobRef, kind: ChildKind, manifest: dict[str, Any]) -> bool:
        """Create; on 409 adopt the existing object if this AudioJob owns it. True if created."""
        try:
            self.api.create_child(kind, manifest)
            return True
        except ApiException as exc:
            if exc.status != 409:
                raise
        name = manifest["metadata"]["name"]
        owner = self.api.child_owner_uid(kind, ref.namespace, name)
        if owner != ref.uid:
            raise kopf.TemporaryError(
                f"{kind} {name} belongs to an earlier AudioJob of this name "
                f"(uid {owner}); waiting for its garbage collection",
                delay=5,
            )
        return False

    def _sync_jobs(
        self, ref: AudioJobRef, status: AudioJobStatus, jobs: list[JobView], hold: bool
    ) -> None:
        """Carry spec.suspend and spec.concurrency (CPU) to the Jobs still running; ``hold``
        keeps them suspended (resumed, but waiting for GPUs). Kueue owns the suspend and the
        parallelism of the Jobs it admits: they are left alone."""
        if status.queue is not None:
            return
        suspend = ref.spec.suspend or hold
        starts, total = status.chunk_starts or [0], ref.total
        wanted = status.gpus if status.device == "gpu" else ref.spec.concurrency
        for job in jobs:
            if job.finished or job.chunk >= len(starts):
                continue
            start, end = chunk_bounds(starts, total, job.chunk)
            parallelism = min(wanted or 1, end - start)
            if job.suspend != suspend or job.parallelism != parallelism:
                self.api.patch_job(
                    ref.namespace,
                    job.name,
                    {"spec": {"suspend": suspend, "parallelism": parallelism}},
                )

    # ------------------------------------------------------------------ status

    def _patch_status(self, ref: AudioJobRef, memo: AudioJobMemo, status: AudioJobStatus) -> None:
        memo.written = status
        self.api.patch_audiojob_status(ref.namespace, ref.name, status.wire())

    @staticmethod
    def _count_items(prev: AudioJobStatus, status: AudioJobStatus) -> None:
        before, after = prev.counts or ItemCounts(), status.counts or ItemCounts()
        if after.succeeded > before.succeeded:
            metrics.ITEMS.labels("succeeded").inc(after.succeeded - before.succeeded)
        if after.failed > before.failed:
            metrics.ITEMS.labels("failed").inc(after.failed - before.failed)
