"""uvicorn's HTTP/1.1 protocol with a header timeout: a connection that has not sent a whole
request head within `header_timeout` seconds of opening (or of its last answer) is closed.

uvicorn times out idle keep-alive connections only after an answer, and any byte received
cancels that timer, so a client that opens a connection and sends one header byte every few
seconds (slowloris) holds it forever; 200 such clients hold 200 sockets and tasks. nginx
(`client_header_timeout`, 60 s) and Apache (`RequestReadTimeout`) close them; so does this.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderTimeoutProtocol(H11Protocol):
    header_timeout: float = 10.0  # seconds; `protocol_class` makes a subclass with another

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()  # the next request's head must arrive in time too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        if not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout, self._header_timed_out)

    def _disarm_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        # IDLE: no whole request head yet (after one, h11 moves on to SEND_BODY or DONE)
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def protocol_class(header_timeout: float) -> type[HeaderTimeoutProtocol]:
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": header_timeout})
