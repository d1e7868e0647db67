"""The command line: exit codes 0/1/2, show --plot, and the run-index pod contract."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pipeline_fakes
import pytest
from typer.testing import CliRunner

from audioproc import cli
from audioproc.cli import app, default_video_id

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(autouse=True)
def fakes(monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline_fakes.register(monkeypatch)
    monkeypatch.setenv("USE_GPU", "false")
    monkeypatch.delenv("ALLOWED_ROOTS", raising=False)
    # Wide consoles, so that table cells are not wrapped mid-word for the assertions.
    monkeypatch.setattr(cli.out, "width", 300)
    monkeypatch.setattr(cli.console, "width", 300)


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_process_all_ok_exits_0(media: Path, tmp_path: Path) -> None:
    other = tmp_path / "in" / "other.flac"
    other.parent.mkdir()
    shutil.copy(media / "tone.flac", other)

    result = invoke(
        "process",
        str(media / "tone.mp4"),
        str(other),
        "--extractors",
        "test_rms,test_peak",
        "--out",
        str(tmp_path / "out"),
        "--device",
        "cpu",
        "--jobs",
        "2",
    )

    assert result.exit_code == 0, result.output
    assert "audioproc results" in result.output
    for video_id in ("tone", "other"):  # ids default to the file names
        manifest = json.loads((tmp_path / "out" / video_id / "manifest.json").read_text())
        assert [e["status"] for e in manifest["extractors"]] == ["ok", "ok"]


def test_two_inputs_with_the_same_name_are_a_usage_error(media: Path, tmp_path: Path) -> None:
    result = invoke(
        "process",
        str(media / "tone.mp4"),
        str(media / "tone.ogg"),
        "--extractors",
        "test_rms",
        "--out",
        str(tmp_path),
    )
    assert result.exit_code == 2 and "same video id" in result.output  # not a silent overwrite


def test_process_with_video_id(media: Path, tmp_path: Path) -> None:
    result = invoke(
        "process",
        str(media / "tone.mp4"),
        "--video-id",
        "clip-1",
        "--extractors",
        "test_rms",
        "--out",
        str(tmp_path),
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "clip-1" / "manifest.json").read_text())
    assert manifest["video_id"] == "clip-1" and manifest["extractors"][0]["status"] == "ok"


def test_process_with_a_broken_item_exits_1(media: Path, tmp_path: Path) -> None:
    result = invoke(
        "process",
        str(media / "tone.wav"),
        str(media / "video_only.mp4"),
        "--extractors",
        "test_rms",
        "--out",
        str(tmp_path),
    )
    assert result.exit_code == 1
    assert "has no audio stream" in result.output
    assert (tmp_path / "tone" / "manifest.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--extractors", "nope"], "unknown extractor 'nope'"),
        (
            ["--extractors", "test_unavailable"],
            "not available here: test_unavailable: no checkpoint configured",
        ),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--jobs", "0"], "Invalid value"),
        (["--out", "ftp://x/y"], "unsupported output"),
        (["--video-id", "../x"], "invalid video id"),
        (["--video-id", "abc\n"], "invalid video id 'abc\\n'"),
        (["--video-id", "abc\r"], "invalid video id"),
        (["--video-id", "[bold]x[/bold]"], "invalid video id '[bold]x[/bold]'"),
        (["--extractors", ","], "--extractors ',' has an empty name"),
        (["--extractors", ""], "--extractors '' has an empty name"),
        (["--extractors", "test_rms,,test_peak"], "has an empty name"),
        (["--extractors", " , "], "has an empty name"),
        (["--out", "s3://"], "invalid S3 output"),
    ],
)
def test_usage_errors_exit_2(media: Path, tmp_path: Path, args: list[str], message: str) -> None:
    base = ["process", str(media / "tone.wav")]
    if "--out" not in args:
        base += ["--out", str(tmp_path)]
    result = invoke(*base, *args)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())  # rich wraps long lines
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        (
            "ALLOWED_ROOTS",
            "/x",
            "error: ALLOWED_ROOTS: must be a JSON list of paths, e.g. [\"/data\"] (got '/x')",
        ),
        ("ALLOWED_ROOTS", "[1, 2", "error: ALLOWED_ROOTS: must be a JSON list of paths"),
        ("MAX_DURATION_S", "-1", "error: MAX_DURATION_S: must be greater than 0 (got '-1')"),
        ("MAX_DURATION_S", "long", "error: MAX_DURATION_S: must be a valid number"),
        ("USE_GPU", "maybe", "error: USE_GPU: must be a valid boolean"),
        ("HTTP_MAX_BYTES", "0", "error: HTTP_MAX_BYTES: must be greater than 0 (got '0')"),
        (
            "GPU_MEMORY_LIMIT",
            "2",
            "error: GPU_MEMORY_LIMIT: must be less than or equal to 1 (got '2')",
        ),
        (
            "PITCH_CREPE_MODEL",
            "huge",
            "error: PITCH_CREPE_MODEL: must be 'full' or 'tiny' (got 'huge')",
        ),
        (
            "S3_MAX_ATTEMPTS",
            "0",
            "error: S3_MAX_ATTEMPTS: must be greater than or equal to 1 (got '0')",
        ),
    ],
)
@pytest.mark.parametrize(
    "command", [["process", "IN", "--out", "OUT"], ["extractors"], ["show", "IN"]]
)
def test_invalid_settings_exit_2_with_one_line(
    media: Path, tmp_path: Path, variable: str, value: str, line: str, command: list[str]
) -> None:
    """A real process, as a user runs it: one line naming the variable, no traceback."""
    args = [
        str(media / "tone.wav") if a == "IN" else str(tmp_path / "out") if a == "OUT" else a
        for a in command
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "audioproc", *args],
        env=_subprocess_env(**{variable: value}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(line) and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "out").exists()


def test_unwritable_output_exits_2_before_any_work(media: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file where a directory must be")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        result = invoke(
            "process", str(media / "tone.wav"), "--extractors", "test_rms", "--out", str(out)
        )
        assert result.exit_code == 2
        assert f"cannot write results under {out}" in " ".join(result.output.split())
    assert pipeline_fakes.RmsExtractor.batch_sizes == []


def test_an_extractor_error_exits_4(media: Path, tmp_path: Path) -> None:
    """Every item has a manifest, but one extractor failed in it: not "all ok"."""
    result = invoke(
        "process",
        str(media / "tone.wav"),
        "--extractors",
        "test_rms,test_failing",
        "--out",
        str(tmp_path),
    )
    assert result.exit_code == 4, result.output
    assert (
        "incomplete tone: test_failing: RuntimeError: this extractor always fails" in result.output
    )
    manifest = json.loads((tmp_path / "tone" / "manifest.json").read_text())
    assert [e["status"] for e in manifest["extractors"]] == ["ok", "error"]


def test_one_sample_of_audio_exits_4_with_readable_reasons(tmp_path: Path) -> None:
    from audioproc import samples

    path = samples.write_audio(tmp_path / "one.wav", np.array([0.5], dtype=np.float32), 44100)
    result = invoke(
        "process",
        str(path),
        "--extractors",
        "loudness,spectral",
        "--out",
        str(tmp_path / "out"),
        "--device",
        "cpu",
    )
    assert result.exit_code == 4, result.output
    text = " ".join(result.output.split())
    assert (
        "incomplete one: loudness: audio too short for loudness: 0.02 ms gives 0 sample(s) at 48000 Hz"
        in text
    )
    assert "torch" not in text and "Error:" not in text


def test_video_id_with_several_inputs_is_a_usage_error(media: Path, tmp_path: Path) -> None:
    result = invoke(
        "process",
        str(media / "tone.wav"),
        str(media / "tone.mp3"),
        "--video-id",
        "x",
        "--out",
        str(tmp_path),
    )
    assert result.exit_code == 2 and "--video-id names one input" in result.output


def test_default_video_id() -> None:
    assert default_video_id("/data/My Clip (1).mp4") == "My-Clip-1"
    assert default_video_id("s3://bucket/a/b/vid_007.mkv") == "vid_007"
    assert default_video_id("https://host/") == "host"


def test_extractors_lists_availability() -> None:
    result = invoke("extractors")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "test_rms" in text and "no checkpoint configured" in text


def test_show_prints_and_plots(media: Path, tmp_path: Path) -> None:
    invoke(
        "process",
        str(media / "tone.mp4"),
        "--extractors",
        "test_rms,test_failing",
        "--out",
        str(tmp_path),
    )
    plot = tmp_path / "plot.png"

    result = invoke("show", str(tmp_path / "tone" / "manifest.json"), "--plot", str(plot))

    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "aac 44100 Hz 2 ch" in text and "this extractor always fails" in text
    assert "(waveform)" in text
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_show_missing_manifest_exits_2(tmp_path: Path) -> None:
    result = invoke("show", str(tmp_path / "nothing.json"))
    assert result.exit_code == 2 and "no manifest" in result.output


# --------------------------------------------------------------------------- run-index (pod contract)


def write_items(tmp_path: Path, items: list[dict]) -> Path:
    path = tmp_path / "items.json"
    path.write_text(json.dumps(items))
    return path


def test_run_index_ok(media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    items = write_items(
        tmp_path,
        [
            {"inputUri": str(media / "garbage.mp4"), "videoId": "a", "extractors": ["test_rms"]},
            {"inputUri": str(media / "tone.mp4"), "videoId": "b", "extractors": ["test_rms"]},
        ],
    )
    log = tmp_path / "termination-log"
    monkeypatch.setenv("AUDIOPROC_TERMINATION_LOG", str(log))
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    monkeypatch.setenv("ALLOWED_ROOTS", json.dumps([str(media)]))

    result = invoke(
        "run-index",
        "--items-file",
        str(items),
        "--output",
        (tmp_path / "out" / "job-1").as_uri(),
        "--device",
        "cpu",
        "--max-duration-s",
        "60",
    )

    assert result.exit_code == 0, result.output
    message = json.loads(log.read_text())
    assert message == {
        "videoId": "b",
        "status": "ok",
        "manifestUri": (tmp_path / "out" / "job-1" / "b" / "manifest.json").as_uri(),
        "device": "cpu",
        "error": None,
    }


def test_run_index_input_errors_exit_3(
    media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = write_items(
        tmp_path,
        [{"inputUri": str(media / "tone.mp4"), "videoId": "long", "extractors": ["test_rms"]}],
    )
    log = tmp_path / "termination-log"
    monkeypatch.setenv("AUDIOPROC_TERMINATION_LOG", str(log))
    monkeypatch.setenv("ALLOWED_ROOTS", json.dumps([str(media)]))

    result = invoke(
        "run-index",
        "--items-file",
        str(items),
        "--output",
        str(tmp_path / "out"),
        "--device",
        "cpu",
        "--max-duration-s",
        "1",
        "--index",
        "0",
    )

    assert result.exit_code == 3
    message = json.loads(log.read_text())
    assert (
        message["status"] == "error"
        and message["videoId"] == "long"
        and message["manifestUri"] is None
    )
    assert "over the limit of 1 s" in message["error"]


def test_run_index_storage_failure_exits_1(
    media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = write_items(
        tmp_path,
        [{"inputUri": str(media / "tone.wav"), "videoId": "v", "extractors": ["test_rms"]}],
    )
    (tmp_path / "not-a-dir").write_text("a file where the output directory should be")
    log = tmp_path / "termination-log"
    monkeypatch.setenv("AUDIOPROC_TERMINATION_LOG", str(log))
    monkeypatch.setenv("ALLOWED_ROOTS", json.dumps([str(media)]))

    result = invoke(
        "run-index",
        "--items-file",
        str(items),
        "--output",
        str(tmp_path / "not-a-dir"),
        "--index",
        "0",
        "--device",
        "cpu",
    )

    assert result.exit_code == 1  # worth retrying: not the input's fault
    message = json.loads(log.read_text())
    assert message["status"] == "error" and "OutputError" in message["error"]
    assert "not-a-dir is not a directory" in message["error"]
    assert pipeline_fakes.RmsExtractor.batch_sizes == []  # found before any extractor ran


def test_run_index_invalid_setting_is_one_line(
    media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = write_items(
        tmp_path,
        [{"inputUri": str(media / "tone.wav"), "videoId": "v", "extractors": ["test_rms"]}],
    )
    log = tmp_path / "termination-log"
    monkeypatch.setenv("AUDIOPROC_TERMINATION_LOG", str(log))
    monkeypatch.setenv("ALLOWED_ROOTS", json.dumps([str(media)]))

    result = invoke(
        "run-index",
        "--items-file",
        str(items),
        "--output",
        str(tmp_path / "out"),
        "--index",
        "0",
        "--device",
        "cpu",
        "--max-duration-s",
        "-1",
    )

    assert result.exit_code == 1
    assert (
        json.loads(log.read_text())["error"]
        == "ConfigError: MAX_DURATION_S: must be greater than 0 (got -1.0)"
    )


@pytest.mark.parametrize(
    "uri",
    [
        "http://localhost:99999/x.wav",
        "http://localhost:abc/x.wav",
        "http://a@[::1/x.wav",
        "s3://Bucket/x.wav",
    ],
)
def test_run_index_malformed_uri_is_an_input_error(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 3 (not retried), never "internal error: ValueError" (exit 1, retried for nothing)."""
    items = write_items(tmp_path, [{"inputUri": uri, "videoId": "v", "extractors": ["test_rms"]}])
    log = tmp_path / "termination-log"
    monkeypatch.setenv("AUDIOPROC_TERMINATION_LOG", str(log))
    monkeypatch.setenv("HTTP_ALLOW_PRIVATE", "true")

    result = invoke(
        "run-index",
        "--items-file",
        str(items),
        "--output",
        str(tmp_path / "out"),
        "--index",
        "0",
        "--device",
        "cpu",
    )

    assert result.exit_code == 3, log.read_text()
    assert json.loads(log.read_text())["error"].startswith("invalid input URI")


