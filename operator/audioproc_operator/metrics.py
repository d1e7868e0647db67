"""Prometheus metrics of the operator (served on ``OPERATOR_METRICS_PORT``)."""

from __future__ import annotations

import threading
import time
from collections import Counter as Tally
from collections.abc import Iterable
from typing import Final

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from audioproc.models.audiojob import AudioJobPhase

RECONCILE_SECONDS: Final = Histogram(
    "audioproc_operator_reconcile_seconds",
    "Time of one AudioJob reconcile.",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
AUDIOJOBS: Final = Gauge("audioproc_operator_audiojobs", "AudioJobs known, by phase.", ["phase"])
JOBS_CREATED: Final = Counter("audioproc_operator_jobs_created_total", "Jobs created.", ["device"])
ITEMS: Final = Counter("audioproc_operator_items_total", "Items finished, by outcome.", ["outcome"])
# Both outcomes are exported at 0 from the start: a series born at 1 has no earlier sample, so
# Prometheus's rate() and increase() would miss the first item (the chart's alerts use them).
ITEMS.labels("succeeded")
ITEMS.labels("failed")
GPUS_IN_USE: Final = Gauge("audioproc_operator_gpus_in_use", "GPUs held by placed GPU AudioJobs.")
GPU_CAP: Final = Gauge(
    "audioproc_operator_gpu_cap", "MAX_GPU_WORKERS: GPUs this operator hands out."
)
GPU_QUOTA: Final = Gauge(
    "audioproc_operator_gpu_quota_room",
    "GPUs a namespace's ResourceQuota still allows.",
    ["namespace"],
)

_PHASE_REFRESH_S: Final = 5.0
_phase_lock = threading.Lock()
_phase_refreshed = 0.0


def observe_phases(phases: Iterable[str | None]) -> None:
    """Set the by-phase gauge from all AudioJobs, at most every few seconds (it is O(n))."""
    global _phase_refreshed
    with _phase_lock:
        now = time.monotonic()
        if now - _phase_refreshed < _PHASE_REFRESH_S:
            return
        _phase_refreshed = now
    tally = Tally(phase or AudioJobPhase.pending.value for phase in phases)
    for phase in AudioJobPhase:
        AUDIOJOBS.labels(phase.value).set(tally.get(phase.value, 0))


def serve(port: int) -> None:
    if port:
        start_http_server(port)
