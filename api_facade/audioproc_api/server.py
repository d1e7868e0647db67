"""The facade under uvicorn, run programmatically (``audioproc-api serve``).

What plain ``uvicorn.run`` does not give:

- Shutdown notice: when a SIGTERM (or SIGINT) starts the graceful shutdown, the app's
  ``ShutdownNotice`` is set first, so requests waiting on a task (``?wait=true``) answer 202
  with their task id at once instead of being cut off after the graceful timeout.
- A read timeout: uvicorn drops an idle keep-alive connection after ``timeout_keep_alive`` but
  has no limit on a request that is never finished. Here a request must arrive whole (headers
  and body) within ``API_READ_TIMEOUT_S`` of the connection opening or of the previous response,
  else the connection is closed.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from audioproc_api.settings import ApiSettings

log = logging.getLogger(__name__)

#: Seconds an idle keep-alive connection stays open (uvicorn's default, made explicit).
KEEP_ALIVE_S = 5
#: Seconds requests in flight get to finish once shutdown starts; waits answer at once.
GRACEFUL_SHUTDOWN_S = 10


class ReadTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request is not received in full
    within ``read_timeout_s`` seconds (set on a subclass by ``with_read_timeout``)."""

    read_timeout_s: float = 30.0

    # uvicorn's own signature (asyncio.Transport, narrower than BaseProtocol's), which uvicorn
    # declares with the same ignore.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._read_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm_read_timer()

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            self._disarm_read_timer()  # the request is in whole (or the connection is done)

    def on_response_complete(self) -> None:
        self._arm_read_timer()  # before super(): a pipelined request it handles disarms it
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_read_timer()
        super().connection_lost(exc)

    def _arm_read_timer(self) -> None:
        self._disarm_read_timer()
        self._read_timer = self.loop.call_later(self.read_timeout_s, self._read_timed_out)

    def _disarm_read_timer(self) -> None:
        timer = getattr(self, "_read_timer", None)
        if timer is not None:
            timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if not self.transport.is_closing():
            log.info(
                "dropped a connection whose request did not arrive in time",
                extra={"client": self.client, "read_timeout_s": self.read_timeout_s},
            )
            self.transport.close()


def with_read_timeout(seconds: float) -> type[ReadTimeoutH11Protocol]:
    return type("ReadTimeoutH11Protocol", (ReadTimeoutH11Protocol,), {"read_timeout_s": seconds})


class FacadeServer(uvicorn.Server):
    """A uvicorn server that tells the app when shutdown starts (see the module docstring)."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.facade = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Runs on the event loop as soon as the main loop sees should_exit (set by the signal
        # handler): before uvicorn waits for connections to finish.
        self.facade.state.concurrency.shutdown.set()
        await super().shutdown(sockets)


def server_for(
    app: FastAPI, settings: ApiSettings, host: str, port: int, log_level: str
) -> FacadeServer:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        log_config=None,
        http=with_read_timeout(settings.api_read_timeout_s),
        timeout_keep_alive=KEEP_ALIVE_S,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    return FacadeServer(config, app)
