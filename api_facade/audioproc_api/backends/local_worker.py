"""What runs inside the local backend's worker processes (forked from a forkserver).

A worker processes one item per call with the pipeline's ``process_item``.

Workers must not outlive a killed (SIGKILL) service: an orphan would finish an item behind the
restarted service's back, which then runs it again. The forkserver exits when the service's
end of its "alive" pipe closes; each worker dies with the forkserver (``PR_SET_PDEATHSIG``).
For that, a worker must not hold a copy of the pipe's write end itself, which multiprocessing
hands every forked child (so it could start processes of its own): it closes it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import Any

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """SIGKILL this process when its parent (thread) ends (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent or parent == 1:  # the parent is already gone
        os._exit(1)


def _release_forkserver() -> None:
    """Close this child's copy of the forkserver's alive pipe (see the module docstring)."""
    from multiprocessing import forkserver

    server = forkserver._forkserver  # no public API for this
    if getattr(server, "_forkserver_alive_fd", None) is not None:
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None


def init_worker(cuda_device: int | None, threads: int) -> None:
    """Process initializer: die with the parent, see one GPU (or none), share the CPU fairly."""
    _release_forkserver()
    die_with_parent()
    # CUDA is initialised lazily, on first use in this process: this still takes effect.
    os.environ["CUDA_VISIBLE_DEVICES"] = "" if cuda_device is None else str(cuda_device)
    import torch  # already imported by the forkserver's preload

    torch.set_num_threads(threads)


def run_item(
    task_id: str,
    input_uri: str,
    video_id: str,
    extractors: list[str] | None,
    output: str,
    device: str,
    settings_json: str,
) -> dict[str, Any]:
    """Process one item into ``<output>/<task_id>/<video_id>/manifest.json``; return its result."""
    from audioproc.runner import ItemRequest, process_item
    from audioproc.settings import PipelineSettings

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
        "error": f"{result.error_kind} error: {result.error}" if result.error else None,
    }
