"""`helm install` of the chart into the real local control plane (e2e/).

The images are not pulled (kwok plays the kubelet), so these tests check what the API
server makes of the chart: the CRD is served, the Deployments carry the configured
securityContext, the RBAC grants exactly what each component needs (asked with
`kubectl auth can-i --as=system:serviceaccount:...`, answered by the real RBAC
authorizer), and every rendered manifest passes a server-side dry-run with strict field
validation.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from chart_support import CHART, GPU_S3_VALUES, RELEASE, helm, template_args

pytestmark = pytest.mark.e2e

#: Installed with the chart only where the Prometheus operator runs; not on the local cluster.
MONITORING_KINDS = {"ServiceMonitor", "PrometheusRule"}


def helm_on(cluster, *args: str, check: bool = True):
    return helm(*args, "--kubeconfig", str(cluster.kubeconfig), check=check)


@pytest.fixture(scope="module")
def installed(cluster) -> Iterator[dict[str, Any]]:
    """One release of the chart with default values, in a namespace of its own."""
    namespace = f"e2e-chart-{secrets.token_hex(3)}"
    cluster.kubectl("create", "namespace", namespace)
    result = helm_on(cluster, "install", RELEASE, str(CHART), "--namespace", namespace)
    try:
        yield {"namespace": namespace, "notes": result.stdout}
    finally:
        helm_on(cluster, "uninstall", RELEASE, "--namespace", namespace, "--wait", check=False)
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def service_account(installed: dict[str, Any], component: str) -> str:
    return f"system:serviceaccount:{installed['namespace']}:{RELEASE}-audioprocessor-{component}"


def can_i(
    cluster,
    installed: dict[str, Any],
    component: str,
    verb: str,
    resource: str,
    namespace: str | None = None,
) -> bool:
    """`kubectl auth can-i` as the component's ServiceAccount, in ``namespace`` (default: the
    release's); ``resource`` may end in /<subresource>."""
    resource, _, subresource = resource.partition("/")
    result = cluster.kubectl(
        "auth",
        "can-i",
        verb,
        resource,
        "--namespace",
        namespace or installed["namespace"],
        f"--as={service_account(installed, component)}",
        *([f"--subresource={subresource}"] if subresource else []),
        check=False,
    )
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), result.stderr
    return answer == "yes"


def test_crd_is_served(cluster, installed) -> None:
    crd = json.loads(cluster.kubectl("get", "crd", "audiojobs.audioproc.io", "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions["Established"] == "True"
    resources = cluster.kubectl(
        "api-resources", "--api-group=audioproc.io", "-o", "name"
    ).stdout.split()
    assert "audiojobs.audioproc.io" in resources


def test_deployments_exist_with_the_configured_security_context(cluster, installed) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for component in ("operator", "api"):
        deployment = json.loads(
            cluster.kubectl(
                "get",
                "deployment",
                f"{RELEASE}-audioprocessor-{component}",
                "-n",
                installed["namespace"],
                "-o",
                "json",
            ).stdout
        )
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == f"{RELEASE}-audioprocessor-{component}"
        for key, value in values["podSecurityContext"].items():
            assert pod["securityContext"][key] == value, (component, key)
        for container in pod["containers"]:
            for key, value in values["containerSecurityContext"].items():
                assert container["securityContext"][key] == value, (component, key)


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("create", "audiojobs.audioproc.io", True),
        ("get", "audiojobs.audioproc.io", True),
        ("delete", "audiojobs.audioproc.io", True),
        ("create", "jobs.batch", False),
        ("list", "jobs.batch", True),  # GET /tasks/{id}/backend: an AudioJob's Jobs
        ("delete", "jobs.batch", False),
        ("list", "events", True),  # ... and its Events
        ("create", "events", False),
        ("get", "secrets", False),
        ("list", "secrets", False),
        ("create", "pods", False),
        ("get", "configmaps", False),
        ("patch", "audiojobs.audioproc.io/status", False),
    ],
)
def test_facade_changes_only_audiojobs(
    cluster, installed, verb: str, resource: str, allowed: bool
) -> None:
    assert can_i(cluster, installed, "api", verb, resource) is allowed


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("create", "jobs.batch", True),
        # an unfinished AudioJob being deleted: its Jobs go at once, in the foreground
        ("delete", "jobs.batch", True),
        ("delete", "configmaps", False),  # owner references: the garbage collector deletes them
        ("update", "audiojobs.audioproc.io/finalizers", True),
        ("create", "configmaps", True),
        ("list", "pods", True),
        ("patch", "audiojobs.audioproc.io/status", True),
        ("list", "resourcequotas", True),
        ("create", "events", True),
        ("get", "secrets", False),
        ("create", "pods", False),
        ("create", "rolebindings.rbac.authorization.k8s.io", False),
        ("list", "customresourcedefinitions.apiextensions.k8s.io", True),
        ("create", "customresourcedefinitions.apiextensions.k8s.io", False),
    ],
)
def test_operator_has_what_it_uses_and_no_more(
    cluster, installed, verb: str, resource: str, allowed: bool
) -> None:
    assert can_i(cluster, installed, "operator", verb, resource) is allowed


