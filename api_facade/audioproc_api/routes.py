"""The REST endpoints. Handlers are thin: validate, build an AudioJob spec, call the backend.

Handlers are plain ``def``: backends block (SQLite, the Kubernetes client), so FastAPI runs
them in its thread pool.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from audioproc.models import AudioJobSpec, Manifest
from audioproc.models.audiojob import AudioJobItem, Device

from audioproc_api.auth import require_token
from audioproc_api.backends import Backend, Submission
from audioproc_api.backends.base import new_task_id
from audioproc_api.observability import Metrics
from audioproc_api.pipeline import InputError, validate_uri
from audioproc_api.schemas import (
    BatchItem,
    BatchRequest,
    Cancelled,
    ExtractorEntry,
    ExtractorList,
    Health,
    ProcessRequest,
    ProcessResult,
    TaskAccepted,
    TaskKind,
    TaskPage,
    TaskStatus,
    TaskSummary,
    TaskView,
)
from audioproc_api.settings import ApiSettings

log = logging.getLogger(__name__)
api = APIRouter(dependencies=[Depends(require_token)])
health = APIRouter(tags=["health"])


def get_backend(request: Request) -> Backend:
    return request.app.state.backend


def get_settings(request: Request) -> ApiSettings:
    return request.app.state.settings


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


BackendDep = Annotated[Backend, Depends(get_backend)]
SettingsDep = Annotated[ApiSettings, Depends(get_settings)]


def device_of(use_gpu: bool | None) -> Device:
    return Device.auto if use_gpu is None else Device.gpu if use_gpu else Device.cpu


def _invalid(loc: tuple[str | int, ...], message: str, value: object) -> dict:
    return {"loc": ("body", *loc), "msg": message, "type": "value_error", "input": value}


def validate_items(
    items: list[BatchItem] | list[ProcessRequest],
    settings: ApiSettings,
    extractors: list[ExtractorEntry],
    prefix: tuple[str | int, ...],
) -> None:
    """What pydantic cannot check: URIs against this deployment's roots and schemes, extractors
    that exist but cannot run here, duplicate video ids (they would share a manifest)."""
    unavailable = {e.name: e.reason for e in extractors if not e.available}
    errors, seen = [], set()
    for index, item in enumerate(items):
        loc = (*prefix, index) if prefix else ()
        try:
            validate_uri(item.input_uri, settings)
        except InputError as exc:
            errors.append(_invalid((*loc, "input_uri"), str(exc), item.input_uri))
        except ValueError as exc:  # urllib's own complaints, e.g. "Invalid IPv6 URL" for file://[
            errors.append(_invalid((*loc, "input_uri"), f"malformed URI: {exc}", item.input_uri))
        for name in item.extractors or ():
            if name.value in unavailable:
                errors.append(_invalid((*loc, "extractors"), f"{name.value} is unavailable: {unavailable[name.value]}", name.value))
        if item.video_id in seen:
            errors.append(_invalid((*loc, "video_id"), "duplicate video_id in this batch", item.video_id))
        seen.add(item.video_id)
    if errors:
        raise RequestValidationError(errors)


def build_spec(
    items: list[BatchItem] | list[ProcessRequest], use_gpu: bool | None, concurrency: int | None, output: str
) -> AudioJobSpec:
    spec = AudioJobSpec(
        items=[AudioJobItem(input_uri=i.input_uri, video_id=i.video_id, extractors=i.extractors) for i in items],
        device=device_of(use_gpu),
        output=output,
    )
    if concurrency is not None:
        spec.concurrency = concurrency
    return spec


def submit(request: Request, kind: TaskKind, spec: AudioJobSpec) -> str:
    backend: Backend = request.app.state.backend
    task_id = backend.submit(Submission(new_task_id(kind), kind, spec, request.state.request_id))
    log.info("task created", extra={"task_id": task_id, "kind": kind.value, "items": len(spec.items),
                                    "device": spec.device.value})
    metrics = get_metrics(request)
    metrics.tasks_created.labels(kind.value).inc()
    metrics.items_submitted.labels(kind.value).inc(len(spec.items))
    return task_id


def accepted(request: Request, task_id: str) -> JSONResponse:
    body = TaskAccepted(task_id=task_id, status_url=str(request.url_for("get_status", task_id=task_id).path))
    return JSONResponse(body.model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)


def cached_extractors(request: Request) -> list[ExtractorEntry]:
    if request.app.state.extractors is None:
        request.app.state.extractors = request.app.state.backend.extractors()
    return request.app.state.extractors


@api.post(
    "/process",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        202: {"model": TaskAccepted, "description": "Queued (or the wait timed out)."},
        200: {"model": ProcessResult, "description": "Waited, and the task finished."},
    },
)
def process(
    body: ProcessRequest,
    request: Request,
    backend: BackendDep,
    settings: SettingsDep,
    wait: Annotated[bool, Query(description="Wait for the manifest.")] = False,
    timeout: Annotated[float | None, Query(gt=0, description="Seconds to wait (capped by API_WAIT_TIMEOUT_S).")] = None,
) -> JSONResponse:
    """Process one input. With ``wait=true`` (or ``sync``), return its manifest when done in time."""
    validate_items([body], settings, cached_extractors(request), prefix=())
    task_id = submit(request, TaskKind.process, build_spec([body], body.use_gpu, 1, request.app.state.output))
    if not (wait or body.sync):
        return accepted(request, task_id)
    view = backend.wait(task_id, min(timeout or settings.api_wait_timeout_s, settings.api_wait_timeout_s))
    if not view.status.finished:
        return accepted(request, task_id)
    manifest = backend.read_manifest(task_id, body.video_id) if view.succeeded else None
    result = ProcessResult(task_id=task_id, status=view.status, manifest=manifest, error=view.error)
    return JSONResponse(result.model_dump(mode="json", by_alias=True), status_code=status.HTTP_200_OK)


@api.post("/batch", status_code=status.HTTP_202_ACCEPTED, response_model=TaskAccepted)
def batch(body: BatchRequest, request: Request, settings: SettingsDep) -> JSONResponse:
    """Process up to 10,000 inputs as one task."""
    validate_items(body.items, settings, cached_extractors(request), prefix=("items",))
    spec = build_spec(body.items, body.use_gpu, body.concurrency, request.app.state.output)
    return accepted(request, submit(request, TaskKind.batch, spec))


@api.get("/status/{task_id}", response_model=TaskView, name="get_status")
def get_status(
    task_id: str,
    backend: BackendDep,
    items_offset: Annotated[int, Query(ge=0, description="Index of the first item to return.")] = 0,
    items_limit: Annotated[int, Query(ge=1, le=1000, description="Most items to return.")] = 100,
) -> TaskView:
    """The task, with a page of its items (``items_next_offset`` gives the next page)."""
    return backend.get(task_id, items_offset=items_offset, items_limit=items_limit)


@api.get("/results/{task_id}/{video_id}", response_model=Manifest, response_model_by_alias=True)
def get_result(task_id: str, video_id: str, backend: BackendDep) -> Manifest:
    """The item's audio_manifest_v1."""
    return backend.read_manifest(task_id, video_id)


