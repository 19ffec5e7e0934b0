"""A NATS connection on a private event loop thread, for callers that run on plain threads.

The metric reader calls ``export()`` on its own daemon thread, while nats-py is asyncio-only and its first
``connect()`` keeps retrying for as long as the server is down. So the connection lives on an event loop in a daemon
thread of its own, connects there in the background, and a caller hands each payload over with a wait bounded by its
timeout. Nothing queues up while NATS is unreachable: a publish that cannot be handed over at once is dropped with a
reason, so stale metrics never pile up in memory.

The transport belongs to the process that created it. After ``fork()`` the child inherits the object but neither the
thread nor (usefully) the socket, so every call in another process is refused before it touches a lock, the loop or
the connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from collections.abc import Coroutine, Mapping
from typing import Any, Final

from nats.aio.client import Client

from eagleeye_otel import nats_flush
from eagleeye_otel.errors import EagleEyeError
from eagleeye_otel.nats_options import connect_in_background
from eagleeye_otel.settings import NatsSettings
from eagleeye_otel.thread_names import name_os_thread

__all__ = [
    "CLOSED",
    "FAILED",
    "NOT_CONNECTED",
    "OTHER_PROCESS",
    "TIMED_OUT",
    "TOO_LARGE",
    "NatsTransport",
    "PublishDropped",
]

_logger = logging.getLogger(__name__)

NOT_CONNECTED: Final = "not_connected"
"""No connection yet, or reconnecting: the payload is dropped rather than buffered."""
TIMED_OUT: Final = "timed_out"
"""nats-py did not take the payload within the caller's timeout (its outbound buffer was full)."""
TOO_LARGE: Final = "too_large"
"""The payload is larger than the server's ``max_payload``."""
FAILED: Final = "failed"
"""nats-py raised (a bad subject, the connection closing under the call, ...)."""
CLOSED: Final = "closed"
"""The transport was closed, or never started."""
OTHER_PROCESS: Final = "other_process"
"""The call came from a forked child; only the creating process publishes."""


