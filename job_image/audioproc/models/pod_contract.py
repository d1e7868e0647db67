"""The pod contract: what the operator hands a worker pod, and what the pod hands back.

::

    operator (builder.py)  --ConfigMap ITEMS_FILE: [WorkItem, ...]-->  pod: audioproc run-index
    spec.itemsFrom (JSON Lines, an item list)  --byte offset of the chunk-->  pod: run-index
    operator (status.py)   <--TERMINATION_LOG: TerminationMessage, exit code (PodExit)--  pod

Pod ``i`` of an Indexed Job processes ``WorkItem`` ``i`` of its chunk's items file (or line
``i`` after its chunk's byte offset in the AudioJob's item list, see below) and writes
``manifest_uri(<spec.output>/<audiojob>, video_id)``; the operator folds the Job's completed
and failed index ranges (``parse_index_ranges``) and each pod's termination message into the
AudioJob's status, and the facade reads both back. Every side imports these definitions
from here; a key renamed on one side fails validation on the other (``extra="forbid"``, no
defaults for required keys) instead of passing for a missing value.

An item list (``spec.itemsFrom``) is JSON Lines: one ``AudioJobItem`` per line
(``{"inputUri": ..., "videoId": ..., "extractors": [...]}``, extractors optional), line
``n`` (1-based) being item ``n - 1``; no blank lines, at most ``MAX_ITEM_LINE_BYTES`` per
line, no video id twice. The facade writes it (:func:`item_list_bytes`), the operator
validates and counts it once, streaming (:func:`scan_item_list`), and records each chunk's
byte offset, from which a pod skips to its own line (:func:`read_item_at`). The streams are
opened by ``audioproc.storage.open_stream`` (``file://`` or ``s3://``, from a byte offset).

This module imports only pydantic and the AudioJob models: the operator and the facade use
it without the pipeline.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum
from itertools import groupby
from typing import BinaryIO, Final, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel

from audioproc.models.audiojob import MAX_LISTED_ITEMS, AudioJobItem

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


# ---------------------------------------------------------------- item lists (spec.itemsFrom)

#: Longest line of an item list (bytes, newline included): a reader never holds more.
MAX_ITEM_LINE_BYTES: Final = 8192


class ItemListError(ValueError):
    """An item list that cannot be used: ``line`` is the 1-based line at fault, 0 for the list
    as a whole (cannot be read, empty, too long)."""

    def __init__(self, uri: str, line: int, reason: str) -> None:
        where = f"{uri} line {line}" if line else uri
        super().__init__(f"item list {where}: {reason}")
        self.uri, self.line, self.reason = uri, line, reason


def item_list_bytes(items: Iterable[AudioJobItem]) -> bytes:
    """The JSON Lines text of ``items``: one compact object per line, unset keys left out."""
    return b"".join(
        item.model_dump_json(by_alias=True, exclude_none=True).encode() + b"\n" for item in items
    )


def _next_line(stream: BinaryIO, uri: str, number: int) -> bytes | None:
    """Line ``number`` (1-based, for errors) with its newline; None at the end of the list."""
    line = stream.readline(MAX_ITEM_LINE_BYTES + 1)
    if not line:
        return None
    if len(line) > MAX_ITEM_LINE_BYTES:
        raise ItemListError(uri, number, f"longer than {MAX_ITEM_LINE_BYTES} bytes")
    return line


def parse_item_line(line: bytes, uri: str, number: int) -> AudioJobItem:
    """The item on line ``number`` (1-based); ItemListError naming the line and the field."""
    line = line.rstrip(b"\r\n")
    if not line.strip():
        raise ItemListError(uri, number, "empty line (one item per line, no blank lines)")
    try:
        return AudioJobItem.model_validate_json(line)
    except ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'line'}: {e['msg']}" for e in exc.errors()
        )
        raise ItemListError(
            uri, number, f"{fields}: {line[:120].decode(errors='replace')}"
        ) from exc


@dataclass(frozen=True)
class ItemListScan:
    """What the operator keeps of a validated item list: its size and where each chunk starts.

    ``chunk_starts[c]`` is the index of chunk ``c``'s first item, ``chunk_offsets[c]`` the byte
    offset of its line in the list; ``sha256`` (hex) is the digest of the whole list.
    """

    count: int
    chunk_starts: list[int]
    chunk_offsets: list[int]
    sha256: str


def scan_item_list(stream: BinaryIO, uri: str, chunk_size: int) -> ItemListScan:
    """Validate every line of an item list, streaming, and cut it into chunks of ``chunk_size``.

    Memory: one line at a time, plus an 8-byte digest per video id for the duplicate check
    (about 60 bytes per item in a Python set: 6 MB at 100,000 items).

    Raises:
        ItemListError: a bad line (the first one, by number), a video id seen on an earlier
            line, an empty list, or more than MAX_LISTED_ITEMS items.
    """
    digest = hashlib.sha256()
    seen: dict[int, int] = {}  # 8-byte digest of a video id -> its line
    starts: list[int] = []
    offsets: list[int] = []
    offset = count = 0
    while (line := _next_line(stream, uri, count + 1)) is not None:
        digest.update(line)
        item = parse_item_line(line, uri, count + 1)
        key = int.from_bytes(hashlib.blake2b(item.video_id.encode(), digest_size=8).digest())
        if key in seen:
            raise ItemListError(
                uri, count + 1, f"video id {item.video_id!r} is already on line {seen[key]}"
            )
        seen[key] = count + 1
        if count % chunk_size == 0:
            starts.append(count)
            offsets.append(offset)
        count += 1
        if count > MAX_LISTED_ITEMS:
            raise ItemListError(uri, 0, f"more than {MAX_LISTED_ITEMS} items")
        offset += len(line)
    if not count:
        raise ItemListError(uri, 0, "no items")
    return ItemListScan(count, starts, offsets, digest.hexdigest())


def read_item_lines(stream: BinaryIO, uri: str, first_line: int, count: int) -> list[AudioJobItem]:
    """The next ``count`` items of ``stream``, which is at the start of line ``first_line``
    (1-based, for errors); fewer at the end of the list."""
    items: list[AudioJobItem] = []
    for number in range(first_line, first_line + count):
        line = _next_line(stream, uri, number)
        if line is None:
            break
        items.append(parse_item_line(line, uri, number))
    return items


def read_item_at(stream: BinaryIO, uri: str, first_index: int, position: int) -> AudioJobItem:
    """Item ``first_index + position`` of a list whose ``stream`` is at item ``first_index``'s
    line (a chunk's offset): ``position`` lines are skipped (not parsed), the next one is parsed.

    Raises:
        ItemListError: the list ends before that line, or the line is not a valid item.
    """
    for number in range(first_index + 1, first_index + position + 1):
        if _next_line(stream, uri, number) is None:
            raise ItemListError(uri, number, "the list ends before this item's line")
    number = first_index + position + 1
    line = _next_line(stream, uri, number)
    if line is None:
        raise ItemListError(uri, number, "the list ends before this item's line")
    return parse_item_line(line, uri, number)
