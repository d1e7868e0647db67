"""AudioJob references for the operator's unit tests.

A module of its own (not conftest) because every test folder's conftest is importable
as ``conftest`` and the first one on ``sys.path`` wins when the whole suite runs.
"""

from __future__ import annotations

from audioproc.models.audiojob import AudioJobSpec
from audioproc_operator.builder import AudioJobRef


def make_ref(n_items: int = 3, name: str = "batch", **spec: object) -> AudioJobRef:
    items = [{"inputUri": f"s3://media/v{i}.mp4", "videoId": f"v{i}"} for i in range(n_items)]
    return AudioJobRef(
        name=name,
        namespace="team-a",
        uid="0000-uid",
        spec=AudioJobSpec.model_validate({"items": items, **spec}),
    )
