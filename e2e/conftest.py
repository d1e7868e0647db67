"""Fixtures for tests against a real Kubernetes control plane.

- ``cluster`` (session): a ``LocalCluster`` on free ports, started once and torn down at the end
  even when tests fail (its component logs are then kept, and failing tests point to them). With
  ``E2E_KUBECONFIG`` set, nothing is started: the tests use that cluster (for the dev loop, run
  ``python -m e2e.cluster up`` once and export E2E_KUBECONFIG=$KUBECONFIG).
- ``api_client`` (session): a ``kubernetes.client.ApiClient`` for it.
- ``namespace``: a fresh namespace per test (its ``default`` ServiceAccount exists, so pods are
  admitted at once), deleted after the test (without waiting for it to be gone).
- ``audiojob_crd`` (session): the AudioJob CRD from ``crds/``, applied and Established.

The control-plane binaries are built (or found in the cache) before the first e2e test runs, so
``pytest e2e`` works on a fresh machine; a cold build takes a while and prints its progress.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from e2e.cluster import CACHE_DIR, Cluster, ClusterError, LocalCluster, cached_binaries, ensure_binaries
from e2e.helpers import AUDIOJOB_CRD, wait_for

EXTERNAL_KUBECONFIG_ENV = "E2E_KUBECONFIG"
RUNS_DIR = CACHE_DIR / "e2e-runs"
NAMESPACE_LABEL = "e2e.audioproc.io/test"

_logs_dir_key = pytest.StashKey[Path]()
_bin_dir_key = pytest.StashKey[Path]()
_build_error_key = pytest.StashKey[ClusterError]()


def _terminal(config: pytest.Config):
    """A context in which prints reach the terminal, even while pytest captures output."""
    return config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled()


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: `pytest -m "not e2e"` builds nothing
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Build the binaries before any e2e test runs: outside every test's timeout, progress shown."""
    wants_cluster = any(item.get_closest_marker("e2e") for item in items)
    if wants_cluster and not config.option.collectonly and not os.environ.get(EXTERNAL_KUBECONFIG_ENV):
        with _terminal(config):
            try:
                config.stash[_bin_dir_key] = ensure_binaries()
            except ClusterError as error:
                config.stash[_build_error_key] = error  # fails the e2e tests only, not the session


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report = outcome.get_result()
    logs = item.config.stash.get(_logs_dir_key, None)
    if report.failed and logs is not None and "cluster" in getattr(item, "fixturenames", ()):
        report.sections.append(("e2e control plane", f"component logs: {logs}"))


def _clean_up_killed_runs() -> None:
    """A test run that was killed took its components along (they die with their parent) but
    left its state: remove it, keeping the logs. Live runs of other sessions are left alone."""
    for state_dir in RUNS_DIR.iterdir():
        recorded = LocalCluster.from_state(state_dir)
        if recorded.is_dead():
            recorded.stop(keep_logs=True)


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    external = os.environ.get(EXTERNAL_KUBECONFIG_ENV)
    config = request.config
    if external:
        # Our kubectl when it is built (matching the server's version), else the one on PATH.
        yield Cluster(Path(external), cached_binaries())
        return
    if _build_error_key in config.stash:
        raise config.stash[_build_error_key]
    bin_dir = config.stash.get(_bin_dir_key, None) or ensure_binaries()
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    _clean_up_killed_runs()
    state_dir = Path(tempfile.mkdtemp(prefix="run-", dir=RUNS_DIR))

    def log(message: str) -> None:
        with _terminal(config):
            print(f"\n[e2e cluster] {message}", flush=True)

    local = LocalCluster(state_dir, bin_dir=bin_dir, die_with_parent=True, log=log)
    config.stash[_logs_dir_key] = local.logs_dir
    local.start()
    try:
        yield local
    finally:
        failed = request.session.testsfailed > 0
        local.stop(keep_logs=failed)
        if failed:
            log(f"tests failed; control-plane logs kept in {local.logs_dir}")


@pytest.fixture(scope="session")
def api_client(cluster: Cluster) -> Iterator[client.ApiClient]:
    api = cluster.api_client()
    yield api
    api.close()


def _namespace_name(test_name: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:40].strip("-")
    return f"e2e-{slug}-{secrets.token_hex(3)}"


@pytest.fixture
def namespace(request: pytest.FixtureRequest, api_client: client.ApiClient) -> Iterator[str]:
    core = client.CoreV1Api(api_client)
    name = _namespace_name(request.node.name)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={NAMESPACE_LABEL: "true"})))
    # The ServiceAccount admission plugin rejects pods until the controller made `default`.
    wait_for(
        lambda: core.list_namespaced_service_account(name, field_selector="metadata.name=default").items,
        timeout=30,
        what=f"ServiceAccount default in {name}",
    )
    yield name
    # Not waited for: the namespace controller holds every deletion for 5s (a fixed grace
    # period), which would add that much to every test. Tests that need an idle cluster (free
    # GPUs, say) wait for it themselves.
    core.delete_namespace(name)


@pytest.fixture(scope="session")
def audiojob_crd(cluster: Cluster) -> None:
    """The AudioJob CRD from crds/, installed and Established."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(AUDIOJOB_CRD))
    cluster.kubectl("wait", "--for=condition=Established", "crd/audiojobs.audioproc.io", "--timeout=60s")
