"""The interface both backends implement, and the vocabulary they share."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Protocol

from audioproc.models import AudioJobSpec, Manifest
from audioproc.models.audiojob import AudioJobPhase
from audioproc.settings import PipelineSettings
from audioproc.storage import read_bytes, read_manifest, sibling_uri
from audioproc_api.schemas import (
    ClusterObjects,
    ExtractorEntry,
    ItemStatus,
    TaskKind,
    TaskStatus,
    TaskView,
)

#: Label on the AudioJob: the endpoint that made it (``process`` or ``batch``).
TASK_KIND_LABEL = "audioproc.io/task-kind"
#: Label on the AudioJob: the name of the token that submitted it (absent: no name). Token
#: names are label-value-safe (``auth.NAME_PATTERN``).
SUBMITTER_LABEL = "audioproc.io/submitter"
#: The largest value a SQLite INTEGER (a sequence cursor) can hold.
MAX_SEQUENCE = 2**63 - 1

_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


class TaskNotFound(LookupError):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task {task_id!r}")
        self.task_id = task_id


class ResultNotAvailable(LookupError):
    """The task has no manifest for that video id: no such item (``exists`` False), or the
    item has not succeeded (yet, or ever)."""

    def __init__(self, message: str, exists: bool) -> None:
        super().__init__(message)
        self.exists = exists


class BackendUnavailable(RuntimeError):
    """The backend cannot be reached (API server down); the client may retry (HTTP 503)."""


class UnsupportedRequest(ValueError):
    """A well-formed request this deployment cannot run (e.g. use_gpu on a machine without GPU)."""

    def __init__(self, field: str, reason: str, location: str = "body") -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason
        self.location = location  # "body" or "query"


@dataclass(frozen=True)
class Submission:
    task_id: str
    kind: TaskKind
    spec: AudioJobSpec
    request_id: str
    #: The name of the token that submitted the task (None: tokens are off, or unnamed tokens).
    submitter: str | None = None


def parse_sequence_cursor(cursor: str | None) -> int:
    """The row sequence number a page cursor names (0: from the start). Raises UnsupportedRequest
    (422) for anything that is not a decimal number a SQLite INTEGER can hold."""
    if cursor is None:
        return 0
    # isdecimal and ASCII: "²" is a digit to str.isdigit but not to int()
    if not (cursor.isascii() and cursor.isdecimal()) or int(cursor) > MAX_SEQUENCE:
        raise UnsupportedRequest(
            "cursor", "invalid cursor; use next_cursor from a previous page", location="query"
        )
    return int(cursor)


def new_task_id(kind: TaskKind) -> str:
    """A DNS-1123 name that sorts by creation time: ``<kind>-<ms since epoch, base36>-<random>``.

    It is the AudioJob's name, a folder of the output and a prefix of the operator's Job names,
    so it stays short (at most 22 characters).
    """
    millis = int(time.time() * 1000)
    stamp = ""
    while millis:
        millis, digit = divmod(millis, 36)
        stamp = _BASE36[digit] + stamp
    suffix = "".join(secrets.choice(_BASE36) for _ in range(6))
    return f"{kind.value[:4]}-{stamp}-{suffix}"


def task_status_of(phase: AudioJobPhase) -> TaskStatus:
    """The four states of the REST specification, from the AudioJob's phase."""
    return {
        AudioJobPhase.pending: TaskStatus.pending,
        AudioJobPhase.suspended: TaskStatus.pending,
        AudioJobPhase.processing: TaskStatus.processing,
        AudioJobPhase.completed: TaskStatus.completed,
        AudioJobPhase.partially_completed: TaskStatus.completed,
        AudioJobPhase.failed: TaskStatus.failed,
    }[phase]


def load_manifest(manifest_uri: str, settings: PipelineSettings) -> Manifest:
    """The manifest a finished item recorded; BackendUnavailable (503) when storage cannot give it."""
    try:
        return read_manifest(manifest_uri, settings)
    except Exception as exc:  # a missing file or object, storage down, or not a manifest
        raise BackendUnavailable(
            f"manifest {manifest_uri} could not be read: {type(exc).__name__}: {exc}"
        ) from exc


