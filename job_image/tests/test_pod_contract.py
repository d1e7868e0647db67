"""The pod contract (audioproc.models.pod_contract): every field survives the hop, and a key
renamed on one side fails on the other instead of passing for a missing value."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from audioproc.models.pod_contract import (
    ITEMS_FILE,
    MAX_MESSAGE_BYTES,
    TERMINATION_LOG,
    PodContractError,
    PodExit,
    TerminationMessage,
    WorkItem,
    dump_items,
    format_index_ranges,
    item_json_bytes,
    load_items,
    manifest_uri,
    parse_index_ranges,
    parse_termination_message,
)

ITEMS = [
    WorkItem(input_uri="s3://media/v0.mp4", video_id="v0", extractors=["tempo", "pitch"]),
    WorkItem(input_uri="file:///data/media/ünï code.wav", video_id="v1", extractors=None),
]
MESSAGES = [
    TerminationMessage(
        video_id="v0",
        status="ok",
        manifest_uri="s3://out/aj/v0/manifest.json",
        device="cuda:0",
        error=None,
    ),
    TerminationMessage(
        video_id="v1",
        status="error",
        manifest_uri=None,
        device="cpu",
        error="InputError: corrupt.mp4: invalid data — ünï",
    ),
    TerminationMessage(
        video_id=None,
        status="error",
        manifest_uri=None,
        device=None,
        error="IndexError: list index out of range",
    ),
]


def test_items_file_round_trips_every_field() -> None:
    text = dump_items(ITEMS)
    assert json.loads(text) == [
        {"inputUri": "s3://media/v0.mp4", "videoId": "v0", "extractors": ["tempo", "pitch"]},
        {"inputUri": "file:///data/media/ünï code.wav", "videoId": "v1", "extractors": None},
    ]
    assert load_items(text) == ITEMS
    assert load_items(text.encode()) == ITEMS
    assert (
        sum(item_json_bytes(item) for item in ITEMS) == len(text.encode()) - 1
    )  # "[" "]" less a comma


@pytest.mark.parametrize(
    "entry",
    [
        {"inputURI": "s3://m/v0.mp4", "videoId": "v0", "extractors": None},  # renamed
        {"videoId": "v0", "extractors": None},  # missing
        {
            "inputUri": "s3://m/v0.mp4",
            "videoId": "v0",
            "extractors": None,
            "colour": "red",
        },  # extra
        {"inputUri": "s3://m/v0.mp4", "videoId": 7, "extractors": None},  # wrong type
    ],
)
def test_items_file_with_another_shape_fails(entry: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        load_items(json.dumps([entry]))


@pytest.mark.parametrize("message", MESSAGES)
def test_termination_message_round_trips_every_field(message: TerminationMessage) -> None:
    line = message.to_line()
    assert "\n" not in line
    assert set(json.loads(line)) == {"videoId", "status", "manifestUri", "device", "error"}
    assert parse_termination_message(line) == message
    assert parse_termination_message(line + "\n") == message  # as the file holds it


def test_long_error_is_cut_to_fit_what_kubernetes_keeps() -> None:
    message = TerminationMessage(
        video_id="v",
        status="error",
        manifest_uri=None,
        device="cpu",
        error="Ä" * 5000 + '"\\' * 500,
    )
    line = message.to_line()
    assert len(line.encode()) < MAX_MESSAGE_BYTES
    parsed = parse_termination_message(line)
    assert parsed is not None and parsed.error is not None
    assert (
        parsed.error.endswith("…") and parsed.error.startswith("ÄÄÄ") and len(parsed.error) > 1000
    )
    assert parsed.model_copy(update={"error": None}) == message.model_copy(update={"error": None})


def test_no_message_and_plain_text_are_no_result() -> None:
    """kwok's simulated pods write no message; a worker killed before its line leaves log text."""
    assert parse_termination_message(None) is None
    assert parse_termination_message("") is None
    assert parse_termination_message("simulated by kwok") is None
    assert (
        parse_termination_message("Traceback (most recent call last):\n  ...\nMemoryError") is None
    )
    assert parse_termination_message("[1, 2]\n42") is None  # JSON, but no object


def test_the_last_result_line_of_a_log_tail_counts() -> None:
    line = MESSAGES[1].to_line()
    assert parse_termination_message(f"decoding...\n{line}\nwarning: slow disk") == MESSAGES[1]


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(manifestURL=d.pop("manifestUri")),  # renamed
        lambda d: d.update(state=d.pop("status")),  # renamed: the key everything hinges on
        lambda d: d.pop("device"),  # missing
        lambda d: d.update(retries=2),  # extra
        lambda d: d.update(status="done"),  # not a status
    ],
)
def test_a_message_with_another_shape_fails_loudly(change) -> None:  # noqa: ANN001
    document = json.loads(MESSAGES[0].to_line())
    change(document)
    with pytest.raises(PodContractError, match="breaks the pod contract"):
        parse_termination_message(json.dumps(document))


def test_exit_codes_and_paths_are_fixed() -> None:
    """Values other programs rely on: the Job's podFailurePolicy, the container spec."""
    assert (PodExit.OK, PodExit.FAILED, PodExit.INPUT_ERROR) == (0, 1, 3)
    assert TERMINATION_LOG == "/dev/termination-log"
    assert ITEMS_FILE == "/etc/audioproc/items/items.json"


@pytest.mark.parametrize(
    ("output", "uri"),
    [
        ("file:///data/out/aj", "file:///data/out/aj/v-1/manifest.json"),
        ("file:///data/out/aj/", "file:///data/out/aj/v-1/manifest.json"),  # a manifest prefix
        ("s3://bucket/pre/fix/aj", "s3://bucket/pre/fix/aj/v-1/manifest.json"),
        ("s3://bucket", "s3://bucket/v-1/manifest.json"),
        ("file:///", "file:///v-1/manifest.json"),
    ],
)
def test_manifest_uri(output: str, uri: str) -> None:
    assert manifest_uri(output, "v-1") == uri


@given(st.sets(st.integers(min_value=0, max_value=300)))
def test_index_ranges_round_trip(indexes: set[int]) -> None:
    assert parse_index_ranges(format_index_ranges(indexes)) == indexes


@pytest.mark.parametrize(
    ("text", "indexes"),
    [
        (None, set()),
        ("", set()),
        ("3", {3}),
        ("0-3,7", {0, 1, 2, 3, 7}),
        ("1,4-5,9-9", {1, 4, 5, 9}),
    ],
)
def test_parse_index_ranges(text: str | None, indexes: set[int]) -> None:
    assert parse_index_ranges(text) == indexes


def test_index_ranges_format_like_kubernetes() -> None:
    assert format_index_ranges({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"
    assert format_index_ranges(set()) == ""
    with pytest.raises(ValueError):
        parse_index_ranges("0-a")
