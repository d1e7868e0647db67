"""Prometheus metrics of the pipeline (the job image and ``audioproc process``).

The runner records every extractor run, every finished item and every decode here, in
prometheus_client's default registry; ``ENABLE_METRICS=true`` makes ``audioproc process`` and
``audioproc run-index`` serve them on ``PROMETHEUS_PORT`` (see :func:`start_exporter`).

The Helm chart's dashboard queries ``audioproc_extractor_duration_seconds`` and
``audioproc_extractor_runs_total`` by ``extractor`` and ``device``: renaming them empties its
panels (charts/audioprocessor/tests/test_monitoring.py checks the names). ``device`` is the
device *type* (``cpu`` or ``cuda``), not ``cuda:N``: the dashboard filters on those two values,
and one series per GPU index would only multiply series without telling more.

Everything here is cheap: a label lookup and an increment per extractor run and per item.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final, Literal

from prometheus_client import Counter, Histogram, start_http_server

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

log = logging.getLogger(__name__)

Status = Literal["ok", "error"]

#: Seconds; from a fast spectral pass on a short clip (ms) to CLAP or CREPE on two hours (minutes).
_RUN_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
)

EXTRACTOR_DURATION: Final = Histogram(
    "audioproc_extractor_duration_seconds",
    "Wall time of one extractor on one item, in seconds (a batch's time split evenly over its items).",
    ["extractor", "device"],
    buckets=_RUN_BUCKETS,
)
EXTRACTOR_RUNS: Final = Counter(
    "audioproc_extractor_runs",
    "Extractor runs on one item, by outcome.",
    ["extractor", "status", "device"],
)
ITEMS: Final = Counter(
    "audioproc_pipeline_items",
    "Items finished (manifest written, or failed), by outcome.",
    ["status"],
)
DECODE_DURATION: Final = Histogram(
    "audioproc_pipeline_decode_duration_seconds",
    "Wall time of decoding one input to mono at every rate its extractors need, in seconds "
    "(download excluded).",
    buckets=_RUN_BUCKETS,
)


def record_extractor_run(
    extractor: str, device_type: str, status: Status, seconds: float | None
) -> None:
    """Count one extractor run on one item; ``seconds`` is None when no extractor code ran.

    An extractor that could not be loaded or is unavailable counts as an ``error`` run but adds
    no duration: a zero would drag the timing quantiles down.
    """
    EXTRACTOR_RUNS.labels(extractor=extractor, status=status, device=device_type).inc()
    if seconds is not None:
        EXTRACTOR_DURATION.labels(extractor=extractor, device=device_type).observe(seconds)


def record_item(status: Status) -> None:
    ITEMS.labels(status=status).inc()


def record_decode(seconds: float) -> None:
    DECODE_DURATION.observe(seconds)


def start_exporter(
    port: int, addr: str = "0.0.0.0"
) -> WSGIServer | None:  # scraped from outside the pod
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread; the server (``server_port``: its port).

    The server lives as long as the process: a short ``audioproc`` run may end before
    Prometheus scrapes it (nothing is pushed). A port that cannot be bound is logged and
    returns None: losing metrics must not fail the items.
    """
    try:
        server, _thread = start_http_server(port, addr=addr)
    except OSError as exc:
        log.warning("cannot serve metrics on %s:%d: %s; continuing without them", addr, port, exc)
        return None
    return server
