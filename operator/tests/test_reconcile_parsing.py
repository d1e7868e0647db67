"""Reading AudioJob bodies for the reconciler (pure parts of reconcile.py)."""

from __future__ import annotations

import json

import kopf
import pytest

from audioproc_operator.reconcile import audiojob_entry, audiojob_ref


def body(annotations=None, status=None, **spec):
    return {
        "metadata": {
            "name": "aj",
            "namespace": "ns",
            "uid": "u1",
            "creationTimestamp": "2026-11-27T00:00:00Z",
            "annotations": annotations or {},
        },
        "spec": {
            "items": [
                {"inputUri": "/m/a.wav", "videoId": "a"},
                {"inputUri": "/m/b.wav", "videoId": "b"},
            ],
            **spec,
        },
        "status": status or {},
    }


def test_entry_reads_placement_facts():
    entry = audiojob_entry(
        body(
            status={"phase": "Processing", "device": "gpu", "gpus": 2},
            device="gpu",
            priority=5,
            concurrency=3,
        )
    )
    assert (entry.wants, entry.device, entry.gpus, entry.finished) == ("gpu", "gpu", 2, False)
    assert (entry.priority, entry.items, entry.concurrency) == (5, 2, 3)
    assert audiojob_entry(body(status={"phase": "PartiallyCompleted"})).finished
    assert audiojob_entry(body()).wants == "auto"  # the CRD default, also without it


def test_ref_reads_request_id_and_pod_annotations():
    ref = audiojob_ref(
        body(
            {
                "audioproc.io/request-id": "req-42",
                "audioproc.io/pod-annotations": json.dumps({"e2e.audioproc.io/exit-code": 3}),
            }
        )
    )
    assert ref.request_id == "req-42"
    assert ref.pod_annotations == {
        "e2e.audioproc.io/exit-code": "3"
    }  # annotation values are strings


def test_malformed_pod_annotations_are_a_permanent_error():
    with pytest.raises(kopf.PermanentError, match="not a JSON object"):
        audiojob_ref(body({"audioproc.io/pod-annotations": "[1, 2]"}))
