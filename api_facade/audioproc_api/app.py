"""The FastAPI application: ``create_app(settings, backend)``, and the factory uvicorn runs:

    uvicorn --factory audioproc_api.app:from_env     # settings from the environment
    audioproc-api serve                              # the same, with checked settings, timeouts
                                                     # and shutdown notice (audioproc_api.server)

With tokens on, the OpenAPI document and its viewers (/openapi.json, /docs, /redoc) need a
token like every route but /healthz, /readyz and /metrics.
"""

from __future__ import annotations

import base64
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from audioproc import __version__
from audioproc_api import ui
from audioproc_api.auth import TokenStore, require_token
from audioproc_api.backends import (
    Backend,
    BackendUnavailable,
    ResultNotAvailable,
    TaskNotFound,
    UnsupportedRequest,
)
from audioproc_api.concurrency import Concurrency, WaitersFull
from audioproc_api.observability import (
    BodySizeLimitMiddleware,
    Metrics,
    RequestContextMiddleware,
    configure_logging,
)
from audioproc_api.routes import api, health
from audioproc_api.settings import ApiSettings, BackendName, resolve_backend, resolve_output

log = logging.getLogger(__name__)


def make_backend(settings: ApiSettings) -> tuple[Backend, str]:
    """The configured backend (not started) and the output URI its tasks write under."""
    name = resolve_backend(settings)
    output = resolve_output(settings, name)
    if name is BackendName.kubernetes:
        from audioproc_api.backends.kubernetes import KubernetesBackend

        return KubernetesBackend(settings, output), output
    from audioproc_api.backends.local import LocalBackend

    return LocalBackend(settings, output), output


def create_app(
    settings: ApiSettings | None = None, backend: Backend | None = None, output: str | None = None
) -> FastAPI:
    """The application. ``backend`` (with the ``output`` it writes to) may be given, else it is
    made from the settings; either way the app starts it and closes it with its lifespan.

    Raises TokensFileError when API_TOKENS_FILE is set but cannot be read or parsed."""
    settings = settings or ApiSettings()
    tokens = TokenStore(settings.api_tokens_file) if settings.api_tokens_file else None
    if tokens is not None:
        tokens.load()
    if backend is None:
        backend, output = make_backend(settings)
    elif output is None:
        output = resolve_output(settings, BackendName(backend.name))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend.start()
        log.info("facade started", extra={"backend": backend.name, "output": output})
        try:
            yield
        finally:
            app.state.concurrency.shutdown.set()  # waiters answer now (if the server did not tell them)
            backend.close()

    app = FastAPI(
        title="AudioProcessor",
        version=__version__,
        description="Video and audio files in, audio_manifest_v1 feature manifests out.",
        lifespan=lifespan,
        # served by _add_docs, behind the token check
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.backend = backend
    app.state.output = output
    app.state.metrics = Metrics()
    app.state.tokens = tokens
    app.state.concurrency = Concurrency(settings.api_max_waiters)
    app.include_router(health)
    app.include_router(api)
    ui.install(app)
    _add_docs(app)
    _add_error_handlers(app)
    # Outermost first: every request, even a rejected one, gets an id, a log line and metrics.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)
    return app


def _add_docs(app: FastAPI) -> None:
    """/openapi.json, /docs and /redoc, each needing a token when tokens are on."""
    protected = [Depends(require_token)]

    @app.get("/openapi.json", include_in_schema=False, dependencies=protected)
    async def openapi_document() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=protected)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - Swagger UI")

    @app.get("/redoc", include_in_schema=False, dependencies=protected)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc")


def json_safe(value: Any) -> Any:
    """``value`` with what JSON cannot carry made carriable: non-finite floats as the strings
    'NaN', 'Infinity', '-Infinity'; bytes as text; any other object as its str()."""
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return (
            value
            if math.isfinite(value)
            else "NaN"
            if math.isnan(value)
            else "Infinity"
            if value > 0
            else "-Infinity"
        )
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(value).decode()
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    return str(value)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # The errors echo the input, which may hold NaN/Infinity (Python's json accepts them in
        # a body) or bytes: made JSON-safe here, for every field and error at once.
        return JSONResponse({"detail": json_safe(exc.errors())}, status_code=422)

    @app.exception_handler(WaitersFull)
    async def waiters_full(_request: Request, exc: WaitersFull) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(TaskNotFound)
    async def task_not_found(_request: Request, exc: TaskNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ResultNotAvailable)
    async def result_not_available(_request: Request, exc: ResultNotAvailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409 if exc.exists else 404)

    @app.exception_handler(BackendUnavailable)
    async def unavailable(_request: Request, exc: BackendUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(UnsupportedRequest)
    async def unsupported(_request: Request, exc: UnsupportedRequest) -> JSONResponse:
        detail = [{"loc": [exc.location, exc.field], "msg": exc.reason, "type": "value_error"}]
        return JSONResponse({"detail": detail}, status_code=422)


def from_env() -> FastAPI:
    """The app with settings from the environment and JSON logging (uvicorn's ``--factory``)."""
    settings = ApiSettings()
    configure_logging(settings.api_log_level)
    return create_app(settings)
