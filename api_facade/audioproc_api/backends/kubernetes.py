"""The kubernetes backend: a task is an AudioJob; the operator does the rest.

This backend creates, reads, watches and deletes AudioJobs; it never changes Jobs or pods (a
cancel deletes the AudioJob with foreground propagation, so its Jobs and pods go first), and
only lists an AudioJob's Jobs and Events to show them (``cluster_objects``). Waiting for a
task is a watch on that one AudioJob. Manifests are read from the output storage at the URI
the operator recorded in the AudioJob's status.

A batch of more than API_ITEMS_FROM_THRESHOLD items is written to the output storage as an
item list (``<output>/<task_id>.items.jsonl``) and its AudioJob names it in ``spec.itemsFrom``;
the items of such a task are read from that list a page at a time, and its results from the
manifests at their deterministic location (its status lists only failures).

The object builder (``audiojob_for``) and the status reader (``view_of``) are pure functions,
unit-tested without a cluster.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, cast

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from audioproc.errors import StorageError
from audioproc.models import AudioJob, Manifest
from audioproc.models.audiojob import (
    AUDIOJOB_UID_LABEL,
    GROUP,
    PLURAL,
    REQUEST_ID_ANNOTATION,
    VERSION,
    AudioJobItem,
    AudioJobItemStatus,
    AudioJobPhase,
    AudioJobSpec,
    AudioJobStatus,
    ItemPhase,
    ItemsFrom,
    ObjectMeta,
)
from audioproc.models.pod_contract import (
    ItemListError,
    item_list_bytes,
    manifest_uri,
    parse_index_ranges,
    read_item_lines,
)
from audioproc.storage import open_stream, read_bytes, write_object
from audioproc_api.backends.base import (
    SUBMITTER_LABEL,
    TASK_KIND_LABEL,
    BackendUnavailable,
    ResultNotAvailable,
    Submission,
    TaskNotFound,
    UnsupportedRequest,
    item_artifact,
    item_manifest,
    parse_sequence_cursor,
    task_status_of,
)
from audioproc_api.catalog import extractor_entries
from audioproc_api.schemas import (
    ClusterObjects,
    EventView,
    ExtractorEntry,
    ItemStatus,
    ItemView,
    JobView,
    TaskKind,
    TaskStatus,
    TaskView,
)
from audioproc_api.settings import ApiSettings

log = logging.getLogger(__name__)

#: Seconds for a single API call; waits and watches have their own deadlines.
REQUEST_TIMEOUT_S = 10
#: AudioJobs per list call when every one is read (newest-first listing).
LIST_CHUNK = 500


def item_list_uri(output: str, task_id: str) -> str:
    """Where a task's item list goes: beside its output folder (never inside it, where a video
    id could name the same path)."""
    return f"{output.removesuffix('/')}/{task_id}.items.jsonl"


def listed_spec(spec: AudioJobSpec, uri: str) -> AudioJobSpec:
    """``spec`` with its items replaced by the item list at ``uri``."""
    return spec.model_copy(update={"items": None, "items_from": ItemsFrom(uri=uri)})


def audiojob_for(submission: Submission, namespace: str) -> dict[str, Any]:
    """The AudioJob object (wire form) for a submission; the submitter (a token name, which is
    label-value-safe) is a label, so listing can select on it."""
    labels = {TASK_KIND_LABEL: submission.kind.value}
    if submission.submitter is not None:
        labels[SUBMITTER_LABEL] = submission.submitter
    job = AudioJob(
        metadata=ObjectMeta(
            name=submission.task_id,
            namespace=namespace,
            labels=labels,
            annotations={REQUEST_ID_ANNOTATION: submission.request_id},
        ),
        spec=submission.spec,
    )
    return job.wire()


def _item_status(
    index: int,
    result: AudioJobItemStatus | None,
    succeeded: set[int],
    failed: set[int],
    task_status: TaskStatus,
) -> ItemStatus:
    if (result and result.phase is ItemPhase.succeeded) or index in succeeded:
        return ItemStatus.completed
    if (result and result.phase is ItemPhase.failed) or index in failed:
        return ItemStatus.failed
    # Unfinished items are only counted in the AudioJob's status, not named.
    return ItemStatus.processing if task_status is TaskStatus.processing else ItemStatus.pending


def view_of(
    obj: dict[str, Any],
    with_items: bool = True,
    page: Sequence[tuple[int, AudioJobItem]] | None = None,
) -> TaskView:
    """A task view of an AudioJob as read from the API server.

    The operator lists at most a thousand item results in the status (failed ones first; an
    itemsFrom AudioJob: failed ones only); the others are known from the index ranges and the
    deterministic manifest location. ``page``: the (index, item) pairs to show; default every
    item of ``spec.items`` (an itemsFrom AudioJob's items are in storage: none unless given).
    """
    job = AudioJob.model_validate(obj)
    status = job.status or AudioJobStatus()
    metadata = obj.get("metadata", {})
    deleting = bool(metadata.get("deletionTimestamp"))
    task_status = TaskStatus.failed if deleting else task_status_of(status.phase)
    results = {r.index: r for r in status.items or []}
    succeeded_indexes = parse_index_ranges(status.succeeded_indexes)
    failed_indexes = parse_index_ranges(status.failed_indexes)
    if job.spec.items is not None:
        total = len(job.spec.items)
    else:
        total = status.counts.total if status.counts else 0
    items = []
    for index, item in enumerate(job.spec.items or []) if page is None else page:
        result = results.get(index)
        item_status = _item_status(index, result, succeeded_indexes, failed_indexes, task_status)
        item_manifest_uri = result.manifest_uri if result else None
        if item_status is ItemStatus.completed and not item_manifest_uri and status.manifest_prefix:
            item_manifest_uri = manifest_uri(status.manifest_prefix, item.video_id)
        items.append(
            ItemView(
                index=index,
                video_id=item.video_id,
                input_uri=item.input_uri,
                status=item_status,
                manifest_uri=item_manifest_uri,
                device=result.device if result else None,
                error=result.error if result else None,
            )
        )
    succeeded = sum(i.status is ItemStatus.completed for i in items)
    failed = sum(i.status is ItemStatus.failed for i in items)
    running = 0
    if status.counts:
        succeeded, failed, running = (
            status.counts.succeeded,
            status.counts.failed,
            status.counts.active,
        )
    error = None
    if deleting:
        error = "cancelled"
    elif failed or status.phase is AudioJobPhase.failed:
        first = next((i.error for i in items if i.status is ItemStatus.failed and i.error), None)
        parts = [
            status.message,
            f"{failed} of {total} items failed" if failed else None,
            f"first: {first}" if first else None,
        ]
        error = "; ".join(p for p in parts if p) or "failed"
    labels = metadata.get("labels") or {}
    kind = str(labels.get(TASK_KIND_LABEL, ""))
    created = metadata.get("creationTimestamp")
    return TaskView(
        task_id=metadata["name"],
        kind=TaskKind(kind) if kind in set(TaskKind) else TaskKind.batch,
        status=task_status,
        progress=status.progress,
        error=error,
        device=job.spec.device,
        created_at=datetime.fromisoformat(created.replace("Z", "+00:00")) if created else None,
        request_id=(metadata.get("annotations") or {}).get(REQUEST_ID_ANNOTATION),
        submitter=labels.get(SUBMITTER_LABEL),
        total=total,
        succeeded=succeeded,
        failed=failed,
        running=running,
        phase=status.phase.value,
        items=items if with_items else [],
    )


def job_view(job: client.V1Job) -> JobView:
    """A Job as the client reads it, in the API's words."""
    metadata = job.metadata or client.V1ObjectMeta()
    spec = job.spec
    status = job.status or client.V1JobStatus()
    return JobView(
        name=metadata.name or "",
        completions=spec.completions if spec else None,
        succeeded=status.succeeded or 0,
        failed=status.failed or 0,
        active=status.active or 0,
        suspended=bool(spec and spec.suspend),
        created_at=metadata.creation_timestamp,
    )


def event_view(event: client.CoreV1Event) -> EventView:
    """An Event as the client reads it; its time is the last time it happened (kopf and the
    API server's aggregation set ``lastTimestamp``; newer posters only ``eventTime``)."""
    return EventView(
        type=event.type,
        reason=event.reason,
        message=event.message,
        count=event.count or 1,
        last_at=event.last_timestamp or event.event_time or event.first_timestamp,
    )


@contextmanager
def _api_errors(task_id: str | None = None) -> Iterator[None]:
    """Kubernetes client errors in this service's vocabulary."""
    try:
        yield
    except ApiException as exc:
        if exc.status == 404 and task_id is not None:
            raise TaskNotFound(task_id) from exc
        if exc.status in (400, 422):
            raise UnsupportedRequest(
                "spec", f"the API server rejected the AudioJob: {exc.reason}: {exc.body}"
            ) from exc
        raise BackendUnavailable(f"Kubernetes API error {exc.status}: {exc.reason}") from exc
    except (TaskNotFound, UnsupportedRequest, ResultNotAvailable):
        raise
    except Exception as exc:  # connection refused, timeouts, TLS: the API server is not reachable
        raise BackendUnavailable(
            f"Kubernetes API unreachable: {type(exc).__name__}: {exc}"
        ) from exc


class KubernetesBackend:
    name = "kubernetes"

    def __init__(self, settings: ApiSettings, output: str) -> None:
        self.settings = settings
        self.output = output
        self.namespace = settings.api_namespace
        self._api: client.CustomObjectsApi | None = None
        self._batch: client.BatchV1Api | None = None
        self._core: client.CoreV1Api | None = None

    def start(self) -> None:
        if self.settings.kubeconfig is not None:
            api_client = config.new_client_from_config(config_file=str(self.settings.kubeconfig))
        else:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            api_client = client.ApiClient()
        self._api = client.CustomObjectsApi(api_client)
        self._batch = client.BatchV1Api(api_client)
        self._core = client.CoreV1Api(api_client)

    def close(self) -> None:
        if self._api is not None:
            self._api.api_client.close()

    @property
    def api(self) -> client.CustomObjectsApi:
        assert self._api is not None, "backend not started"
        return self._api

    def _read(self, task_id: str) -> dict[str, Any]:
        with _api_errors(task_id):
            # A custom object: the client returns the decoded JSON (typed as object).
            return cast(
                dict[str, Any],
                self.api.get_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.namespace,
                    PLURAL,
                    task_id,
                    _request_timeout=REQUEST_TIMEOUT_S,
                ),
            )

    def not_ready_reason(self) -> str | None:
        try:
            self.api.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, limit=1, _request_timeout=REQUEST_TIMEOUT_S
            )
        except ApiException as exc:
            if exc.status == 404:
                return f"the AudioJob CRD ({PLURAL}.{GROUP}/{VERSION}) is not installed"
            return f"Kubernetes API error {exc.status}: {exc.reason}"
        except Exception as exc:
            return f"Kubernetes API unreachable: {type(exc).__name__}: {exc}"
        return None

    def submit(self, submission: Submission) -> str:
        spec = submission.spec
        if spec.items is not None and len(spec.items) > self.settings.api_items_from_threshold:
            uri = item_list_uri(spec.output, submission.task_id)
            try:
                write_object(uri, item_list_bytes(spec.items), self.settings)
            except Exception as exc:  # StorageError: the output storage cannot take it now
                raise BackendUnavailable(f"the item list could not be written: {exc}") from exc
            submission = replace(submission, spec=listed_spec(spec, uri))
        with _api_errors():
            self.api.create_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                audiojob_for(submission, self.namespace),
                _request_timeout=REQUEST_TIMEOUT_S,
            )
        return submission.task_id

    def get(self, task_id: str, items_offset: int = 0, items_limit: int | None = None) -> TaskView:
        obj = self._read(task_id)
        if "itemsFrom" in obj.get("spec", {}):
            return self._listed_view(obj, items_offset, items_limit)
        view = view_of(obj)
        end = (
            len(view.items)
            if items_limit is None
            else min(len(view.items), items_offset + items_limit)
        )
        return view.model_copy(
            update={
                "items": view.items[items_offset:end],
                "items_next_offset": end if end < len(view.items) else None,
            }
        )

    def _listed_view(self, obj: dict[str, Any], offset: int, limit: int | None) -> TaskView:
        """The view of an itemsFrom AudioJob with items ``offset`` on (at most ``limit``), read
        from its item list: from the byte offset of the chunk that holds ``offset``."""
        job = AudioJob.model_validate(obj)
        status = job.status or AudioJobStatus()
        total = status.counts.total if status.counts else 0
        count = max(0, min(total, offset + (limit if limit is not None else total)) - offset)
        page: list[tuple[int, AudioJobItem]] = []
        if count and job.spec.items_from is not None:
            uri = job.spec.items_from.uri
            starts, offsets = status.chunk_starts or [0], status.chunk_offsets or [0]
            chunk = bisect.bisect_right(starts, offset) - 1
            try:
                with open_stream(uri, offsets[chunk], self.settings) as stream:
                    read_item_lines(stream, uri, starts[chunk] + 1, offset - starts[chunk])
                    items = read_item_lines(stream, uri, offset + 1, count)
            except (ItemListError, StorageError) as exc:
                raise BackendUnavailable(f"the task's item list cannot be read: {exc}") from exc
            page = list(enumerate(items, start=offset))
        view = view_of(obj, page=page)
        end = offset + len(page)
        return view.model_copy(update={"items_next_offset": end if end < total else None})

    def wait(self, task_id: str, timeout_s: float) -> TaskView:
        """Watch the AudioJob until it finishes or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        obj = self._read(task_id)
        while True:
            view = view_of(obj)
            remaining = deadline - time.monotonic()
            if view.status.finished or remaining <= 0:
                return view
            resource_version = obj["metadata"]["resourceVersion"]
            stream = watch.Watch()
            try:
                with _api_errors(task_id):
                    for event in stream.stream(
                        self.api.list_namespaced_custom_object,
                        GROUP,
                        VERSION,
                        self.namespace,
                        PLURAL,
                        field_selector=f"metadata.name={task_id}",
                        resource_version=resource_version,
                        timeout_seconds=max(1, int(remaining)),
                    ):
                        if event["type"] == "DELETED":
                            raise TaskNotFound(task_id)
                        obj = event["raw_object"]
                        if view_of(obj).status.finished or time.monotonic() >= deadline:
                            break
            except BackendUnavailable as exc:
                if isinstance(exc.__cause__, ApiException) and exc.__cause__.status == 410:
                    obj = self._read(task_id)  # our resourceVersion expired: start over from now
                    continue
                raise
            finally:
                stream.stop()

    def cancel(self, task_id: str) -> None:
        """Delete the AudioJob in the foreground: its Jobs and their pods are deleted first, and
        until they are gone the AudioJob stays (with a deletionTimestamp), read as cancelled.
        Manifests already written stay in the output storage."""
        with _api_errors(task_id):
            self.api.delete_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                task_id,
                propagation_policy="Foreground",
                _request_timeout=REQUEST_TIMEOUT_S,
            )

    def list_tasks(
        self,
        status: TaskStatus | None,
        limit: int,
        cursor: str | None,
        submitter: str | None = None,
        newest_first: bool = False,
    ) -> tuple[list[TaskView], str | None]:
        """A page of AudioJobs in name (= creation) order, only ``submitter``'s (a label selector)
        unless None; the status filter is applied here, fetching further pages until ``limit``
        match, so the API's continue token stays exact.

        Newest first, the API server cannot page backwards: every AudioJob is read (O(all tasks)
        per page), sorted by creation time, and the cursor is the offset of the next page."""
        selector = f"{SUBMITTER_LABEL}={submitter}" if submitter is not None else None
        if newest_first:
            return self._list_newest_first(status, limit, parse_sequence_cursor(cursor), selector)
        views: list[TaskView] = []
        token = cursor
        while True:
            try:
                # The decoded JSON list (typed as object by the client).
                page = cast(
                    dict[str, Any],
                    self.api.list_namespaced_custom_object(
                        GROUP,
                        VERSION,
                        self.namespace,
                        PLURAL,
                        limit=limit - len(views),
                        _continue=token or None,
                        label_selector=selector,
                        _request_timeout=REQUEST_TIMEOUT_S,
                    ),
                )
            except ApiException as exc:
                if exc.status in (400, 410) and token:  # a made-up or expired continue token
                    raise UnsupportedRequest(
                        "cursor",
                        "invalid or expired cursor; list again from the start",
                        location="query",
                    ) from exc
                with _api_errors():
                    raise
            for obj in page.get("items", []):
                view = view_of(obj, with_items=False)
                if status is None or view.status is status:
                    views.append(view)
            token = page.get("metadata", {}).get("continue") or None
            if token is None or len(views) >= limit:
                return views, token

    def _list_newest_first(
        self, status: TaskStatus | None, limit: int, offset: int, selector: str | None
    ) -> tuple[list[TaskView], str | None]:
        views: list[TaskView] = []
        token: str | None = None
        while True:
            with _api_errors():
                # The decoded JSON list (typed as object by the client).
                page = cast(
                    dict[str, Any],
                    self.api.list_namespaced_custom_object(
                        GROUP,
                        VERSION,
                        self.namespace,
                        PLURAL,
                        limit=LIST_CHUNK,
                        _continue=token,
                        label_selector=selector,
                        _request_timeout=REQUEST_TIMEOUT_S,
                    ),
                )
            views += [
                v
                for v in (view_of(o, with_items=False) for o in page.get("items", []))
                if status is None or v.status is status
            ]
            token = page.get("metadata", {}).get("continue") or None
            if token is None:
                break
        epoch = datetime.min.replace(tzinfo=UTC)
        views.sort(key=lambda v: (v.created_at or epoch, v.task_id), reverse=True)
        end = offset + limit
        return views[offset:end], str(end) if end < len(views) else None

    def _item(
        self, task_id: str, video_id: str
    ) -> tuple[ItemStatus | None, str | None, str | None]:
        """Item ``video_id``'s status, manifest URI and error (all None: no such item).

        An itemsFrom task's item is looked up among its listed failures, else its manifest is
        taken from the deterministic location, as completed when it is there."""
        obj = self._read(task_id)
        if "itemsFrom" in obj.get("spec", {}):
            return self._listed_item(obj, video_id)
        view = view_of(obj)
        item = next((i for i in view.items if i.video_id == video_id), None)
        return (None, None, None) if item is None else (item.status, item.manifest_uri, item.error)

    def _listed_item(
        self, obj: dict[str, Any], video_id: str
    ) -> tuple[ItemStatus | None, str | None, str | None]:
        status = AudioJobStatus.model_validate(obj.get("status") or {})
        failure = next((r for r in status.items or [] if r.video_id == video_id), None)
        if failure is not None:
            return ItemStatus.failed, None, failure.error
        if not status.manifest_prefix:
            return None, None, None
        uri = manifest_uri(status.manifest_prefix, video_id)
        try:
            read_bytes(uri, self.settings)
        except Exception:  # no manifest there (yet): not finished, failed, or not an item
            return None, None, None
        return ItemStatus.completed, uri, None

    def read_manifest(self, task_id: str, video_id: str) -> Manifest:
        return item_manifest(task_id, video_id, *self._item(task_id, video_id), self.settings)

    def read_artifact(self, task_id: str, video_id: str, file_name: str) -> bytes:
        return item_artifact(
            task_id, video_id, *self._item(task_id, video_id), file_name, self.settings
        )

    def extractors(self) -> list[ExtractorEntry]:
        return extractor_entries(self.settings, gpu=self.settings.use_gpu, probe=False)

    def cluster_objects(self, task_id: str) -> ClusterObjects:
        """The AudioJob, its Jobs (by the operator's uid label, so a recreated AudioJob of the
        same name never shows its predecessor's) sorted by name, and its Events (by
        ``involvedObject.uid``) oldest first. Read-only: list on jobs and events."""
        obj = self._read(task_id)
        metadata = obj["metadata"]
        uid = str(metadata["uid"])
        assert self._batch is not None and self._core is not None, "backend not started"
        with _api_errors(task_id):
            jobs = self._batch.list_namespaced_job(
                self.namespace,
                label_selector=f"{AUDIOJOB_UID_LABEL}={uid}",
                _request_timeout=REQUEST_TIMEOUT_S,
            ).items
            events = self._core.list_namespaced_event(
                self.namespace,
                field_selector=f"involvedObject.uid={uid}",
                _request_timeout=REQUEST_TIMEOUT_S,
            ).items
        epoch = datetime.min.replace(tzinfo=UTC)

        def when(event: client.CoreV1Event) -> tuple[datetime, datetime]:
            # lastTimestamp has whole seconds; eventTime (microseconds, kopf sets it) orders
            # the events of one second
            return event_view(event).last_at or epoch, event.event_time or epoch

        return ClusterObjects(
            audiojob=metadata["name"],
            namespace=self.namespace,
            uid=uid,
            phase=view_of(obj, with_items=False).phase,
            jobs=sorted((job_view(j) for j in jobs), key=lambda j: j.name),
            events=[event_view(e) for e in sorted(events, key=when)],
        )
