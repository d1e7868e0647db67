"""AudioJobs whose items come from an item list (``spec.itemsFrom``) on the local control plane.

Fixtures are e2e/tests/conftest.py's: the operator runs as a host process watching the test's
namespace, so a ``file://`` list under the test's tmp_path is on its "shared volume". kwok
plays the kubelet (pods succeed, or fail on the indexes of ``e2e.audioproc.io/fail-indexes``);
the pods' commands are checked to point at their chunk's byte offset in the list, and the
worker reading its line from there is tested in job_image/tests/test_pod_contract.py.

A 100,000-item list is validated, counted and placed by the operator (suspended: its pods
are not this test's business). The scale test (``slow``) runs ``E2E_ITEMS_FROM_N`` items
(default 2,000: `make test` runs it; 100,000 kwok pods take hours on 2 shared cores, see
docs/performance.md) with pods that succeed at once, and prints the wall time and the
operator's peak RSS (VmHWM):

    E2E_ITEMS_FROM_N=100000 .venv/bin/python -m pytest e2e/tests/test_items_from.py -m slow -s
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from audioproc.models.audiojob import MAX_LISTED_FAILURES, AudioJobItem
from audioproc.models.pod_contract import item_list_bytes
from e2e.helpers import Kube, OperatorProcess, peak_rss_mib, phase_is, wait_for
from e2e.operator_support import reasons_of

pytestmark = pytest.mark.e2e

FINISHED = ("Completed", "PartiallyCompleted", "Failed")


def write_list(path: Path, n: int) -> str:
    """An item list of ``n`` items at ``path``; its ``file://`` URI."""
    items = (
        AudioJobItem(input_uri=f"s3://media/in/v{i}.mp4", video_id=f"v{i:06d}") for i in range(n)
    )
    path.write_bytes(item_list_bytes(items))
    return path.as_uri()


def listed_audiojob(name: str, uri: str, pod_annotations: dict[str, str], **spec: Any) -> Any:
    return {
        "apiVersion": "audioproc.io/v1alpha1",
        "kind": "AudioJob",
        "metadata": {
            "name": name,
            "annotations": {"audioproc.io/pod-annotations": json.dumps(pod_annotations)},
        },
        "spec": {
            "itemsFrom": {"uri": uri},
            "device": "cpu",
            "output": "s3://features/runs",
            **spec,
        },
    }


def test_items_from_runs_each_line_and_lists_only_failures(
    kube: Kube, start_operator: Callable[..., OperatorProcess], tmp_path: Path
) -> None:
    """25 items in Jobs of 10; kwok fails completion index 3 of each Job (items 3, 13, 23)."""
    start_operator(OPERATOR_CHUNK_SIZE="10")
    uri = write_list(tmp_path / "items.jsonl", 25)
    annotations = {"e2e.audioproc.io/fail-indexes": "3", "e2e.audioproc.io/exit-code": "3"}
    kube.create(listed_audiojob("listed", uri, annotations, concurrency=5))
    status = wait_for(
        what="listed finished", check=phase_is(kube, "listed", *FINISHED), timeout=180
    )

    assert status["phase"] == "PartiallyCompleted"
    assert status["counts"] == {"total": 25, "succeeded": 22, "failed": 3, "active": 0}
    assert status["failedIndexes"] == "3,13,23"
    assert status["succeededIndexes"] == "0-2,4-12,14-22,24"
    # Failures only, named by the video id on their line; successes are not listed.
    assert [(i["index"], i["videoId"], i["phase"]) for i in status["items"]] == [
        (3, "v000003", "Failed"),
        (13, "v000013", "Failed"),
        (23, "v000023", "Failed"),
    ]
    assert "failuresNotListed" not in status
    assert status["chunkStarts"] == [0, 10, 20]
    lines = (tmp_path / "items.jsonl").read_bytes().splitlines(keepends=True)
    offsets = [sum(map(len, lines[:first])) for first in (0, 10, 20)]
    assert status["chunkOffsets"] == offsets
    assert status["manifestPrefix"] == "s3://features/runs/listed/"

    # No ConfigMaps: each pod reads its own line, from its Job's byte offset in the list.
    assert kube.json("get", "configmaps", "-l", "audioproc.io/audiojob=listed")["items"] == []
    commands = {
        p["metadata"]["labels"]["audioproc.io/chunk"]: p["spec"]["containers"][0]["command"]
        for p in kube.pods("listed")
    }
    for chunk, command in commands.items():
        offset = command[command.index("--items-offset") + 1]
        first = command[command.index("--first-index") + 1]
        assert command[command.index("--items-from") + 1] == uri
        assert (int(offset), int(first)) == (offsets[int(chunk)], 10 * int(chunk))
    assert wait_for(
        what="an ItemsFailed event",
        check=lambda: "ItemsFailed" in reasons_of(kube, "listed") or None,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"inputUri": "s3://m/a.mp4", "videoId": "a"}\n{"inputUri": "s3://m/b.mp4"}\n', "line 2"),
        (None, "cannot be read"),
    ],
    ids=["bad-line", "missing-file"],
)
def test_an_unusable_item_list_fails_the_audiojob_naming_the_line(
    kube: Kube,
    start_operator: Callable[..., OperatorProcess],
    tmp_path: Path,
    content: bytes | None,
    expected: str,
) -> None:
    start_operator()
    path = tmp_path / "broken.jsonl"
    if content is not None:
        path.write_bytes(content)
    kube.create(listed_audiojob("broken", path.as_uri(), {}))
    status = wait_for(what="broken Failed", check=phase_is(kube, "broken", *FINISHED), timeout=60)
    assert status["phase"] == "Failed"
    assert expected in status["message"] and str(path) in status["message"]
    assert status["conditions"][-1]["reason"] == "ItemListInvalid"
    assert kube.json("get", "jobs")["items"] == []
    assert wait_for(
        what="a Failed event",
        check=lambda: "Failed" in reasons_of(kube, "broken") or None,
        timeout=30,
    )


