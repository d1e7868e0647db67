"""Start-up of the commands that do no audio work, beside a baseline checkout, in one run.

Each command (``audioproc ...``, and the facade's start in local mode) runs as a fresh
process under ``python -X importtime``, ``--repeat`` times per source tree, alternating trees
so that load on the machine hits both alike. Prints
per command and tree: the median wall time (s), whether torch was imported and torch's
cumulative import time (s, from ``-X importtime``), and the 1-minute load average before the
run (a loaded machine stretches every figure). Not a test: nothing is asserted.

    .venv/bin/python bench/startup.py [--baseline /path/to/other/checkout] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = (".", "job_image", "operator", "api_facade")


def write_manifest(folder: Path) -> Path:
    """A minimal audio_manifest_v1 document for ``show`` (no artifacts)."""
    document = {
        "schema": "audio_manifest_v1",
        "video_id": "bench",
        "input_uri": "/media/bench.wav",
        "created_at": datetime.now(UTC).isoformat(),
        "device": "cpu",
        "extractors": [],
        "errors": [],
        "processor": {"name": "audioprocessor", "version": "0.1.0"},
        "audio": {
            "duration_s": 1.0,
            "sample_rate": 16000,
            "channels": 1,
            "source": {"codec": "pcm_s16le", "sample_rate": 16000, "channels": 1},
        },
    }
    path = folder / "manifest.json"
    path.write_text(json.dumps(document))
    return path


#: The facade's start in local mode: app and backend started (lifespan), /extractors answered.
FACADE_START = """
import sys
from fastapi.testclient import TestClient
from audioproc_api.app import create_app
from audioproc_api.settings import ApiSettings
settings = ApiSettings(api_backend="local", api_state_dir=sys.argv[1], output_uri=sys.argv[2])
with TestClient(create_app(settings)) as client:
    client.get("/extractors").raise_for_status()
"""


def commands(folder: Path) -> dict[str, list[str]]:
    """Name -> the arguments after ``python -X importtime``."""
    clip = folder / "clip.wav"
    clip.write_bytes(b"")
    process = ["-m", "audioproc", "process", str(clip), "--out", str(folder / "out")]
    return {
        "--help": ["-m", "audioproc", "--help"],
        "extractors": ["-m", "audioproc", "extractors"],
        "show": ["-m", "audioproc", "show", str(write_manifest(folder))],
        "unknown extractor": [*process, "--extractors", "nope"],
        "unknown device": [*process, "--device", "tpu"],
        "unavailable extractor": [*process, "--extractors", "clap"],
        "facade start": ["-c", FACADE_START, str(folder / "state"), (folder / "api-out").as_uri()],
    }


def run_once(tree: Path, args: list[str]) -> tuple[float, float | None]:
    """(wall time in s, torch's cumulative import time in s or None when not imported)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(tree / p) for p in PACKAGE_DIRS),
        "USE_GPU": "false",
    }
    env.pop("CLAP_CHECKPOINT", None)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    wall = time.perf_counter() - start
    torch_us = next(
        (
            int(line.split("|")[1])
            for line in proc.stderr.splitlines()
            if line.startswith("import time:") and line.rsplit("|", 1)[1].strip() == "torch"
        ),
        None,
    )
    return wall, (torch_us / 1e6 if torch_us is not None else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--baseline", type=Path, help="another checkout to compare with (e.g. main)"
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    trees = {"this": HERE, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load before: {os.getloadavg()[0]:.2f}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name, argv in commands(Path(tmp)).items():
            walls: dict[str, list[float]] = {tree: [] for tree in trees}
            torch_s: dict[str, float | None] = {}
            load = os.getloadavg()[0]
            for _ in range(args.repeat):
                for tree, path in trees.items():
                    wall, torch_time = run_once(path, argv)
                    walls[tree].append(wall)
                    torch_s[tree] = torch_time
            for tree in trees:
                torch_text = (
                    f"torch {torch_s[tree]:.2f} s" if torch_s[tree] is not None else "no torch"
                )
                print(
                    f"{name:<21} {tree:<9} median {statistics.median(walls[tree]):6.2f} s "
                    f"(min {min(walls[tree]):.2f}, n={args.repeat})  {torch_text:<14} load {load:.2f}"
                )


if __name__ == "__main__":
    main()
