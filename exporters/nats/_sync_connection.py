"""A NATS client connection for one plain thread: the routing publisher's transport.

Why not nats-py here: nats-py is asyncio-only, and waking an asyncio loop for every engine step costs about 70 µs
of CPU on the 2-core VMs Eagle Eye is measured on, more than the publisher's whole budget per message (30 µs). The
publisher needs a small part of the client protocol: the handshake (TLS, and the same token, user/password and
credentials-file authentication as nats-py), ``PUB``, one ``SUB`` for snapshot requests, ``PING``/``PONG`` and the
cluster URLs that ``INFO`` announces. That part is spoken here over a socket with no event loop, so that a step can
be written by the thread that offers it (:meth:`SyncConnection.send_now`) or by the publisher's own thread without
a loop wake-up. Routers, services and the OTLP exporter keep using nats-py.

After the handshake the socket is non-blocking: :meth:`SyncConnection.write` queues what the kernel does not take
now, and the owner polls :meth:`SyncConnection.fileno` for ``POLLOUT`` while :attr:`SyncConnection.wants_write`.
Every method except :meth:`SyncConnection.send_now` belongs to the owner's thread; callers serialise writes.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from eagleeye_otel.exporters.nats._gil_keeping_io import DIRECT_SEND, send_keeping_gil
from eagleeye_otel.settings import NatsSettings
from eagleeye_otel.version import __version__

__all__ = ["NatsProtocolError", "ServerPool", "SnapshotRequest", "SyncConnection"]

_CRLF: Final = b"\r\n"
_MAX_CONTROL_LINE: Final = 4096
"""Longest line the server may send us (``INFO`` with a cluster's URLs fits easily)."""
_MAX_PAYLOAD: Final = 64 * 1024
"""Largest payload held in memory; a larger message on our subscription is still answered, its payload skipped
as it streams in (snapshot requests carry nothing a publisher reads)."""
_MAX_QUEUED_BYTES: Final = 256 * 1024
"""Outbound bytes held while the server does not read; past it the connection is given up (stale state has no
value, and reconnecting sends each engine's newest state anyway)."""
_SNAPSHOT_SID: Final = b"1"
DEFAULT_PORT: Final = 4222


class NatsProtocolError(Exception):
    """The server refused us (``-ERR``), closed the connection, or spoke something we do not understand."""


class SnapshotRequest:
    """A message on the subscribed subject that asks for a reply."""

    __slots__ = ("reply",)

    def __init__(self, reply: str) -> None:
        self.reply = reply


class ServerPool:
    """The servers to try, in turn: the configured seeds, then those a cluster announced in ``INFO``."""

    def __init__(self, urls: tuple[str, ...]) -> None:
        self._urls = list(urls)
        self._next = 0

    def next_url(self) -> str:
        """The server to try now; each call moves to the next one."""
        url = self._urls[self._next % len(self._urls)]
        self._next += 1
        return url

    def add(self, scheme: str, host_ports: list[Any]) -> None:
        """Learn the cluster's other servers (``connect_urls``), bounded so a hostile ``INFO`` cannot grow it."""
        for host_port in host_ports[:64]:
            if isinstance(host_port, str) and len(self._urls) < 256:
                url = f"{scheme}://{host_port}"
                if url not in self._urls:
                    self._urls.append(url)


class SyncConnection:
    """One connection to one server.

    Args:
        settings: credentials and TLS files (the server list lives in :class:`ServerPool`).
        name: the client name shown in NATS monitoring.
        timeout: seconds allowed for the TCP connect and for each step of the handshake.
    """

    def __init__(self, settings: NatsSettings, *, name: str, timeout: float = 2.0) -> None:
        self._settings = settings
        self._name = name
        self._timeout = timeout
        self._sock: socket.socket | None = None
        self._fd = -1
        self._in = bytearray()
        self._skip = 0  # payload bytes (and CRLF) of the current message still to discard
        self._out = bytearray()
        self.tls = False
        self.info: dict[str, Any] = {}
        """The server's ``INFO``, updated when it sends a new one."""
        self.pongs_due = 0
        """``PING``s we sent that the server has not answered yet."""

    # -- handshake (blocking, under ``timeout``) ---------------------------------------------------------------

    def open(self, url: str, tls_context: ssl.SSLContext | None, *, subscribe: str | None = None) -> None:
        """Connect, authenticate and subscribe; raises ``OSError``, ``ssl.SSLError`` or :class:`NatsProtocolError`."""
        parts = urlsplit(url if "://" in url else f"nats://{url}")
        host = parts.hostname or "127.0.0.1"
        sock = socket.create_connection((host, parts.port or DEFAULT_PORT), timeout=self._timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock = sock
            self.info = self._read_info()
            wants_tls = tls_context is not None or parts.scheme in ("tls", "wss") or bool(self.info.get("tls_required"))
            if wants_tls:
                context = tls_context or ssl.create_default_context()
                self._sock = sock = context.wrap_socket(sock, server_hostname=host)
                self.tls = True
            handshake = b"CONNECT " + json.dumps(self._connect_options()).encode() + _CRLF + b"PING" + _CRLF
            sock.sendall(handshake)
            self._await_pong()
            if subscribe is not None:
                sock.sendall(b"SUB " + subscribe.encode() + b" " + _SNAPSHOT_SID + _CRLF)
            sock.settimeout(0.0)
            self._fd = sock.fileno()
        except BaseException:
            sock.close()
            self._sock = None
            raise

    def _read_info(self) -> dict[str, Any]:
        line = self._read_line_blocking()
        if not line.startswith(b"INFO "):
            raise NatsProtocolError(f"expected INFO from the server, got {line[:40]!r}")
        info = json.loads(line[5:])
        if not isinstance(info, dict):
            raise NatsProtocolError("INFO is not a JSON object")
        return info

    def _await_pong(self) -> None:
        while True:
            line = self._read_line_blocking()
            if line == b"PONG":
                return
            if line.startswith(b"-ERR"):
                raise NatsProtocolError(f"nats: {line[5:].decode(errors='replace').strip()}")
            if line.startswith(b"INFO "):
                self.info = json.loads(line[5:])
            # +OK and anything else before the PONG: nothing to do

    def _read_line_blocking(self) -> bytes:
        assert self._sock is not None
        deadline = time.monotonic() + self._timeout
        while (end := self._in.find(_CRLF)) < 0:
            if len(self._in) > _MAX_CONTROL_LINE * 16:
                raise NatsProtocolError("control line too long")
            self._sock.settimeout(max(0.001, deadline - time.monotonic()))
            chunk = self._sock.recv(65536)
            if not chunk:
                raise NatsProtocolError("the server closed the connection during the handshake")
            self._in += chunk
        line = bytes(self._in[:end])
        del self._in[: end + 2]
        return line

    def _connect_options(self) -> dict[str, Any]:
        settings = self._settings
        options: dict[str, Any] = {
            "verbose": False,
            "pedantic": False,
            "tls_required": self.tls,
            "name": self._name,
            "lang": "python3",
            "version": __version__,
            "protocol": 1,
            "headers": False,
            "echo": False,
        }
        nonce = self.info.get("nonce")
        if settings.creds_file is not None and isinstance(nonce, str):
            options["jwt"], options["sig"] = _sign_with_credentials(settings.creds_file, nonce)
        if settings.user is not None:
            options["user"] = settings.user
            options["pass"] = settings.password or ""
        if settings.token is not None:
            options["auth_token"] = settings.token
        return options

    # -- after the handshake (non-blocking) --------------------------------------------------------------------

    def fileno(self) -> int:
        """The socket, to poll."""
        return self._fd

    @property
    def wants_write(self) -> bool:
        """Bytes are waiting for the socket to take them: poll for ``POLLOUT``."""
        return bool(self._out)

    @property
    def direct_send(self) -> bool:
        """Whether :meth:`send_now` may be used: a plain TCP socket with nothing queued before it."""
        return DIRECT_SEND and not self.tls and not self._out and self._fd >= 0

    def send_now(self, frame: bytes) -> bool:
        """Write ``frame`` from the calling thread without blocking or releasing the GIL.

        Only while :attr:`direct_send`, and under the owner's write lock. Returns ``False`` when the socket took
        nothing (its buffer is full, or the connection failed): the caller keeps the frame's state for the owner's
        thread, which will see what happened. A partial write queues the rest for the owner to finish.
        """
        sent = send_keeping_gil(self._fd, frame)
        if sent <= 0:
            return False
        if sent < len(frame):
            self._out += frame[sent:]
        return True

    def write(self, data: bytes) -> None:
        """Send ``data`` after what is queued, as far as the socket takes it now; queue the rest."""
        if len(self._out) + len(data) > _MAX_QUEUED_BYTES:
            raise NatsProtocolError("the server has not read for too long (outbound buffer full)")
        self._out += data
        self.flush()

    def flush(self) -> None:
        """Send what is queued, as far as the socket takes it now."""
        assert self._sock is not None
        while self._out:
            try:
                sent = self._sock.send(self._out)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return
            del self._out[:sent]

    def ping(self) -> None:
        """Ask the server for a ``PONG``: a connection that stops answering is a dead one."""
        self.pongs_due += 1
        self.write(b"PING" + _CRLF)

    def read(self) -> Iterator[SnapshotRequest]:
        """Read what the server sent; answer its ``PING``s; yield the requests that arrived on our subscription.

        Raises:
            NatsProtocolError: the server closed the connection or sent ``-ERR``.
        """
        assert self._sock is not None
        while True:
            try:
                chunk = self._sock.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                break
            if not chunk:
                raise NatsProtocolError("the server closed the connection")
            self._in += chunk
            if not (self.tls and isinstance(self._sock, ssl.SSLSocket) and self._sock.pending()):
                break
        yield from self._parse()

    def _parse(self) -> Iterator[SnapshotRequest]:
        buffer = self._in
        while self._skip_payload() and (end := buffer.find(_CRLF)) >= 0:
            line = bytes(buffer[:end])
            if line.startswith(b"MSG "):
                reply, size = _message_header(line)
                if size <= _MAX_PAYLOAD and len(buffer) < end + 2 + size + 2:
                    return  # the payload has not arrived yet
                del buffer[: end + 2]
                self._skip = size + 2
                if reply is not None:
                    yield SnapshotRequest(reply)
                continue
            del buffer[: end + 2]
            self._control(line)
        if len(buffer) > _MAX_CONTROL_LINE:
            raise NatsProtocolError("control line too long")

    def _skip_payload(self) -> bool:
        """Discard the rest of a message's payload; whether the buffer holds what follows it."""
        skipped = min(self._skip, len(self._in))
        del self._in[:skipped]
        self._skip -= skipped
        return not self._skip

    def _control(self, line: bytes) -> None:
        if line == b"PING":
            self.write(b"PONG" + _CRLF)
        elif line == b"PONG":
            self.pongs_due = max(0, self.pongs_due - 1)
        elif line.startswith(b"INFO "):
            self.info = json.loads(line[5:])
        elif line.startswith(b"-ERR"):
            raise NatsProtocolError(f"nats: {line[5:].decode(errors='replace').strip()}")

    def close(self) -> None:
        """Close the socket; what is still queued is lost."""
        sock, self._sock, self._fd = self._sock, None, -1
        self._out.clear()
        if sock is not None:
            sock.close()


def _message_header(line: bytes) -> tuple[str | None, int]:
    """Parse ``MSG <subject> <sid> [reply] <size>``: the reply subject (or ``None``) and the payload's size."""
    fields = line.split()
    if len(fields) not in (4, 5) or not fields[-1].isdigit():
        raise NatsProtocolError(f"malformed MSG line {line[:80]!r}")
    reply = fields[3].decode(errors="replace") if len(fields) == 5 else None
    return reply or None, int(fields[-1])


def _sign_with_credentials(path: Path, nonce: str) -> tuple[str, str]:
    """The user JWT and the nonce signed with the user's seed, from a ``.creds`` file (as nats-py reads it)."""
    import nkeys  # type: ignore[import-untyped]  # noqa: PLC0415 - only deployments with a credentials file need it

    jwt = seed = None
    lines = path.read_text().splitlines()
    for index, line in enumerate(lines[:-1]):
        if "BEGIN NATS USER JWT" in line:
            jwt = lines[index + 1].strip()
        elif "BEGIN USER NKEY SEED" in line:
            seed = lines[index + 1].strip()
    if not jwt or not seed:
        raise NatsProtocolError(f"{path}: not a NATS credentials file (no user JWT or seed)")
    key_pair = nkeys.from_seed(bytearray(seed.encode()))
    try:
        signature = base64.urlsafe_b64encode(key_pair.sign(nonce.encode())).rstrip(b"=").decode()
    finally:
        key_pair.wipe()
    return jwt, signature
