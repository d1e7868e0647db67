"""The reconciler against a recording fake of the API server (no cluster).

Each test drives ``Reconciler.reconcile`` as kopf's timer does: the AudioJob's body as the
watch shows it, its own ``AudioJobMemo``, every AudioJob's index entry, its Jobs and pods.
What it asks of the API server (``FakeCluster.calls``) and the Events it posts are the
behaviour under test. The e2e tests (e2e/tests/test_operator*.py) run it on a real
control plane.
"""

from __future__ import annotations

import copy
import gc
from typing import Any

import kopf
import pytest
from fake_cluster import (
    Events,
    FakeCluster,
    audiojob,
    entries,
    gpu_quota,
    job_view,
    seen_by_the_watch,
)

from audioproc.models.audiojob import AudioJobItem
from audioproc.models.pod_contract import item_list_bytes
from audioproc_operator import handlers
from audioproc_operator.events import Reason
from audioproc_operator.memos import AUDIOJOB_MEMO, AudioJobMemo, GpuLedger
from audioproc_operator.reconcile import AudioJobEntry, Reconciler
from audioproc_operator.settings import GPU_RESOURCE, OperatorSettings


@pytest.fixture
def api() -> FakeCluster:
    return FakeCluster()


@pytest.fixture
def events() -> Events:
    return Events()


def reconciler(
    settings: OperatorSettings, api: FakeCluster, events: Events, gpus: int = 8
) -> Reconciler:
    return Reconciler(settings.model_copy(update={"max_gpu_workers": gpus}), api, events)


def last_status(api: FakeCluster, name: str = "aj") -> dict[str, Any]:
    return api.statuses(name)[-1]


def gpus_of_the_job(job: dict[str, Any]) -> str | None:
    container = job["spec"]["template"]["spec"]["containers"][0]
    limits: dict[str, str] = container["resources"].get("limits") or {}
    return limits.get(GPU_RESOURCE)


# ---------------------------------------------------------------- placement


def test_cpu_audiojob_is_placed_before_its_first_job_is_created(settings, api, events):
    body = audiojob(device="cpu", concurrency=2)
    reconciler(settings, api, events).reconcile(body, AudioJobMemo(), entries(body), [], [])

    assert api.kinds_of_calls()[:3] == ["patch_status", "create ConfigMap", "create Job"]
    placed = api.statuses("aj")[0]
    assert (placed["device"], placed["phase"], placed["gpus"]) == ("cpu", "Processing", 0)
    assert placed["message"] == "0 of 3 items finished on cpu"  # as the fold will say
    assert len(api.statuses("aj")) == 1  # the first Job needs no second patch
    assert events.messages(Reason.placed) == ["placed on cpu, 2 pods at once; 3 items in 1 Job(s)"]
    assert placed["jobs"] == ["aj-0"] and placed["chunkStarts"] == [0]
    [job] = api.created("Job")
    assert job["spec"]["parallelism"] == 2 and job["spec"]["completions"] == 3
    assert gpus_of_the_job(job) is None
    assert job["spec"]["template"]["spec"]["nodeSelector"] == settings.cpu_node_selector
    assert events.reasons() == [Reason.placed, Reason.job_created]
    assert api.created("ConfigMap")[0]["metadata"]["name"] == "aj-0"


def test_gpu_audiojob_gets_one_gpu_per_pod_up_to_its_items(settings, api, events):
    body = audiojob(device="gpu", concurrency=4)  # 3 items: 3 pods at most
    reconciler(settings, api, events).reconcile(body, AudioJobMemo(), entries(body), [], [])

    placed = api.statuses("aj")[0]
    assert (placed["device"], placed["gpus"]) == ("gpu", 3)
    assert events.messages(Reason.placed) == ["placed on gpu with 3 GPUs; 3 items in 1 Job(s)"]
    [job] = api.created("Job")
    assert job["spec"]["parallelism"] == 3 and gpus_of_the_job(job) == "1"
    assert job["spec"]["template"]["spec"]["nodeSelector"] == settings.gpu_node_selector


