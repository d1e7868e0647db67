"""``audioproc-api serve`` (or ``python -m audioproc_api serve``): run the facade under uvicorn.

The facade's own command: the pipeline's ``audioproc`` command does not import this package.

Configuration is checked before anything starts: an invalid ``API_*`` (or pipeline) setting,
an API_STATE_DIR that cannot be created or written (local backend) or an API_TOKENS_FILE that
cannot be read or parsed exits 2 with one line on stderr naming the variable and the problem.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

#: Exit status for a configuration the service cannot start with.
EXIT_BAD_CONFIG = 2


def _refuse(problem: str) -> typer.Exit:
    typer.echo(f"audioproc-api serve: {problem}", err=True)
    return typer.Exit(EXIT_BAD_CONFIG)


def serve(
    host: Annotated[
        str, typer.Option(help="Address to bind (0.0.0.0 to serve other machines).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    backend: Annotated[
        str | None, typer.Option(help="kubernetes or local (default: API_BACKEND, else auto).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
) -> None:
    """Serve the REST API (settings from the environment; see docs/api.md)."""
    from audioproc.errors import ConfigError
    from audioproc.settings import load_settings
    from audioproc_api.app import create_app
    from audioproc_api.auth import TokensFileError
    from audioproc_api.observability import configure_logging
    from audioproc_api.server import server_for
    from audioproc_api.settings import ApiSettings, BackendName, resolve_backend, state_dir_problem

    if backend:
        os.environ["API_BACKEND"] = backend
    os.environ.setdefault("API_LOG_LEVEL", log_level.upper())
    try:
        settings = load_settings(ApiSettings)
    except ConfigError as exc:
        raise _refuse(str(exc)) from None
    if resolve_backend(settings) is BackendName.local and (
        problem := state_dir_problem(settings.api_state_dir)
    ):
        raise _refuse(problem)
    configure_logging(settings.api_log_level)
    try:
        app = create_app(settings)
    except TokensFileError as exc:
        raise _refuse(str(exc)) from None
    # One process: the local backend keeps its worker pool and dispatcher in this process.
    server_for(app, settings, host, port, log_level).run()


cli = typer.Typer(add_completion=False, help="AudioProcessor REST facade.")
cli.command()(serve)


@cli.callback()
def _main() -> None:
    """Keep `serve` a subcommand even though it is the only one."""


def main() -> None:
    cli()
