"""Commands that do no audio work start without torch (issue 12, item 6).

Each command runs as a real process under ``python -X importtime``, which names every module
the process imported; torch (about 3 s to import) must not be among them. Timings are not
asserted here: ``bench/startup.py`` measures them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from audioproc.models.manifest import AudioInfo, Manifest, SourceAudioInfo

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "torchaudio", "librosa")


def imported_modules(stderr: str) -> set[str]:
    """Module names from ``-X importtime`` lines: ``import time: self | cumulative | name``."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def run_audioproc(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    paths = [str(REPO / p) for p in (".", "job_image", "operator", "api_facade")]
    environ = {k: v for k, v in os.environ.items() if k != "CLAP_CHECKPOINT"}
    environ.update(PYTHONPATH=os.pathsep.join(paths), **env)
    return subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "audioproc", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_light(proc: subprocess.CompletedProcess[str]) -> None:
    imported = imported_modules(proc.stderr)
    assert "audioproc.cli" in imported  # the parse saw the command's imports
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_help_and_extractors_do_not_import_torch() -> None:
    help_proc = run_audioproc("--help")
    assert help_proc.returncode == 0 and "extractors" in help_proc.stdout
    assert_light(help_proc)

    listing = run_audioproc("extractors", COLUMNS="300")
    assert listing.returncode == 0, listing.stderr[-2000:]
    assert (
        "loudness" in listing.stdout and "CLAP_CHECKPOINT" in listing.stdout
    )  # clap: not configured
    assert_light(listing)


def test_show_does_not_import_torch(tmp_path: Path) -> None:
    manifest = Manifest(
        video_id="shown",
        input_uri="/media/x.mp4",
        created_at=datetime.now(UTC),
        device="cpu",
        extractors=[],
        audio=AudioInfo(
            duration_s=1.5,
            sample_rate=16000,
            source=SourceAudioInfo(codec="aac", sample_rate=44100, channels=2),
        ),
    )
    path = tmp_path / "manifest.json"
    path.write_text(manifest.to_json())

    proc = run_audioproc("show", str(path))

    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "shown" in proc.stdout and "1.50 s" in proc.stdout
    assert_light(proc)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--extractors", "nope"), "unknown extractor 'nope'"),
        (("--device", "tpu"), "unknown device 'tpu'"),
        (("--extractors", "clap"), "CLAP_CHECKPOINT"),  # unavailable here: judged from the catalog
    ],
)
def test_usage_errors_do_not_import_torch(args: tuple[str, ...], says: str, tmp_path: Path) -> None:
    clip = tmp_path / "clip.wav"
    clip.write_bytes(b"")  # never read: the usage error comes first

    proc = run_audioproc("process", str(clip), "--out", str(tmp_path / "out"), *args)

    assert proc.returncode == 2, proc.stderr[-2000:]
    assert says in proc.stderr
    assert_light(proc)