def test_gpu_audiojob_waits_while_every_gpu_is_held(settings, api, events):
    holder = audiojob(
        "holder", device="gpu", status={"phase": "Processing", "device": "gpu", "gpus": 2}
    )
    body = audiojob(device="gpu")
    rec, memo = reconciler(settings, api, events, gpus=2), AudioJobMemo()
    rec.reconcile(body, memo, entries(holder, body), [], [])

    waiting = last_status(api)
    assert waiting["phase"] == "Pending" and "device" not in waiting
    assert waiting["message"] == (
        "waiting for a GPU: all 2 GPUs of MAX_GPU_WORKERS are held by other AudioJobs"
    )
    assert api.created("Job") == [] and events.reasons() == [Reason.waiting]

    # the next ticks (before and after the watch shows the wait) post nothing new, and
    # once the watch shows it, nothing is patched either
    rec.reconcile(body, memo, entries(holder, body), [], [])
    patches = len(api.statuses("aj"))
    shown = seen_by_the_watch(body, waiting)
    rec.reconcile(shown, memo, entries(holder, shown), [], [])
    assert events.reasons() == [Reason.waiting] and len(api.statuses("aj")) == patches

    # the holder finishes: the waiting AudioJob is placed on the GPUs it gave back
    done = seen_by_the_watch(holder, {"phase": "Completed", "device": "gpu", "gpus": 2})
    rec.reconcile(shown, memo, entries(done, shown), [], [])
    placement = next(status for status in api.statuses("aj") if "device" in status)
    assert (placement["device"], placement["gpus"]) == ("gpu", 2)
    assert events.reasons()[-2:] == [Reason.placed, Reason.job_created]


def test_placement_sees_grants_the_watch_has_not_shown_yet(settings, api, events):
    first = audiojob("first", device="gpu", concurrency=3)
    second = audiojob("second", device="gpu", concurrency=3, priority=1)
    rec, memos = reconciler(settings, api, events, gpus=4), [AudioJobMemo(), AudioJobMemo()]
    rec.reconcile(first, memos[0], entries(first), [], [])  # before "second" was created
    # the index still shows "first" unplaced: were it taken for a waiting one, "second"
    # (higher priority) would come first and get 3; the ledger knows "first" holds 3
    rec.reconcile(second, memos[1], entries(first, second), [], [])

    assert api.statuses("first")[0]["gpus"] == 3
    assert api.statuses("second")[0]["gpus"] == 1
    assert events.messages(Reason.placed)[1].startswith("placed on gpu with 1 GPU of 3 wanted;")


def test_namespace_quota_limits_the_gpus_granted(settings, events):
    api = FakeCluster(quotas={"team-a": [gpu_quota(hard=2)]})
    body = audiojob(device="gpu", concurrency=3)
    reconciler(settings, api, events).reconcile(body, AudioJobMemo(), entries(body), [], [])

    assert ("resource_quotas", "team-a") in api.calls
    assert api.statuses("aj")[0]["gpus"] == 2


def test_gpu_audiojob_waits_for_a_full_quota_with_a_warning(settings, events):
    api = FakeCluster(quotas={"team-a": [gpu_quota(hard=1, used=1)]})
    body = audiojob(device="gpu")
    reconciler(settings, api, events).reconcile(body, AudioJobMemo(), entries(body), [], [])

    assert last_status(api)["phase"] == "Pending"
    assert (
        "ResourceQuota requests.nvidia.com/gpu of namespace team-a" in last_status(api)["message"]
    )
    assert events.reasons() == [Reason.quota_rejected]
    assert events[0][1].type == "Warning" and api.created("Job") == []


def test_auto_audiojob_without_gpu_room_runs_on_cpu_and_says_why(settings, events):
    api = FakeCluster(quotas={"team-a": [gpu_quota(hard=0)]})
    body = audiojob(device="auto", concurrency=2)
    reconciler(settings, api, events).reconcile(body, AudioJobMemo(), entries(body), [], [])

    placed = api.statuses("aj")[0]
    assert placed["device"] == "cpu"
    [message] = events.messages(Reason.placed)
    assert message.startswith("placed on cpu, 2 pods at once (device auto, no GPU: the Resource")
    assert events.reasons() == [Reason.quota_rejected, Reason.placed, Reason.job_created]
    assert gpus_of_the_job(api.created("Job")[0]) is None


def test_suspended_before_placement_creates_nothing(settings, api, events):
    body = audiojob(device="gpu", suspend=True)
    reconciler(settings, api, events).reconcile(body, AudioJobMemo(), entries(body), [], [])

    assert last_status(api)["phase"] == "Suspended" and "device" not in last_status(api)
    assert api.created("Job") == [] and events.reasons() == [Reason.suspended]
    assert ("resource_quotas", "team-a") not in api.calls  # no grant asked for


