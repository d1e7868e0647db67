"""The README's "On Kubernetes" commands, run as written, in order, on the local control plane.

The commands are read out of README.md, so the README and this test cannot drift apart: a
new command there is run here (or fails the test until the test knows how to run it). The
state is what a fresh cluster has: no ``audioproc-system`` namespace (crds/rbac.yaml must
bring its own) and no example AudioJob. kubectl is the cluster's own (the fixture's bin
directory first on PATH); the operator command runs as a subprocess, like
``e2e.helpers.OperatorProcess``, watching the whole cluster as the bare command does.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.helpers import REPO, SOURCE_PYTHONPATH, wait_for

pytestmark = pytest.mark.e2e

README = REPO / "README.md"
RBAC_NAMESPACE = "audioproc-system"  # what crds/rbac.yaml names
EXAMPLE = "cpu-batch"  # crds/examples/cpu-batch.yaml, in the kubeconfig's namespace
EXAMPLE_NAMESPACE = "default"


def section_commands(markdown: str, heading: str) -> list[list[str]]:
    """The commands of the first ```bash block under ``## heading``: comments dropped, split as a shell does."""
    section = markdown.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("\n```", 1)[0]
    return [argv for line in block.splitlines() if (argv := shlex.split(line, comments=True))]


def executable(program: str) -> str:
    """``.venv/bin/X`` of the checkout, or of the virtualenv running the tests (a git worktree
    has none of its own and uses the main checkout's); anything else from PATH."""
    if not program.startswith(".venv/bin/"):
        return program
    local = REPO / program
    return str(local if local.exists() else Path(sys.executable).parent / Path(program).name)


class Shell:
    """A user's shell in the repository: KUBECONFIG exported, the cluster's kubectl on PATH."""

    def __init__(self, cluster: Any, log_dir: Path) -> None:
        path = (
            os.pathsep.join([str(cluster.bin_dir), os.environ["PATH"]])
            if cluster.bin_dir
            else os.environ["PATH"]
        )
        self.env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "PATH": path}
        self.log_dir = log_dir
        self.background: list[subprocess.Popen[bytes]] = []

    def run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            argv, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=120
        )
        if check:
            assert result.returncode == 0, (
                f"`{shlex.join(argv)}` failed ({result.returncode}): {result.stderr}"
            )
        return result

    def start(self, argv: list[str]) -> subprocess.Popen[bytes]:
        """A command that runs until stopped (the operator), as in a second terminal.

        The checkout's sources first on PYTHONPATH (an editable install may be another
        checkout's); no metrics port, which another process on this machine may hold.
        """
        env = {**self.env, "PYTHONPATH": SOURCE_PYTHONPATH, "OPERATOR_METRICS_PORT": "0"}
        with open(self.log_dir / f"{Path(argv[0]).name}.log", "wb") as log:
            process = subprocess.Popen(
                [executable(argv[0]), *argv[1:]],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.background.append(process)
        return process

    def json(self, *args: str) -> Any:
        return json.loads(self.run(["kubectl", *args, "-o", "json"]).stdout)

    def stop(self) -> None:
        for process in self.background:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def forget_the_example(shell: Shell) -> None:
    """Delete a left-over example AudioJob, its finalizer first: no operator may be running."""
    if not shell.run(
        ["kubectl", "get", "crd", "audiojobs.audioproc.io", "--ignore-not-found", "-o", "name"]
    ).stdout:
        return  # a cluster that never had the CRD (this test may be the first to apply it)
    get = [
        "kubectl",
        "-n",
        EXAMPLE_NAMESPACE,
        "get",
        "aj",
        EXAMPLE,
        "--ignore-not-found",
        "-o",
        "name",
    ]
    if shell.run(get).stdout.strip():
        shell.run(
            [
                "kubectl",
                "-n",
                EXAMPLE_NAMESPACE,
                "patch",
                "aj",
                EXAMPLE,
                "--type=merge",
                "-p",
                '{"metadata": {"finalizers": null}}',
            ]
        )
        shell.run(
            ["kubectl", "-n", EXAMPLE_NAMESPACE, "delete", "aj", EXAMPLE, "--wait", "--timeout=60s"]
        )


@pytest.fixture
def fresh_shell(cluster: Any, tmp_path: Path) -> Iterator[Shell]:
    """A shell against a cluster without the operator's namespace or the example AudioJob."""
    shell = Shell(cluster, tmp_path)
    forget_the_example(shell)
    # Gone, not Terminating: applying into a terminating namespace fails differently.
    shell.run(
        [
            "kubectl",
            "delete",
            "namespace",
            RBAC_NAMESPACE,
            "--ignore-not-found",
            "--wait",
            "--timeout=120s",
        ]
    )
    yield shell
    # Deleted while the operator still runs: it removes its finalizer.
    shell.run(
        [
            "kubectl",
            "-n",
            EXAMPLE_NAMESPACE,
            "delete",
            "aj",
            EXAMPLE,
            "--ignore-not-found",
            "--wait",
            "--timeout=60s",
        ],
        check=False,
    )
    shell.stop()


def test_on_kubernetes_commands_work_in_order_on_a_fresh_cluster(fresh_shell: Shell) -> None:
    shell = fresh_shell
    outputs: list[str] = []
    for argv in section_commands(README.read_text(), "On Kubernetes"):
        if argv[0] == "kubectl":
            outputs.append(shell.run(argv).stdout)
        elif argv[0].endswith("audioproc-operator"):
            operator = shell.start(argv)
            # The seconds a person takes to open a second terminal: the CRD just applied is
            # served by then, which an immediate `kubectl apply` of an AudioJob cannot count on.
            shell.run(
                [
                    "kubectl",
                    "wait",
                    "--for=condition=Established",
                    "crd/audiojobs.audioproc.io",
                    "--timeout=60s",
                ]
            )
        else:
            pytest.fail(f"the README runs `{shlex.join(argv)}`: teach this test how")

    assert shell.run(["kubectl", "get", "namespace", RBAC_NAMESPACE]).returncode == 0
    table = outputs[-1].splitlines()  # `kubectl get aj`
    assert table[0].split()[:5] == ["NAME", "PHASE", "PROGRESS", "DEVICE", "ITEMS"], outputs[-1]
    assert any(row.split()[0] == EXAMPLE for row in table[1:]), outputs[-1]

    def jobs() -> list[dict[str, Any]]:
        assert operator.poll() is None, (
            f"the operator exited ({operator.returncode}): see {shell.log_dir}"
        )
        return shell.json(
            "-n", EXAMPLE_NAMESPACE, "get", "jobs", "-l", f"audioproc.io/audiojob={EXAMPLE}"
        )["items"]

    (job,) = wait_for(jobs, timeout=90, what=f"the Job of AudioJob {EXAMPLE}", interval=1)
    assert job["spec"]["completions"] == 3
    env = {
        e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    # A bare operator mounts no volume: its pods may read no local file (not the image's /work).
    assert json.loads(env["ALLOWED_ROOTS"]) == []
