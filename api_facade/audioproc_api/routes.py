"""The REST endpoints. Handlers are thin: validate, build an AudioJob spec, call the backend.

Handlers are ``async``; backend calls block (SQLite, the Kubernetes client), so they run in the
facade's own thread pools (see ``concurrency``), never in anyio's default one. Health, readiness
and metrics answer whatever the load.

Scopes: every task records the name of the token that submitted it (``submitter``); a caller
sees only the tasks its token may see (``Caller.may_see``). Another tenant's task is a 404, as
if it did not exist, so task ids do not leak.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from audioproc.errors import InputError
from audioproc.models import AudioJobSpec, Manifest
from audioproc.models.audiojob import AudioJobItem, Device
from audioproc.sources import validate_uri
from audioproc_api.auth import Caller, CallerDep, require_token
from audioproc_api.backends import Backend, Submission, TaskNotFound
from audioproc_api.backends.base import new_task_id
from audioproc_api.concurrency import Concurrency, WaitersFull
from audioproc_api.observability import Metrics
from audioproc_api.schemas import (
    BatchRequest,
    Cancelled,
    ClusterObjects,
    ErrorBody,
    ExtractorEntry,
    ExtractorList,
    Health,
    MediaItem,
    ProcessRequest,
    ProcessResult,
    TaskAccepted,
    TaskKind,
    TaskOrder,
    TaskPage,
    TaskStatus,
    TaskSummary,
    TaskView,
    ValidationErrorBody,
)
from audioproc_api.settings import ApiSettings

log = logging.getLogger(__name__)


def _error(description: str, model: type = ErrorBody) -> dict[str, Any]:
    return {"model": model, "description": description}


#: Responses every API route may give (declared in the OpenAPI document with their bodies).
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: _error("Tokens are on and the bearer token is missing or unknown."),
    422: _error("The request is malformed; `detail` lists every problem.", ValidationErrorBody),
    503: _error("The backend cannot take the request now (see Retry-After)."),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _error("No such task visible to this token.")}
BODY_TOO_LARGE: dict[int | str, dict[str, Any]] = {
    413: _error("The body is larger than API_MAX_BODY_BYTES.")
}

api = APIRouter(dependencies=[Depends(require_token)], responses=COMMON_RESPONSES)
health = APIRouter(tags=["health"])


# app.state is untyped: these say what create_app put there.
async def get_backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


async def app_settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


async def get_concurrency(request: Request) -> Concurrency:
    concurrency: Concurrency = request.app.state.concurrency
    return concurrency


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


BackendDep = Annotated[Backend, Depends(get_backend)]
SettingsDep = Annotated[ApiSettings, Depends(app_settings)]
ConcurrencyDep = Annotated[Concurrency, Depends(get_concurrency)]


def device_of(use_gpu: bool | None) -> Device:
    return Device.auto if use_gpu is None else Device.gpu if use_gpu else Device.cpu


def _invalid(loc: tuple[str | int, ...], message: str, value: object) -> dict[str, Any]:
    return {"loc": ("body", *loc), "msg": message, "type": "value_error", "input": value}


def uri_problem(uri: str, settings: ApiSettings) -> str | None:
    """Why ``uri`` cannot be processed here, or None."""
    try:
        validate_uri(uri, settings)
    except InputError as exc:
        return str(exc)
    except ValueError as exc:  # urllib's own complaints, e.g. "Invalid IPv6 URL" for file://[
        return f"malformed URI: {exc}"
    return None


def validate_items(
    items: Sequence[MediaItem],
    settings: ApiSettings,
    extractors: list[ExtractorEntry],
    prefix: tuple[str | int, ...],
) -> None:
    """What pydantic cannot check: URIs against this deployment's roots and schemes, extractors
    that exist but cannot run here, duplicate video ids (they would share a manifest)."""
    unavailable = {e.name: e.reason for e in extractors if not e.available}
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    uri_problems: dict[str, str | None] = {}  # per distinct URI: a batch may repeat one
    for index, item in enumerate(items):
        loc = (*prefix, index) if prefix else ()
        if item.input_uri not in uri_problems:
            uri_problems[item.input_uri] = uri_problem(item.input_uri, settings)
        if (problem := uri_problems[item.input_uri]) is not None:
            errors.append(_invalid((*loc, "input_uri"), problem, item.input_uri))
        for name in item.extractors or ():
            if name.value in unavailable:
                errors.append(
                    _invalid(
                        (*loc, "extractors"),
                        f"{name.value} is unavailable: {unavailable[name.value]}",
                        name.value,
                    )
                )
        if item.video_id in seen:
            errors.append(
                _invalid((*loc, "video_id"), "duplicate video_id in this batch", item.video_id)
            )
        seen.add(item.video_id)
    if errors:
        raise RequestValidationError(errors)


def build_spec(
    items: Sequence[MediaItem], use_gpu: bool | None, concurrency: int | None, output: str
) -> AudioJobSpec:
    spec = AudioJobSpec(
        items=[
            AudioJobItem(input_uri=i.input_uri, video_id=i.video_id, extractors=i.extractors)
            for i in items
        ],
        device=device_of(use_gpu),
        output=output,
    )
    if concurrency is not None:
        spec.concurrency = concurrency
    return spec


async def submit(request: Request, kind: TaskKind, spec: AudioJobSpec, caller: Caller) -> str:
    concurrency = await get_concurrency(request)
    backend = await get_backend(request)
    submission = Submission(
        new_task_id(kind), kind, spec, request.state.request_id, submitter=caller.name
    )
    task_id = await concurrency.submit(backend.submit, submission)
    log.info(
        "task created",
        extra={
            "task_id": task_id,
            "kind": kind.value,
            "items": len(spec.items or []),
            "device": spec.device.value,
            "submitter": caller.name,
        },
    )
    metrics = get_metrics(request)
    metrics.tasks_created.labels(kind.value).inc()
    metrics.items_submitted.labels(kind.value).inc(len(spec.items or []))
    return task_id


def accepted(request: Request, task_id: str) -> JSONResponse:
    body = TaskAccepted(
        task_id=task_id, status_url=str(request.url_for("get_status", task_id=task_id).path)
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=status.HTTP_202_ACCEPTED)


async def backend_extractors(request: Request) -> list[ExtractorEntry]:
    """The catalog as the backend can run it (the local backend probes once, at start)."""
    concurrency = await get_concurrency(request)
    return await concurrency.run((await get_backend(request)).extractors)


async def validated(
    request: Request, items: Sequence[MediaItem], prefix: tuple[str | int, ...]
) -> None:
    """``validate_items`` in a backend thread (a URI check may resolve a host name)."""
    extractors = await backend_extractors(request)
    await request.app.state.concurrency.run(
        validate_items, items, request.app.state.settings, extractors, prefix
    )


async def visible_view(
    concurrency: Concurrency, backend: Backend, task_id: str, caller: Caller, **page: int | None
) -> TaskView:
    """The task, if this caller may see it; else TaskNotFound (404), exactly as for no task."""
    view = await concurrency.run(backend.get, task_id, **page)
    if not caller.may_see(view.submitter):
        raise TaskNotFound(task_id)
    return view


@api.post(
    "/process",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        202: {
            "model": TaskAccepted,
            "description": "Queued (or the wait timed out, or the server is shutting down).",
        },
        200: {"model": ProcessResult, "description": "Waited, and the task finished."},
        **BODY_TOO_LARGE,
        **NOT_FOUND,
    },
)
async def process(
    body: ProcessRequest,
    request: Request,
    caller: CallerDep,
    backend: BackendDep,
    settings: SettingsDep,
    concurrency: ConcurrencyDep,
    wait: Annotated[bool, Query(description="Wait for the manifest.")] = False,
    timeout: Annotated[
        float | None, Query(gt=0, description="Seconds to wait (capped by API_WAIT_TIMEOUT_S).")
    ] = None,
) -> JSONResponse:
    """Process one input. With ``wait=true`` (or ``sync``), return its manifest when done in time.

    A wait takes one of API_MAX_WAITERS slots; with none free the call is refused (503) and no
    task is created."""
    await validated(request, [body], prefix=())
    spec = build_spec([body], body.use_gpu, 1, request.app.state.output)
    if not (wait or body.sync):
        return accepted(request, await submit(request, TaskKind.process, spec, caller))
    with concurrency.wait_slot():
        task_id = await submit(request, TaskKind.process, spec, caller)
        timeout_s = min(timeout or settings.api_wait_timeout_s, settings.api_wait_timeout_s)
        view = await concurrency.wait_for(backend, task_id, timeout_s)
    if view is None or not view.status.finished:
        return accepted(request, task_id)
    manifest = (
        await concurrency.run(backend.read_manifest, task_id, body.video_id)
        if view.succeeded
        else None
    )
    result = ProcessResult(task_id=task_id, status=view.status, manifest=manifest, error=view.error)
    return JSONResponse(
        result.model_dump(mode="json", by_alias=True), status_code=status.HTTP_200_OK
    )


@api.post(
    "/batch",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskAccepted,
    responses=BODY_TOO_LARGE,
)
async def batch(body: BatchRequest, request: Request, caller: CallerDep) -> JSONResponse:
    """Process up to 10,000 inputs as one task."""
    await validated(request, body.items, prefix=("items",))
    spec = build_spec(body.items, body.use_gpu, body.concurrency, request.app.state.output)
    return accepted(request, await submit(request, TaskKind.batch, spec, caller))


@api.get(
    "/status/{task_id}",
    response_model=TaskView,
    name="get_status",
    responses={
        **NOT_FOUND,
        503: _error("`wait` was given and API_MAX_WAITERS waits are in progress."),
    },
)
async def get_status(
    task_id: str,
    caller: CallerDep,
    backend: BackendDep,
    settings: SettingsDep,
    concurrency: ConcurrencyDep,
    items_offset: Annotated[int, Query(ge=0, description="Index of the first item to return.")] = 0,
    items_limit: Annotated[int, Query(ge=1, le=1000, description="Most items to return.")] = 100,
    wait: Annotated[
        float | None,
        Query(
            gt=0,
            description=(
                "Long poll: answer once the task has finished, or after this many seconds (capped by "
                "API_WAIT_TIMEOUT_S) with the task as it is then."
            ),
        ),
    ] = None,
) -> TaskView:
    """The task, with a page of its items (``items_next_offset`` gives the next page).

    With ``wait``, the answer waits for the task to finish (a long poll: watching a task costs
    one request per ``wait`` seconds, not one per polling interval). A wait takes one of
    API_MAX_WAITERS slots (503 when none is free); a server shutting down answers at once."""
    page = {"items_offset": items_offset, "items_limit": items_limit}
    view = await visible_view(concurrency, backend, task_id, caller, **page)
    if wait is None or view.status.finished:
        return view
    with concurrency.wait_slot():
        await concurrency.wait_for(backend, task_id, min(wait, settings.api_wait_timeout_s))
    # read again, for the requested page of items (the wait's view has them all)
    return await visible_view(concurrency, backend, task_id, caller, **page)


#: Seconds between progress checks of an events stream (it wakes at once when the task ends).
EVENTS_INTERVAL_S = 1.0


def _event(name: str, view: TaskView) -> str:
    """One server-sent event: the task's status and counts (no items) as JSON."""
    body = view.model_dump(
        mode="json",
        include={
            "task_id",
            "status",
            "progress",
            "error",
            "total",
            "succeeded",
            "failed",
            "running",
        },
    )
    return f"event: {name}\ndata: {json.dumps(body)}\n\n"