# ---------------------------------------------------------------- children


def placed(body: dict[str, Any], device: str = "cpu", gpus: int = 0) -> dict[str, Any]:
    """``body`` with a placement in its status, as a restarted operator finds it."""
    status = {
        "phase": "Processing",
        "device": device,
        "gpus": gpus,
        "chunkStarts": [0],
        "jobs": [f"{body['metadata']['name']}-0"],
        "manifestPrefix": "s3://out/aj",
        "counts": {"total": len(body["spec"]["items"])},
    }
    return seen_by_the_watch(body, status)


def test_existing_objects_of_this_audiojob_are_adopted_not_created_twice(settings, api, events):
    body = placed(audiojob(device="cpu"))
    rec = reconciler(settings, api, events)
    rec.reconcile(body, AudioJobMemo(), entries(body), [], [])
    assert events.reasons() == [Reason.job_created]

    # a restarted operator whose jobs index does not show the Job yet: 409, then adopt
    events.clear()
    api.calls.clear()
    rec.reconcile(body, AudioJobMemo(), entries(body), [], [])
    assert api.kinds_of_calls()[:4] == ["create ConfigMap", "read", "create Job", "read"]
    assert len(api.created("Job")) == 1 and events.reasons() == []


def test_a_job_left_by_an_earlier_audiojob_of_the_same_name_is_waited_for(settings, api, events):
    body = placed(audiojob(device="cpu"))
    reconciler(settings, api, events).reconcile(body, AudioJobMemo(), entries(body), [], [])
    reborn = {**body, "metadata": {**body["metadata"], "uid": "uid-reborn"}}

    with pytest.raises(kopf.TemporaryError, match="belongs to an earlier AudioJob"):
        reconciler(settings, api, events).reconcile(reborn, AudioJobMemo(), entries(reborn), [], [])


def test_next_chunk_starts_when_the_previous_one_finished(settings, api, events):
    settings = settings.model_copy(update={"chunk_size": 2})
    body = audiojob(device="cpu", items=4)
    rec, memo = reconciler(settings, api, events), AudioJobMemo()
    rec.reconcile(body, memo, entries(body), [], [])
    shown = seen_by_the_watch(body, last_status(api))
    rec.reconcile(
        shown, memo, entries(shown), [job_view(shown, completed="0-1", finished=True)], []
    )

    assert [job["metadata"]["name"] for job in api.created("Job")] == ["aj-0", "aj-1"]
    second = api.created("Job")[1]
    assert second["metadata"]["annotations"]["audioproc.io/first-index"] == "2"
    assert last_status(api)["jobs"] == ["aj-0", "aj-1"]
    assert Reason.job_finished in events.reasons()


# ---------------------------------------------------------------- suspend and resume


def test_suspending_a_gpu_audiojob_gives_its_gpus_to_a_waiting_one(settings, api, events):
    running = placed(audiojob("running", device="gpu", concurrency=2, suspend=True), "gpu", 2)
    waiting = audiojob("waiting", device="gpu", concurrency=2)
    rec = reconciler(settings, api, events, gpus=2)
    jobs = [job_view(running, parallelism=2)]
    memo = AudioJobMemo()  # kopf keeps it as long as the AudioJob exists
    rec.reconcile(running, memo, entries(running, waiting), jobs, [])

    suspended = last_status(api, "running")
    assert (suspended["phase"], suspended["gpus"]) == ("Suspended", 0)
    assert ("patch_job", "running-0", {"spec": {"suspend": True, "parallelism": 1}}) in api.calls
    assert events.messages(Reason.suspended)[0].endswith("2 GPUs given back")

    # the index still shows 2 GPUs held by "running"; the ledger knows they are free
    rec.reconcile(waiting, AudioJobMemo(), entries(running, waiting), [], [])
    assert api.statuses("waiting")[0]["gpus"] == 2


