"""GPU placement as pure functions: quotas, the operator's cap, order and fair share."""

from __future__ import annotations

from audioproc_operator.quota import Demand, grant_gpus, namespace_room


def demand(name, ns="a", want=1, priority=0, items=1, created="2026-01-01T00:00:00Z"):
    return Demand(ns, name, want, priority, items, created)


def quota(hard, used=0):
    return {"status": {"hard": {"requests.nvidia.com/gpu": str(hard)}, "used": {"requests.nvidia.com/gpu": str(used)}}}


def test_quota_of_two_places_two_of_three():
    waiting = [demand("j1", created="1"), demand("j2", created="2"), demand("j3", created="3")]
    grants = grant_gpus(waiting, held={}, rooms={"a": 2}, cap=8)
    assert grants == {("a", "j1"): 1, ("a", "j2"): 1, ("a", "j3"): 0}


def test_operator_cap_bounds_all_namespaces():
    grants = grant_gpus([demand("x", "a", want=4), demand("y", "b", want=4)], held={"c": 1}, rooms={}, cap=3)
    assert sum(grants.values()) == 2


def test_priority_then_short_before_long():
    waiting = [demand("long", items=100, created="1"), demand("short", items=2, created="2"),
               demand("urgent", priority=5, items=500, created="3")]
    grants = grant_gpus(waiting, held={}, rooms={"a": 2}, cap=8)
    assert grants[("a", "urgent")] == 1 and grants[("a", "short")] == 1 and grants[("a", "long")] == 0


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
