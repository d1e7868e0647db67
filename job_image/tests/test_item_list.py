"""Item lists (``spec.itemsFrom``, the pod contract): written by the facade, validated and cut
into chunks by the operator, one line read by each pod from its chunk's byte offset."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from audioproc.cli import _work_item
from audioproc.errors import StorageError
from audioproc.models.audiojob import AudioJobItem
from audioproc.models.pod_contract import (
    MAX_ITEM_LINE_BYTES,
    ItemListError,
    item_list_bytes,
    read_item_at,
    read_item_lines,
    scan_item_list,
)
from audioproc.storage import open_stream, write_object

URI = "file:///data/lists/x.jsonl"


def items(n: int) -> list[AudioJobItem]:
    # Ids and URIs of varying length, so that byte offsets are not a multiple of one line.
    return [
        AudioJobItem.model_validate(
            {"inputUri": f"s3://media/{'x' * (i % 7)}{i}.mp4", "videoId": f"v{i}"}
            | ({"extractors": ["tempo"]} if i % 5 == 0 else {})
        )
        for i in range(n)
    ]


def test_written_list_scans_to_its_items_and_chunk_offsets() -> None:
    text = item_list_bytes(items(25))
    found = scan_item_list(io.BytesIO(text), URI, chunk_size=10)
    lines = text.splitlines(keepends=True)
    assert found.count == 25 and found.chunk_starts == [0, 10, 20]
    assert found.chunk_offsets == [0, sum(map(len, lines[:10])), sum(map(len, lines[:20]))]
    assert len(lines) == 25 and b'"extractors"' not in lines[1]  # unset keys are left out


@pytest.mark.parametrize("index", [0, 9, 10, 17, 24])
def test_an_item_is_read_from_its_chunks_offset(index: int) -> None:
    listed = items(25)
    text = item_list_bytes(listed)
    found = scan_item_list(io.BytesIO(text), URI, chunk_size=10)
    chunk = index // 10
    stream = io.BytesIO(text)
    stream.seek(found.chunk_offsets[chunk])
    first = found.chunk_starts[chunk]
    assert read_item_at(stream, URI, first, index - first) == listed[index]


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        (b'{"inputUri": "s3://m/a.mp4", "videoId": "a"}\n{"videoId": "b"}\n', 2, "inputUri"),
        (b'{"inputUri": "s3://m/a.mp4", "videoId": "a"}\n\n', 2, "empty line"),
        (b'{"inputUri": "s3://m/a.mp4", "videoId": "a b"}\n', 1, "videoId"),
        (b"not json\n", 1, "line"),
        (b'{"inputUri": "s3://m/a.mp4", "videoId": "a", "extractors": ["nope"]}', 1, "extractors"),
        (
            b'{"inputUri": "s3://m/a.mp4", "videoId": "a"}\n{"inputUri": "s3://m/b", "videoId": "a"}',
            2,
            "already on line 1",
        ),
        (b"", 0, "no items"),
        (
            b'{"inputUri": "s3://m/a.mp4", "videoId": "' + b"a" * MAX_ITEM_LINE_BYTES + b'"}',
            1,
            "longer",
        ),
    ],
    ids=[
        "missing-key",
        "blank",
        "bad-id",
        "not-json",
        "bad-extractor",
        "duplicate",
        "empty",
        "long",
    ],
)
def test_a_bad_list_names_its_first_bad_line(text: bytes, line: int, reason: str) -> None:
    with pytest.raises(ItemListError) as caught:
        scan_item_list(io.BytesIO(text), URI, chunk_size=10)
    assert caught.value.line == line and reason in str(caught.value)
    assert str(caught.value).startswith(f"item list {URI}" + (f" line {line}" if line else ""))


def test_crlf_lines_and_a_missing_final_newline_are_read() -> None:
    text = (
        b'{"inputUri": "s3://m/a.mp4", "videoId": "a"}\r\n{"inputUri": "s3://m/b", "videoId": "b"}'
    )
    found = scan_item_list(io.BytesIO(text), URI, chunk_size=1)
    assert found.count == 2 and found.chunk_offsets == [0, text.index(b"{", 1)]
    assert [i.video_id for i in read_item_lines(io.BytesIO(text), URI, 1, 5)] == ["a", "b"]


def test_a_line_past_the_end_is_an_error_naming_it() -> None:
    with pytest.raises(ItemListError, match="line 4: the list ends"):
        read_item_at(io.BytesIO(item_list_bytes(items(3))), URI, 0, 3)


def test_storage_round_trip_and_the_pods_item(tmp_path: Path) -> None:
    """The facade's write, the operator's scan and a pod's read (``run-index --items-from``)."""
    uri = (tmp_path / "lists" / "job.jsonl").as_uri()
    listed = items(12)
    write_object(uri, item_list_bytes(listed))
    with open_stream(uri) as stream:
        found = scan_item_list(stream, uri, chunk_size=5)
    item = _work_item(None, uri, found.chunk_offsets[2], 10, "loudness,pitch", 1)
    assert (item.video_id, item.extractors) == ("v11", ["loudness", "pitch"])
    named = _work_item(None, uri, found.chunk_offsets[2], 10, "loudness", 0)
    assert (named.video_id, named.extractors) == ("v10", ["tempo"])  # its own list wins
    with pytest.raises(StorageError, match="cannot read"):
        open_stream((tmp_path / "missing.jsonl").as_uri())
