"""What runs inside the local backend's worker processes (started with ``spawn``).

A worker processes one item per call with the pipeline's ``process_item``. Workers die with
the service (``PR_SET_PDEATHSIG``), so a killed service leaves no orphan still writing
manifests while its restarted successor runs the same item again.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from importlib import import_module
from typing import Any

_PR_SET_PDEATHSIG = 1
DEFAULT_RUNNER = "audioproc.runner:process_item"


def init_worker(parent_pid: int, cuda_device: int | None, threads: int) -> None:
    """Process initializer: die with the parent, see one GPU (or none), share the CPU fairly."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)
    os.environ["CUDA_VISIBLE_DEVICES"] = "" if cuda_device is None else str(cuda_device)
    # Set before torch is first imported in this process.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


def run_item(
    runner: str,
    task_id: str,
    input_uri: str,
    video_id: str,
    extractors: list[str] | None,
    output: str,
    device: str,
    settings_json: str,
) -> dict[str, Any]:
    """Process one item into ``<output>/<task_id>/<video_id>/manifest.json``; return its result."""
    from audioproc.settings import PipelineSettings

    module_name, func_name = runner.split(":")
    module = import_module(module_name)
    process_item, ItemRequest = getattr(module, func_name), module.ItemRequest
    settings = PipelineSettings.model_validate_json(settings_json)
    result = process_item(
        ItemRequest(input_uri=input_uri, video_id=video_id, extractors=extractors),
        output=f"{output}/{task_id}",
        device=device,
        settings=settings,
    )
    return {
        "status": result.status,
        "manifest_uri": result.manifest_uri,
        "device": result.device,
        "error": result.error,
    }