async def task_progress(
    concurrency: Concurrency, backend: Backend, caller: Caller, view: TaskView
) -> AsyncIterator[str]:
    """The events of ``task_events``, from ``view`` (the task as first read) on."""
    yield _event("progress", view)
    while not view.status.finished:
        if await concurrency.wait_for(backend, view.task_id, EVENTS_INTERVAL_S) is None:
            return  # shutting down
        latest = await visible_view(concurrency, backend, view.task_id, caller, items_limit=0)
        counts = (latest.succeeded, latest.failed, latest.running)
        if not latest.status.finished and counts != (view.succeeded, view.failed, view.running):
            yield _event("progress", latest)
        view = latest
    yield _event("end", view)


@api.get(
    "/tasks/{task_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "`progress` events, then one `end`.",
        },
        **NOT_FOUND,
        503: _error("API_MAX_WAITERS waits are in progress."),
    },
)
async def task_events(
    task_id: str, caller: CallerDep, backend: BackendDep, concurrency: ConcurrencyDep
) -> StreamingResponse:
    """Server-sent events of the task: a ``progress`` event now and whenever its counts change
    (checked every second), then one ``end`` event with the final status, and the stream
    closes. A server shutting down ends the stream early (no ``end``: the client reconnects).
    The stream takes one of API_MAX_WAITERS slots while open."""
    first = await visible_view(concurrency, backend, task_id, caller, items_limit=0)
    with concurrency.wait_slot():  # WaitersFull (503) now, before the response starts
        pass

    async def events() -> AsyncIterator[str]:
        try:
            with concurrency.wait_slot():  # held inside the generator: released however it ends
                async for event in task_progress(concurrency, backend, caller, first):
                    yield event
        except (TaskNotFound, WaitersFull):  # cancelled meanwhile; slots taken since the check
            return

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


