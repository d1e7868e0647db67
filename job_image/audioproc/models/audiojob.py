"""The ``AudioJob`` custom resource (group ``audioproc.io``, version ``v1alpha1``).

These models are the single source of the CRD's schema (``crds/audiojob.yaml`` is
generated from them), of the operator's reading of specs and writing of statuses, and
of the facade's requests to the API server. Field names are camelCase on the wire
(aliases) and snake_case in Python.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum, StrEnum
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from audioproc.extractors.catalog import EXTRACTOR_NAMES

GROUP: Final = "audioproc.io"
VERSION: Final = "v1alpha1"
KIND: Final = "AudioJob"
PLURAL = "audiojobs"
SINGULAR = "audiojob"
SHORT_NAMES = ("aj",)
# f"{GROUP}/{VERSION}", written out so that it types as the literal the model fields declare.
API_VERSION: Final = "audioproc.io/v1alpha1"

#: Annotations an AudioJob may carry (the facade writes the first; see docs/operator.md).
REQUEST_ID_ANNOTATION = f"{GROUP}/request-id"
#: JSON object of annotations copied onto every pod of the AudioJob, when the operator's
#: ``OPERATOR_ALLOW_POD_ANNOTATIONS`` is on (e2e simulation: exit codes, run durations).
POD_ANNOTATIONS_ANNOTATION = f"{GROUP}/pod-annotations"
#: Label on every Job the operator makes for an AudioJob: the AudioJob's uid (the operator
#: writes it, the facade lists an AudioJob's Jobs by it).
AUDIOJOB_UID_LABEL: Final = f"{GROUP}/audiojob-uid"

MAX_ITEMS = 10_000
#: Most items of an item list (``spec.itemsFrom``): its status stays small (index ranges and
#: at most MAX_LISTED_FAILURES failures), whatever the count.
MAX_LISTED_ITEMS = 1_000_000
#: Where an item list may be: a file on the shared volume, or an S3 object.
ONE_ITEM_SOURCE = "set exactly one of items and itemsFrom"
ITEM_LIST_URI_PATTERN = r"^(file:///\S+|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/\S+)$"
#: A video id becomes a path component and a label value: keep it to that alphabet.
VIDEO_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
#: Inputs: local paths, file://, http(s):// and s3:// URIs.
INPUT_URI_PATTERN = r"^(/|file://|https?://|s3://)\S+$"
#: Outputs: a directory on a mounted volume, or an S3 prefix.
OUTPUT_URI_PATTERN = r"^(file:///\S*|s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/\S*)?)$"
#: A Kueue LocalQueue name (an RFC 1123 label, as Kueue's queue-name label requires).
QUEUE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

# Members from the catalog, so that a new extractor needs no edit here; mypy types only
# literal member lists in the functional API, hence the ignore.
ExtractorName = Enum("ExtractorName", {n: n for n in EXTRACTOR_NAMES}, type=str)  # type: ignore[misc]


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase, no unset optional fields."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Device(StrEnum):
    auto = "auto"
    gpu = "gpu"
    cpu = "cpu"


class AudioJobItem(_Model):
    input_uri: Annotated[str, Field(pattern=INPUT_URI_PATTERN, max_length=2048)]
    video_id: Annotated[str, Field(pattern=VIDEO_ID_PATTERN)]
    extractors: list[ExtractorName] | None = Field(
        default=None, min_length=1, description="Overrides spec.extractors for this item."
    )


class ItemsFrom(_Model):
    uri: str = Field(
        pattern=ITEM_LIST_URI_PATTERN,
        max_length=2048,
        description="JSON Lines, one item ({inputUri, videoId, extractors?}) per line: "
        "file:///... on the shared volume or s3://bucket/key.",
    )


class AudioJobSpec(_Model):
    items: list[AudioJobItem] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_ITEMS,
        description="The items, inline; or itemsFrom for larger batches (exactly one of the two).",
    )
    items_from: ItemsFrom | None = Field(
        default=None,
        description=f"An item list in storage, for batches of up to {MAX_LISTED_ITEMS} items: "
        "the operator reads it, the pods read their own line; the status keeps index ranges "
        "and the failures only.",
    )
    extractors: list[ExtractorName] | None = Field(
        default=None,
        min_length=1,
        description="Extractors for every item; the standard set when unset.",
    )
    device: Device = Device.auto
    concurrency: int = Field(default=4, ge=1, le=1000, description="Pods running at once.")
    priority: int = Field(default=0, ge=-1000, le=1000, description="Higher runs first.")
    output: Annotated[str, Field(pattern=OUTPUT_URI_PATTERN, max_length=1024)] = (
        "file:///data/audioproc"
    )
    max_duration_seconds: int = Field(default=4 * 3600, ge=1, le=48 * 3600)
    retries_per_item: int = Field(default=2, ge=0, le=10)
    suspend: bool = False
    queue_name: Annotated[str, Field(pattern=QUEUE_NAME_PATTERN, max_length=63)] | None = Field(
        default=None,
        description="Kueue LocalQueue in the AudioJob's namespace: its Jobs are created "
        "suspended with the kueue.x-k8s.io/queue-name label and Kueue admits them (the "
        "operator's own GPU placement is skipped). Unset: the operator's default queue, if any.",
    )

    @model_validator(mode="after")
    def _one_item_source(self) -> AudioJobSpec:
        if (self.items is None) == (self.items_from is None):
            raise ValueError(ONE_ITEM_SOURCE)
        return self


class AudioJobPhase(StrEnum):
    pending = "Pending"
    processing = "Processing"
    suspended = "Suspended"
    completed = "Completed"
    partially_completed = "PartiallyCompleted"  # finished; some items failed
    failed = "Failed"  # finished; every item failed, or the job itself could not run

    @property
    def finished(self) -> bool:
        return self in (
            AudioJobPhase.completed,
            AudioJobPhase.partially_completed,
            AudioJobPhase.failed,
        )


class ItemPhase(StrEnum):
    succeeded = "Succeeded"
    failed = "Failed"


class AudioJobItemStatus(_Model):
    """The outcome of one finished item (items still running are only counted)."""

    index: int = Field(ge=0)
    video_id: str
    phase: ItemPhase
    device: str | None = None
    manifest_uri: str | None = None
    error: str | None = None


class ItemCounts(_Model):
    total: int = Field(default=0, ge=0)
    succeeded: int = Field(default=0, ge=0)
    failed: int = Field(default=0, ge=0)
    active: int = Field(default=0, ge=0)


class Condition(_Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_transition_time: datetime | None = None


class QueueStatus(_Model):
    """Where the AudioJob's current Job stands in Kueue (set only for AudioJobs Kueue admits)."""

    local_queue: str = Field(description="The LocalQueue, fixed at placement.")
    job: str | None = Field(default=None, description="The current Job (one per chunk).")
    admitted: bool = Field(default=False, description="Kueue admitted the current Job.")
    position_in_local_queue: int | None = Field(
        default=None, ge=0, description="0: next in its LocalQueue (Kueue's visibility API)."
    )
    position_in_cluster_queue: int | None = Field(
        default=None, ge=0, description="0: next in its ClusterQueue (Kueue's visibility API)."
    )


