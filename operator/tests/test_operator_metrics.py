"""The operator's metrics as Prometheus scrapes them."""

from __future__ import annotations

import os
import subprocess
import sys

#: A fresh interpreter: in this one, other tests may have counted items already.
EXPOSE = (
    "import audioproc_operator.metrics; from prometheus_client import generate_latest; "
    "print(generate_latest().decode())"
)


def test_item_outcomes_are_exported_at_zero_before_any_item() -> None:
    """rate() and increase() need a sample before the first item: the chart's alerts use them."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}  # this worktree's sources
    exposed = subprocess.run(
        [sys.executable, "-c", EXPOSE], capture_output=True, text=True, check=True, env=env
    ).stdout
    for outcome in ("succeeded", "failed"):
        assert f'audioproc_operator_items_total{{outcome="{outcome}"}} 0.0' in exposed