@api.get(
    "/tasks/{task_id}/backend",
    response_model=ClusterObjects,
    responses={404: _error("No such task visible to this token, or the local backend.")},
)
async def get_cluster_objects(
    task_id: str, caller: CallerDep, backend: BackendDep, concurrency: ConcurrencyDep
) -> ClusterObjects:
    """Kubernetes backend: the task's AudioJob (name, phase), its Jobs (completions, succeeded,
    failed, active, suspended) and its Events, oldest first. Read-only. The local backend has
    no cluster objects and answers 404 for a task it has (``detail`` says so)."""
    await visible_view(concurrency, backend, task_id, caller, items_limit=0)
    objects = await concurrency.run(backend.cluster_objects, task_id)
    if objects is None:
        raise HTTPException(404, f"the {backend.name} backend has no cluster objects")
    return objects


@api.get(
    "/results/{task_id}/{video_id}",
    response_model=Manifest,
    response_model_by_alias=True,
    responses={**NOT_FOUND, 409: _error("The item exists but has not succeeded (yet, or ever).")},
)
async def get_result(
    task_id: str, video_id: str, caller: CallerDep, backend: BackendDep, concurrency: ConcurrencyDep
) -> Manifest:
    """The item's audio_manifest_v1."""
    await visible_view(concurrency, backend, task_id, caller, items_limit=0)
    return await concurrency.run(backend.read_manifest, task_id, video_id)


