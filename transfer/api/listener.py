"""The node's HTTP listener: how long a connection may take, how many one address may hold.

aiohttp reads a request's line and headers with no time limit of its own (an idle
connection waits for its keep-alive timer, an hour by default), so a client that sends
its headers a byte at a time ("slowloris") holds a connection, and its file descriptor,
for as long as it likes; a few hundred such connections starve the node. The listener
that ``handover serve`` (and ``handover directory serve``) opens instead of aiohttp's
``TCPSite`` adds, per :class:`ListenerLimits`:

- a **header timeout**: a request's line and headers must have arrived within
  ``header_timeout`` seconds of the connection opening (its TLS handshake done) or of the
  first byte of a later request on it; the TLS handshake itself has as long. Only the
  head is timed: once the headers are in, the body streams for as long as it takes (the
  peer protocol sends a multi-GiB package in one request);
- an **idle timeout** between requests on a kept-alive connection (``keepalive_timeout``);
- a **cap on the connections one address holds at once** (``max_per_address``, 0 for
  none): the one over the cap is answered ``503`` with a problem document and closed,
  while every other address is served as before. Behind a TLS-terminating proxy every
  connection comes from the proxy, so there the cap is the proxy's to enforce
  (``docs/operations.md``).

It also answers, as problem documents with the security headers, the requests aiohttp
refuses before any handler runs (a malformed request line or header: aiohttp's own
answer is ``text/plain`` and names what it could not parse), and says only
``Server: Handover``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import Counter
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from transfer.api.headers import SECURITY_HEADERS, SERVER
from transfer.api.problems import MEDIA_TYPE, problem_text
from transfer.audit.request_ids import HEADER, request_id_from

if TYPE_CHECKING:
    from aiohttp.web_request import BaseRequest
    from aiohttp.web_response import StreamResponse

    from transfer.config import ServerSection

__all__ = ["GuardedSite", "ListenerLimits"]

log = logging.getLogger("handover.listener")

#: Seconds between two log lines about the same address (a flood must not flood the log).
_LOG_EVERY: Final = 60.0


@dataclass(frozen=True)
class ListenerLimits:
    """How long a connection may take, and how many one address may hold (0: no cap)."""

    header_timeout: float = 20.0
    keepalive_timeout: float = 75.0
    max_per_address: int = 100

    @classmethod
    def from_config(cls, server: ServerSection) -> ListenerLimits:
        """The limits of ``[server]``; behind a proxy every connection is the proxy's, so
        the per-address cap is left to the proxy."""
        return cls(
            header_timeout=server.header_timeout_seconds,
            keepalive_timeout=server.keepalive_timeout_seconds,
            max_per_address=0 if server.behind_proxy else server.max_connections_per_address,
        )


class _Addresses:
    """Connections open per address, and when each address was last written to the log."""

    def __init__(self) -> None:
        self.open: Counter[str] = Counter()
        self._logged: dict[str, float] = {}

    def take(self, address: str, cap: int) -> bool:
        if cap and self.open[address] >= cap:
            return False
        self.open[address] += 1
        return True

    def release(self, address: str) -> None:
        self.open[address] -= 1
        if self.open[address] <= 0:
            del self.open[address]

    def should_log(self, address: str) -> bool:
        now = time.monotonic()
        if now - self._logged.get(address, -_LOG_EVERY) < _LOG_EVERY:
            return False
        if len(self._logged) > 10_000:
            self._logged.clear()
        self._logged[address] = now
        return True


def _raw_problem(status: int, slug: str, title: str, detail: str) -> bytes:
    """A whole HTTP/1.1 answer, for a connection no request handler will ever see."""
    body = problem_text(
        status, slug=slug, title=title, detail=detail, request_id=request_id_from(None)
    ).encode()
    headers = {
        **SECURITY_HEADERS,
        "Server": SERVER,
        "Content-Type": MEDIA_TYPE,
        "Content-Length": str(len(body)),
        "Retry-After": "10",
        "Connection": "close",
    }
    head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("ascii") + b"\r\n" + body


_TOO_MANY: Final = _raw_problem(
    503,
    "too-many-connections",
    "Too many connections from your address",
    "this address already holds as many connections to the node as it may; "
    "close some, or wait, and try again",
)

_REFUSED_BY_AIOHTTP: Final = {
    400: (
        "bad-request",
        "The request could not be read",
        "the request line or a header is not valid HTTP/1.1, or a header is too long",
    ),
    413: ("too-large", "The request is too large", "a header or the request line is too long"),
    500: (
        "internal-error",
        "Something went wrong on the server",
        "an unexpected error occurred; quote the request id to the operator",
    ),
    504: ("timeout", "The server took too long", "the request took too long to answer"),
}


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection handler with a header timeout, a per-address cap, and problem
    documents for the errors aiohttp answers by itself."""

    def __init__(
        self,
        manager: web.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        limits: ListenerLimits,
        addresses: _Addresses,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, loop=loop, keepalive_timeout=limits.keepalive_timeout, **kwargs)
        self._limits = limits
        self._addresses = addresses
        self._address: str | None = None
        self._refused = False
        #: Waiting for a request head (True from the connection's start, and from the first
        #: byte of each later request), with the timer that closes the connection if it is
        #: not complete in time.
        self._awaiting_head = False
        self._between_requests = False
        self._head_timer: asyncio.TimerHandle | None = None
        # aiohttp builds each request once its head has been read: the moment the header
        # timer stops (the body may then take as long as it needs).
        make_request = self._request_factory
        assert make_request is not None

        def request_factory(*args: Any) -> BaseRequest:
            self._head_received()
            return make_request(*args)

        self._request_factory = request_factory

    # ------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else None
        if address is not None and not self._addresses.take(address, self._limits.max_per_address):
            self._refused = True
            if self._addresses.should_log(address):
                log.warning(
                    "refused a connection from %s: it already holds %d (server."
                    "max_connections_per_address)",
                    address,
                    self._limits.max_per_address,
                )
            if isinstance(transport, asyncio.Transport):
                transport.write(_TOO_MANY)
            transport.close()
            return
        self._address = address
        super().connection_made(transport)
        self._await_head()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        self._stop_timer()
        if self._address is not None:
            self._addresses.release(self._address)
            self._address = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if data and self._between_requests:
            self._await_head()
        super().data_received(data)

    async def finish_response(
        self, request: BaseRequest, resp: StreamResponse, start_time: float | None
    ) -> tuple[StreamResponse, bool]:
        result = await super().finish_response(request, resp, start_time)
        # Until the next request's first byte, the idle (keep-alive) timer governs.
        self._between_requests = True
        return result

    # ------------------------------------------------------------ header timer

    def _await_head(self) -> None:
        self._between_requests = False
        self._awaiting_head = True
        self._stop_timer()
        self._head_timer = self._loop.call_later(self._limits.header_timeout, self._head_late)

    def _head_received(self) -> None:
        self._awaiting_head = False
        self._between_requests = False
        self._stop_timer()

    def _stop_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if not self._awaiting_head:
            return
        address = self._address or "an unknown address"
        if self._addresses.should_log(address):
            log.warning(
                "closed a connection from %s: no complete request headers within %g s "
                "(server.header_timeout_seconds)",
                address,
                self._limits.header_timeout,
            )
        self.force_close()

    # ------------------------------------------------------------ aiohttp's own errors

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> StreamResponse:
        """A problem document (never the text aiohttp would echo), with the security headers.

        Called for a request aiohttp could not parse (400), and for an error that escaped
        every middleware (500, 504). The log gets the kind of error, not its text: that
        text quotes the request, which may hold a token.
        """
        if request.writer.output_size > 0:
            raise ConnectionError("the response had begun; it cannot become an error")
        rid = request_id_from(None)
        slug, title, detail = _REFUSED_BY_AIOHTTP.get(
            status, (f"http-{status}", HTTPStatus(status).phrase, HTTPStatus(status).phrase)
        )
        if status >= 500:
            log.error(
                "%s answered %d outside the application (%s) [request %s]",
                self._address or "a client",
                status,
                type(exc).__name__,
                rid,
            )
        else:
            log.info(
                "refused a malformed request from %s (%s) [request %s]",
                self._address or "a client",
                type(exc).__name__,
                rid,
            )
        resp = web.Response(
            status=status,
            text=problem_text(status, slug=slug, title=title, detail=detail, request_id=rid),
            content_type=MEDIA_TYPE,
            headers={**SECURITY_HEADERS, "Server": SERVER, HEADER: rid},
        )
        resp.force_close()
        return resp


class GuardedSite(web.BaseSite):
    """A TCP site (as ``web.TCPSite``) whose connections are :class:`GuardedRequestHandler`s."""

    __slots__ = ("_addresses", "_host", "_limits", "_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        limits: ListenerLimits,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int = 128,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host = host
        self._port = port
        self._limits = limits
        self._addresses = _Addresses()

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        return f"{scheme}://{self._host}:{self._port}"

    @property
    def open_connections(self) -> dict[str, int]:
        """Connections open now, per address (for tests and diagnostics)."""
        return dict(self._addresses.open)

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None

        def connection() -> GuardedRequestHandler:
            return GuardedRequestHandler(
                server,
                loop=loop,
                limits=self._limits,
                addresses=self._addresses,
                access_log=None,
            )

        self._server = await loop.create_server(
            connection,
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            ssl_handshake_timeout=self._limits.header_timeout if self._ssl_context else None,
        )
