"""The diagnosis service's HTTP endpoint: the report page, the findings as JSON, and a health check.

``GET /`` the HTML report; ``GET /api/findings`` the findings as JSON, narrowed by ``node``, ``severity`` and
``device`` (each repeatable or comma-separated); ``GET /healthz`` the service's state. It reads the
:class:`~eagleeye_otel.diagnosis._board.FindingBoard` only, on the standard library's threaded server, so a slow
client never delays the diagnosis.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec

from eagleeye_otel.diagnosis._board import BoardView, FindingBoard, FindingFilter
from eagleeye_otel.diagnosis._finding import Severity
from eagleeye_otel.diagnosis._report import render_report

__all__ = ["DiagnosisHttpServer"]

_logger = logging.getLogger(__name__)

_JSON = "application/json"
_HTML = "text/html; charset=utf-8"
_FILTERS = ("node", "severity", "device")
_encoder = msgspec.json.Encoder()


class BadQuery(ValueError):
    """A query parameter the API does not understand; answered with 400 and this message."""


class DiagnosisHttpServer:
    """Serves the board on ``host:port`` from a daemon thread until :meth:`close`.

    Args:
        board: what to serve.
        host: address to listen on.
        port: port (0 picks a free one; see :attr:`port`).
        health: the ``/healthz`` document (must be cheap and thread-safe).
        client_timeout: seconds a client may stay silent before its connection is closed; each connection holds
            a thread, so without it a client that connects and sends nothing would hold one for good.

    Raises:
        OSError: the address cannot be bound.
    """

    def __init__(
        self,
        board: FindingBoard,
        *,
        host: str,
        port: int,
        health: Callable[[], Mapping[str, Any]],
        client_timeout: float = 10.0,
    ) -> None:
        handler = type(
            "_Handler", (_Handler,), {"board": board, "health": staticmethod(health), "timeout": client_timeout}
        )
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="eagle-eye-diagnosis-http", daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        """The port actually bound."""
        return int(self._server.server_address[1])

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class _Handler(BaseHTTPRequestHandler):
    board: FindingBoard
    health: Callable[[], Mapping[str, Any]]
    server_version = "eagle-eye-diagnosis"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        try:
            if url.path == "/healthz":
                self._send(200, _JSON, _encoder.encode(dict(self.health())))
            elif url.path in ("/", "/index.html"):
                self._send(200, _HTML, render_report(self._view(url.query)).encode())
            elif url.path == "/api/findings":
                view = self._view(url.query)
                document = {"updated_at": view.updated_at, "active": view.active, "resolved": view.resolved}
                self._send(200, _JSON, _encoder.encode(document))
            else:
                self._send(404, _JSON, _encoder.encode({"error": f"no such page: {url.path}"}))
        except BadQuery as error:
            self._send(400, _JSON, _encoder.encode({"error": str(error)}))

    def _view(self, query: str) -> BoardView:
        params = parse_qs(query)
        unknown = sorted(params.keys() - set(_FILTERS))
        if unknown:
            raise BadQuery(f"unknown parameter {unknown[0]!r}; expected {', '.join(_FILTERS)}")
        values = {
            name: {v.strip() for raw in params.get(name, ()) for v in raw.split(",") if v.strip()} for name in _FILTERS
        }
        try:
            severities = frozenset(Severity(s) for s in values["severity"])
        except ValueError as error:
            raise BadQuery(f"{error}; expected {', '.join(s.value for s in Severity)}") from None
        view = self.board.view
        if not any(values.values()):
            return view
        return view.select(
            FindingFilter(nodes=frozenset(values["node"]), severities=severities, devices=frozenset(values["device"]))
        )

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        _logger.debug("HTTP %s - " + format, self.address_string(), *args)