@api.get(
    "/results/{task_id}/{video_id}/artifacts/{file_name}",
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The .npy file."},
        **NOT_FOUND,
        409: _error("The item exists but has not succeeded (yet, or ever)."),
    },
)
async def get_artifact(
    task_id: str,
    video_id: str,
    file_name: str,
    caller: CallerDep,
    backend: BackendDep,
    concurrency: ConcurrencyDep,
) -> Response:
    """An ``.npy`` artifact of the item, by the file name its manifest lists (e.g.
    ``loudness.short_term_lufs.npy``); no other file is served."""
    await visible_view(concurrency, backend, task_id, caller, items_limit=0)
    data = await concurrency.run(backend.read_artifact, task_id, video_id, file_name)
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Cache-Control": "private, max-age=3600"},
    )


@api.delete("/tasks/{task_id}", response_model=Cancelled, responses=NOT_FOUND)
async def cancel_task(
    task_id: str, caller: CallerDep, backend: BackendDep, concurrency: ConcurrencyDep
) -> Cancelled:
    """Cancel: queued items never start, running ones are stopped or discarded; the task is gone."""
    await visible_view(concurrency, backend, task_id, caller, items_limit=0)
    await concurrency.run(backend.cancel, task_id)
    return Cancelled(task_id=task_id)


@api.get("/tasks", response_model=TaskPage)
async def list_tasks(
    caller: CallerDep,
    backend: BackendDep,
    concurrency: ConcurrencyDep,
    status_filter: Annotated[TaskStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=4096)] = None,
    order: Annotated[
        TaskOrder, Query(description="Creation order, or newest first.")
    ] = TaskOrder.oldest,
) -> TaskPage:
    """Tasks in creation order (or newest first), a page at a time: the tasks this token may see.

    For the shared tenant (unnamed tokens) a page may hold fewer than ``limit`` tasks while
    more follow: follow ``next_cursor`` until it is null."""
    # admin: everyone's; a named token: its own; the shared tenant: those without a submitter
    # (the backend's submitter=None means "all", so they are picked here).
    submitter = None if caller.admin else caller.name
    views, next_cursor = await concurrency.run(
        backend.list_tasks,
        status_filter,
        limit,
        cursor,
        submitter=submitter,
        newest_first=order is TaskOrder.newest,
    )
    return TaskPage(
        tasks=[
            TaskSummary(**v.model_dump(include=set(TaskSummary.model_fields)))
            for v in views
            if caller.may_see(v.submitter)
        ],
        next_cursor=next_cursor,
    )


@api.get("/extractors", response_model=ExtractorList)
async def list_extractors(request: Request) -> ExtractorList:
    """The extractors this deployment can run, and why any cannot."""
    return ExtractorList(available=await backend_extractors(request))


@health.get("/healthz", response_model=Health)
async def healthz(backend: BackendDep) -> Health:
    """The process is alive (answered on the event loop; blocks on nothing)."""
    return Health(status="ok", backend=backend.name)


def not_ready_reason(request: Request) -> str | None:
    """Why the service cannot take work (backend, or a tokens file it cannot read), or None."""
    tokens = request.app.state.tokens
    return request.app.state.backend.not_ready_reason() or (tokens.problem if tokens else None)


@health.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(
    request: Request, backend: BackendDep, concurrency: ConcurrencyDep
) -> JSONResponse:
    """The backend can take work (API server up and CRD installed, or local workers running), and
    the tokens file, when set, is readable and valid."""
    reason = await concurrency.probe(lambda: not_ready_reason(request))
    body = Health(
        status="ready" if reason is None else "not ready", backend=backend.name, detail=reason
    )
    return JSONResponse(body.model_dump(), status_code=200 if reason is None else 503)


@health.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    return Response(generate_latest(get_metrics(request).registry), media_type=CONTENT_TYPE_LATEST)