def _subprocess_env(**extra: str) -> dict[str, str]:
    paths = [str(REPO / p) for p in (".", "job_image", "operator", "api_facade")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "USE_GPU": "false", **extra}


def test_run_index_as_a_pod_runs_it(media: Path, tmp_path: Path) -> None:
    """The real process: index from $JOB_COMPLETION_INDEX, message file, exit code 3."""
    items = write_items(
        tmp_path, [{"inputUri": str(media / "video_only.mp4"), "videoId": "v0", "extractors": None}]
    )
    log = tmp_path / "termination-log"
    env = _subprocess_env(
        JOB_COMPLETION_INDEX="0",
        AUDIOPROC_TERMINATION_LOG=str(log),
        ALLOWED_ROOTS=json.dumps([str(media)]),
    )

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "audioproc",
            "run-index",
            "--items-file",
            str(items),
            "--output",
            str(tmp_path / "out"),
            "--device",
            "cpu",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert proc.returncode == 3, proc.stderr
    message = json.loads(log.read_text())
    assert message["videoId"] == "v0" and "has no audio stream" in message["error"]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == message


def test_cli_process_usage_error_in_a_real_process(media: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "audioproc",
            "process",
            str(media / "tone.wav"),
            "--extractors",
            "nope",
            "--out",
            str(tmp_path),
        ],
        env=_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "unknown extractor 'nope'" in proc.stderr


