"""The FastAPI application: ``create_app(settings, backend)``, and the factory uvicorn runs:

    uvicorn --factory audioproc_api.app:from_env     # settings from the environment
    audioproc serve                                  # the same, as a command
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from audioproc import __version__
from audioproc_api.auth import TokenStore
from audioproc_api.backends import Backend, BackendUnavailable, ResultNotAvailable, TaskNotFound, UnsupportedRequest
from audioproc_api.observability import BodySizeLimitMiddleware, Metrics, RequestContextMiddleware, configure_logging
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


def create_app(settings: ApiSettings | None = None, backend: Backend | None = None, output: str | None = None) -> FastAPI:
    """The application. ``backend`` (with the ``output`` it writes to) may be given, else it is
    made from the settings; either way the app starts it and closes it with its lifespan."""
    settings = settings or ApiSettings()
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
            backend.close()

    app = FastAPI(
        title="AudioProcessor",
        version=__version__,
        description="Video and audio files in, audio_manifest_v1 feature manifests out.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.backend = backend
    app.state.output = output
    app.state.metrics = Metrics()
    app.state.extractors = None
    app.state.tokens = TokenStore(settings.api_tokens_file) if settings.api_tokens_file else None
    app.include_router(health)
    app.include_router(api)
    _add_error_handlers(app)
    # Outermost first: every request, even a rejected one, gets an id, a log line and metrics.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.api_max_body_bytes)
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TaskNotFound)
    async def task_not_found(request: Request, exc: TaskNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(ResultNotAvailable)
    async def result_not_available(request: Request, exc: ResultNotAvailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409 if exc.exists else 404)

    @app.exception_handler(BackendUnavailable)
    async def unavailable(request: Request, exc: BackendUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(UnsupportedRequest)
    async def unsupported(request: Request, exc: UnsupportedRequest) -> JSONResponse:
        detail = [{"loc": ["body", exc.field], "msg": exc.reason, "type": "value_error"}]
        return JSONResponse({"detail": detail}, status_code=422)


def from_env() -> FastAPI:
    """The app with settings from the environment and JSON logging (uvicorn's ``--factory``)."""
    settings = ApiSettings()
    configure_logging(settings.api_log_level)
    return create_app(settings)
