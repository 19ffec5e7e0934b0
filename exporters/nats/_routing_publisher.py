"""The routing publisher: the newest load of each engine, sent to NATS as soon as it is offered.

The engine side calls :meth:`RoutingPublisher.offer` on vLLM's event loop. Over a plain TCP connection whose
socket has room, ``offer`` writes the message there and then, with one non-blocking ``send`` that keeps the GIL
(:mod:`._gil_keeping_io`): no thread wakes, no loop turns, and the message is on the wire a few microseconds after
the step. Otherwise (TLS, a full socket buffer, a connection being made, the publisher's thread busy with the
socket) it stores the message in a latest-value slot and wakes the publisher's thread, which sends it.

The thread owns the connection (:mod:`._sync_connection`): it connects and reconnects with a random pause, answers
the server's pings and the routers' snapshot requests, sends the heartbeats of idle engines, and finishes any
partial write. A slow, absent or refusing NATS server therefore never reaches vLLM's event loop: when the socket
is full, newer messages replace older ones in their slot (they are counted as coalesced), and while NATS is
unreachable nothing queues up.

Order: every message of an engine gets its ``seq`` under one lock at the moment it is written, by whichever thread
writes it, so no two messages share a ``seq`` and a later ``seq`` always carries a newer state.
"""

from __future__ import annotations

import logging
import math
import select
import threading
import time
from dataclasses import dataclass

import msgspec

from eagleeye_otel.exporters.nats._gil_keeping_io import ThreadWakeup
from eagleeye_otel.exporters.nats._sync_connection import NatsProtocolError, ServerPool, SyncConnection
from eagleeye_otel.fork_guard import ForkGuard
from eagleeye_otel.log_limiter import LogLimiter
from eagleeye_otel.nats_options import describe_nats_error, reconnect_wait, tls_context
from eagleeye_otel.routing import RoutingMessage
from eagleeye_otel.settings import NatsSettings, RoutingSettings
from eagleeye_otel.thread_names import name_os_thread

__all__ = ["PublisherStats", "RoutingPublisher"]

_logger = logging.getLogger(__name__)

_MAX_ENGINES = 4096
"""Bound on the latest-value map; data-parallel sizes are far below it."""
_HEARTBEAT_LEAD_MAX_S = 0.05
"""A heartbeat fires this much before its interval is over (at most a tenth of the interval), so that the wake-up
latency of a busy host never stretches the gap between two messages beyond the interval routers rely on."""
_PING_INTERVAL_S = 10.0
_MAX_PONGS_DUE = 2
"""A connection whose server has not answered this many pings (20 s) is given up and made again."""
_CONNECT_TIMEOUT_S = 2.0
_SNAPSHOT_REQUESTS_PER_ROUND = 16
"""Snapshot requests answered per turn of the thread; a flood of them costs a bounded amount each turn."""