def test_plot_draws_every_panel_from_artifacts(media: Path, tmp_path: Path) -> None:
    """Artifacts as the loudness, pitch and tempo extractors document them (docs/manifest.md)."""
    from datetime import UTC, datetime

    import numpy as np

    from audioproc.models.manifest import AudioInfo, ExtractorRecord, Manifest, SourceAudioInfo
    from audioproc.storage import LocalStorage

    def record(name: str, artifacts: dict[str, str]) -> ExtractorRecord:
        return ExtractorRecord(
            name=name,
            version="1.0.0",
            device="cpu",
            status="ok",
            duration_ms=1.0,
            artifacts=artifacts,
        )

    f0 = np.full(300, 220.0, dtype=np.float32)
    f0[100:150] = np.nan
    manifest = Manifest(
        video_id="panels",
        input_uri=str(media / "tone.wav"),
        created_at=datetime.now(UTC),
        device="cpu",
        audio=AudioInfo(
            duration_s=3.0,
            sample_rate=16000,
            source=SourceAudioInfo(codec="pcm_s16le", sample_rate=44100, channels=2),
        ),
        extractors=[
            record("loudness", {"short_term_lufs": "loudness.short_term_lufs.npy"}),
            record("pitch", {"f0_hz": "pitch.f0_hz.npy", "voiced": "pitch.voiced.npy"}),
            record("tempo", {"beats": "tempo.beats.npy"}),
        ],
    )
    uri = LocalStorage(tmp_path).write_item(
        "panels",
        manifest,
        {
            "loudness.short_term_lufs.npy": np.linspace(-20, -18, 10).astype(np.float32),
            "pitch.f0_hz.npy": f0,
            "pitch.voiced.npy": np.isfinite(f0),
            "tempo.beats.npy": np.array([0.5, 1.0, 1.5, 2.0]),
        },
    )

    result = invoke("show", uri, "--plot", str(tmp_path / "panels.png"))

    assert result.exit_code == 0, result.output
    assert "(waveform, loudness, pitch)" in result.output
    assert (tmp_path / "panels.png").stat().st_size > 10_000


