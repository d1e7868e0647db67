"""Group commit: concurrent writes share transactions, each caller returns once its write is in."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from audioproc_api.backends.base import BackendUnavailable
from audioproc_api.backends.group_commit import GroupCommit


def test_concurrent_writes_are_grouped_and_each_caller_returns_after_its_group() -> None:
    groups: list[list[int]] = []
    first_group_entered = threading.Event()
    release_first_group = threading.Event()

    def write(values: list[int]) -> None:
        if not groups:  # hold the first group until the others have queued behind it
            first_group_entered.set()
            release_first_group.wait(30)
        groups.append(values)

    committer: GroupCommit[int] = GroupCommit(write)
    try:
        with ThreadPoolExecutor(40) as pool:
            first = pool.submit(committer.commit, 0)
            assert first_group_entered.wait(30)
            rest = [pool.submit(committer.commit, value) for value in range(1, 40)]
            while len(committer._pending) < 39:  # every caller is waiting for the next group
                threading.Event().wait(0.01)
            assert not any(future.done() for future in rest)
            release_first_group.set()
            for future in [first, *rest]:
                future.result(30)
    finally:
        committer.stop()
    assert groups == [[0], list(range(1, 40))]


def test_a_failing_write_fails_only_its_own_caller() -> None:
    written: list[int] = []
    gate = threading.Event()

    def write(values: list[int]) -> None:
        gate.wait(30)
        if 13 in values:
            raise ValueError("thirteen")
        written.extend(values)

    committer: GroupCommit[int] = GroupCommit(write)
    try:
        with ThreadPoolExecutor(20) as pool:
            futures = {value: pool.submit(committer.commit, value) for value in range(20)}
            gate.set()
            with pytest.raises(ValueError, match="thirteen"):
                futures[13].result(30)
            for value, future in futures.items():
                if value != 13:
                    future.result(30)
    finally:
        committer.stop()
    assert sorted(written) == [v for v in range(20) if v != 13]


def test_after_stop_a_commit_is_refused() -> None:
    committer: GroupCommit[int] = GroupCommit(lambda values: None)
    committer.commit(1)
    committer.stop()
    with pytest.raises(BackendUnavailable):
        committer.commit(2)
