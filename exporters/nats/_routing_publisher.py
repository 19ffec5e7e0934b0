"""The routing publisher: the newest load of each engine, sent to NATS from a thread of its own.

The engine side calls :meth:`RoutingPublisher.offer`, which stores the message in a latest-value slot and, at
most once per publish round, wakes the publisher's event loop. Everything that touches the network runs on
that loop, so a slow, absent or refusing NATS server never reaches vLLM's event loop: when the publisher falls
behind, newer messages replace older ones (they are counted as coalesced), and while NATS is unreachable
nothing queues up.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg

from eagleeye_otel.exporters.nats._wakeup import LoopWakeup
from eagleeye_otel.fork_guard import ForkGuard
from eagleeye_otel.nats_options import connect_in_background
from eagleeye_otel.routing import RoutingMessage
from eagleeye_otel.settings import NatsSettings, RoutingSettings
from eagleeye_otel.thread_names import name_os_thread

__all__ = ["PublisherStats", "RoutingPublisher"]

_logger = logging.getLogger(__name__)

_MAX_ENGINES = 4096
"""Bound on the latest-value map; data-parallel sizes are far below it."""


@dataclass(frozen=True)
class PublisherStats:
    """Counts since the publisher was created.

    Attributes:
        offered: messages handed over by the engine side.
        published: step messages sent to NATS.
        heartbeats: heartbeat and snapshot-reply messages sent.
        coalesced: step messages replaced by a newer one before they could be sent (while NATS is unreachable,
            each engine's newest state waits in its slot and is sent once connected).
        dropped: step messages lost: the publish failed, or the bound on engines was hit.
        errors: publishes that raised (steps, heartbeats and snapshot replies).
        connected: whether the NATS connection is up now.
    """

    offered: int
    published: int
    heartbeats: int
    coalesced: int
    dropped: int
    errors: int
    connected: bool


class RoutingPublisher:
    """Publishes the newest :class:`RoutingMessage` of each engine, plus heartbeats while idle.

    Args:
        nats_settings: servers, credentials and TLS.
        routing: subjects and heartbeat interval.
        client_name: name shown in NATS monitoring.
    """

    def __init__(self, *, nats_settings: NatsSettings, routing: RoutingSettings, client_name: str) -> None:
        self._nats_settings = nats_settings
        self._routing = routing
        self._client_name = client_name
        self._fork_guard = ForkGuard()
        self._latest: dict[int, RoutingMessage] = {}  # written by offer(), read by the publisher thread
        self._taken: dict[int, RoutingMessage] = {}  # the offered message each engine last published
        self._sent: dict[int, RoutingMessage] = {}  # what each engine last sent, as sent (with its seq)
        self._last_sent_at: dict[int, float] = {}
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._woken = False  # set on the publisher loop by _wake(); read and cleared by _publish_forever()
        self._waiter: asyncio.Future[None] | None = None
        self._wakeup: LoopWakeup | None = None
        self._thread: threading.Thread | None = None
        self._main: asyncio.Task[None] | None = None
        self._nc: Client | None = None
        self._encoder = msgspec.json.Encoder()
        self._lock = threading.Lock()
        self._offered = 0
        self._published = 0
        self._heartbeats = 0
        self._dropped = 0
        self._errors = 0
        self._stopped = False

    # -- engine side (vLLM's event loop): no I/O, no locks, no waiting -------------------------------------

    def offer(self, message: RoutingMessage) -> None:
        """Hand over the newest state of one engine; returns at once.

        The message's ``seq`` is assigned when it is sent. Calls from a forked child, or after :meth:`stop`,
        are ignored: the connection belongs to the process that started it.
        """
        if self._loop is None or self._fork_guard.in_child:
            return
        self._offered += 1
        latest = self._latest
        if message.engine not in latest and len(latest) >= _MAX_ENGINES:
            self._dropped += 1
            return
        latest[message.engine] = message
        if not self._wake_pending:
            self._wake_pending = True
            wakeup = self._wakeup
            if wakeup is not None:
                wakeup.wake()

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the publisher thread; connecting happens there, in the background."""
        with self._lock:
            if self._thread is not None or self._stopped:
                return
            started = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(started,), name="eagle-eye-routing-publisher", daemon=True
            )
            self._thread.start()
        started.wait()

    def stop(self, timeout: float = 2.0) -> None:
        """Close the connection and stop the thread, waiting at most ``timeout`` seconds."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            loop, main, thread = self._loop, self._main, self._thread
            self._loop = None
        if loop is not None and main is not None:
            loop.call_soon_threadsafe(main.cancel)
        if thread is not None:
            thread.join(timeout)

    @property
    def stats(self) -> PublisherStats:
        """Counters and connection state, for tests, logs and metrics."""
        waiting = sum(1 for engine, message in list(self._latest.items()) if message is not self._taken.get(engine))
        return PublisherStats(
            offered=self._offered,
            published=self._published,
            heartbeats=self._heartbeats,
            coalesced=max(0, self._offered - self._published - self._dropped - waiting),
            dropped=self._dropped,
            errors=self._errors,
            connected=self._nc is not None and self._nc.is_connected,
        )

    # -- publisher thread ------------------------------------------------------------------------------------

    def _run(self, started: threading.Event) -> None:
        name_os_thread(threading.current_thread().name)
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._main = loop.create_task(self._serve())
        self._wakeup = LoopWakeup(loop, self._wake)
        self._loop = loop
        started.set()
        try:
            loop.run_until_complete(self._main)
        except asyncio.CancelledError:
            pass
        finally:
            self._wakeup.detach()
            loop.run_until_complete(self._close())
            loop.close()

    async def _serve(self) -> None:
        connector = asyncio.create_task(self._connect())
        try:
            await self._publish_forever()
        finally:
            connector.cancel()

    async def _connect(self) -> None:
        self._nc = await connect_in_background(
            self._nats_settings,
            name=self._client_name,
            logger=_logger,
            on_reconnected=self._on_connection_up,
            is_closing=lambda: self._stopped,
        )
        if self._nc is not None:
            await self._nc.subscribe(self._routing.snapshot_subject, cb=self._on_snapshot_request)
            await self._on_connection_up()

    async def _close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.close(), 1.0)
            except Exception:
                _logger.debug("closing the NATS connection failed", exc_info=True)

    async def _on_connection_up(self) -> None:
        """Send every engine's state now: routers may have marked this instance stale during the outage."""
        self._last_sent_at.clear()
        self._wake()

    def _wake(self) -> None:
        """Runs on the publisher loop: there is something new to send."""
        self._woken = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _sleep_until_woken(self, timeout: float | None) -> None:
        """Wait for :meth:`_wake` or ``timeout``; a bare future and timer cost less than ``wait_for`` per step."""
        if self._woken:
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = None if timeout is None else loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    async def _publish_forever(self) -> None:
        interval = self._routing.heartbeat_interval
        while True:
            # While disconnected there is nothing to time: the connection coming up wakes us.
            await self._sleep_until_woken(self._next_heartbeat_in(interval) if self._connected else None)
            self._woken = False
            # Clear the flag before reading the slots: an offer that lands after this line wakes us again.
            self._wake_pending = False
            if not self._connected:
                continue  # the newest state waits in its slot and goes out as a step once connected
            await self._send_due(interval)

    async def _send_due(self, interval: float) -> None:
        """Send each engine's state not sent yet as a step, and a heartbeat where one is due."""
        now = time.monotonic()
        for engine, message in list(self._latest.items()):
            if message is not self._taken.get(engine):
                self._taken[engine] = message
                await self._send(message, now)
            elif now - self._last_sent_at.get(engine, -interval) >= interval:
                await self._send(message, now, heartbeat=True)

    @property
    def _connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    def _next_heartbeat_in(self, interval: float) -> float | None:
        if not self._latest:
            return None
        now = time.monotonic()
        due = min(self._last_sent_at.get(engine, now) + interval for engine in self._latest)
        return max(0.0, due - now)

    async def _send(self, message: RoutingMessage, now: float, *, heartbeat: bool = False) -> None:
        nc = self._nc
        if nc is None:
            return
        engine = message.engine
        self._last_sent_at[engine] = now
        previous = self._sent.get(engine)
        seq = previous.seq + 1 if previous is not None else 1
        if heartbeat:
            message = msgspec.structs.replace(message, heartbeat=True, timestamp=time.time(), seq=seq)
        else:
            message.seq = seq
        try:
            await nc.publish(self._routing.subject, self._encoder.encode(message))
        except Exception as error:
            self._errors += 1
            if not heartbeat:
                self._dropped += 1
            _logger.debug("routing publish failed: %s", error)
            return
        self._sent[engine] = message
        if heartbeat:
            self._heartbeats += 1
        else:
            self._published += 1

    async def _on_snapshot_request(self, request: Msg) -> None:
        """Answer a router that just joined: each engine's newest state, to its reply subject.

        What is due goes out on the routing subject first (a state not sent yet, or a heartbeat), so that the
        reply never hands a router state older than what the engine already offered: after an outage the last
        message sent can be many seconds old. The replies then repeat messages already sent (same ``seq``), so a
        router that also saw the original on the routing subject keeps its view in order.
        """
        nc = self._nc
        if nc is None or not request.reply:
            return
        await self._send_due(self._routing.heartbeat_interval)
        for message in list(self._sent.values()):
            try:
                await nc.publish(request.reply, self._encoder.encode(message))
            except Exception as error:
                self._errors += 1
                _logger.debug("snapshot reply failed: %s", error)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
