"""The facade starts without torch (issue 12, item 6): only its workers need the pipeline.

The local backend starts (lifespan) and answers /extractors in a real process under
``python -X importtime``, which names every module the process imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

START_AND_LIST = """
import json, sys
from fastapi.testclient import TestClient
from audioproc_api.app import create_app
from audioproc_api.settings import ApiSettings

settings = ApiSettings(api_backend="local", api_state_dir=sys.argv[1], output_uri=sys.argv[2])
with TestClient(create_app(settings)) as client:
    print(json.dumps(client.get("/extractors").json()))
"""


def test_local_facade_starts_and_lists_extractors_without_torch(tmp_path: Path) -> None:
    paths = [str(REPO / p) for p in (".", "job_image", "operator", "api_facade")]
    env = {k: v for k, v in os.environ.items() if k != "CLAP_CHECKPOINT"}
    env["PYTHONPATH"] = os.pathsep.join(paths)

    proc = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-c",
            START_AND_LIST,
            str(tmp_path / "state"),
            (tmp_path / "out").as_uri(),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert proc.returncode == 0, proc.stderr[-3000:]
    listed = {e["name"]: e for e in json.loads(proc.stdout.strip().splitlines()[-1])["available"]}
    assert listed["loudness"]["available"] and not listed["clap"]["available"]
    assert "CLAP_CHECKPOINT" in listed["clap"]["reason"]
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    assert "audioproc_api.backends.local" in imported  # the parse saw the backend's imports
    assert not imported & {"torch", "torchaudio", "librosa"}
