"""Fixtures of the chart's tests: the chart rendered by `helm template`, once per module."""

from __future__ import annotations

from typing import Any

import pytest

from chart_support import GPU_S3_VALUES, render


@pytest.fixture(scope="module")
def default_objects() -> list[dict[str, Any]]:
    """The default values, in namespace ``audio``."""
    return render("audio")


@pytest.fixture(scope="module")
def gpu_s3_objects() -> list[dict[str, Any]]:
    """ci/gpu-s3-values.yaml (GPU pool, S3 storage, watched namespace ``media-jobs``)."""
    return render("media", values_files=[GPU_S3_VALUES])
