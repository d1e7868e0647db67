"""The chart's environment, read by the components' own settings classes.

pydantic-settings ignores variables it does not know (``extra="ignore"``), so a misspelt
name in a template would be dropped without a word. These tests feed the rendered env to
``OperatorSettings`` and ``ApiSettings`` and check that every name is a field and that
values arrive parsed (JSON dicts and lists, quantities as strings).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from audioproc.models.audiojob import AudioJobSpec
from audioproc.settings import PipelineSettings
from audioproc_api.settings import ApiSettings
from audioproc_operator import builder
from audioproc_operator.settings import OperatorSettings
from chart_support import (
    CHART,
    container_env,
    env_names,
    helm,
    named,
    render,
    template_args,
)


def load(
    settings_cls: type[BaseSettings], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Any:
    for name in env_names(settings_cls):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return settings_cls()


@pytest.mark.parametrize("objects_fixture", ["default_objects", "gpu_s3_objects"])
def test_operator_reads_every_variable_the_chart_sets(
    objects_fixture: str, request: pytest.FixtureRequest
) -> None:
    env = container_env(named(request.getfixturevalue(objects_fixture), "Deployment", "-operator"))
    unknown = set(env) - env_names(OperatorSettings)
    assert not unknown, f"OperatorSettings has no field for {sorted(unknown)}"


def test_operator_applies_the_chart_security_context_to_job_pods(
    default_objects, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load(
        OperatorSettings,
        container_env(named(default_objects, "Deployment", "-operator")),
        monkeypatch,
    )
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    ref = builder.AudioJobRef(
        name="batch",
        namespace="audio",
        uid="uid",
        spec=AudioJobSpec.model_validate(
            {
                "items": [{"inputUri": "file:///data/in/v0.mp4", "videoId": "v0"}],
                "output": "file:///data/out",
            }
        ),
    )
    pod = builder.build_job(ref, 0, 0, 1, builder.Placement("cpu", 1), settings)["spec"][
        "template"
    ]["spec"]
    assert pod["securityContext"] == values["podSecurityContext"]
    assert pod["containers"][0]["securityContext"] == values["containerSecurityContext"]


def test_operator_parses_the_default_values(
    default_objects, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load(
        OperatorSettings,
        container_env(named(default_objects, "Deployment", "-operator")),
        monkeypatch,
    )
    assert settings.namespaces == ["audio"]
    assert settings.job_image == "audioproc-job:0.1.0"
    assert settings.service_account == "rel-audioprocessor-job"
    assert settings.output_volume_claim == "rel-audioprocessor-output"
    assert settings.output_mount_path == "/data"
    assert settings.gpu_node_selector == {"audioproc.io/pool": "gpu"}
    assert settings.gpu_tolerations == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert settings.cpu_requests == {"cpu": "1", "memory": "2Gi"}
    assert settings.max_gpu_workers == 8
    assert settings.metrics_port == 8080
    assert settings.job_env == {}
    assert settings.allowed_roots == ["/data"]


def test_operator_parses_the_gpu_s3_values(gpu_s3_objects, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(
        OperatorSettings,
        container_env(named(gpu_s3_objects, "Deployment", "-operator")),
        monkeypatch,
    )
    assert settings.namespaces == ["media-jobs"]
    assert settings.gpu_node_selector == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert settings.gpu_requests == {"cpu": "4", "memory": "16Gi"}
    assert settings.max_gpu_workers == 16
    assert settings.job_env_secret == "audioproc-s3"
    assert settings.output_volume_claim is None
    assert settings.job_env["S3_REGION"] == "eu-west-1"
    assert settings.allowed_roots == []


def worker_roots(objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The chart's operator env -> OperatorSettings -> a worker pod -> the pipeline's ALLOWED_ROOTS."""
    settings = load(
        OperatorSettings, container_env(named(objects, "Deployment", "-operator")), monkeypatch
    )
    ref = builder.AudioJobRef(
        name="batch",
        namespace="audio",
        uid="uid",
        spec=AudioJobSpec.model_validate(
            {"items": [{"inputUri": "file:///data/media/v0.mp4", "videoId": "v0"}]}
        ),
    )
    pod = builder.build_job(ref, 0, 0, 1, builder.Placement("cpu", 1), settings)["spec"][
        "template"
    ]["spec"]
    worker_env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    return load(PipelineSettings, worker_env, monkeypatch).allowed_roots


def test_job_pods_read_inputs_under_the_charts_allowed_roots(
    default_objects, gpu_s3_objects, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert worker_roots(default_objects, monkeypatch) == [Path("/data")]
    assert worker_roots(gpu_s3_objects, monkeypatch) == []
    # Roots elsewhere come first; the output volume's mount path is always one.
    elsewhere = render("audio", sets=["inputs.allowedRoots={/media,/data/media}"])
    assert worker_roots(elsewhere, monkeypatch) == [
        Path("/media"),
        Path("/data/media"),
        Path("/data"),
    ]


@pytest.mark.parametrize("name", ["ALLOWED_ROOTS", "allowed_roots"])
def test_job_env_may_not_set_the_roots(name: str) -> None:
    result = helm(*template_args("audio", sets=[f"job.env.{name}=/x"]), check=False)
    assert (
        result.returncode != 0
        and "job.env must not set ALLOWED_ROOTS: set inputs.allowedRoots" in result.stderr
    )


@pytest.mark.parametrize("objects_fixture", ["default_objects", "gpu_s3_objects"])
def test_facade_reads_every_variable_the_chart_sets(
    objects_fixture: str, request: pytest.FixtureRequest
) -> None:
    deployment = named(request.getfixturevalue(objects_fixture), "Deployment", "-api")
    names = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    unknown = names - env_names(ApiSettings)
    assert not unknown, f"ApiSettings has no field for {sorted(unknown)}"


def test_facade_parses_the_gpu_s3_values(gpu_s3_objects, monkeypatch: pytest.MonkeyPatch) -> None:
    env = container_env(named(gpu_s3_objects, "Deployment", "-api"))
    settings = load(ApiSettings, env, monkeypatch)
    assert settings.api_backend.value == "kubernetes"
    assert settings.api_namespace == "media-jobs"
    assert settings.output_uri == "s3://media-features/manifests/v1"
    assert settings.s3_region == "eu-west-1"
    assert settings.api_tokens_file == Path("/etc/audioproc/auth/tokens")
    assert settings.allowed_roots == []


def test_facade_parses_the_default_values(default_objects, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load(
        ApiSettings, container_env(named(default_objects, "Deployment", "-api")), monkeypatch
    )
    assert settings.output_uri == "file:///data/audioproc"
    assert settings.allowed_roots == [Path("/data")]
    assert settings.enable_metrics is True
    assert json.loads(
        container_env(named(default_objects, "Deployment", "-api"))["ALLOWED_ROOTS"]
    ) == ["/data"]
