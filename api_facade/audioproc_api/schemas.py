"""Request and response models of the REST API (they are the OpenAPI document at /docs).

Field rules (video id alphabet, URI schemes, extractor names, 10,000 items) come from the
AudioJob models, so that a request the facade accepts is one the API server accepts.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from audioproc.models import Manifest
from audioproc.models.audiojob import (
    INPUT_URI_PATTERN,
    MAX_ITEMS,
    VIDEO_ID_PATTERN,
    Device,
    ExtractorName,
)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MediaItem(_Request):
    """What a /process request and a /batch item share: one input, its id, what to run on it."""

    input_uri: Annotated[str, Field(pattern=INPUT_URI_PATTERN, max_length=2048)]
    video_id: Annotated[str, Field(pattern=VIDEO_ID_PATTERN)]
    extractors: list[ExtractorName] | None = Field(default=None, min_length=1)


class ProcessRequest(MediaItem):
    # The shared fields again, with the descriptions and examples of the OpenAPI document.
    input_uri: Annotated[
        str,
        Field(
            pattern=INPUT_URI_PATTERN,
            max_length=2048,
            description="The media file: an absolute path, file://, http(s):// or s3:// URI.",
            examples=["s3://media/vid-001.mp4"],
        ),
    ]
    video_id: Annotated[
        str,
        Field(
            pattern=VIDEO_ID_PATTERN,
            description="Names the manifest's folder.",
            examples=["vid-001"],
        ),
    ]
    extractors: list[ExtractorName] | None = Field(
        default=None, min_length=1, description="Extractors to run; the standard set when absent."
    )
    use_gpu: bool | None = Field(
        default=None, description="true: GPU, false: CPU, absent: a GPU when one is free."
    )
    sync: bool = Field(default=False, description="Same as ?wait=true: wait for the manifest.")


class BatchItem(MediaItem):
    pass


class BatchRequest(_Request):
    items: list[BatchItem] = Field(min_length=1, max_length=MAX_ITEMS)
    concurrency: int | None = Field(
        default=None, ge=1, le=1000, description="Items processed at once for this task."
    )
    use_gpu: bool | None = None


class TaskStatus(StrEnum):
    pending = "pending"
    processing = "processing"
    completed = "completed"  # finished; items that failed say so in `items`
    failed = "failed"  # finished; every item failed, or the task could not run

    @property
    def finished(self) -> bool:
        return self in (TaskStatus.completed, TaskStatus.failed)


class ItemStatus(StrEnum):
    pending = "pending"
    processing = "processing"
    completed = "completed"
    failed = "failed"


class TaskKind(StrEnum):
    process = "process"
    batch = "batch"


class TaskAccepted(BaseModel):
    task_id: str
    status: TaskStatus = TaskStatus.pending
    status_url: str


class ProcessResult(BaseModel):
    """A /process call that waited: the task finished before the timeout."""

    task_id: str
    status: TaskStatus
    manifest: Manifest | None = Field(
        default=None, description="audio_manifest_v1; null when the item failed."
    )
    error: str | None = None


class ItemView(BaseModel):
    index: int
    video_id: str
    input_uri: str
    status: ItemStatus
    manifest_uri: str | None = None
    device: str | None = None
    error: str | None = None


class TaskView(BaseModel):
    task_id: str
    kind: TaskKind
    status: TaskStatus
    progress: float = Field(ge=0.0, le=1.0, description="Finished items / all items.")
    error: str | None = None
    device: Device
    created_at: datetime | None = None
    request_id: str | None = None
    submitter: str | None = Field(
        default=None, description="The name of the token that submitted it."
    )
    total: int
    succeeded: int
    failed: int
    running: int = Field(default=0, description="Items being processed now; pending = the rest.")
    phase: str | None = Field(
        default=None, description="The AudioJob's phase (kubernetes backend only)."
    )
    items: list[ItemView] = Field(default_factory=list)
    items_next_offset: int | None = Field(
        default=None,
        description="Pass as ?items_offset= for the next page of items; null on the last page.",
    )


class JobView(BaseModel):
    """One Kubernetes Job the operator made for the AudioJob (one chunk of its items)."""

    name: str
    completions: int | None = Field(default=None, description="Pods that must succeed (its items).")
    succeeded: int = 0
    failed: int = 0
    active: int = Field(default=0, description="Pods running now.")
    suspended: bool = False
    created_at: datetime | None = None


class EventView(BaseModel):
    """One Kubernetes Event on the AudioJob (``kubectl describe aj`` lists the same)."""

    type: str | None = Field(default=None, description="Normal or Warning.")
    reason: str | None = Field(default=None, description="Placed, JobCreated, ...")
    message: str | None = None
    count: int = Field(default=1, description="Times it happened (repeats are aggregated).")
    last_at: datetime | None = Field(default=None, description="When it last happened.")


class ClusterObjects(BaseModel):
    """What the kubernetes backend shows of a task: its AudioJob, the AudioJob's Jobs (by name)
    and its Events (oldest first)."""

    audiojob: str = Field(description="The AudioJob's name (= the task id).")
    namespace: str
    uid: str
    phase: str | None = None
    jobs: list[JobView] = Field(default_factory=list)
    events: list[EventView] = Field(default_factory=list)


class TaskSummary(BaseModel):
    task_id: str
    kind: TaskKind
    status: TaskStatus
    progress: float
    device: Device
    created_at: datetime | None = None
    submitter: str | None = None
    total: int
    succeeded: int
    failed: int
    running: int = 0


class TaskOrder(StrEnum):
    oldest = "oldest"  # creation order
    newest = "newest"  # newest first


class TaskPage(BaseModel):
    tasks: list[TaskSummary]
    next_cursor: str | None = Field(default=None, description="Pass as ?cursor= for the next page.")


class Cancelled(BaseModel):
    task_id: str
    cancelled: bool = True


class ExtractorEntry(BaseModel):
    name: str
    version: str
    device: str = Field(description="Where it runs in this deployment: 'cuda' or 'cpu'.")
    devices: list[str] = Field(description="Devices the implementation supports.")
    description: str
    default: bool = Field(description="Part of the standard set run when a request names none.")
    available: bool
    reason: str | None = Field(default=None, description="Why it is unavailable here.")


class ExtractorList(BaseModel):
    available: list[ExtractorEntry]


class Health(BaseModel):
    status: str
    backend: str
    detail: str | None = None


class ErrorBody(BaseModel):
    """The body of every error response but 422."""

    detail: str = Field(examples=["no task 'proc-abc-123456'"])


class ValidationIssue(BaseModel):
    loc: list[str | int] = Field(
        description="Where: 'body', 'query' or 'path', then the field's path."
    )
    msg: str
    type: str
    input: Any = Field(
        default=None, description="The offending value (non-finite numbers as strings)."
    )
    ctx: dict[str, Any] | None = None


class ValidationErrorBody(BaseModel):
    """The body of a 422: every problem found in the request."""

    detail: list[ValidationIssue]