def test_resumed_without_free_gpus_it_waits_with_its_jobs_suspended(settings, api, events):
    holder = placed(audiojob("holder", device="gpu"), "gpu", 2)
    resumed = placed(audiojob(device="gpu", concurrency=2), "gpu", 0)
    resumed["status"]["phase"] = "Suspended"
    jobs = [job_view(resumed, suspend=True, parallelism=1)]
    rec = reconciler(settings, api, events, gpus=2)
    rec.reconcile(resumed, AudioJobMemo(), entries(holder, resumed), jobs, [])

    status = last_status(api)
    assert status["phase"] == "Pending" and status["gpus"] == 0
    assert status["message"].startswith("waiting for a GPU: all 2 GPUs of MAX_GPU_WORKERS")
    assert not [c for c in api.calls if c[0] == "patch_job"]  # already suspended, kept so
    assert events.reasons() == [Reason.waiting]


def test_resumed_with_free_gpus_its_jobs_run_again(settings, api, events):
    resumed = placed(audiojob(device="gpu", concurrency=2), "gpu", 0)
    resumed["status"]["phase"] = "Suspended"
    jobs = [job_view(resumed, suspend=True, parallelism=1)]
    reconciler(settings, api, events).reconcile(resumed, AudioJobMemo(), entries(resumed), jobs, [])

    assert (last_status(api)["phase"], last_status(api)["gpus"]) == ("Processing", 2)
    assert ("patch_job", "aj-0", {"spec": {"suspend": False, "parallelism": 2}}) in api.calls
    assert events.messages(Reason.resumed) == ["resumed on gpu with 2 GPUs; 0 of 3 items finished"]


# ---------------------------------------------------------------- status


def test_status_counts_and_the_final_phase_come_from_the_jobs(settings, api, events):
    body = placed(audiojob(device="cpu"))
    job = job_view(body, completed="0,2", failed="1", finished=True)
    memo = AudioJobMemo()
    rec = reconciler(settings, api, events)
    rec.reconcile(body, memo, entries(body), [job], [])

    final = last_status(api)
    assert final["counts"] == {"total": 3, "succeeded": 2, "failed": 1, "active": 0}
    assert final["phase"] == "PartiallyCompleted" and final["message"] == "1 of 3 items failed"
    assert (final["succeededIndexes"], final["failedIndexes"]) == ("0,2", "1")
    assert events.reasons()[-2:] == [Reason.items_failed, Reason.partially_completed]
    assert memo.finished

    # the final phase is written once: a tick before the watch shows it does nothing
    api.calls.clear()
    rec.reconcile(body, memo, entries(body), [job], [])
    assert api.calls == []


def test_a_tick_that_changes_nothing_writes_nothing(settings, api, events):
    body = audiojob(device="cpu")
    rec, memo = reconciler(settings, api, events), AudioJobMemo()
    rec.reconcile(body, memo, entries(body), [], [])
    shown = seen_by_the_watch(body, last_status(api))
    jobs = [job_view(shown, completed="0", parallelism=3)]
    rec.reconcile(shown, memo, entries(shown), jobs, [])
    progress = last_status(api)
    assert progress["counts"]["succeeded"] == 1

    api.calls.clear()
    shown = seen_by_the_watch(shown, progress)
    rec.reconcile(shown, memo, entries(shown), jobs, [])
    rec.reconcile(shown, memo, entries(shown), jobs, [])
    assert api.calls == [] and memo.settled is not None


# ---------------------------------------------------------------- deletion, memos, wiring


def test_deleting_removes_the_jobs_in_the_foreground_and_says_so(settings, api, events):
    body = placed(audiojob(device="cpu"))
    rec = reconciler(settings, api, events)
    rec.reconcile(body, AudioJobMemo(), entries(body), [], [])
    rec.delete_jobs(body, ["aj-0", "aj-1"])  # aj-1 is already gone: 404 is fine

    assert [c for c in api.calls if c[0] == "delete_job"] == [
        ("delete_job", "aj-0"),
        ("delete_job", "aj-1"),
    ]
    assert api.created("Job") == []
    assert events.messages(Reason.deleting)[0].startswith("deleting Job(s) aj-0, aj-1")


def test_the_ledger_drops_an_audiojob_with_its_memo():
    ledger, memo = GpuLedger(), AudioJobMemo(decision={"device": "gpu"}, gpus=2)
    ledger.track("uid-a", memo)
    assert (ledger.devices(), ledger.gpus()) == ({"uid-a": "gpu"}, {"uid-a": 2})

    del memo  # kopf drops an object's memo on its DELETED event
    gc.collect()
    assert (ledger.devices(), ledger.gpus()) == ({}, {})


