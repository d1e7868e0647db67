"""Facade settings, read from the environment (pydantic-settings).

Extends the pipeline's settings (``ALLOWED_ROOTS``, ``S3_*``, ``CLAP_CHECKPOINT``, ...), which
the facade needs to validate inputs and read manifests exactly as the pipeline does.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from audioproc.settings import PipelineSettings

IN_CLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class BackendName(StrEnum):
    auto = "auto"
    kubernetes = "kubernetes"
    local = "local"


def _default_namespace() -> str:
    if IN_CLUSTER_NAMESPACE_FILE.is_file():
        return IN_CLUSTER_NAMESPACE_FILE.read_text().strip()
    return "default"


class ApiSettings(PipelineSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    api_backend: BackendName = Field(
        default=BackendName.auto,
        description="kubernetes, local, or auto: kubernetes when a kubeconfig or in-cluster config exists.",
    )
    api_tokens_file: Path | None = Field(
        default=None,
        description="File of bearer tokens: 'token', 'name:token' or 'name:token:admin' lines ('#' "
        "comments; see docs/api.md). Unset: no authentication.",
    )
    api_max_body_bytes: int = Field(default=8 * 1024**2, gt=0, description="Largest request body.")
    api_wait_timeout_s: float = Field(
        default=300.0, gt=0, description="Longest a /process?wait=true call may wait."
    )
    api_log_level: str = "INFO"
    api_max_waiters: int = Field(
        default=64,
        ge=1,
        description="Most /process?wait=true calls waiting at once; one more gets 503 with Retry-After.",
    )
    api_worker_niceness: int = Field(
        default=10,
        ge=0,
        le=19,
        description="CPU priority of local workers below the server's (nice increment): requests are "
        "served first when the CPUs are busy; 0 competes equally with other processes on the machine.",
    )
    api_read_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Longest a client may take to send a whole request (headers and body) before the "
        "connection is dropped.",
    )

    output_uri: str = Field(
        default="",
        description="Where manifests go (file:///dir or s3://bucket/prefix); a task writes under "
        "<output_uri>/<task_id>/. Default: file:///data/audioproc on Kubernetes, "
        "./audioproc-output locally.",
    )

    # kubernetes backend
    api_namespace: str = Field(
        default_factory=_default_namespace, description="Namespace of AudioJobs."
    )
    kubeconfig: Path | None = Field(
        default=None, description="Kubeconfig file; else in-cluster or ~/.kube/config."
    )
    api_items_from_threshold: int = Field(
        default=2000,
        ge=1,
        description="Kubernetes backend: a /batch of more items than this is written to the output "
        "storage as an item list (JSON Lines, <output_uri>/<task_id>.items.jsonl) that its AudioJob "
        "names in spec.itemsFrom, instead of listing the items in the AudioJob (etcd's object size "
        "limit); the operator must be able to read the output storage.",
    )

    # local backend
    max_concurrent_videos: int = Field(
        default_factory=lambda: max(1, os.cpu_count() or 1),
        ge=1,
        description="Items processed at once by the local backend's CPU workers.",
    )
    api_items_per_gpu: int = Field(
        default=1,
        ge=1,
        description="Local backend: items processed at once per GPU (GPU work is serialised per "
        "GPU by default). Formerly MAX_GPU_WORKERS, which is read with a DeprecationWarning.",
    )
    api_state_dir: Path = Field(
        default=Path("audioproc-state"),
        description="Local backend: where the SQLite task store lives.",
    )
    api_task_retention_s: float = Field(
        default=7 * 24 * 3600.0,
        ge=0,
        description="Local backend: seconds a finished task is kept in the task store (its outputs "
        "stay in storage); 0 keeps tasks forever.",
    )
    api_item_retries: int = Field(
        default=2,
        ge=0,
        le=100,
        description="Local backend: how many times an item is retried after its worker process died "
        "(e.g. OOM-killed) before the item fails.",
    )

    @model_validator(mode="before")
    @classmethod
    def _read_deprecated_max_gpu_workers(cls, data: Any) -> Any:
        """``MAX_GPU_WORKERS`` as ``API_ITEMS_PER_GPU``, with a DeprecationWarning, unless the new
        name is set: the operator's ``MAX_GPU_WORKERS`` means GPUs handed out, a different thing."""
        old = next((v for k, v in os.environ.items() if k.upper() == "MAX_GPU_WORKERS"), None)
        if old is None or not isinstance(data, dict):
            return data
        if any(str(key).lower() == "api_items_per_gpu" for key in data):
            return data
        warnings.warn(
            "MAX_GPU_WORKERS is deprecated for the facade; set API_ITEMS_PER_GPU (items at once per GPU)",
            DeprecationWarning,
            stacklevel=2,
        )
        return {**data, "api_items_per_gpu": old}


def kubernetes_config_exists(settings: ApiSettings) -> bool:
    """Whether a cluster is configured: an explicit or default kubeconfig, or in-cluster env."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return True
    candidates = [settings.kubeconfig] if settings.kubeconfig else []
    candidates += [Path(p) for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    candidates.append(Path.home() / ".kube" / "config")
    return any(p.is_file() for p in candidates)


def resolve_backend(settings: ApiSettings) -> BackendName:
    if settings.api_backend is not BackendName.auto:
        return settings.api_backend
    return BackendName.kubernetes if kubernetes_config_exists(settings) else BackendName.local


def resolve_output(settings: ApiSettings, backend: BackendName) -> str:
    if settings.output_uri:
        return settings.output_uri.rstrip("/")
    if backend is BackendName.kubernetes:
        return "file:///data/audioproc"
    return (Path.cwd() / "audioproc-output").as_uri()


def state_dir_problem(path: Path) -> str | None:
    """Why the local backend cannot keep its task store in ``path`` (None: it can); creates it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as exc:
        return f"API_STATE_DIR={str(path)!r} cannot be created or written: {exc.strerror or exc}"
    return None
