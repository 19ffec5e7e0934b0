"""Turn :class:`~eagleeye_otel.settings.NatsSettings` into ``nats.connect()`` keyword arguments.

Publishers inside vLLM and services share the authentication and TLS handling; they differ only in how they
treat an unreachable server (see ``background``). The error helpers word what NATS answered, without credentials.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import nats.errors
from nats.aio.client import Client

from eagleeye_otel.log_limiter import LogLimiter
from eagleeye_otel.settings import NatsSettings

__all__ = [
    "CONNECT_ATTEMPT_DEADLINE_S",
    "RECONNECT_WAIT_MAX_S",
    "RECONNECT_WAIT_MIN_S",
    "connect_in_background",
    "connect_options",
    "describe_nats_error",
    "rate_limited_error_callback",
    "reconnect_wait",
    "redacted_urls",
    "tls_context",
]

CONNECT_ATTEMPT_DEADLINE_S = 10.0
"""Longest one connection attempt (every server once) may take before it is abandoned and retried."""

RECONNECT_WAIT_MIN_S = 0.125
RECONNECT_WAIT_MAX_S = 0.25
"""Bounds of the pause between two attempts to reach a server that is down (see :func:`reconnect_wait`)."""

_PENDING_BYTES = 256 * 1024
"""Outbound buffer: stale load data has no value, so keep it small and drop rather than queue."""


def connect_options(settings: NatsSettings, *, name: str, background: bool) -> dict[str, Any]:
    """Keyword arguments for ``nats.aio.client.Client.connect``.

    Args:
        settings: servers, credentials and TLS files.
        name: the client name shown in NATS monitoring.
        background: ``True`` for a connection made off the caller's path that must keep trying forever
            (publishers); ``False`` for a caller that wants a prompt error when no server answers (routers, CLI).
    """
    options: dict[str, Any] = {
        "servers": list(settings.urls),
        "name": name,
        "connect_timeout": 2,
        "allow_reconnect": True,
        "reconnect_time_wait": reconnect_wait(),
        "max_reconnect_attempts": -1 if background else 3,
        "ping_interval": 10,
        "max_outstanding_pings": 3,
    }
    if background:
        options["pending_size"] = _PENDING_BYTES
        options["flush_timeout"] = 0.5
    if settings.token is not None:
        options["token"] = settings.token
    if settings.user is not None:
        options["user"] = settings.user
        options["password"] = settings.password
    if settings.creds_file is not None:
        options["user_credentials"] = str(settings.creds_file)
    if settings.tls:
        options["tls"] = tls_context(settings)
    return options


def reconnect_wait() -> float:
    """A pause between reconnect attempts, drawn at random in [0.125 s, 0.25 s] for each connection.

    Why these bounds: routers must see fresh state within 1 s after NATS returns, and both the publisher and the
    router have to reconnect for that, in parallel. A pause of at most 0.25 s leaves three quarters of the budget
    for the handshake, the resubscription, the first message and a busy host: the publisher runs inside vLLM's
    API server, which shares its cores with the engine (nats-py's default, 2 s, cannot meet the bound; 0.5 s
    missed it on a saturated 2-core test machine). At least 0.125 s keeps a client to 8 attempts a second
    against a server that is down: each is one refused TCP connect, or one ``connect_timeout`` when the host does
    not answer, so even a fleet of thousands adds little load. Why at random: every client loses the server at
    the same moment, and with one fixed pause they would all retry, and reconnect when it is back, in lockstep
    waves; periods spread over a factor of two dephase them within a few attempts, so a restarted server sees
    its clients arrive spread over a quarter of a second.
    """
    return random.uniform(RECONNECT_WAIT_MIN_S, RECONNECT_WAIT_MAX_S)


def tls_context(settings: NatsSettings) -> ssl.SSLContext:
    """The TLS context of ``settings``: the configured CA (else the system's) and the client certificate, if any."""
    context = ssl.create_default_context(cafile=str(settings.tls_ca) if settings.tls_ca else None)
    if settings.tls_cert is not None and settings.tls_key is not None:
        context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
    return context


def rate_limited_error_callback(logger: logging.Logger) -> Callable[[Exception], Awaitable[None]]:
    """An ``error_cb`` that logs at most one error every 30 s.

    nats-py calls ``error_cb`` on every failed reconnect attempt; without a limit an outage floods the log.
    """
    limiter = LogLimiter(logger, every_s=30.0)

    async def error_cb(error: Exception) -> None:
        limiter.warning("NATS: %s", str(error) or type(error).__name__)

    return error_cb


async def connect_in_background(
    settings: NatsSettings,
    *,
    name: str,
    logger: logging.Logger,
    on_reconnected: Callable[[], Awaitable[None]],
    is_closing: Callable[[], bool],
) -> Client | None:
    """Connect for a publisher, retrying forever; logs the outcome and every outage, once each.

    Args:
        settings: servers, credentials and TLS.
        name: client name, also used in log messages.
        logger: where the connection's events go.
        on_reconnected: called after the connection comes back.
        is_closing: while true, a disconnect is the owner closing the connection and is not logged.

    Returns:
        The connection, or ``None`` when it could not be set up at all (a bad TLS file, say).
    """

    async def disconnected_cb() -> None:
        if not is_closing():
            logger.warning("NATS connection %r lost; reconnecting in the background", name)

    async def reconnected_cb() -> None:
        logger.info("NATS connection %r is up again", name)
        await on_reconnected()

    try:
        options = connect_options(settings, name=name, background=True)
    except Exception:  # a TLS file that cannot be loaded, say: retrying will not help
        logger.exception("NATS connection %r cannot be set up; nothing will be published", name)
        return None
    # One server round per attempt, under a deadline, and this loop retries forever: nats-py can hang for good
    # closing a connection whose TLS handshake failed (nats-io/nats.py#718), so its own retry loop is not enough.
    options["max_reconnect_attempts"] = 1
    error_cb = rate_limited_error_callback(logger)
    while True:
        nc = Client()
        try:
            await asyncio.wait_for(
                nc.connect(
                    **options, error_cb=error_cb, disconnected_cb=disconnected_cb, reconnected_cb=reconnected_cb
                ),
                CONNECT_ATTEMPT_DEADLINE_S,
            )
        except asyncio.CancelledError:
            raise
        except Exception as error:
            await error_cb(error if not isinstance(error, asyncio.TimeoutError) else _no_answer())
            await asyncio.sleep(reconnect_wait())
            continue
        nc.options["max_reconnect_attempts"] = -1  # connected: from now on nats-py reconnects on its own
        logger.info("NATS connection %r is up", name)
        return nc


def _no_answer() -> TimeoutError:
    return TimeoutError(f"no NATS handshake within {CONNECT_ATTEMPT_DEADLINE_S:g} s (a TLS failure, or a stuck server)")


def describe_nats_error(error: BaseException) -> str:
    """nats-py's own errors say ``nats: ...``; an OSError's text needs its type (``Connect call failed``)."""
    text = str(error)
    if isinstance(error, nats.errors.Error) and text:
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def redacted_urls(urls: Sequence[str]) -> tuple[str, ...]:
    """Server URLs without the user and password they may embed, for error messages."""
    result = []
    for url in urls:
        parts = urlsplit(url)
        if "@" in parts.netloc:
            parts = parts._replace(netloc=parts.netloc.rsplit("@", 1)[1])
        result.append(parts.geturl())
    return tuple(result)