@dataclass(frozen=True)
class PublisherStats:
    """Counts since the publisher was created.

    Attributes:
        offered: messages handed over by the engine side.
        published: step messages sent to NATS.
        heartbeats: heartbeat and snapshot-reply messages sent.
        coalesced: step messages replaced by a newer one before they could be sent (while NATS is unreachable,
            each engine's newest state waits in its slot and is sent once connected).
        dropped: step messages lost: the connection failed with them in flight, or the bound on engines was hit.
        errors: connections lost while up (a write or read that failed, a server that stopped answering); a
            server that cannot be reached at all is logged, not counted here.
        connected: whether the NATS connection is up now.
        reconnects: connections made again after one was lost.
    """

    offered: int
    published: int
    heartbeats: int
    coalesced: int
    dropped: int
    errors: int
    connected: bool
    reconnects: int = 0


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
        self._pub_prefix = b"PUB " + routing.subject.encode() + b" "
        self._interval = routing.heartbeat_interval
        self._heartbeat_lead = min(_HEARTBEAT_LEAD_MAX_S, self._interval / 10)
        # Written by offer() without the lock (a dict store), read by the thread under it.
        self._latest: dict[int, RoutingMessage] = {}
        # Under self._lock: what was written, by either thread.
        self._lock = threading.Lock()
        self._taken: dict[int, RoutingMessage] = {}  # the offered message each engine last sent
        self._sent: dict[int, RoutingMessage] = {}  # what each engine last sent, as sent (with its seq)
        self._last_sent_at: dict[int, float] = {}
        self._conn: SyncConnection | None = None
        self._direct: SyncConnection | None = None  # the connection while offer() may write to it
        self._encoder = msgspec.json.Encoder()
        self._wakeup: ThreadWakeup | None = None
        self._wake_pending = False
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._stopped = False
        self._failures = LogLimiter(_logger, every_s=30.0)
        self._offered = 0
        self._published = 0
        self._heartbeats = 0
        self._dropped = 0
        self._errors = 0
        self._reconnects = 0

    # -- engine side (vLLM's event loop): no blocking, no waiting, no exception -------------------------------

    def offer(self, message: RoutingMessage) -> None:
        """Hand over the newest state of one engine; returns at once.

        The message's ``seq`` is assigned when it is written. Calls from a forked child, before :meth:`start` or
        after :meth:`stop` are ignored: the connection belongs to the process that started it.
        """
        wakeup = self._wakeup
        if wakeup is None or self._stopped or self._fork_guard.in_child:
            return
        self._offered += 1
        latest = self._latest
        if message.engine not in latest and len(latest) >= _MAX_ENGINES:
            self._dropped += 1
            return
        latest[message.engine] = message
        if self._direct is not None and self._lock.acquire(blocking=False):
            try:
                if self._send_directly(message):
                    return
            except Exception:  # never into vLLM: the thread takes the message from its slot
                self._failures.warning("Eagle Eye could not send a routing message directly", exc_info=True)
            finally:
                self._lock.release()
        if not self._wake_pending:
            self._wake_pending = True
            wakeup.wake()

    def _send_directly(self, message: RoutingMessage) -> bool:
        """Under the lock: write ``message`` from the offering thread if the socket takes it now."""
        conn = self._direct
        if conn is None or not conn.direct_send or self._latest.get(message.engine) is not message:
            return False
        seq = self._next_seq(message.engine)
        message.seq = seq
        if not conn.send_now(self._frame(message)):
            return False
        self._mark_sent(message, time.monotonic())
        self._taken[message.engine] = message
        self._published += 1
        if conn.wants_write:  # a partial write: the thread finishes it, and nothing may be written before
            self._direct = None
            return False
        return True

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the publisher thread; connecting happens there, in the background."""
        with self._lock:
            if self._thread is not None or self._stopped:
                return
            self._wakeup = ThreadWakeup()
            self._thread = threading.Thread(target=self._run, name="eagle-eye-routing-publisher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Close the connection and stop the thread, waiting at most ``timeout`` seconds."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            self._direct = None
            thread, wakeup = self._thread, self._wakeup
        self._stop_event.set()
        if wakeup is not None:
            wakeup.wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def stats(self) -> PublisherStats:
        """Counters and connection state, for tests, logs and metrics."""
        taken = self._taken
        waiting = sum(1 for engine, message in list(self._latest.items()) if message is not taken.get(engine))
        return PublisherStats(
            offered=self._offered,
            published=self._published,
            heartbeats=self._heartbeats,
            coalesced=max(0, self._offered - self._published - self._dropped - waiting),
            dropped=self._dropped,
            errors=self._errors,
            connected=self._conn is not None,
            reconnects=self._reconnects,
        )

    # -- publisher thread ------------------------------------------------------------------------------------

    def _run(self) -> None:
        name_os_thread(threading.current_thread().name)
        try:
            context = tls_context(self._nats_settings) if self._nats_settings.tls else None
        except Exception:  # a TLS file that cannot be loaded, say: retrying will not help
            _logger.exception("NATS connection %r cannot be set up; nothing will be published", self._client_name)
            return
        pool = ServerPool(self._nats_settings.urls)
        ever_connected = False
        while not self._stopped:
            url = pool.next_url()
            conn = SyncConnection(self._nats_settings, name=self._client_name, timeout=_CONNECT_TIMEOUT_S)
            try:
                conn.open(url, context, subscribe=self._routing.snapshot_subject)
            except Exception as error:
                self._failures.warning("NATS: %s (%s)", describe_nats_error(error), _redacted(url))
                self._stop_event.wait(reconnect_wait())
                continue
            pool.add("tls" if conn.tls else "nats", list(conn.info.get("connect_urls") or ()))
            if ever_connected:
                self._reconnects += 1
                _logger.info("NATS connection %r is up again", self._client_name)
            else:
                _logger.info("NATS connection %r is up", self._client_name)
            ever_connected = True
            try:
                self._serve(conn)
            except Exception as error:
                if not self._stopped:
                    self._errors += 1
                    _logger.warning(
                        "NATS connection %r lost (%s); reconnecting in the background",
                        self._client_name,
                        describe_nats_error(error),
                    )
            finally:
                with self._lock:
                    self._conn = self._direct = None
                    conn.close()
            self._stop_event.wait(reconnect_wait())

    def _serve(self, conn: SyncConnection) -> None:
        wakeup = self._wakeup
        assert wakeup is not None
        poller = select.poll()
        poller.register(wakeup.fd, select.POLLIN)
        poller.register(conn.fileno(), select.POLLIN)
        with self._lock:
            self._conn = conn
            self._last_sent_at.clear()  # routers may have dropped this instance during the outage: send all now
            self._taken.clear()
        next_ping = time.monotonic() + _PING_INTERVAL_S
        requests: list[str] = []
        while not self._stopped:
            timeout_ms = self._poll_timeout_ms(min(next_ping, self._next_heartbeat_due()))
            readable = False
            for fd, events in poller.poll(timeout_ms):
                if fd == wakeup.fd:
                    wakeup.clear()
                elif events & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    readable = True
            # Clear the flag before reading the slots: an offer that lands after this line wakes us again.
            self._wake_pending = False
            with self._lock:
                if readable:
                    requests.extend(r.reply for r in conn.read())
                conn.flush()
                self._send_due(conn)
                del requests[: self._answer_snapshots(conn, requests[:_SNAPSHOT_REQUESTS_PER_ROUND])]
                if time.monotonic() >= next_ping:
                    if conn.pongs_due >= _MAX_PONGS_DUE:
                        raise NatsProtocolError("the server stopped answering pings")
                    conn.ping()
                    next_ping = time.monotonic() + _PING_INTERVAL_S
                self._direct = None if conn.wants_write else conn
                poller.modify(conn.fileno(), select.POLLIN | (select.POLLOUT if conn.wants_write else 0))

    def _poll_timeout_ms(self, due: float) -> int:
        if self._stopped:
            return 0
        return max(0, math.ceil((due - time.monotonic()) * 1000))

    def _next_heartbeat_due(self) -> float:
        """When the earliest heartbeat is due (far away when no engine has sent a step yet)."""
        last_sent = self._last_sent_at
        if not last_sent:
            return math.inf if not self._latest else time.monotonic()
        return min(last_sent.values()) + self._interval - self._heartbeat_lead

    def _send_due(self, conn: SyncConnection) -> None:
        """Under the lock: each engine's state not sent yet as a step, and a heartbeat where one is due."""
        now = time.monotonic()
        heartbeat_due = now - self._interval + self._heartbeat_lead
        frames = []
        for engine, offered in list(self._latest.items()):
            if offered is not self._taken.get(engine):
                self._taken[engine] = message = offered
                message.seq = self._next_seq(engine)
                self._published += 1
            elif self._last_sent_at.get(engine, -math.inf) <= heartbeat_due:
                message = msgspec.structs.replace(
                    self._sent[engine], heartbeat=True, timestamp=time.time(), seq=self._next_seq(engine)
                )
                self._heartbeats += 1
            else:
                continue
            self._mark_sent(message, now)
            frames.append(self._frame(message))
        if frames:
            conn.write(b"".join(frames))

    def _answer_snapshots(self, conn: SyncConnection, replies: list[str]) -> int:
        """Under the lock: each engine's last message, as sent (same ``seq``), to each asking router.

        Called after :meth:`_send_due`, so a reply never hands a router state older than what the engine already
        offered: after an outage the last message sent can be many seconds old.
        """
        for reply in replies:
            subject = reply.encode()
            frames = []
            for message in list(self._sent.values()):
                payload = self._encoder.encode(message)
                frames.append(b"PUB %s %d\r\n%s\r\n" % (subject, len(payload), payload))
            if frames:
                conn.write(b"".join(frames))
        return len(replies)

    # -- shared by both threads, under the lock --------------------------------------------------------------

    def _next_seq(self, engine: int) -> int:
        previous = self._sent.get(engine)
        return previous.seq + 1 if previous is not None else 1

    def _mark_sent(self, message: RoutingMessage, now: float) -> None:
        self._sent[message.engine] = message
        self._last_sent_at[message.engine] = now

    def _frame(self, message: RoutingMessage) -> bytes:
        payload = self._encoder.encode(message)
        return b"%s%d\r\n%s\r\n" % (self._pub_prefix, len(payload), payload)


def _redacted(url: str) -> str:
    """A server URL without the user and password it may embed, for the log."""
    return url.rsplit("@", 1)[-1]