@api.delete("/tasks/{task_id}", response_model=Cancelled)
def cancel_task(task_id: str, backend: BackendDep) -> Cancelled:
    """Cancel: queued items never start, running ones are stopped or discarded; the task is gone."""
    backend.cancel(task_id)
    return Cancelled(task_id=task_id)


@api.get("/tasks", response_model=TaskPage)
def list_tasks(
    backend: BackendDep,
    status_filter: Annotated[TaskStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=4096)] = None,
) -> TaskPage:
    """Tasks in creation order, a page at a time."""
    views, next_cursor = backend.list(status_filter, limit, cursor)
    return TaskPage(
        tasks=[TaskSummary(**v.model_dump(include=set(TaskSummary.model_fields))) for v in views],
        next_cursor=next_cursor,
    )


@api.get("/extractors", response_model=ExtractorList)
def list_extractors(request: Request) -> ExtractorList:
    """The extractors this deployment can run, and why any cannot."""
    return ExtractorList(available=cached_extractors(request))


@health.get("/healthz", response_model=Health)
def healthz(backend: BackendDep) -> Health:
    """The process is alive."""
    return Health(status="ok", backend=backend.name)


@health.get("/readyz", response_model=Health, responses={503: {"model": Health}})
def readyz(backend: BackendDep) -> JSONResponse:
    """The backend can take work: API server up and CRD installed, or local workers running."""
    reason = backend.not_ready_reason()
    body = Health(status="ready" if reason is None else "not ready", backend=backend.name, detail=reason)
    return JSONResponse(body.model_dump(), status_code=200 if reason is None else 503)


@health.get("/metrics", response_class=Response)
def metrics(request: Request) -> Response:
    return Response(generate_latest(get_metrics(request).registry), media_type=CONTENT_TYPE_LATEST)
