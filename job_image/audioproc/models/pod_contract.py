"""The pod contract: what the operator hands a worker pod, and what the pod hands back.

::

    operator (builder.py)  --ConfigMap ITEMS_FILE: [WorkItem, ...]-->  pod: audioproc run-index
    operator (status.py)   <--TERMINATION_LOG: TerminationMessage, exit code (PodExit)--  pod

Pod ``i`` of an Indexed Job processes ``WorkItem`` ``i`` of its chunk's items file and writes
``manifest_uri(<spec.output>/<audiojob>, video_id)``; the operator folds the Job's completed
and failed index ranges (``parse_index_ranges``) and each pod's termination message into the
AudioJob's status, and the facade reads both back. Every side imports these definitions
from here; a key renamed on one side fails validation on the other (``extra="forbid"``, no
defaults for required keys) instead of passing for a missing value.

This module imports only pydantic: the operator and the facade use it without the pipeline.
"""

from __future__ import annotations

import json
from enum import IntEnum
from itertools import groupby
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel

#: Where a pod finds its chunk's items (a ConfigMap volume).
ITEMS_DIR: Final = "/etc/audioproc/items"
ITEMS_FILE_NAME: Final = "items.json"
ITEMS_FILE: Final = f"{ITEMS_DIR}/{ITEMS_FILE_NAME}"
#: The container's terminationMessagePath; the variable points the worker at it (tests
#: running the worker outside a pod point it at a file of their own).
TERMINATION_LOG: Final = "/dev/termination-log"
TERMINATION_LOG_ENV: Final = "AUDIOPROC_TERMINATION_LOG"
#: Kubernetes keeps at most this many bytes of a container's termination message.
MAX_MESSAGE_BYTES: Final = 4096
#: The file name of an item's manifest in its directory (or S3 prefix).
MANIFEST_NAME: Final = "manifest.json"


class PodExit(IntEnum):
    """The worker's exit code; the Job's podFailurePolicy fails an index at once on INPUT_ERROR."""

    OK = 0
    FAILED = 1  # anything not the input's fault (storage, a crash): worth retrying
    INPUT_ERROR = 3  # the input cannot be processed (corrupt, too long, not found): not retried


class PodContractError(ValueError):
    """A pod's termination message that does not follow this contract (operator and job image disagree)."""


class _ContractModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class WorkItem(_ContractModel):
    """One item of an items file (JSON keys ``inputUri``, ``videoId``, ``extractors``)."""

    input_uri: str
    video_id: str
    extractors: list[str] | None  # None: the standard set (the operator always fills it in)


_ITEMS: Final = TypeAdapter(list[WorkItem])


def dump_items(items: list[WorkItem]) -> str:
    """The items file's text: a compact JSON list."""
    return _ITEMS.dump_json(items, by_alias=True).decode()


def load_items(text: str | bytes) -> list[WorkItem]:
    """The items of an items file; raises pydantic's ValidationError on any other shape."""
    return _ITEMS.validate_json(text)


def item_json_bytes(item: WorkItem) -> int:
    """Bytes ``item`` takes in an items file (with its separating comma); chunks are cut by it."""
    return len(item.model_dump_json(by_alias=True).encode()) + 1


class TerminationMessage(_ContractModel):
    """The worker's result line (JSON keys ``videoId``, ``status``, ``manifestUri``, ``device``, ``error``)."""

    video_id: str | None  # None when the item could not even be read from the items file
    status: Literal["ok", "error"]
    manifest_uri: str | None
    device: str | None  # e.g. "cpu", "cuda:0"; None when no device was chosen
    error: str | None

    def to_line(self) -> str:
        """One JSON line of at most MAX_MESSAGE_BYTES - 1 bytes (the file adds a newline): a long
        error is cut, and marked with "…", rather than the message cut mid-JSON by Kubernetes."""
        line = self.model_dump_json(by_alias=True)
        if len(line.encode()) < MAX_MESSAGE_BYTES or not self.error:
            return line
        # The longest head of the error that fits (escaping makes bytes per character vary).
        fits, too_long = 0, len(self.error)
        while too_long - fits > 1:
            middle = (fits + too_long) // 2
            if len(self._cut(middle).encode()) < MAX_MESSAGE_BYTES:
                fits = middle
            else:
                too_long = middle
        return self._cut(fits)

    def _cut(self, keep: int) -> str:
        """The line with only the first ``keep`` characters of the error, and "…"."""
        return self.model_copy(update={"error": (self.error or "")[:keep] + "…"}).model_dump_json(
            by_alias=True
        )


def parse_termination_message(message: str | None) -> TerminationMessage | None:
    """The worker's result in a pod's termination message, or None when there is none.

    None: no message (kwok's simulated pods write none), or text in which no line is a JSON
    object (a worker killed before it wrote its line leaves its log's tail instead, under
    ``FallbackToLogsOnError``; the worker logs no JSON objects of its own). The last JSON
    object line is the result, and it must follow the contract.

    Raises:
        PodContractError: that line has a renamed, missing or extra key, or a wrong value.
    """
    for line in reversed((message or "").splitlines()):
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if not isinstance(document, dict):
            continue
        try:
            return TerminationMessage.model_validate(document)
        except ValidationError as exc:
            fields = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '-'}: {e['msg']}" for e in exc.errors()
            )
            raise PodContractError(
                f"termination message breaks the pod contract ({fields}): {line[:200]}"
            ) from exc
    return None


def manifest_uri(output: str, video_id: str) -> str:
    """Where the manifest of ``video_id`` is under ``output``: ``<output>/<video_id>/manifest.json``.

    ``output`` is a storage base (``file:///dir`` or ``s3://bucket/prefix``, one trailing slash
    allowed): for the operator's pods ``<spec.output>/<audiojob>``, for the local facade
    ``<output>/<task_id>``. ``video_id`` is a valid id (VIDEO_ID_PATTERN: no escaping needed).
    """
    return f"{output.removesuffix('/')}/{video_id}/{MANIFEST_NAME}"


def parse_index_ranges(text: str | None) -> set[int]:
    """``"0-2,5"`` -> ``{0, 1, 2, 5}``: a Job's ``completedIndexes``/``failedIndexes`` format.

    Raises:
        ValueError: text not in that format.
    """
    indexes: set[int] = set()
    for part in filter(None, (text or "").split(",")):
        first, _, last = part.partition("-")
        indexes.update(range(int(first), int(last or first) + 1))
    return indexes


def format_index_ranges(indexes: set[int]) -> str:
    """``{0, 1, 2, 5}`` -> ``"0-2,5"`` (``""`` for none), the inverse of :func:`parse_index_ranges`."""
    parts: list[str] = []
    # Consecutive indexes share the same (index - position) in sorted order: one run each.
    for _, run in groupby(enumerate(sorted(indexes)), key=lambda pair: pair[1] - pair[0]):
        values = [index for _, index in run]
        parts.append(str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}")
    return ",".join(parts)
