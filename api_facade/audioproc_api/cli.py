"""``audioproc serve``: run the facade under uvicorn.

``serve`` is a plain function with typer-friendly parameters, so the pipeline's ``audioproc``
typer app registers it with ``app.command()(serve)``; ``python -m audioproc_api serve`` runs it
standalone.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer


def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "0.0.0.0",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    backend: Annotated[
        str | None, typer.Option(help="kubernetes or local (default: API_BACKEND, else auto).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
) -> None:
    """Serve the REST API (settings from the environment; see docs/api.md)."""
    import uvicorn

    if backend:
        os.environ["API_BACKEND"] = backend
    os.environ.setdefault("API_LOG_LEVEL", log_level.upper())
    # One process: the local backend keeps its worker pool and dispatcher in this process.
    uvicorn.run(
        "audioproc_api.app:from_env", factory=True, host=host, port=port,
        log_level=log_level, log_config=None, timeout_graceful_shutdown=10,
    )


cli = typer.Typer(add_completion=False, help="AudioProcessor REST facade.")
cli.command()(serve)


@cli.callback()
def _main() -> None:
    """Keep `serve` a subcommand even though it is the only one."""


def main() -> None:
    cli()
