"""The local backend's dispatch: GPU work serialised per GPU, auto spills to CPU, per-task caps.

The dispatcher is not started: ``_claim_next`` is called by hand, so which item goes to which
lane is observed exactly. (The lanes' processes never start here; a GPU is only counted.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from audioproc_api.backends.base import Submission, new_task_id
from audioproc_api.backends.local import LocalBackend
from audioproc_api.routes import build_spec
from audioproc_api.schemas import BatchItem, TaskKind
from tests.facade_support import FAST_EXTRACTORS, Media, local_settings, make_client


def _submit(
    backend: LocalBackend, media: Media, n: int, use_gpu: bool | None, concurrency: int = 10
) -> str:
    items = [BatchItem(input_uri=str(media.good[0]), video_id=f"v{i}") for i in range(n)]
    task_id = new_task_id(TaskKind.batch)
    backend.submit(
        Submission(
            task_id, TaskKind.batch, build_spec(items, use_gpu, concurrency, backend.output), "r"
        )
    )
    return task_id


@pytest.fixture
def backend(tmp_path: Path, media: Media):
    settings = local_settings(tmp_path, media, max_concurrent_videos=2, api_items_per_gpu=1)
    local = LocalBackend(settings, settings.output_uri, gpus=2)
    yield local
    local.close()


def test_gpu_items_are_serialised_per_gpu_and_auto_spills_to_cpu(
    backend: LocalBackend, media: Media
) -> None:
    gpu_task = _submit(backend, media, 5, use_gpu=True)
    auto_task = _submit(backend, media, 5, use_gpu=None)
    cpu_task = _submit(backend, media, 5, use_gpu=False)

    claims = []
    while (job := backend._claim_next()) is not None:
        claims.append((job.task_id, job.lane.name))

    # one item per GPU, then the CPU lane's two slots: auto items spill there, cpu items wait
    assert claims == [
        (gpu_task, "cuda:0"),
        (gpu_task, "cuda:1"),
        (auto_task, "cpu"),
        (auto_task, "cpu"),
    ]
    statuses = {t: backend.get(t) for t in (gpu_task, auto_task, cpu_task)}
    assert [i.status.value for i in statuses[gpu_task].items].count("processing") == 2
    assert all(i.status.value == "pending" for i in statuses[cpu_task].items)


def test_a_task_concurrency_caps_its_running_items(backend: LocalBackend, media: Media) -> None:
    capped = _submit(backend, media, 5, use_gpu=False, concurrency=1)
    other = _submit(backend, media, 5, use_gpu=False)
    claims = [(job.task_id, job.lane.name) for job in iter(backend._claim_next, None)]
    assert claims == [(capped, "cpu"), (other, "cpu")]


def test_use_gpu_is_accepted_when_a_gpu_is_counted(backend: LocalBackend, media: Media) -> None:
    assert backend.get(_submit(backend, media, 1, use_gpu=True)).device.value == "gpu"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_process_on_the_gpu(tmp_path: Path, media: Media) -> None:
    with make_client(local_settings(tmp_path, media, use_gpu=True)) as client:
        body = {
            "input_uri": str(media.good[0]),
            "video_id": "gpu",
            "extractors": FAST_EXTRACTORS,
            "use_gpu": True,
        }
        payload = client.post("/process", params={"wait": "true"}, json=body).json()
        assert payload["status"] == "completed"
        assert payload["manifest"]["device"].startswith("cuda")
