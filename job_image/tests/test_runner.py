"""The runner on real media with small extractors defined in the tests (pipeline_fakes)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pipeline_fakes
import pytest
import torch

from audioproc import runner, samples
from audioproc.runner import ItemRequest, process_item, process_items, resolve_device
from audioproc.settings import PipelineSettings
from audioproc.storage import read_manifest


@pytest.fixture(autouse=True)
def fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline_fakes.register(monkeypatch)


def test_item_gets_a_manifest_with_features_and_artifacts(
    media: Path, tmp_path: Path, settings: PipelineSettings, tone_signal: np.ndarray
) -> None:
    item = ItemRequest(str(media / "tone.mp4"), "vid-1", ["test_rms", "test_peak"])

    result = process_item(item, str(tmp_path / "out"), device="cpu", settings=settings)

    assert result.status == "ok" and result.error is None and result.device == "cpu"
    manifest = read_manifest(result.manifest_uri)
    assert manifest == result.manifest
    assert manifest.audio.source.codec == "aac" and manifest.audio.source.channels == 2
    assert manifest.audio.duration_s == pytest.approx(3.0, abs=0.1)
    rms, peak = manifest.extractors
    assert (rms.name, rms.status, rms.sample_rate, peak.sample_rate) == (
        "test_rms",
        "ok",
        16000,
        22050,
    )
    # Each extractor saw the audio at its own rate, and the numbers are the tone's.
    assert rms.features["n_samples"] == pytest.approx(3.0 * 16000, rel=0.03)
    assert peak.features["n_samples"] == pytest.approx(3.0 * 22050, rel=0.03)
    assert rms.features["rms"] == pytest.approx(pipeline_fakes.envelope_rms(tone_signal), rel=0.05)
    envelope = np.load(tmp_path / "out" / "vid-1" / rms.artifacts["envelope"])
    assert envelope.shape == (rms.features["n_samples"] // 1600,)


def test_failing_and_unavailable_extractors_keep_the_others(
    media: Path, tmp_path: Path, settings: PipelineSettings
) -> None:
    item = ItemRequest(
        str(media / "tone.flac"), "vid-1", ["test_failing", "test_rms", "test_unavailable"]
    )

    result = process_item(item, str(tmp_path), device="cpu", settings=settings)

    assert result.status == "ok"
    records = {r.name: r for r in result.manifest.extractors}
    assert records["test_rms"].status == "ok" and records["test_rms"].features["rms"] > 0.05
    assert records["test_failing"].status == "error"
    assert records["test_failing"].error == "RuntimeError: this extractor always fails"
    assert records["test_unavailable"].error == (
        "extractor 'test_unavailable' is not available here: no checkpoint configured "
        "(set CLAP_CHECKPOINT to a checkpoint file)"
    )
    assert [r.name for r in result.manifest.extractors] == item.extractors  # the order asked for
    assert len(result.manifest.errors) == 2


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("video_only.mp4", "has no audio stream"),
        ("truncated.mp4", "truncated or corrupt"),
        ("garbage.mp4", "truncated or corrupt"),
        ("empty.wav", "zero-length audio"),
        ("missing.mp4", "not found"),
    ],
)
def test_a_broken_input_fails_only_its_item(
    media: Path, tmp_path: Path, settings: PipelineSettings, name: str, message: str
) -> None:
    items = [
        ItemRequest(str(media / "tone.wav"), "good-1", ["test_rms"]),
        ItemRequest(str(media / name), "broken", ["test_rms"]),
        ItemRequest(str(media / "tone.ogg"), "good-2", ["test_rms"]),
    ]

    results = process_items(items, str(tmp_path), device="cpu", settings=settings)

    assert [r.status for r in results] == ["ok", "error", "ok"]
    assert message in results[1].error and results[1].error_kind == "input"
    assert results[1].manifest_uri is None and not (tmp_path / "broken").exists()


@pytest.mark.parametrize("jobs", [1, 2])  # decoded here, and in worker processes
def test_non_finite_samples_fail_the_item_as_an_input_error(
    tmp_path: Path, settings: PipelineSettings, jobs: int
) -> None:
    signal = samples.tone(1.0, 44100, 440.0)
    signal[22050] = np.nan
    bad = samples.write_float_wav(tmp_path / "nan.wav", signal, 44100)
    good = samples.write_float_wav(tmp_path / "good.wav", samples.tone(1.0, 44100, 440.0), 44100)
    items = [
        ItemRequest(str(bad), "bad", ["test_rms"]),
        ItemRequest(str(good), "good", ["test_rms"]),
    ]

    results = process_items(
        items, str(tmp_path / "out"), device="cpu", settings=settings, jobs=jobs
    )

    assert [r.status for r in results] == ["error", "ok"]
    assert results[0].error_kind == "input"
    assert "non-finite samples (NaN or ±Inf), the first at 0.500 s" in results[0].error
    assert not (tmp_path / "out" / "bad").exists()


#: The standard set that runs here (clap needs a checkpoint).
REAL_EXTRACTORS = ["loudness", "spectral", "mfcc", "tempo", "pitch"]


def test_one_sample_of_audio_gets_a_clear_error_from_every_real_extractor(
    tmp_path: Path, settings: PipelineSettings
) -> None:
    """Resampled, one sample at 44.1 kHz is none at 16-48 kHz: each extractor says so, no torch message."""
    path = samples.write_audio(tmp_path / "one.wav", np.array([0.5], dtype=np.float32), 44100)

    result = process_item(
        ItemRequest(str(path), "one", REAL_EXTRACTORS),
        str(tmp_path / "out"),
        device="cpu",
        settings=settings,
    )

    assert result.status == "ok"  # the manifest is written: it records what happened
    for record in result.manifest.extractors:
        assert record.status == "error"
        assert record.error.startswith(
            f"audio too short for {record.name}: 0.02 ms gives 0 sample(s) at "
            f"{record.sample_rate} Hz; it needs at least 1"
        ), record.error
    assert read_manifest(result.manifest_uri).errors == [
        f"{r.name}: {r.error}" for r in result.manifest.extractors
    ]


@pytest.mark.parametrize("n_samples", [5, 100, 441, 4410])
def test_very_short_audio_runs_every_real_extractor_or_says_why_not(
    tmp_path: Path, settings: PipelineSettings, n_samples: int
) -> None:
    path = samples.write_audio(
        tmp_path / "short.wav", samples.tone(n_samples / 44100, 44100, 440.0), 44100
    )

    result = process_item(
        ItemRequest(str(path), "short", REAL_EXTRACTORS),
        str(tmp_path / "out"),
        device="cpu",
        settings=settings,
    )

    assert result.status == "ok"
    for record in result.manifest.extractors:
        assert record.status == "ok" or record.error.startswith(
            f"audio too short for {record.name}:"
        ), record.error


def test_audio_shorter_than_min_samples_is_not_given_to_the_extractor(
    media: Path, tmp_path: Path, settings: PipelineSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline_fakes.RmsExtractor, "min_samples", 16000)  # needs 1 s at 16 kHz
    short = samples.write_audio(tmp_path / "short.wav", samples.tone(0.5, 44100, 440.0), 44100)
    items = [
        ItemRequest(str(short), "short", ["test_rms", "test_peak"]),
        ItemRequest(str(media / "tone.wav"), "long", ["test_rms"]),
    ]
    batched = settings.model_copy(update={"batch_items": 2})

    results = process_items(items, str(tmp_path / "out"), device="cpu", settings=batched)

    short_records = {r.name: r for r in results[0].manifest.extractors}
    assert short_records["test_rms"].error == (
        "audio too short for test_rms: 500.00 ms gives 8000 sample(s) at 16000 Hz; it needs at least 16000 (1000.00 ms)"
    )
    assert short_records["test_peak"].status == "ok"
    assert results[1].manifest.extractors[0].status == "ok"
    assert pipeline_fakes.RmsExtractor.batch_sizes == [
        1
    ]  # only the long item reached the extractor


def test_request_errors_are_input_errors(
    media: Path, tmp_path: Path, settings: PipelineSettings
) -> None:
    items = [
        ItemRequest(str(media / "tone.wav"), "x", ["no_such_extractor"]),
        ItemRequest(str(media / "tone.wav"), "../escape", ["test_rms"]),
        ItemRequest("/etc/hostname", "y", ["test_rms"]),
    ]
    results = process_items(items, str(tmp_path), device="cpu", settings=settings)
    assert [r.error_kind for r in results] == ["input"] * 3
    assert "unknown extractor 'no_such_extractor'" in results[0].error
    assert "invalid video id" in results[1].error
    assert "outside the allowed roots" in results[2].error


def test_results_keep_input_order_with_parallel_jobs(
    media: Path, tmp_path: Path, settings: PipelineSettings
) -> None:
    """jobs > 1: worker processes decode and hand the audio over through scratch files."""
    names = ["tone.wav", "garbage.mp4", "tone.mp3", "tone.m4a", "tone.webm", "tone.mkv"]
    items = [ItemRequest(str(media / n), f"v{i}", ["test_rms"]) for i, n in enumerate(names)]
    seen: list[str] = []
    scratch = Path(tempfile.gettempdir())
    before = set(scratch.glob("audioproc-*.npy"))

    results = process_items(
        items,
        str(tmp_path),
        device="cpu",
        settings=settings,
        jobs=3,
        on_result=lambda r: seen.append(r.video_id),
    )

    assert [r.video_id for r in results] == seen == [f"v{i}" for i in range(6)]
    assert [r.status for r in results] == ["ok", "error", "ok", "ok", "ok", "ok"]
    assert results[1].error_kind == "input" and "truncated or corrupt" in results[1].error
    rms = [r.manifest.extractors[0].features["rms"] for r in results if r.manifest]
    assert max(rms) - min(rms) < 0.08 * max(rms)  # the same tone, whichever process decoded it
    assert set(scratch.glob("audioproc-*.npy")) <= before  # hand-over files are gone


def test_batches_across_items(media: Path, tmp_path: Path, settings: PipelineSettings) -> None:
    batched = settings.model_copy(update={"batch_items": 3})
    items = [
        ItemRequest(str(media / n), f"v{i}", ["test_rms"])
        for i, n in enumerate(["tone.wav", "tone.flac", "tone.mp3", "tone.m4a"])
    ]

    results = process_items(items, str(tmp_path), device="cpu", settings=batched)

    assert pipeline_fakes.RmsExtractor.batch_sizes == [3, 1]
    assert all(r.status == "ok" for r in results)
    rms = [r.manifest.extractors[0].features["rms"] for r in results]
    assert max(rms) - min(rms) < 0.08 * max(rms)  # the same tone in each container (MP3 loses ~5 %)


def test_a_failing_batch_is_rerun_item_by_item(
    media: Path, tmp_path: Path, settings: PipelineSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = pipeline_fakes.RmsExtractor.extract

    def extract(self, audio: torch.Tensor, device: torch.device):
        if audio.numel() < 30000:  # the short input breaks this extractor
            raise ValueError("too short for this extractor")
        return original(self, audio, device)

    monkeypatch.setattr(pipeline_fakes.RmsExtractor, "extract", extract)
    short = tmp_path / "short.wav"
    from audioproc import samples

    samples.write_audio(short, samples.tone(1.0, 16000, 200.0), 16000)
    items = [
        ItemRequest(str(media / "tone.wav"), "long", ["test_rms"]),
        ItemRequest(str(short), "short", ["test_rms"]),
    ]

    results = process_items(
        items,
        str(tmp_path / "out"),
        device="cpu",
        settings=settings.model_copy(update={"batch_items": 2}),
    )

    assert pipeline_fakes.RmsExtractor.batch_sizes == [2, 1, 1]
    assert results[0].manifest.extractors[0].status == "ok"
    assert results[1].manifest.extractors[0].error == "ValueError: too short for this extractor"


def test_cuda_out_of_memory_retries_the_item_on_cpu(
    media: Path, tmp_path: Path, settings: PipelineSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """There is no GPU here: the accelerator is stood in for by torch's "meta" device, and
    the test extractor raises torch's own CUDA OOM error type off the CPU. The runner's
    fallback (catch, free, retry on CPU, note it) is the code a real GPU would exercise."""
    monkeypatch.setattr(runner, "resolve_device", lambda device, settings: torch.device("meta"))
    pipeline_fakes.register(monkeypatch, devices=("cpu", "cuda", "meta"))
    item = ItemRequest(str(media / "tone.mp4"), "vid-1", ["test_oom", "test_rms"])

    result = process_item(item, str(tmp_path), device="cuda", settings=settings)

    assert result.status == "ok" and result.device == "cpu"
    assert pipeline_fakes.OomOnAcceleratorExtractor.devices_seen == ["meta", "cpu"]
    oom, rms = result.manifest.extractors
    assert oom.status == "ok" and oom.device == "cpu"
    assert oom.notes == ["out of memory on meta:0 (OutOfMemoryError); retried on cpu", "computed"]
    assert (
        rms.status == "ok" and rms.device == "cpu" and rms.features["rms"] > 0.05
    )  # the rest of the item on CPU
    assert (
        json.loads(Path(result.manifest_uri.removeprefix("file://")).read_text())["device"] == "cpu"
    )


def test_device_choice(settings: PipelineSettings) -> None:
    assert resolve_device("cpu", settings) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device(
            "auto", settings.model_copy(update={"use_gpu": True})
        ) == torch.device("cpu")
        with pytest.raises(
            ValueError, match="no CUDA device is available; use --device cpu or auto"
        ):
            resolve_device("gpu", settings)
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        resolve_device("tpu", settings)


def test_torch_threads_are_shared_out_between_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 16)
    before = torch.get_num_threads()
    try:
        runner.configure_threads(4)
        assert torch.get_num_threads() == 4
        runner.configure_threads(32)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda(media: Path, tmp_path: Path, settings: PipelineSettings) -> None:
    item = ItemRequest(str(media / "tone.mp4"), "vid-1", ["test_rms", "test_peak"])
    result = process_item(item, str(tmp_path), device="cuda", settings=settings)
    assert result.status == "ok" and result.device.startswith("cuda:")
    assert all(r.device.startswith("cuda:") for r in result.manifest.extractors)
