"""Items x extractors: fetch and decode inputs, run extractors, write manifests.

Flow of :func:`process_items`::

    inputs ──(input workers: open_input + decode, running ahead)──> decoded items
    decoded items ──(batches of batch_items)──> each extractor's extract_batch on the device
    per item ──> manifest + artifacts ──> storage ──> ItemResult (on_result callback)

- A broken input (missing, corrupt, no audio, too long) fails its item only.
- One failing extractor is recorded with ``status: "error"``; the item's other extractors
  keep their results. Audio shorter than an extractor's ``min_samples`` is recorded so
  ("audio too short for ...") without running it. A failing batch is rerun item by item so that one item's failure
  does not spread to the others.
- A CUDA out-of-memory error moves that item to the CPU from the failing extractor on
  (the records say so in ``notes``) instead of failing it.
- ``jobs > 1`` decodes in that many worker processes; torch intra-op threads are set to
  ``cpu_count // jobs`` so that the decode workers and torch do not oversubscribe the cores.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from audioproc import metrics
from audioproc.decode import DecodedAudio
from audioproc.devices import device_kind
from audioproc.errors import (
    AudioTooShortError,
    ExtractorUnavailableError,
    InputError,
    UnknownExtractorError,
)
from audioproc.extractors.catalog import CATALOG
from audioproc.extractors.registry import get_extractor, resolve_names
from audioproc.fetch import (
    FetchFailure,
    SpilledAudio,
    fetch_and_decode,
    fetch_to_files,
    load_spilled,
)
from audioproc.models.manifest import AudioInfo, ExtractorRecord, Manifest
from audioproc.settings import PipelineSettings, pipeline_settings
from audioproc.storage import Storage, check_video_id, open_storage

if TYPE_CHECKING:
    from audioproc.extractors.base import Extractor, ExtractorOutput

log = logging.getLogger(__name__)


@dataclass
class ItemRequest:
    input_uri: str
    video_id: str
    extractors: list[str] | None = None  # None: the standard set


@dataclass
class ItemResult:
    video_id: str
    input_uri: str
    status: Literal["ok", "error"]
    manifest_uri: str | None  # file://... or s3://...
    device: str | None  # "cpu" or "cuda:0"
    error: str | None
    error_kind: Literal["input", "internal"] | None  # input errors are not worth retrying
    manifest: Manifest | None


# --------------------------------------------------------------------------- devices


def resolve_device(device: str, settings: PipelineSettings) -> torch.device:
    """``auto | cpu | cuda | gpu`` -> a torch device.

    ``auto`` is CUDA when a CUDA device is present and ``USE_GPU`` is on, else CPU.

    Raises:
        ValueError: an unknown name, or ``cuda`` asked for where there is none.
    """
    kind = device_kind(device)
    if kind == "auto":
        return (
            _accelerator(settings)
            if (settings.use_gpu and torch.cuda.is_available())
            else torch.device("cpu")
        )
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' was asked for but no CUDA device is available; use --device cpu or auto"
        )
    return _accelerator(settings)


def _accelerator(settings: PipelineSettings) -> torch.device:
    """The CUDA device of this process (one per process: CUDA_VISIBLE_DEVICES picks it).

    Caps this process's share of the device's memory at ``GPU_MEMORY_LIMIT`` so that a
    process sharing the GPU (another worker, the CLAP model) keeps room; past the cap
    torch raises the out-of-memory error that sends the item to the CPU.
    """
    device = torch.device("cuda", torch.cuda.current_device())
    torch.cuda.set_per_process_memory_fraction(settings.gpu_memory_limit, device)
    return device


def device_label(device: torch.device) -> str:
    """``cpu`` or ``cuda:N`` as written in manifests."""
    if device.type == "cpu":
        return "cpu"
    return f"{device.type}:{device.index if device.index is not None else 0}"


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA out-of-memory error (the typed one, or a library's RuntimeError saying so)."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def configure_threads(jobs: int) -> None:
    """Give torch ``cpu_count // jobs`` intra-op threads (at least one)."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, jobs)))


# --------------------------------------------------------------------------- items


