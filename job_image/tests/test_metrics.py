"""The pipeline's Prometheus metrics: recorded by the runner, served by the CLI.

The metrics live in prometheus_client's default registry, shared by every test of the
session, so each test reads the values before and after what it does and checks the change.
"""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import pipeline_fakes
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from audioproc import metrics
from audioproc.cli import app
from audioproc.runner import ItemRequest, process_items
from audioproc.settings import PipelineSettings


@pytest.fixture(autouse=True)
def fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline_fakes.register(monkeypatch)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Snapshot:
    """Values of chosen samples now; ``delta`` gives how much each grew since."""

    def __init__(self, keys: list[tuple[str, dict[str, str]]]) -> None:
        self.before = {self._key(n, lb): sample(n, **lb) for n, lb in keys}

    @staticmethod
    def _key(name: str, labels: dict[str, str]) -> tuple[str, tuple[tuple[str, str], ...]]:
        return name, tuple(sorted(labels.items()))

    def delta(self, name: str, **labels: str) -> float:
        return sample(name, **labels) - self.before[self._key(name, labels)]


RUNS, DURATION = "audioproc_extractor_runs_total", "audioproc_extractor_duration_seconds"
ITEMS, DECODE = "audioproc_pipeline_items_total", "audioproc_pipeline_decode_duration_seconds"


def test_a_run_counts_each_extractor_item_and_decode(
    media: Path, tmp_path: Path, settings: PipelineSettings
) -> None:
    names = ["test_rms", "test_failing", "test_unavailable"]
    keys = [
        *(
            (RUNS, {"extractor": n, "status": s, "device": "cpu"})
            for n in names
            for s in ("ok", "error")
        ),
        *(
            (f"{DURATION}_{part}", {"extractor": n, "device": "cpu"})
            for n in names
            for part in ("count", "sum")
        ),
        (ITEMS, {"status": "ok"}),
        (ITEMS, {"status": "error"}),
        (f"{DECODE}_count", {}),
    ]
    snapshot = Snapshot(keys)
    items = [
        ItemRequest(str(media / "tone.wav"), "good-1", names),
        ItemRequest(str(media / "missing.mp4"), "broken", names),
        ItemRequest(str(media / "tone.mp4"), "good-2", names),
    ]

    results = process_items(items, str(tmp_path / "out"), device="cpu", settings=settings)

    assert [r.status for r in results] == ["ok", "error", "ok"]
    assert snapshot.delta(RUNS, extractor="test_rms", status="ok", device="cpu") == 2
    assert snapshot.delta(RUNS, extractor="test_rms", status="error", device="cpu") == 0
    # An extractor that raises is an error run with a duration...
    assert snapshot.delta(RUNS, extractor="test_failing", status="error", device="cpu") == 2
    assert snapshot.delta(f"{DURATION}_count", extractor="test_failing", device="cpu") == 2
    # ...an unavailable one is an error run that ran no code, so it adds no duration.
    assert snapshot.delta(RUNS, extractor="test_unavailable", status="error", device="cpu") == 2
    assert snapshot.delta(f"{DURATION}_count", extractor="test_unavailable", device="cpu") == 0
    # The histogram holds the same times as the manifests.
    rms_seconds = sum(r.manifest.extractors[0].duration_ms for r in results if r.manifest) / 1000
    assert snapshot.delta(f"{DURATION}_count", extractor="test_rms", device="cpu") == 2
    assert snapshot.delta(f"{DURATION}_sum", extractor="test_rms", device="cpu") == pytest.approx(
        rms_seconds
    )
    assert snapshot.delta(ITEMS, status="ok") == 2 and snapshot.delta(ITEMS, status="error") == 1
    assert snapshot.delta(f"{DECODE}_count") == 2  # the missing input never reached the decoder


def test_decode_time_is_counted_from_worker_processes(
    media: Path, tmp_path: Path, settings: PipelineSettings
) -> None:
    """``jobs > 1`` decodes in other processes; their decode times reach this registry."""
    snapshot = Snapshot([(f"{DECODE}_count", {}), (f"{DECODE}_sum", {})])
    items = [
        ItemRequest(str(media / f"tone{ext}"), f"v{ext[1:]}", ["test_rms"])
        for ext in (".flac", ".ogg")
    ]

    process_items(items, str(tmp_path / "out"), device="cpu", settings=settings, jobs=2)

    assert snapshot.delta(f"{DECODE}_count") == 2
    assert snapshot.delta(f"{DECODE}_sum") > 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def exporters(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[WSGIServer]]:
    """The servers the command line starts, shut down after the test (they outlive a command)."""
    started: list = []
    real_start = metrics.start_exporter

    def start_and_keep(port: int, addr: str = "0.0.0.0") -> WSGIServer | None:
        server = real_start(port, addr)
        if server is not None:
            started.append(server)
        return server

    monkeypatch.setattr(metrics, "start_exporter", start_and_keep)
    yield started
    for server in started:
        server.shutdown()
        server.server_close()


def cli_env(monkeypatch: pytest.MonkeyPatch, port: int) -> None:
    monkeypatch.setenv("USE_GPU", "false")
    monkeypatch.setenv("ENABLE_METRICS", "true")
    monkeypatch.setenv("PROMETHEUS_PORT", str(port))
    monkeypatch.delenv("ALLOWED_ROOTS", raising=False)


def test_process_serves_metrics_when_enabled(
    media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exporters: list[WSGIServer]
) -> None:
    port = free_port()
    cli_env(monkeypatch, port)

    result = CliRunner().invoke(
        app,
        [
            "process",
            str(media / "tone.m4a"),
            "--extractors",
            "test_rms,test_failing",
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
        ],
        catch_exceptions=False,
    )

    assert result.exit_code == 4, result.output  # test_failing recorded an error in the manifest
    assert len(exporters) == 1
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    runs = {
        (s.labels["extractor"], s.labels["status"], s.labels["device"]): s.value
        for s in families["audioproc_extractor_runs"].samples
        if s.name == RUNS
    }
    assert runs[("test_rms", "ok", "cpu")] >= 1 and runs[("test_failing", "error", "cpu")] >= 1
    assert families["audioproc_extractor_duration_seconds"].type == "histogram"
    assert families["audioproc_pipeline_items"].type == "counter"


def test_a_busy_metrics_port_loses_the_metrics_not_the_items(
    media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exporters: list[WSGIServer]
) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # where the exporter listens
        taken.listen()
        port = taken.getsockname()[1]
        cli_env(monkeypatch, port)

        result = CliRunner().invoke(
            app,
            [
                "process",
                str(media / "tone.wav"),
                "--extractors",
                "test_rms",
                "--out",
                str(tmp_path / "out"),
                "--device",
                "cpu",
            ],
            catch_exceptions=False,
        )

    assert result.exit_code == 0, result.output
    assert f"metrics disabled: cannot listen on port {port}" in result.output.replace("\n", " ")
    assert exporters == [] and (tmp_path / "out" / "tone" / "manifest.json").exists()