def item_manifest(
    task_id: str,
    video_id: str,
    status: ItemStatus | None,
    manifest_uri: str | None,
    error: str | None,
    settings: PipelineSettings,
) -> Manifest:
    """The manifest of item ``video_id`` of a task, given the item's ``status`` (None: no such item).

    Raises ResultNotAvailable unless the item completed with a manifest, BackendUnavailable when
    storage cannot give it.
    """
    if status is None:
        raise ResultNotAvailable(f"task {task_id!r} has no item {video_id!r}", exists=False)
    if status is not ItemStatus.completed or not manifest_uri:
        reason = f": {error}" if error else ""
        raise ResultNotAvailable(f"item {video_id!r} is {status.value}{reason}", exists=True)
    return load_manifest(manifest_uri, settings)


def item_artifact(
    task_id: str,
    video_id: str,
    status: ItemStatus | None,
    manifest_uri: str | None,
    error: str | None,
    file_name: str,
    settings: PipelineSettings,
) -> bytes:
    """The bytes of artifact ``file_name`` (an ``.npy`` file) of item ``video_id``.

    Only a file the item's own manifest lists is read, beside that manifest; any other name,
    ``../`` or another item's file included, is ResultNotAvailable (404) without touching
    storage. Raises as ``item_manifest`` does, and BackendUnavailable when storage fails.
    """
    manifest = item_manifest(task_id, video_id, status, manifest_uri, error, settings)
    listed = {name for record in manifest.extractors for name in record.artifacts.values()}
    if file_name not in listed or "/" in file_name or "\\" in file_name:
        raise ResultNotAvailable(f"item {video_id!r} has no artifact {file_name!r}", exists=False)
    assert manifest_uri is not None  # item_manifest read it
    uri = sibling_uri(manifest_uri, file_name)
    try:
        data: bytes = read_bytes(uri, settings)
    except Exception as exc:  # a missing file or object, or storage down
        raise BackendUnavailable(
            f"artifact {uri} could not be read: {type(exc).__name__}: {exc}"
        ) from exc
    return data


class Backend(Protocol):
    name: str

    def start(self) -> None: ...

    def close(self) -> None: ...

    def not_ready_reason(self) -> str | None:
        """None when tasks can be accepted and run; else why not."""

    def submit(self, submission: Submission) -> str:
        """Queue the task; return its id. Raises UnsupportedRequest."""

    def get(self, task_id: str, items_offset: int = 0, items_limit: int | None = None) -> TaskView:
        """The task with its items ``items_offset`` to ``items_offset + items_limit`` (None: all).
        Raises TaskNotFound."""

    def wait(self, task_id: str, timeout_s: float) -> TaskView:
        """The task once finished, or as it is when ``timeout_s`` passes. Raises TaskNotFound."""

    def cancel(self, task_id: str) -> None:
        """Stop the task and forget it. Raises TaskNotFound."""

    def list_tasks(
        self,
        status: TaskStatus | None,
        limit: int,
        cursor: str | None,
        submitter: str | None = None,
        newest_first: bool = False,
    ) -> tuple[list[TaskView], str | None]:
        """Tasks in creation order, or newest first (items omitted), only ``submitter``'s unless
        None, and the cursor of the next page."""

    def read_manifest(self, task_id: str, video_id: str) -> Manifest:
        """Raises TaskNotFound, ResultNotAvailable."""

    def read_artifact(self, task_id: str, video_id: str, file_name: str) -> bytes:
        """An artifact the item's manifest lists (``item_artifact``). Raises TaskNotFound,
        ResultNotAvailable."""

    def extractors(self) -> list[ExtractorEntry]:
        """The catalog, as this deployment can run it. Answers from memory, without I/O:
        the routes call it on the event loop, once per submission."""

    def cluster_objects(self, task_id: str) -> ClusterObjects | None:
        """The task's AudioJob, Jobs and Events; None on a backend without a cluster.
        Raises TaskNotFound."""
