"""Operator settings, read from the environment (pydantic-settings).

Variables are prefixed ``OPERATOR_`` (``OPERATOR_CHUNK_SIZE=500``); dicts and lists are JSON
(``OPERATOR_CPU_REQUESTS='{"cpu": "1", "memory": "2Gi"}'``). ``MAX_GPU_WORKERS`` keeps the
project-wide name. Every default works on the e2e cluster and on a plain cluster with
``audioproc.io/pool`` node labels.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

GPU_RESOURCE = "nvidia.com/gpu"
#: The pipeline setting the operator owns in its pods (audioproc.settings.PipelineSettings.allowed_roots).
ALLOWED_ROOTS_ENV = "ALLOWED_ROOTS"


def absolute_path(path: str) -> str:
    """``path`` if absolute: paths inside the worker container; a relative one would resolve
    against the worker's working directory."""
    if not path.startswith("/"):
        raise ValueError(f"{path!r} is not an absolute path")
    return path


class OperatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPERATOR_", case_sensitive=False, extra="ignore")

    namespaces: list[str] = Field(
        default_factory=list,
        description="Namespaces to watch; empty: all namespaces (cluster-wide).",
    )

    # What the pods run
    job_image: str = "audioproc-job:0.1.0"  # what `make images` tags and the chart names by default
    image_pull_policy: str = "IfNotPresent"
    service_account: str | None = Field(
        default=None, description="ServiceAccount of the worker pods."
    )
    job_env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment of the worker (S3_ENDPOINT_URL, ...)."
    )
    job_env_secret: str | None = Field(
        default=None, description="Secret whose keys become worker environment (S3 credentials)."
    )
    output_volume_claim: str | None = Field(
        default=None, description="PVC mounted at output_mount_path, for file:// outputs."
    )
    output_mount_path: str = "/data"
    input_volume_claim: str | None = Field(
        default=None, description="PVC mounted read-only at input_mount_path, for file:// inputs."
    )
    input_mount_path: str = "/data/media"
    allowed_roots: list[str] = Field(
        default_factory=list,
        description="Directories the worker may read file:// inputs from (its ALLOWED_ROOTS), besides "
        "the mount paths of the volumes above, which are always allowed.",
    )
    # The whole securityContext objects (a value replaces the default, it is not merged):
    # the chart passes its own podSecurityContext/containerSecurityContext here.
    pod_security_context: dict[str, Any] = Field(
        default_factory=lambda: {
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        description="securityContext of the worker pods (JSON object).",
    )
    container_security_context: dict[str, Any] = Field(
        default_factory=lambda: {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        description="securityContext of the worker container (JSON object); with a read-only "
        "root filesystem the worker writes its temporary files to the emptyDir at /tmp.",
    )

    # Node pools
    cpu_node_selector: dict[str, str] = Field(default_factory=lambda: {"audioproc.io/pool": "cpu"})
    gpu_node_selector: dict[str, str] = Field(default_factory=lambda: {"audioproc.io/pool": "gpu"})
    cpu_tolerations: list[dict[str, Any]] = Field(default_factory=list)
    gpu_tolerations: list[dict[str, Any]] = Field(
        default_factory=lambda: [
            {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
        ]
    )
    cpu_requests: dict[str, str] = Field(default_factory=lambda: {"cpu": "1", "memory": "2Gi"})
    cpu_limits: dict[str, str] = Field(default_factory=lambda: {"memory": "4Gi"})
    gpu_requests: dict[str, str] = Field(default_factory=lambda: {"cpu": "2", "memory": "8Gi"})
    gpu_limits: dict[str, str] = Field(default_factory=lambda: {"memory": "16Gi"})

    # GPU placement
    max_gpu_workers: int = Field(
        default=8,
        ge=0,
        validation_alias=AliasChoices("MAX_GPU_WORKERS", "OPERATOR_MAX_GPU_WORKERS"),
        description="GPUs this operator hands out at once, over all namespaces.",
    )

    # Kueue
    default_queue_name: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=63,
        description="Kueue LocalQueue for AudioJobs without spec.queueName (in each AudioJob's "
        "namespace); unset: such AudioJobs are placed by the operator itself.",
    )

    # Jobs
    chunk_size: int = Field(default=1000, ge=1, le=100_000, description="Most items in one Job.")
    chunk_max_bytes: int = Field(
        default=768 * 1024,
        ge=1024,
        le=1_000_000,
        description="Largest items.json in one ConfigMap.",
    )
    job_ttl_seconds: int = Field(default=3600, ge=0, description="Job ttlSecondsAfterFinished.")
    allow_pod_annotations: bool = Field(
        default=False,
        description="Copy the AudioJob annotation audioproc.io/pod-annotations onto its pods "
        "(for simulated clusters: kwok exit codes and run durations).",
    )

    # Operator runtime
    reconcile_interval_s: float = Field(
        default=2.0, gt=0, description="Period of each AudioJob's reconcile."
    )
    metrics_port: int = Field(default=8080, ge=0, description="Prometheus /metrics port; 0: off.")
    log_level: str = "INFO"
    max_workers: int = Field(default=16, ge=1, description="Threads running the (sync) handlers.")

    @field_validator("output_mount_path", "input_mount_path")
    @classmethod
    def _absolute_mount_path(cls, path: str) -> str:
        return absolute_path(path)

    @field_validator("allowed_roots")
    @classmethod
    def _absolute_roots(cls, paths: list[str]) -> list[str]:
        return [absolute_path(path) for path in paths]

    @field_validator("job_env")
    @classmethod
    def _roots_are_not_job_env(cls, env: dict[str, str]) -> dict[str, str]:
        """One place for the roots: a job_env copy would silently drop the volumes' mount paths."""
        if any(name.upper() == ALLOWED_ROOTS_ENV for name in env):
            raise ValueError(
                f"job_env must not set {ALLOWED_ROOTS_ENV}: the operator sets it from OPERATOR_ALLOWED_ROOTS "
                "and the mount paths of its volumes; set OPERATOR_ALLOWED_ROOTS instead"
            )
        return env

    @model_validator(mode="after")
    def _distinct_mount_paths(self) -> OperatorSettings:
        """The API server refuses a pod with two volumes at one mountPath: say so at start-up."""
        if (
            self.input_volume_claim
            and self.output_volume_claim
            and self.input_mount_path == self.output_mount_path
        ):
            raise ValueError(
                f"input_mount_path and output_mount_path are both {self.input_mount_path!r}"
            )
        return self


@lru_cache
def operator_settings() -> OperatorSettings:
    return OperatorSettings()