@dataclass
class _Prepared:
    """An item whose input was decoded, on its way through the extractors."""

    request: ItemRequest
    names: list[str]
    audio: DecodedAudio
    device: torch.device
    records: dict[str, ExtractorRecord] = field(default_factory=dict)
    artifacts: dict[str, np.ndarray] = field(default_factory=dict)
    tensors: dict[tuple[int, str], torch.Tensor] = field(default_factory=dict)

    def tensor(self, rate: int, device: torch.device) -> torch.Tensor:
        """The mono signal at ``rate`` Hz as a ``(n_samples,)`` float32 tensor on ``device``."""
        key = (rate, str(device))
        if key not in self.tensors:
            self.tensors[key] = torch.from_numpy(self.audio.signals[rate]).to(device)
        return self.tensors[key]


def _fail(request: ItemRequest, exc: BaseException, device: torch.device | None) -> ItemResult:
    """The result of an item that failed with ``exc``."""
    if isinstance(exc, InputError):
        return _failed(request, str(exc), "input", device)
    log.error("item %s failed: %s", request.video_id, "".join(traceback.format_exception(exc)))
    return _failed(request, f"{type(exc).__name__}: {exc}", "internal", device)


def _failed(
    request: ItemRequest,
    message: str,
    kind: Literal["input", "internal"],
    device: torch.device | None = None,
) -> ItemResult:
    return ItemResult(
        video_id=request.video_id,
        input_uri=request.input_uri,
        status="error",
        manifest_uri=None,
        device=device_label(device) if device is not None else None,
        error=message,
        error_kind=kind,
        manifest=None,
    )


def _plan(request: ItemRequest, settings: PipelineSettings) -> tuple[list[str], set[int]]:
    """Check the request; the extractors it runs and the sample rates (Hz) they need."""
    check_video_id(request.video_id)
    names = resolve_names(request.extractors)
    rates = set()
    for name in names:
        try:
            rates.add(get_extractor(name, settings).sample_rate)
        except Exception:  # recorded as that extractor's error by _run_extractor
            continue
    return names, rates or {16000}


def _run_extractor(name: str, batch: list[_Prepared], settings: PipelineSettings) -> None:
    """Run extractor ``name`` on every item of ``batch`` that asked for it; record the outcome."""
    wanting = [item for item in batch if name in item.names]
    if not wanting:
        return
    extractor = _available_extractor(name, wanting, settings)
    if extractor is None:
        return
    for group in _device_groups(extractor, wanting).values():
        if len(group) > 1:
            try:
                _extract(extractor, group, _extractor_device(extractor, group[0].device))
                continue
            except Exception:  # rerun one by one to find the item that fails
                log.warning("batch of %s failed; rerunning item by item", name, exc_info=True)
        for item in group:
            _extract_one(extractor, item)


def _available_extractor(
    name: str, wanting: list[_Prepared], settings: PipelineSettings
) -> Extractor | None:
    """Extractor ``name`` if it loads and can run here; else None, its error recorded in
    each item of ``wanting``."""
    try:
        extractor = get_extractor(name, settings)
        reason = extractor.unavailable_reason()
        if reason is not None:
            raise ExtractorUnavailableError(name, reason)
    except Exception as exc:  # one extractor's failure must not lose the others
        for item in wanting:
            _record_error(item, name, exc, item.device, 0.0, None)
        return None
    return extractor


def _device_groups(extractor: Extractor, items: list[_Prepared]) -> dict[str, list[_Prepared]]:
    """``items`` by the device the extractor runs them on; too short ones get their error."""
    groups: dict[str, list[_Prepared]] = {}
    for item in items:
        too_short = _too_short(extractor, item)
        if too_short is not None:  # a clear error instead of the maths failing on it
            _record_error(item, extractor.name, too_short, item.device, 0.0, extractor)
            continue
        groups.setdefault(str(_extractor_device(extractor, item.device)), []).append(item)
    return groups


