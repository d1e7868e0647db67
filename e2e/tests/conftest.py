"""Fixtures of the operator's e2e tests (test_operator, test_operator_events, test_items_from,
test_real_pods): the test namespace's ``kube``, the operator's ServiceAccount kubeconfig, and
``start_operator``, which runs the operator as a subprocess watching only the test's namespace
and stops it after the test. The cluster fixtures are e2e/conftest.py's."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from e2e.helpers import Kube, OperatorProcess
from e2e.operator_support import operator_service_account_kubeconfig


@pytest.fixture
def kube(cluster: Any, namespace: str, audiojob_crd: None) -> Kube:
    return Kube(cluster, namespace)


@pytest.fixture
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture
def operator_kubeconfig(cluster: Any, audiojob_crd: None, tmp_path: Path) -> Path:
    """A kubeconfig with the operator's ServiceAccount token: only the rights of crds/rbac.yaml.

    Per test: e2e/tests/test_readme.py deletes the namespace (and so the ServiceAccount the
    token is bound to), and crds/rbac.yaml brings it back.
    """
    return operator_service_account_kubeconfig(cluster, tmp_path / "operator-kubeconfig")


@pytest.fixture
def start_operator(
    cluster: Any, namespace: str, kube: Kube, tmp_path: Path
) -> Iterator[Callable[..., OperatorProcess]]:
    started: list[OperatorProcess] = []

    def start(kubeconfig: Path | None = None, **settings: str) -> OperatorProcess:
        operator = OperatorProcess(
            kubeconfig or cluster.kubeconfig,
            namespace,
            tmp_path,
            OPERATOR_ALLOW_POD_ANNOTATIONS="true",
            **settings,
        )
        operator.start()
        started.append(operator)
        return operator

    yield start
    # Delete the AudioJobs while an operator still runs: it removes its finalizer, so that
    # the namespace can go even when a test failed half-way.
    kube.run("delete", "audiojobs", "--all", "--timeout=30s", check=False)
    for operator in started:
        operator.stop()