def test_serve_points_to_the_facade_command() -> None:
    result = runner.invoke(app, ["serve", "--port", "8000"])
    assert result.exit_code == 2, result.output
    assert "audioproc-api serve" in result.output


def test_run_index_reads_its_line_of_an_item_list(
    media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pod of an itemsFrom AudioJob: its Job's byte offset, then its completion index;
    a bad line is this item's input error (exit 3, not retried), naming the line."""
    lines = [
        {"inputUri": str(media / "garbage.mp4"), "videoId": "a"},
        {"inputUri": str(media / "garbage.mp4"), "videoId": "b"},
        {"inputUri": str(media / "tone.mp4"), "videoId": "c"},
        {"inputUri": str(media / "tone.mp4"), "videoId": "not an id"},
    ]
    text = "".join(json.dumps(line) + "\n" for line in lines)
    items = tmp_path / "items.jsonl"
    items.write_text(text)
    offset = len(text.splitlines(keepends=True)[0].encode())  # the Job starts at item 1
    log = tmp_path / "termination-log"
    monkeypatch.setenv("AUDIOPROC_TERMINATION_LOG", str(log))
    monkeypatch.setenv("ALLOWED_ROOTS", json.dumps([str(media)]))
    command = [
        "run-index",
        "--items-from",
        items.as_uri(),
        "--items-offset",
        str(offset),
        "--first-index",
        "1",
        "--extractors",
        "test_rms",
        "--output",
        (tmp_path / "out").as_uri(),
        "--device",
        "cpu",
    ]

    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    result = invoke(*command)
    assert result.exit_code == 0, result.output
    assert json.loads(log.read_text())["videoId"] == "c"
    manifest = json.loads((tmp_path / "out" / "c" / "manifest.json").read_text())
    assert [e["name"] for e in manifest["extractors"]] == ["test_rms"]

    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    result = invoke(*command)
    assert result.exit_code == 3
    message = json.loads(log.read_text())
    assert message["status"] == "error" and message["videoId"] is None
    assert f"item list {items.as_uri()} line 4: videoId" in message["error"]
