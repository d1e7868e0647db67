"""GPU placement as pure functions: quotas, the operator's cap, order and fair share; suspend
gives GPUs back, resume asks again."""

from __future__ import annotations

from audioproc.models.audiojob import AudioJobPhase, AudioJobStatus
from audioproc_operator.quota import Demand, grant_gpus, namespace_room
from audioproc_operator.reconcile import AudioJobEntry, gpu_change, gpu_ledger


def demand(name, ns="a", want=1, priority=0, items=1, created="2026-01-01T00:00:00Z"):
    return Demand(ns, name, want, priority, items, created)


def quota(hard, used=0):
    return {
        "status": {
            "hard": {"requests.nvidia.com/gpu": str(hard)},
            "used": {"requests.nvidia.com/gpu": str(used)},
        }
    }


def test_quota_of_two_places_two_of_three():
    waiting = [demand("j1", created="1"), demand("j2", created="2"), demand("j3", created="3")]
    grants = grant_gpus(waiting, held={}, rooms={"a": 2}, cap=8)
    assert grants == {("a", "j1"): 1, ("a", "j2"): 1, ("a", "j3"): 0}


def test_operator_cap_bounds_all_namespaces():
    grants = grant_gpus(
        [demand("x", "a", want=4), demand("y", "b", want=4)], held={"c": 1}, rooms={}, cap=3
    )
    assert sum(grants.values()) == 2


def test_priority_then_short_before_long():
    waiting = [
        demand("long", items=100, created="1"),
        demand("short", items=2, created="2"),
        demand("urgent", priority=5, items=500, created="3"),
    ]
    grants = grant_gpus(waiting, held={}, rooms={"a": 2}, cap=8)
    assert (
        grants[("a", "urgent")] == 1 and grants[("a", "short")] == 1 and grants[("a", "long")] == 0
    )


def test_fair_share_serves_the_namespace_holding_fewer_gpus_first():
    waiting = [demand("big-team", "a", priority=10), demand("small-team", "b")]
    grants = grant_gpus(waiting, held={"a": 3}, rooms={}, cap=4)
    assert grants == {("b", "small-team"): 1, ("a", "big-team"): 0}


def test_partial_grant_when_fewer_gpus_free_than_wanted():
    assert grant_gpus([demand("j", want=4)], held={}, rooms={"a": 3}, cap=8) == {("a", "j"): 3}


def test_namespace_room_from_quota():
    assert namespace_room([], held=5) is None
    assert namespace_room([quota(2, used=1)], held=0) == 1
    # our held GPUs whose pods do not exist yet count; our pods are not counted twice
    assert namespace_room([quota(2, used=1)], held=2) == 0
    assert namespace_room([quota(4, used=0), quota(2, used=0)], held=1) == 1
    assert namespace_room([{"status": {"hard": {"pods": "10"}}}], held=0) is None


# ---------------------------------------------------------------- suspend gives GPUs back


def entry(
    name,
    ns="a",
    device="gpu",
    gpus=2,
    suspended=False,
    wants="gpu",
    finished=False,
    created="2026-01-01T00:00:00Z",
):
    return AudioJobEntry(
        namespace=ns,
        name=name,
        uid=f"uid-{name}",
        wants=wants,
        device=device,
        gpus=gpus,
        finished=finished,
        suspended=suspended,
        priority=0,
        items=10,
        concurrency=4,
        created=created,
        phase=None,
    )


def test_suspended_gpu_audiojob_holds_nothing_and_waits_for_nothing():
    held, waiting = gpu_ledger([entry("running"), entry("paused", gpus=0, suspended=True)], {}, {})
    assert held == {"a": 2} and waiting == []


def test_resumed_gpu_audiojob_waits_like_an_unplaced_one():
    held, waiting = gpu_ledger(
        [
            entry("running", gpus=3),
            entry("resumed", gpus=0),
            entry("new", device=None, gpus=0, created="2026-01-02T00:00:00Z"),
            entry("on-cpu", device="cpu", gpus=0, wants="auto"),
            entry("cpu-only", device=None, gpus=0, wants="cpu"),
            entry("done", finished=True),
        ],
        {},
        {},
    )
    assert held == {"a": 3}
    assert [d.name for d in waiting] == ["resumed", "new"] and waiting[0].want == 4
    # granted under the quota and MAX_GPU_WORKERS as they are now; the older first
    grants = grant_gpus(waiting, held, rooms={"a": 1}, cap=8)
    assert grants == {("a", "resumed"): 1, ("a", "new"): 0}


def test_own_decisions_win_over_the_index_until_the_watch_catches_up():
    # the index still shows the GPUs of an AudioJob that has just given them back, and no
    # device yet for one that has just been placed
    stale = [entry("paused", gpus=2, suspended=True), entry("placed", device=None, gpus=0)]
    held, waiting = gpu_ledger(
        stale, devices={"uid-placed": "gpu"}, gpus={"uid-paused": 0, "uid-placed": 1}
    )
    assert held == {"a": 1} and waiting == []


def test_gpu_change_on_suspend_and_resume():
    gpu = AudioJobStatus(phase=AudioJobPhase.processing, device="gpu", gpus=2)
    assert gpu_change(True, gpu) == "release" and gpu_change(False, gpu) is None
    given_back = gpu.model_copy(update={"gpus": 0, "phase": AudioJobPhase.suspended})
    assert gpu_change(True, given_back) is None and gpu_change(False, given_back) == "claim"
    assert gpu_change(True, gpu.model_copy(update={"device": "cpu", "gpus": 0})) is None
    assert (
        gpu_change(False, given_back.model_copy(update={"phase": AudioJobPhase.completed})) is None
    )
