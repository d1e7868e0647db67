"""`python -m e2e.cluster up|status|down`: the contributor's entry point, on a cluster of its own."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from e2e.cluster import Cluster, LocalCluster

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "e2e.cluster", "--state-dir", str(state_dir), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=180,
    )


def test_up_prints_kubeconfig_and_down_stops_exactly_its_processes(tmp_path):
    state_dir = tmp_path / "cluster"
    try:
        up = cli(
            "up", "--cpu-nodes", "1", "--gpu-nodes", "0", "--real-node", "no", state_dir=state_dir
        )
        assert up.returncode == 0, up.stderr
        assert up.stdout == f"export KUBECONFIG={state_dir / 'kubeconfig'}\n"

        recorded = LocalCluster.from_state(state_dir)
        assert [p.name for p in recorded.running_processes()] == [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        ]
        nodes = json.loads(
            Cluster(state_dir / "kubeconfig", recorded.bin_dir)
            .kubectl("get", "nodes", "-o", "json")
            .stdout
        )
        assert [n["metadata"]["name"] for n in nodes["items"]] == ["kwok-cpu-0"]

        again = cli("up", state_dir=state_dir)  # idempotent: reports the running cluster
        assert again.returncode == 0 and again.stdout == up.stdout
        assert cli("status", state_dir=state_dir).returncode == 0

        down = cli("down", state_dir=state_dir)
        assert down.returncode == 0, down.stderr
        assert not any(p.is_ours() for p in recorded.processes)
        assert not state_dir.exists()
        assert cli("status", state_dir=state_dir).returncode == 3
    finally:
        LocalCluster.from_state(state_dir).stop()  # whatever an assertion left running
