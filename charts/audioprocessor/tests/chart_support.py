"""Rendering the Helm chart in tests: find helm/kubeconform, render, pick objects; and the
environment variables a settings class reads (what the chart and docker-compose.yml may set).

helm and kubeconform are built from Go modules with the control plane's other binaries
(``make cluster-bins``, e2e/controlplane/build-bins.sh) into a cache directory keyed by
their versions. Tests look there without building (a cold build takes half an hour; CI
runs it before the tests); ``AUDIOPROC_K8S_BIN`` overrides the directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "audioprocessor"
GPU_S3_VALUES = CHART / "ci" / "gpu-s3-values.yaml"
#: What the real-node tests install: the values the Tiltfile deploys (dev mode), then the real
#: node's overlay (images from `make images`, placement on the real node, the data claim).
REAL_NODE_VALUES = [CHART / "ci" / "dev-values.yaml", CHART / "ci" / "real-node-values.yaml"]
VERSIONS_ENV = REPO / "e2e" / "controlplane" / "versions.env"
RELEASE = "rel"


def cached_bin_dir() -> Path:
    """The directory build-bins.sh fills: <cache>/k8s/<versions key>/bin."""
    if override := os.environ.get("AUDIOPROC_K8S_BIN"):
        return Path(override)
    versions = dict(
        line.split("=", 1)
        for line in VERSIONS_ENV.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    key = "k8s-{K8S_VERSION}_etcd-{ETCD_VERSION}_kwok-{KWOK_VERSION}_helm-{HELM_VERSION}".format(
        **versions
    )
    cache = Path(os.environ.get("AUDIOPROC_CACHE", Path.home() / ".cache" / "audioprocessor"))
    return cache / "k8s" / key / "bin"


def find_tool(name: str) -> Path:
    """The tool from the control plane's bin directory, else PATH; skip the test if neither has it."""
    candidate = cached_bin_dir() / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    if found := shutil.which(name):
        return Path(found)
    pytest.skip(
        f"{name} is not built yet: run `make cluster-bins` (e2e/controlplane/build-bins.sh)"
    )


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HELM_CACHE_HOME": "/tmp/helm-cache",
        "HELM_CONFIG_HOME": "/tmp/helm-config",
    }
    result = subprocess.run(
        [str(find_tool("helm")), *args], capture_output=True, text=True, env=env, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
        )
    return result


def template_args(
    namespace: str, values_files: Sequence[Path] = (), sets: Sequence[str] = ()
) -> list[str]:
    args = ["template", RELEASE, str(CHART), "--namespace", namespace, "--include-crds"]
    for values in values_files:
        args += ["--values", str(values)]
    for item in sets:
        args += ["--set", item]
    return args


def render(
    namespace: str = "audio", values_files: Sequence[Path] = (), sets: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The chart's objects as `helm template` renders them (CRDs included)."""
    out = helm(*template_args(namespace, values_files, sets)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def of_kind(objects: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: Iterable[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    """The one object of ``kind`` whose name ends with ``suffix``."""
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, (
        f"expected one {kind} named *{suffix}, found {[o['metadata']['name'] for o in found]}"
    )
    return found[0]


def container_env(deployment: dict[str, Any]) -> dict[str, str]:
    """Plain ``value`` env of the Deployment's first container."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def env_names(settings_cls: type[BaseSettings]) -> set[str]:
    """Every environment variable the settings class reads (prefix + field name, or alias)."""
    prefix = settings_cls.model_config.get("env_prefix", "")
    names = set()
    for field_name, field in settings_cls.model_fields.items():
        names.add(f"{prefix}{field_name}".upper())
        alias = field.validation_alias
        for choice in getattr(alias, "choices", [alias] if isinstance(alias, str) else []):
            names.add(str(choice).upper())
    return names
