"""itemsFrom in the operator: the Jobs it builds, the status it folds (small at 100,000 items),
and the video ids it reads back from the list."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from audioproc.models.audiojob import (
    MAX_LISTED_FAILURES,
    AudioJobItem,
    AudioJobPhase,
    AudioJobSpec,
    AudioJobStatus,
    ItemCounts,
)
from audioproc.models.pod_contract import ItemListError, item_list_bytes
from audioproc_operator.builder import AudioJobRef, Placement, build_job
from audioproc_operator.items_source import ListedVideoIds, list_failed, scan, video_ids
from audioproc_operator.settings import OperatorSettings
from audioproc_operator.status import Observed, fold, job_view

NOW = datetime(2026, 12, 7, 23, 0, tzinfo=UTC)
URI = "file:///data/lists/huge.jsonl"


def listed_ref(total: int, **spec: object) -> AudioJobRef:
    return AudioJobRef(
        name="huge",
        namespace="team-a",
        uid="0000-uid",
        spec=AudioJobSpec.model_validate({"itemsFrom": {"uri": URI}, **spec}),
        listed_total=total,
    )


def finished_job(chunk: int, start: int, size: int, failed: set[int]) -> object:
    """A Complete Job of one chunk: ``failed`` (AudioJob indexes) failed, the rest succeeded."""
    local_failed = sorted(i - start for i in failed if start <= i < start + size)
    done = sorted(set(range(size)) - set(local_failed))

    def ranges(indexes: list[int]) -> str:
        return ",".join(map(str, indexes)) if len(indexes) < size else f"0-{size - 1}"

    return job_view(
        {
            "metadata": {
                "name": f"huge-{chunk}",
                "labels": {
                    "audioproc.io/audiojob-uid": "0000-uid",
                    "audioproc.io/chunk": str(chunk),
                },
                "annotations": {"audioproc.io/first-index": str(start)},
            },
            "spec": {"parallelism": 200},
            "status": {
                "completedIndexes": ranges(done),
                "failedIndexes": ranges(local_failed) if local_failed else "",
                "conditions": [{"type": "Complete", "status": "True"}],
            },
        }
    )


def test_an_items_from_job_has_no_configmap_and_points_at_its_line() -> None:
    ref = listed_ref(5000, extractors=["tempo", "pitch"])
    job = build_job(ref, 3, 3000, 1000, Placement("cpu", 200), OperatorSettings(), 123456)
    pod = job["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["tmp"]
    command = pod["containers"][0]["command"]
    assert command[:2] == ["audioproc", "run-index"]
    assert command[2:10] == [
        "--items-from",
        URI,
        "--items-offset",
        "123456",
        "--first-index",
        "3000",
        "--extractors",
        "tempo,pitch",
    ]
    assert job["spec"]["completions"] == 1000 and job["spec"]["parallelism"] == 200


@pytest.mark.parametrize("failure_rate", [0.0, 0.01, 0.03])
def test_status_at_100000_items_stays_under_100_kib(failure_rate: float) -> None:
    """100 Jobs of 1,000; failures scattered at random (each one splits the succeeded ranges)."""
    total, size = 100_000, 1000
    rng = random.Random(7)
    failed = set(rng.sample(range(total), int(total * failure_rate)))
    ids = [f"video-{i:06d}" for i in range(total)]
    jobs = [finished_job(c, c * size, size, failed) for c in range(total // size)]
    prev = AudioJobStatus(
        phase=AudioJobPhase.processing,
        device="cpu",
        counts=ItemCounts(total=total),
        chunk_starts=list(range(0, total, size)),
        chunk_offsets=[c * 60_000 for c in range(total // size)],
    )
    ref = listed_ref(total)
    status = fold(prev, Observed(ref.spec, "s3://out/huge/", jobs, [], NOW, ids))  # type: ignore[arg-type]
    wire = json.dumps(status.wire()).encode()
    print(f"status of 100,000 items, {len(failed)} failed: {len(wire)} bytes")
    assert len(wire) < 100 * 1024
    assert status.counts == ItemCounts(
        total=total, succeeded=total - len(failed), failed=len(failed)
    )
    listed = status.items or []
    assert len(listed) == min(len(failed), MAX_LISTED_FAILURES)
    assert all(item.phase == "Failed" for item in listed)
    assert [item.video_id for item in listed] == [ids[i] for i in sorted(failed)[: len(listed)]]
    more = len(failed) - len(listed)
    assert status.failures_not_listed == (more or None)
    if more:
        assert status.phase is AudioJobPhase.partially_completed
        assert f"{more} more in status.failedIndexes" in (status.message or "")
    else:
        assert status.phase is AudioJobPhase.completed if not failed else True


def test_video_ids_are_read_a_chunk_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "ids.jsonl"
    path.write_bytes(
        item_list_bytes(
            AudioJobItem(input_uri=f"s3://m/{i}.mp4", video_id=f"v{i}") for i in range(25)
        )
    )
    found = scan(path.as_uri(), chunk_size=10)
    ids = ListedVideoIds(path.as_uri(), found.count, found.chunk_starts, found.chunk_offsets)
    assert len(ids) == 25 and ids[0] == "v0" and ids[13] == "v13" and ids[24] == "v24"
    assert ids[8:12] == ["v8", "v9", "v10", "v11"]
    with pytest.raises(IndexError):
        ids[25]
    status = AudioJobStatus(
        counts=ItemCounts(total=25),
        chunk_starts=found.chunk_starts,
        chunk_offsets=found.chunk_offsets,
    )
    spec = AudioJobSpec.model_validate({"itemsFrom": {"uri": path.as_uri()}})
    assert list(video_ids(spec, status)) == [f"v{i}" for i in range(25)]


def test_an_unreadable_list_fails_the_audiojob_with_its_reason(tmp_path: Path) -> None:
    uri = (tmp_path / "nowhere.jsonl").as_uri()
    with pytest.raises(ItemListError) as caught:
        scan(uri, chunk_size=10)
    status = list_failed(AudioJobStatus(), caught.value, NOW)
    assert status.phase is AudioJobPhase.failed and status.completion_time == NOW
    assert (status.message or "").startswith(f"item list {uri}: cannot be read")
    assert status.conditions and status.conditions[-1].reason == "ItemListInvalid"