def test_the_api_server_takes_items_or_items_from_not_both(kube: Kube, tmp_path: Path) -> None:
    both = listed_audiojob("both", (tmp_path / "x.jsonl").as_uri(), {})
    both["spec"]["items"] = [{"inputUri": "s3://m/a.mp4", "videoId": "a"}]
    refused = kube.create(both, check=False)
    assert refused.returncode != 0
    assert "set exactly one of items and itemsFrom" in refused.stderr


def test_a_100000_item_list_is_counted_and_placed(
    kube: Kube, start_operator: Callable[..., OperatorProcess], tmp_path: Path
) -> None:
    """Suspended before placement: the operator reads the whole list (streaming) and records
    its count, and no pod runs; the operator stays small."""
    operator = start_operator()
    uri = write_list(tmp_path / "huge.jsonl", 100_000)
    kube.create(listed_audiojob("huge", uri, {}, suspend=True))
    status = wait_for(
        what="huge counted",
        check=lambda: (kube.audiojob("huge").get("status") or {}).get("counts"),
        timeout=120,
    )
    assert status == {"total": 100_000, "succeeded": 0, "failed": 0, "active": 0}
    assert kube.audiojob("huge")["status"]["phase"] == "Suspended"
    assert kube.json("get", "jobs")["items"] == []
    assert operator.process is not None
    print(
        f"\n[items-from] 100,000 items counted: peak RSS {peak_rss_mib(operator.process.pid):.0f} MiB"
    )


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a_huge_item_list_completes_with_a_small_status(
    kube: Kube, start_operator: Callable[..., OperatorProcess], tmp_path: Path
) -> None:
    """E2E_ITEMS_FROM_N items (default 2,000) in Jobs of 1,000, pods succeeding at once.

    Pods request almost nothing (110 fit a kwok node) and finished Jobs go after 30 s, so that
    kwok's pod addresses (4,094 per node) are not used up. Prints the numbers for
    docs/performance.md.
    """
    n = int(os.environ.get("E2E_ITEMS_FROM_N", "2000"))
    operator = start_operator(
        OPERATOR_CPU_REQUESTS='{"cpu": "10m", "memory": "16Mi"}',
        OPERATOR_CPU_LIMITS="{}",
        OPERATOR_JOB_TTL_SECONDS="30",
    )
    uri = write_list(tmp_path / "huge.jsonl", n)
    started = time.monotonic()
    kube.create(
        listed_audiojob("huge", uri, {"e2e.audioproc.io/run-duration": "1ms"}, concurrency=200)
    )
    status = wait_for(
        what=f"{n} items finished",
        check=phase_is(kube, "huge", *FINISHED),
        timeout=3500,
        interval=5,
    )
    wall_s = time.monotonic() - started
    assert operator.process is not None
    rss = peak_rss_mib(operator.process.pid)
    size = len(json.dumps(kube.audiojob("huge")["status"]).encode())
    print(
        f"\n[items-from] {n} items: {wall_s:.1f} s, operator peak RSS {rss:.0f} MiB, status {size} B"
    )
    assert status["phase"] == "Completed"
    assert status["counts"]["succeeded"] == n and status["succeededIndexes"] == f"0-{n - 1}"
    assert size < 100 * 1024
    assert len(status.get("items") or []) <= MAX_LISTED_FAILURES
