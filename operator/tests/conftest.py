from __future__ import annotations

import pytest

from audioproc.models.audiojob import AudioJobSpec
from audioproc_operator.builder import AudioJobRef
from audioproc_operator.settings import OperatorSettings


def make_ref(n_items: int = 3, name: str = "batch", **spec: object) -> AudioJobRef:
    items = [{"inputUri": f"s3://media/v{i}.mp4", "videoId": f"v{i}"} for i in range(n_items)]
    return AudioJobRef(
        name=name, namespace="team-a", uid="0000-uid",
        spec=AudioJobSpec.model_validate({"items": items, **spec}),
    )


@pytest.fixture
def settings() -> OperatorSettings:
    return OperatorSettings(_env_file=None)  # type: ignore[call-arg]
