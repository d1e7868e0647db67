"""GPU placement: which waiting AudioJobs get GPUs, and how many (pure functions).

A GPU AudioJob holds ``gpus`` GPUs (its pods at once, one GPU each) from placement until
it finishes. What is free is bounded twice: by the operator's own cap over all namespaces
(``MAX_GPU_WORKERS``) and by each namespace's ResourceQuota ``requests.nvidia.com/gpu``.
Waiting AudioJobs are served one at a time in this order: the namespace holding the fewest
GPUs first (fair share across namespaces), then higher ``priority``, then fewer items
(short before long), then the older. ``auto`` AudioJobs that get nothing run on CPU;
``gpu`` AudioJobs that get nothing wait.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from audioproc_operator.settings import GPU_RESOURCE

QUOTA_KEY: Final = f"requests.{GPU_RESOURCE}"

Key = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True)
class Demand:
    """An AudioJob waiting for placement that could use GPUs."""

    namespace: str
    name: str
    want: int  # GPUs it could use at once: min(concurrency, items)
    priority: int
    items: int
    created: str  # creationTimestamp (RFC 3339 sorts by time)

    @property
    def key(self) -> Key:
        return (self.namespace, self.name)


def parse_quantity(value: str | int) -> int:
    """A whole-number Kubernetes quantity (GPUs are counted in units: "2", "2k" is absurd but valid)."""
    text = str(value)
    multipliers = {"k": 10**3, "M": 10**6, "G": 10**9}
    if text and text[-1] in multipliers:
        return int(text[:-1]) * multipliers[text[-1]]
    return int(text)


def namespace_room(quotas: list[dict[str, Any]], held: int) -> int | None:
    """GPUs a namespace can still take, by its ResourceQuotas; None when none limits GPUs.

    ``used`` counts the GPU pods that exist; ``held`` counts what this operator has handed
    out in the namespace, whose pods may not exist yet. Our pods are in both, so the larger
    of the two is taken, not the sum.
    """
    rooms = []
    for quota in quotas:
        hard = (
            (quota.get("status") or {}).get("hard") or (quota.get("spec") or {}).get("hard") or {}
        )
        if QUOTA_KEY not in hard:
            continue
        used = parse_quantity(((quota.get("status") or {}).get("used") or {}).get(QUOTA_KEY, 0))
        rooms.append(max(0, parse_quantity(hard[QUOTA_KEY]) - max(used, held)))
    return min(rooms) if rooms else None


def grant_gpus(
    waiting: list[Demand],
    held: dict[str, int],
    rooms: dict[str, int | None],
    cap: int,
) -> dict[Key, int]:
    """GPUs granted to each waiting AudioJob (0: none now).

    ``held``: GPUs held per namespace; ``rooms``: what each namespace's quota still allows
    (None: no quota); ``cap``: the operator's limit over all namespaces.
    """
    in_use = dict(held)
    free = max(0, cap - sum(held.values()))
    room = dict(rooms)
    grants: dict[Key, int] = {}
    remaining = list(waiting)
    while remaining:
        remaining.sort(
            key=lambda d: (in_use.get(d.namespace, 0), -d.priority, d.items, d.created, d.key)
        )
        demand = remaining.pop(0)
        ns_room = room.get(demand.namespace)
        limit = free if ns_room is None else min(free, ns_room)
        granted = max(0, min(demand.want, limit))
        grants[demand.key] = granted
        free -= granted
        in_use[demand.namespace] = in_use.get(demand.namespace, 0) + granted
        if ns_room is not None:
            room[demand.namespace] = ns_room - granted
    return grants


@dataclass(frozen=True)
class Shortage:
    """Why an AudioJob was granted no GPU."""

    quota: bool  # the namespace's ResourceQuota is the limit (else the operator's cap or the queue)
    message: str


def shortage(namespace: str, room: int | None, free: int, cap: int) -> Shortage:
    """Why a grant of nothing: ``room`` is the namespace's quota room (None: no quota),
    ``free`` the GPUs under ``cap`` (MAX_GPU_WORKERS) not held by any AudioJob."""
    if room is not None and room <= 0:
        return Shortage(
            True, f"the ResourceQuota {QUOTA_KEY} of namespace {namespace} has no room left"
        )
    if free <= 0:
        return Shortage(False, f"all {cap} GPUs of MAX_GPU_WORKERS are held by other AudioJobs")
    return Shortage(
        False, f"the {free} free GPU{'s' if free != 1 else ''} went to AudioJobs ahead in the queue"
    )
