"""One place that builds boto3 S3 clients from the settings (S3_* environment)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client  # boto3-stubs (dev extra): types only

    from audioproc.settings import PipelineSettings


def make_s3_client(settings: PipelineSettings) -> S3Client:
    """A boto3 S3 client for ``S3_ENDPOINT_URL`` (AWS when unset) with retries and backoff.

    botocore's ``standard`` retry mode retries throttling, 5xx responses and connection
    errors: ``S3_MAX_ATTEMPTS`` attempts in all, with exponential backoff and jitter.
    Path-style addressing keeps S3-compatible stores (MinIO, moto, Ceph) working.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "total_max_attempts": settings.s3_max_attempts},
        s3={"addressing_style": "path"} if settings.s3_endpoint_url else {},
        connect_timeout=10,
        read_timeout=60,
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=settings.s3_secret_access_key,
        region_name=settings.s3_region,
        config=config,
    )