def test_handlers_share_the_reconciler_and_keep_each_audiojob_s_memo(settings, api, events):
    operator_memo = kopf.Memo()
    operator_memo[handlers.RECONCILER_MEMO] = reconciler(settings, api, events, gpus=1)
    # kopf makes each object's memo as a shallow copy of the operator memo
    memo_a, memo_b = copy.copy(operator_memo), copy.copy(operator_memo)
    # b comes first in the queue: only the shared ledger tells it that a holds the one GPU
    a, b = audiojob("a", device="gpu"), audiojob("b", device="gpu", priority=1)
    index: dict[tuple[str, str], list[AudioJobEntry]] = {}
    for body, memo in ((a, memo_a), (b, memo_b)):  # b is created after a was placed
        index[(body["metadata"]["namespace"], body["metadata"]["name"])] = entries(body)
        handlers.reconcile(
            body=kopf.Body(body),
            uid=body["metadata"]["uid"],
            audiojobs=index,
            jobs={},
            pods={},
            memo=memo,
        )

    assert memo_a[AUDIOJOB_MEMO] is not memo_b[AUDIOJOB_MEMO]
    assert AUDIOJOB_MEMO not in operator_memo
    assert api.statuses("a")[0]["gpus"] == 1
    assert api.statuses("b")[-1]["phase"] == "Pending"


# ---------------------------------------------------------------- item lists (spec.itemsFrom)


def listed(name: str, uri: str, status: dict[str, Any] | None = None) -> dict[str, Any]:
    """An AudioJob whose items come from the list at ``uri``."""
    body = audiojob(name, items=1, status=status, device="cpu", concurrency=2)
    del body["spec"]["items"]
    body["spec"]["itemsFrom"] = {"uri": uri}
    return body


def test_an_item_list_is_counted_once_and_its_jobs_read_it_at_their_offset(
    settings, api, events, tmp_path
):
    items = [AudioJobItem(input_uri=f"s3://media/v{i}.mp4", video_id=f"v{i}") for i in range(5)]
    path = tmp_path / "items.jsonl"
    path.write_bytes(item_list_bytes(items))
    body = listed("big", path.as_uri())
    rec = reconciler(settings.model_copy(update={"chunk_size": 2}), api, events)
    memo = AudioJobMemo()
    rec.reconcile(body, memo, entries(body), [], [])

    placed = api.statuses("big")[0]
    assert placed["counts"]["total"] == 5 and placed["chunkStarts"] == [0, 2, 4]
    assert api.created("ConfigMap") == []  # pods read their own line of the list
    [job] = api.created("Job")
    assert job["spec"]["completions"] == 2
    assert memo.scan is not None and memo.scan.count == 5
    assert events.messages(Reason.placed)[0].endswith("; 5 items in 3 Job(s)")


def test_an_unusable_item_list_fails_the_audiojob_at_placement(settings, api, events, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"inputUri": "s3://media/v0.mp4", "videoId": "v0"}\nnot json\n')
    body = listed("bad", path.as_uri())
    memo = AudioJobMemo()
    reconciler(settings, api, events).reconcile(body, memo, entries(body), [], [])

    failed = last_status(api, "bad")
    assert failed["phase"] == "Failed" and "line 2" in failed["message"]
    assert api.created("Job") == [] and events.reasons() == [Reason.failed]
    assert memo.finished


# ---------------------------------------------------------------- Kueue mode


def test_kueue_mode_submits_suspended_jobs_and_leaves_the_gpus_to_kueue(settings, api, events):
    body = audiojob(device="gpu", concurrency=2, queueName="team-queue")
    rec, memo = reconciler(settings, api, events, gpus=1), AudioJobMemo()
    rec.reconcile(body, memo, entries(body), [], [])

    submitted = api.statuses("aj")[0]
    assert submitted["phase"] == "Pending" and submitted["queue"]["localQueue"] == "team-queue"
    assert ("resource_quotas", "team-a") not in api.calls  # no grant: Kueue holds the quota
    [job] = api.created("Job")
    assert job["spec"]["suspend"] is True and job["spec"]["parallelism"] == 2
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-queue"
    assert events.reasons()[0] is Reason.queued

    # an operator-placed GPU AudioJob is not held back by it (the one GPU is free)
    other = audiojob("other", device="gpu")
    rec.reconcile(other, AudioJobMemo(), entries(body, other), [], [])
    assert api.statuses("other")[0]["gpus"] == 1