def test_operator_rights_end_at_its_namespace(cluster, installed) -> None:
    assert (
        can_i(cluster, installed, "operator", "create", "jobs.batch", namespace="default") is False
    )


def test_notes_audiojob_is_accepted_when_the_facade_creates_it(cluster, installed) -> None:
    """The example in NOTES.txt, created with the facade's identity: CRD schema and RBAC in practice."""
    heredoc = re.search(r"<<'YAML'.*?\n(.*?)\n\s*YAML\n", installed["notes"], re.S)
    assert heredoc, installed["notes"]
    audiojob = yaml.safe_load(heredoc.group(1))
    assert audiojob["kind"] == "AudioJob"
    as_facade = f"--as={service_account(installed, 'api')}"
    cluster.kubectl(
        "create", "-n", installed["namespace"], as_facade, "-f", "-", input=yaml.safe_dump(audiojob)
    )
    created = json.loads(
        cluster.kubectl(
            "get",
            "audiojob",
            audiojob["metadata"]["name"],
            "-n",
            installed["namespace"],
            as_facade,
            "-o",
            "json",
        ).stdout
    )
    assert created["spec"]["items"] == audiojob["spec"]["items"]
    # The same identity cannot create a Job to run it by itself.
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "sneaky"},
        "spec": {
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}
            }
        },
    }
    denied = cluster.kubectl(
        "create",
        "-n",
        installed["namespace"],
        as_facade,
        "-f",
        "-",
        input=json.dumps(job),
        check=False,
    )
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()


def _dry_run(cluster, manifests: list[dict[str, Any]]):
    return cluster.kubectl(
        "apply",
        "--dry-run=server",
        "--validate=strict",
        "-f",
        "-",
        input=yaml.safe_dump_all(manifests),
        check=False,
    )


@pytest.mark.parametrize("values", [None, GPU_S3_VALUES], ids=["default", "gpu-s3"])
def test_rendered_manifests_pass_a_server_side_dry_run(cluster, namespace: str, values) -> None:
    sets = [f"operator.watchNamespaces={{{namespace}}}", f"api.jobNamespace={namespace}"]
    out = helm(*template_args(namespace, values_files=[values] if values else [], sets=sets)).stdout
    manifests = [d for d in yaml.safe_load_all(out) if d and d["kind"] not in MONITORING_KINDS]
    assert {"Deployment", "Role", "RoleBinding", "ClusterRole", "ServiceAccount"} <= {
        m["kind"] for m in manifests
    }
    result = _dry_run(cluster, manifests)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(server dry run)") == len(manifests)


def test_server_side_dry_run_rejects_an_unknown_field(cluster, namespace: str) -> None:
    out = helm(*template_args(namespace, sets=[f"operator.watchNamespaces={{{namespace}}}"])).stdout
    manifests = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "Deployment"]
    manifests[0]["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "readOnlyRootFilesytem"
    ] = True
    result = _dry_run(cluster, manifests)
    assert result.returncode != 0 and "readOnlyRootFilesytem" in result.stderr