class PublishDropped(EagleEyeError, ConnectionError):
    """A payload was not handed over to NATS.

    Attributes:
        reason: why, one of this module's reason constants (``NOT_CONNECTED``, ``TIMED_OUT``, ...).
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


class NatsTransport:
    """Publishes byte payloads to NATS from any thread, never waiting longer than the caller allows.

    Args:
        nats_settings: servers, credentials and TLS.
        client_name: the connection's name in NATS monitoring (``/connz``).
    """

    def __init__(self, *, nats_settings: NatsSettings, client_name: str) -> None:
        self._nats_settings = nats_settings
        self._client_name = client_name
        self._pid = os.getpid()
        self._lifecycle = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._nc: Client | None = None
        self._closed = False
        self._close_deadline = 0.0

    def in_owner_process(self) -> bool:
        """Whether this is the process that created the transport (and may use it)."""
        return os.getpid() == self._pid

    @property
    def connected(self) -> bool:
        """Whether the connection is up now."""
        nc = self._nc
        return nc is not None and nc.is_connected

    def start(self) -> None:
        """Start the loop thread, which connects in the background; returns once the loop exists."""
        if not self.in_owner_process():
            return
        with self._lifecycle:
            if self._thread is not None or self._closed:
                return
            ready = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(ready,), name=f"eagle-eye-nats-{self._client_name}", daemon=True
            )
            self._thread.start()
            ready.wait()  # under the lock, so that a concurrent close() finds the loop it must stop

    def publish(
        self, subject: str, payload: bytes, *, headers: Mapping[str, str] | None = None, timeout: float
    ) -> None:
        """Hand one message to the connection's outbound buffer.

        Args:
            subject: where to publish.
            payload: the message body.
            headers: NATS message headers.
            timeout: seconds to wait for the hand-over at most.

        Raises:
            PublishDropped: the payload was not handed over; ``reason`` says why.
        """
        loop, nc = self._usable()
        if len(payload) > nc.max_payload:
            raise PublishDropped(TOO_LARGE, f"{len(payload)} bytes exceed the server's max_payload of {nc.max_payload}")
        self._wait(loop, nc.publish(subject, payload, headers=dict(headers) if headers else None), timeout)

    def flush(self, timeout: float) -> bool:
        """Wait until the server has received everything published so far (a PING/PONG round trip).

        Args:
            timeout: seconds to wait at most.

        Returns:
            ``True`` when the server confirmed; ``False`` when it did not in time, or there is no connection here.
        """
        try:
            loop, nc = self._usable()
            self._wait(loop, nats_flush.flush(nc, timeout), timeout)
        except PublishDropped as dropped:
            _logger.debug("NATS flush did not complete: %s", dropped)
            return False
        return True

    def close(self, timeout: float) -> None:
        """Flush what nats-py still buffers, close the connection and stop the thread, within ``timeout`` seconds.

        Only the first call does anything. In a forked child nothing is touched: the socket is shared with the
        parent, and a goodbye sent from here would end the parent's session.
        """
        if not self.in_owner_process():
            return
        with self._lifecycle:
            if self._closed:
                return
            self._closed = True
            self._close_deadline = time.monotonic() + max(timeout, 0.0)
            loop, stop, thread = self._loop, self._stop, self._thread
        if loop is None or stop is None or thread is None:
            return
        try:
            loop.call_soon_threadsafe(stop.set)
        except RuntimeError:  # the loop already ended
            return
        thread.join(max(0.0, self._close_deadline - time.monotonic()))
        if thread.is_alive():
            _logger.warning("NATS connection %r did not close within %.1f s", self._client_name, timeout)

    # -- caller side -----------------------------------------------------------------------------------------

    def _usable(self) -> tuple[asyncio.AbstractEventLoop, Client]:
        if not self.in_owner_process():
            raise PublishDropped(OTHER_PROCESS, "only the process that opened the connection publishes")
        loop, nc = self._loop, self._nc
        if self._closed or loop is None:
            raise PublishDropped(CLOSED, "the NATS transport is closed or was never started")
        if nc is None or not nc.is_connected:
            raise PublishDropped(NOT_CONNECTED, f"not connected to NATS at {', '.join(self._nats_settings.urls)}")
        return loop, nc

    @staticmethod
    def _wait(loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, None], timeout: float) -> None:
        try:
            future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        except RuntimeError:  # close() ended the loop between the checks and now
            coroutine.close()
            raise PublishDropped(CLOSED, "the NATS transport closed") from None
        try:
            future.result(max(timeout, 0.0))
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise PublishDropped(TIMED_OUT, f"NATS did not respond within {timeout:.3g} s") from None
        except concurrent.futures.CancelledError:
            raise PublishDropped(CLOSED, "the NATS transport closed") from None
        except Exception as error:
            raise PublishDropped(FAILED, f"{type(error).__name__}: {error}") from error

    # -- loop thread -----------------------------------------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        name_os_thread(threading.current_thread().name)
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        stop = asyncio.Event()
        self._loop, self._stop = loop, stop
        ready.set()
        try:
            loop.run_until_complete(self._serve(stop))
        finally:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

    async def _serve(self, stop: asyncio.Event) -> None:
        connector = asyncio.create_task(self._connect())
        await stop.wait()
        connector.cancel()
        nc, self._nc = self._nc, None
        if nc is None or nc.is_closed:
            return
        try:  # close() sends what nats-py still buffers before it hangs up
            await asyncio.wait_for(nc.close(), max(0.001, self._close_deadline - time.monotonic()))
        except Exception:
            _logger.debug("closing the NATS connection %r failed", self._client_name, exc_info=True)

    async def _connect(self) -> None:
        self._nc = await connect_in_background(
            self._nats_settings,
            name=self._client_name,
            logger=_logger,
            on_reconnected=_nothing,
            is_closing=lambda: self._closed,
        )


async def _nothing() -> None:
    """Nothing to redo after a reconnect: each export carries the full state."""