#: Most per-item results kept in the status (failed items first); the rest are in the
#: index ranges and at the deterministic manifest location, which keeps a 10,000-item
#: AudioJob's status far below the API server's object size limit.
MAX_STATUS_ITEMS = 1000
#: Most failed items listed in the status of an itemsFrom AudioJob (succeeded ones are not
#: listed: their manifests are at the deterministic location); the rest are counted in
#: ``failuresNotListed`` and are in ``failedIndexes``.
MAX_LISTED_FAILURES = 100


class AudioJobStatus(_Model):
    """Written only by the operator. Items are identified by their index in ``spec.items``
    (or their line in ``spec.itemsFrom``, less one)."""

    phase: AudioJobPhase = AudioJobPhase.pending
    progress: float = Field(default=0.0, ge=0.0, le=1.0, description="Finished items / all items.")
    counts: ItemCounts | None = None
    succeeded_indexes: str | None = Field(
        default=None, description='Indexes of succeeded items as ranges, e.g. "0-3,7".'
    )
    failed_indexes: str | None = Field(
        default=None, description="Indexes of failed items as ranges."
    )
    items: list[AudioJobItemStatus] | None = Field(
        default=None,
        max_length=MAX_STATUS_ITEMS,
        description="Results of finished items, failed first, at most MAX_STATUS_ITEMS.",
    )
    failures_not_listed: int | None = Field(
        default=None,
        ge=0,
        description="Failed items not in items (itemsFrom: beyond MAX_LISTED_FAILURES).",
    )
    manifest_prefix: str | None = Field(
        default=None, description="Item manifests are at <manifestPrefix><videoId>/manifest.json."
    )
    device: Literal["gpu", "cpu"] | None = Field(default=None, description="The pool chosen, once.")
    gpus: int | None = Field(default=None, ge=0, description="GPUs reserved (pods at once on GPU).")
    chunk_starts: list[int] | None = Field(
        default=None, description="First item index of each Job's chunk, fixed at placement."
    )
    chunk_offsets: list[int] | None = Field(
        default=None,
        description="itemsFrom: byte offset of each chunk's first line in the item list.",
    )
    items_from_sha256: str | None = Field(
        default=None, description="itemsFrom: SHA-256 of the item list as validated."
    )
    jobs: list[str] | None = Field(default=None, description="Names of the Jobs created, in order.")
    queue: QueueStatus | None = Field(default=None, description="Kueue admission, when queued.")
    conditions: list[Condition] | None = None
    message: str | None = None
    observed_generation: int | None = None
    start_time: datetime | None = None
    completion_time: datetime | None = None


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class AudioJob(_Model):
    api_version: Literal["audioproc.io/v1alpha1"] = API_VERSION
    kind: Literal["AudioJob"] = KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: AudioJobSpec
    status: AudioJobStatus | None = None

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")
