"""Fixtures for tests against a real Kubernetes control plane.

- ``cluster`` (session): a ``LocalCluster`` on free ports, started once and torn down at the end
  even when tests fail (its component logs are then kept, and failing tests point to them). With
  ``E2E_KUBECONFIG`` set, nothing is started: the tests use that cluster (for the dev loop, run
  ``python -m e2e.cluster up`` once and export E2E_KUBECONFIG=$KUBECONFIG).
- ``api_client`` (session): a ``kubernetes.client.ApiClient`` for it.
- ``namespace``: a fresh namespace per test (its ``default`` ServiceAccount exists, so pods are
  admitted at once), deleted after the test (without waiting for it to be gone).
- ``audiojob_crd`` (session): the AudioJob CRD from ``crds/``, applied and Established.
- ``docker_engine`` (session): a Docker engine (Debian's dockerd, started as root when none
  runs, and stopped at the end); tests that use it skip with the reason when there is none.
- ``real_node`` (session): the cluster's real kubelet + containerd node (e2e.realnode); it
  starts with the cluster when it can run here, and tests that need it skip with the reason
  otherwise (not root, no engine, no runc/CNI plugins, an external cluster).
- ``project_images`` (session): the job, operator and facade images, built (``make images``:
  unchanged ones are not rebuilt) and imported into the real node (unchanged ones skipped).

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

from e2e.cluster import (
    CACHE_DIR,
    Cluster,
    ClusterError,
    LocalCluster,
    cached_binaries,
    ensure_binaries,
)
from e2e.helpers import AUDIOJOB_CRD, NAMESPACE_LABEL, wait_for
from e2e.realnode import RealNode
from images.build import build_all
from images.engine import DockerEngine, EngineError

EXTERNAL_KUBECONFIG_ENV = "E2E_KUBECONFIG"
RUNS_DIR = CACHE_DIR / "e2e-runs"

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
    if (
        wants_cluster
        and not config.option.collectonly
        and not os.environ.get(EXTERNAL_KUBECONFIG_ENV)
    ):
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
def engine_or_reason() -> Iterator[tuple[DockerEngine | None, str | None]]:
    """The Docker engine, or why there is none; a daemon started here is stopped at the end."""
    try:
        engine = DockerEngine.ensure(CACHE_DIR / "logs")
    except EngineError as error:
        yield None, str(error)
        return
    try:
        yield engine, None
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def docker_engine(engine_or_reason: tuple[DockerEngine | None, str | None]) -> DockerEngine:
    engine, reason = engine_or_reason
    if engine is None:
        pytest.skip(f"no Docker engine: {reason}")
    return engine


@pytest.fixture(scope="session")
def cluster(
    request: pytest.FixtureRequest, engine_or_reason: tuple[DockerEngine | None, str | None]
) -> Iterator[Cluster]:
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

    engine, no_engine = engine_or_reason
    local = LocalCluster(
        state_dir,
        bin_dir=bin_dir,
        die_with_parent=True,
        log=log,
        real_node=None if engine else False,
        engine=engine,
    )
    if engine is None:
        local.real_node_missing = f"no Docker engine: {no_engine}"
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
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={NAMESPACE_LABEL: "true"})
        )
    )
    # The ServiceAccount admission plugin rejects pods until the controller made `default`.
    wait_for(
        lambda: (
            core.list_namespaced_service_account(name, field_selector="metadata.name=default").items
        ),
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
    cluster.kubectl(
        "wait", "--for=condition=Established", "crd/audiojobs.audioproc.io", "--timeout=60s"
    )


@pytest.fixture(scope="session")
def real_node(cluster: Cluster) -> RealNode:
    """The real node of the local cluster; skips (with the reason) where there is none."""
    if not isinstance(cluster, LocalCluster):
        pytest.skip(
            f"real-node tests need the local cluster's real node, not {EXTERNAL_KUBECONFIG_ENV}"
        )
    if cluster.node is None:
        pytest.skip(f"no real node: {cluster.real_node_missing}")
    return cluster.node


@pytest.fixture(scope="session")
def project_images(
    request: pytest.FixtureRequest,
    cluster: Cluster,
    docker_engine: DockerEngine,
    real_node: RealNode,
) -> dict[str, str]:
    """``{image name: name:version}`` of the project's images, built and imported into the node."""
    assert isinstance(cluster, LocalCluster)

    def log(message: str) -> None:
        print(f"[images] {message}", flush=True)

    with _terminal(request.config):
        results = build_all(docker_engine, log=log)
        for result in results:
            print(
                f"[images] {result.ref} {'built' if result.built else 'up to date'} in {result.seconds:.0f}s",
                flush=True,
            )
        cluster.import_images([r.ref for r in results])
    return {r.ref.split(":", 1)[0]: r.ref for r in results}
