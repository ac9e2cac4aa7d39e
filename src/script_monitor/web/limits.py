"""How long the server waits for a client (docs/WEB.md, "Limits").

uvicorn closes a keep-alive connection that stays idle after a response, but not one
that never finishes its request line and headers: a client that opens connections and
trickles a byte now and then would hold them forever.  ``TimedH11`` gives every request
``HEADER_TIMEOUT`` seconds from the connection (or the previous response) to its last
header, then closes the connection.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT = 10.0  # seconds for the request line and headers
BODY_TIMEOUT = 10.0  # seconds for a form's body (app.form_of)
KEEP_ALIVE = 5  # seconds an idle keep-alive connection stays open
MAX_HEADERS = 16 * 1024  # bytes of request line and headers
MAX_CONNECTIONS = 1000  # connections and tasks at once; more are answered 503


class TimedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for each request's headers."""

    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn's own
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(HEADER_TIMEOUT, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()  # nothing was answered: there is no request to answer


def uvicorn_options() -> dict:
    """The keyword arguments of uvicorn.Config that set these limits."""
    return {
        "http": TimedH11,
        "timeout_keep_alive": KEEP_ALIVE,
        "h11_max_incomplete_event_size": MAX_HEADERS,
        "limit_concurrency": MAX_CONNECTIONS,
    }
