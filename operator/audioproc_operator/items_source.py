"""An AudioJob's items when they come from an item list (``spec.itemsFrom``) instead of its spec.

The operator reads the list twice at most, never whole into memory: once to validate and
count it and to cut it into chunks (``scan``, at placement: streaming, one line at a time),
and afterwards only the video ids of a chunk whose items it must name (``ListedVideoIds``: a
failed item in the status or an event), read from the chunk's byte offset. Pods read their
own line (the pod contract, ``audioproc.models.pod_contract``). A list that cannot be used
fails the AudioJob at placement with a message naming the line (``list_failed``).
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Final, overload

from audioproc.errors import StorageError
from audioproc.models.audiojob import (
    AudioJobPhase,
    AudioJobSpec,
    AudioJobStatus,
    Condition,
    ItemCounts,
)
from audioproc.models.pod_contract import (
    ItemListError,
    ItemListScan,
    read_item_lines,
    scan_item_list,
)
from audioproc.storage import open_stream
from audioproc_operator.builder import chunk_bounds

log = logging.getLogger(__name__)

#: Chunks whose video ids one ``ListedVideoIds`` keeps (each at most OPERATOR_CHUNK_SIZE ids).
CACHED_CHUNKS: Final = 4


def scan(uri: str, chunk_size: int) -> ItemListScan:
    """Validate and count the item list at ``uri`` in chunks of ``chunk_size`` items.

    Raises:
        ItemListError: a bad line (named), or the list cannot be read (line 0).
    """
    try:
        with open_stream(uri) as stream:
            return scan_item_list(stream, uri, chunk_size)
    except StorageError as exc:
        raise ItemListError(uri, 0, f"cannot be read: {exc}") from exc


def list_failed(prev: AudioJobStatus, error: ItemListError, now: datetime) -> AudioJobStatus:
    """The final status of an AudioJob whose item list cannot be used: Failed, no item run."""
    message = str(error)
    return prev.model_copy(
        update={
            "phase": AudioJobPhase.failed,
            "message": message,
            "counts": ItemCounts(),
            "completion_time": now,
            "conditions": [
                *(prev.conditions or []),
                Condition(
                    type="Finished",
                    status="True",
                    reason="ItemListInvalid",
                    message=message,
                    last_transition_time=now,
                ),
            ],
        }
    )


def scan_fields(found: ItemListScan) -> dict[str, object]:
    """The status fields a placement records of a scanned item list."""
    return {
        "chunk_starts": found.chunk_starts,
        "chunk_offsets": found.chunk_offsets,
        "items_from_sha256": found.sha256,
    }


class ListedVideoIds(Sequence[str]):
    """The video ids of an item list, read a chunk at a time from its byte offset, on demand.

    ``len`` is the item count; ``ids[i]`` reads item ``i``'s chunk (one ranged read) unless
    one of the last CACHED_CHUNKS chunks read holds it. An item whose line can no longer be
    read (the list changed after it was validated) is named ``line N`` and logged.
    """

    def __init__(self, uri: str, total: int, chunk_starts: list[int], offsets: list[int]) -> None:
        self.uri, self.total = uri, total
        self.chunk_starts, self.offsets = chunk_starts, offsets
        self._chunks: dict[int, list[str]] = {}

    def __len__(self) -> int:
        return self.total

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.total))]
        if not 0 <= index < self.total:
            raise IndexError(index)
        chunk = bisect.bisect_right(self.chunk_starts, index) - 1
        ids = self._chunks.get(chunk)
        if ids is None:
            ids = self._read_chunk(chunk)
            if len(self._chunks) >= CACHED_CHUNKS:
                self._chunks.pop(next(iter(self._chunks)))
            self._chunks[chunk] = ids
        start = self.chunk_starts[chunk]
        return ids[index - start] if index - start < len(ids) else f"line {index + 1}"

    def _read_chunk(self, chunk: int) -> list[str]:
        start, end = chunk_bounds(self.chunk_starts, self.total, chunk)
        try:
            with open_stream(self.uri, self.offsets[chunk]) as stream:
                items = read_item_lines(stream, self.uri, start + 1, end - start)
        except (ItemListError, StorageError) as exc:
            log.error("item list no longer readable", extra={"error": str(exc)})
            return []
        return [item.video_id for item in items]


def video_ids(spec: AudioJobSpec, status: AudioJobStatus) -> Sequence[str]:
    """Every item's video id, by index: from the spec, or read lazily from the item list."""
    if spec.items is not None:
        return [item.video_id for item in spec.items]
    assert spec.items_from is not None
    total = status.counts.total if status.counts else 0
    return ListedVideoIds(
        spec.items_from.uri, total, status.chunk_starts or [0], status.chunk_offsets or [0]
    )