def _too_short(extractor: Extractor, item: _Prepared) -> AudioTooShortError | None:
    """The error for an item with fewer samples at the extractor's rate than its ``min_samples``."""
    signal = item.audio.signals.get(extractor.sample_rate)
    if (
        signal is None or signal.size >= extractor.min_samples
    ):  # (a missing rate is recorded by _extract)
        return None
    return AudioTooShortError(
        extractor.name,
        item.audio.duration_s,
        signal.size,
        extractor.sample_rate,
        extractor.min_samples,
    )


def _extractor_device(extractor: Extractor, device: torch.device) -> torch.device:
    """``device``, or the CPU when the extractor does not support that device type."""
    return device if device.type in extractor.info.devices else torch.device("cpu")


def _extract(
    extractor: Extractor,
    items: list[_Prepared],
    device: torch.device,
    notes: list[str] | None = None,
) -> None:
    audios = [item.tensor(extractor.sample_rate, device) for item in items]
    started = time.perf_counter()
    outputs = extractor.extract_batch(audios, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed_ms = (time.perf_counter() - started) * 1000 / len(items)
    if len(outputs) != len(items):
        raise RuntimeError(
            f"extractor {extractor.name} returned {len(outputs)} outputs for {len(items)} inputs"
        )
    for item, output in zip(items, outputs, strict=True):
        _record_ok(item, extractor, output, device, elapsed_ms, notes or [])


def _extract_one(extractor: Extractor, item: _Prepared) -> None:
    device = _extractor_device(extractor, item.device)
    started = time.perf_counter()
    try:
        _extract(extractor, [item], device)
    except Exception as exc:
        if device.type != "cpu" and is_out_of_memory(exc):
            _fall_back_to_cpu(extractor, item, device, exc)
            return
        _record_error(
            item, extractor.name, exc, device, (time.perf_counter() - started) * 1000, extractor
        )


def _fall_back_to_cpu(
    extractor: Extractor, item: _Prepared, device: torch.device, exc: BaseException
) -> None:
    """After a CUDA OOM: this item runs the rest of its extractors on the CPU."""
    note = f"out of memory on {device_label(device)} ({type(exc).__name__}); retried on cpu"
    log.warning("item %s, extractor %s: %s", item.request.video_id, extractor.name, note)
    item.tensors = {k: v for k, v in item.tensors.items() if k[1] == "cpu"}
    if device.type == "cuda":
        torch.cuda.empty_cache()
    item.device = torch.device("cpu")
    started = time.perf_counter()
    try:
        _extract(extractor, [item], item.device, notes=[note])
    except Exception as retry_exc:
        _record_error(
            item,
            extractor.name,
            retry_exc,
            item.device,
            (time.perf_counter() - started) * 1000,
            extractor,
            notes=[note],
        )


def _record_ok(
    item: _Prepared,
    extractor: Extractor,
    output: ExtractorOutput,
    device: torch.device,
    elapsed_ms: float,
    notes: list[str],
) -> None:
    files = {}
    for artifact, array in output.artifacts.items():
        file_name = f"{extractor.name}.{artifact}.npy"
        item.artifacts[file_name] = np.asarray(array)
        files[artifact] = file_name
    item.records[extractor.name] = ExtractorRecord(
        name=extractor.name,
        version=extractor.info.version,
        device=device_label(device),
        sample_rate=extractor.sample_rate,
        status="ok",
        duration_ms=elapsed_ms,
        features=output.features,
        artifacts=files,
        notes=[*notes, *output.notes],
    )
    metrics.record_extractor_run(extractor.name, device.type, "ok", elapsed_ms / 1000)


def _record_error(
    item: _Prepared,
    name: str,
    exc: BaseException,
    device: torch.device,
    elapsed_ms: float,
    extractor: Extractor | None,
    notes: list[str] | None = None,
) -> None:
    expected = isinstance(
        exc, (ExtractorUnavailableError, AudioTooShortError)
    )  # not a bug: no traceback
    if not expected:
        log.error(
            "extractor %s failed on %s: %s",
            name,
            item.request.video_id,
            "".join(traceback.format_exception(exc)),
        )
    info = CATALOG[name]
    message = str(exc) if expected else f"{type(exc).__name__}: {exc}"
    item.records[name] = ExtractorRecord(
        name=name,
        version=info.version,
        device=device_label(device),
        sample_rate=extractor.sample_rate if extractor is not None else None,
        status="error",
        duration_ms=elapsed_ms,
        error=message,
        notes=notes or [],
    )
    # No extractor object: it could not be loaded or is unavailable, so no code of it ran.
    metrics.record_extractor_run(
        name, device.type, "error", elapsed_ms / 1000 if extractor is not None else None
    )


def _finish(item: _Prepared, storage: Storage) -> ItemResult:
    records = [item.records[name] for name in item.names]
    main_rate = max(item.audio.signals)
    manifest = Manifest(
        video_id=item.request.video_id,
        input_uri=item.request.input_uri,
        created_at=datetime.now(UTC),
        audio=AudioInfo(
            duration_s=item.audio.duration_s, sample_rate=main_rate, source=item.audio.source
        ),
        device=device_label(item.device),
        extractors=records,
        errors=[
            *item.audio.notes,
            *(f"{r.name}: {r.error}" for r in records if r.status == "error"),
        ],
    )
    manifest_uri = storage.write_item(item.request.video_id, manifest, item.artifacts)
    return ItemResult(
        video_id=item.request.video_id,
        input_uri=item.request.input_uri,
        status="ok",
        manifest_uri=manifest_uri,
        device=manifest.device,
        error=None,
        error_kind=None,
        manifest=manifest,
    )


# --------------------------------------------------------------------------- entry points


def process_item(
    item: ItemRequest, output: str, device: str = "auto", settings: PipelineSettings | None = None
) -> ItemResult:
    """Process one item; see :func:`process_items`."""
    return process_items([item], output, device=device, settings=settings)[0]


def process_items(
    items: Iterable[ItemRequest],
    output: str,
    device: str = "auto",
    settings: PipelineSettings | None = None,
    jobs: int = 1,
    on_result: Callable[[ItemResult], None] | None = None,
    threads: int | None = None,
) -> list[ItemResult]:
    """Process ``items`` and write one manifest each under ``output``.

    Args:
        items: what to process; each item's extractors default to the standard set.
        output: a directory, ``file:///dir`` or ``s3://bucket/prefix``; the manifest of an
            item goes to ``<output>/<video_id>/manifest.json``.
        device: ``auto | cpu | cuda`` (``gpu`` means ``cuda``).
        jobs: input workers (fetch + decode) running ahead of the extractors.
        threads: torch intra-op threads (None: ``cpu_count // jobs``); a caller running
            several of these at once (the facade's workers) gives its share of the cores.
        on_result: called with each item's result as soon as it is written.

    Returns:
        One result per item, in the order of ``items``. Never raises for an item's failure.

    Raises:
        ValueError: ``device`` is unknown or not present, or ``output`` is not a valid location.
        OutputError: ``output`` cannot take results (read-only, a file in the way, S3
            refusing writes); found by :func:`~audioproc.storage.probe_output` before any work.
    """
    settings = settings or pipeline_settings()
    torch_device = resolve_device(device, settings)
    storage = open_storage(output, settings)
    storage.probe()  # an output that cannot take results is found before any extractor runs
    if threads is None:
        configure_threads(jobs)
    else:
        torch.set_num_threads(threads)
    batch_items = settings.batch_items or (8 if torch_device.type == "cuda" else 1)
    items = list(items)
    _load_extractors(items, settings)
    results: list[ItemResult] = []

    def emit(result: ItemResult) -> None:
        results.append(result)
        metrics.record_item(result.status)
        if on_result is not None:
            on_result(result)

    for ready in _batches(
        _prepared_items(items, torch_device, settings, jobs, batch_items), batch_items
    ):
        batch = [entry for entry in ready if isinstance(entry, _Prepared)]
        names = list(dict.fromkeys(name for item in batch for name in item.names))
        for name in names:
            _run_extractor(name, batch, settings)
        for entry in ready:
            if isinstance(entry, ItemResult):
                emit(entry)
                continue
            try:
                emit(_finish(entry, storage))
            except Exception as exc:  # a storage failure fails this item only
                emit(_fail(entry.request, exc, entry.device))
            finally:
                entry.tensors.clear()
    return results


def _load_extractors(items: list[ItemRequest], settings: PipelineSettings) -> None:
    """Load every extractor the items name, here, before the input workers start.

    The registry loads lazily and is not meant to be raced by threads; a load failure is
    left for :func:`_run_extractor` to record in each manifest.
    """
    names: dict[str, None] = {}
    for item in items:
        try:
            names.update(dict.fromkeys(resolve_names(item.extractors)))
        except UnknownExtractorError:
            continue  # that item fails on its own
    for name in names:
        try:
            get_extractor(name, settings)
        except Exception:
            continue


#: What an input worker hands back: decoded audio (thread), or spilled audio or a failure (process).
_Fetched = DecodedAudio | SpilledAudio | FetchFailure


#: An item handed to the input workers: its request, its extractors, and the work (or its
#: failure, for a request that failed before any work).
_Pending = tuple[ItemRequest, list[str], Future[_Fetched] | ItemResult]


def _prepared_items(
    items: list[ItemRequest],
    device: torch.device,
    settings: PipelineSettings,
    jobs: int,
    batch_items: int,
) -> Iterator[_Prepared | ItemResult]:
    """Decoded items (or failed results) in input order, with input workers running ahead.

    ``jobs == 1``: one thread fetches and decodes the next items while the extractors run.
    ``jobs > 1``: ``jobs`` worker processes (forkserver: they never import torch) decode in
    parallel and hand the audio over through memory-mapped files (see ``fetch.py``).
    At most ``jobs + batch_items`` decoded inputs are held at once, which bounds memory.
    """
    decode: Callable[[str, set[int], PipelineSettings], _Fetched]
    if jobs > 1:
        pool: Executor = ProcessPoolExecutor(max_workers=jobs, mp_context=worker_context())
        decode = fetch_to_files
    else:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audioproc-input")
        decode = fetch_and_decode

    def submit(request: ItemRequest) -> _Pending:
        try:
            names, rates = _plan(request, settings)
        except Exception as exc:  # a bad request fails only itself
            return request, [], _fail(request, exc, None)
        return request, names, pool.submit(decode, request.input_uri, rates, settings)

    with pool:
        queue = iter(items)
        pending = deque(submit(request) for request in islice(queue, max(1, jobs + batch_items)))
        while pending:
            yield _collected(*pending.popleft(), device)
            next_request = next(queue, None)
            if next_request is not None:
                pending.append(submit(next_request))


def _collected(
    request: ItemRequest,
    names: list[str],
    work: Future[_Fetched] | ItemResult,
    device: torch.device,
) -> _Prepared | ItemResult:
    """The decoded item an input worker handed back, or its failure."""
    if isinstance(work, ItemResult):
        return work
    try:
        outcome = work.result()
    except Exception as exc:  # a broken item fails only itself
        return _fail(request, exc, None)
    if isinstance(outcome, FetchFailure):
        return _failed(request, outcome.message, outcome.kind)
    audio = load_spilled(outcome) if isinstance(outcome, SpilledAudio) else outcome
    if audio.decode_s is not None:
        metrics.record_decode(audio.decode_s)
    return _Prepared(request=request, names=names, audio=audio, device=device)


def worker_context() -> multiprocessing.context.BaseContext:
    """Forkserver processes: forked from a clean server, so free of torch's threads and locks.

    Each worker imports ``audioproc.fetch`` (PyAV, numpy; not torch) and, as multiprocessing
    does, the ``__main__`` module of the parent: keep heavy imports of entry scripts inside
    functions (the ``audioproc`` command line does).
    """
    return multiprocessing.get_context("forkserver")


def _batches(
    entries: Iterator[_Prepared | ItemResult], size: int
) -> Iterator[list[_Prepared | ItemResult]]:
    batch: list[_Prepared | ItemResult] = []
    for entry in entries:
        batch.append(entry)
        if sum(isinstance(e, _Prepared) for e in batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
