"""``audioproc-api serve`` refuses a configuration it cannot run with: exit 2, one line naming the
variable and the problem, and nothing started."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.facade_support import WORKTREE_PYTHONPATH, free_port


def serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "PYTHONPATH": WORKTREE_PYTHONPATH,
        "API_BACKEND": "local",
        "API_STATE_DIR": str(tmp_path / "state"),
        "USE_GPU": "false",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "audioproc_api", "serve", "--port", str(free_port())],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _case(tmp_path: Path, name: str) -> tuple[dict, str]:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    bad_tokens = tmp_path / "bad-tokens"
    bad_tokens.write_text("alice:token:superuser\n")
    return {
        "state dir under a file": ({"API_STATE_DIR": str(a_file / "state")}, "API_STATE_DIR"),
        "state dir in /proc": ({"API_STATE_DIR": "/proc/audioproc-state"}, "API_STATE_DIR"),
        "state dir is a file": ({"API_STATE_DIR": str(a_file)}, "API_STATE_DIR"),
        "negative body limit": ({"API_MAX_BODY_BYTES": "-1"}, "API_MAX_BODY_BYTES"),
        "wait timeout not a number": ({"API_WAIT_TIMEOUT_S": "soon"}, "API_WAIT_TIMEOUT_S"),
        "no waiters": ({"API_MAX_WAITERS": "0"}, "API_MAX_WAITERS"),
        "read timeout zero": ({"API_READ_TIMEOUT_S": "0"}, "API_READ_TIMEOUT_S"),
        "unknown backend": ({"API_BACKEND": "cloud"}, "API_BACKEND"),
        "roots not a JSON list": ({"ALLOWED_ROOTS": "/x"}, "ALLOWED_ROOTS"),
        "missing tokens file": ({"API_TOKENS_FILE": str(tmp_path / "missing")}, "API_TOKENS_FILE"),
        "tokens file is a directory": ({"API_TOKENS_FILE": str(tmp_path)}, "API_TOKENS_FILE"),
        "invalid tokens file": ({"API_TOKENS_FILE": str(bad_tokens)}, "API_TOKENS_FILE"),
    }[name]


@pytest.mark.parametrize(
    "name",
    [
        "state dir under a file",
        "state dir in /proc",
        "state dir is a file",
        "negative body limit",
        "wait timeout not a number",
        "no waiters",
        "read timeout zero",
        "unknown backend",
        "roots not a JSON list",
        "missing tokens file",
        "tokens file is a directory",
        "invalid tokens file",
    ],
)
def test_a_bad_setting_exits_2_with_one_line_naming_it(tmp_path: Path, name: str) -> None:
    env, variable = _case(tmp_path, name)
    result = serve(tmp_path, **env)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert "Traceback" not in result.stderr
