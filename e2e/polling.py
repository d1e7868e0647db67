"""Polling with a deadline, shared by the control-plane launcher and the e2e tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(
    check: Callable[[], T], timeout: float = 30, what: str = "condition", interval: float = 0.25
) -> T:
    """Call ``check`` until it returns something truthy and return that; fail after ``timeout`` s.

    Raises ``TimeoutError``, whose message includes the last value seen, so a timed-out wait
    says what it saw.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"timed out after {timeout:.0f}s waiting for {what}; last value: {last!r}"
            )
        time.sleep(interval)
