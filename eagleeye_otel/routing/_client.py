"""The router-side client: a live, validated view of every engine's load, and a least-loaded pick.

The ingest (:class:`._view.EngineView`) is synchronous and takes every message the transport read together in
one call: per message one typed decode, one dict lookup, two comparisons and one store, so a router keeps up with
thousands of engines on a single core. Reads expire engines that went quiet, so a router never routes to an
instance that died, and with ``follow_health`` they skip engines whose devices have a critical diagnosis finding
(:mod:`._health`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from types import TracebackType

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from eagleeye_otel.errors import ConfigError, RouterConnectError
from eagleeye_otel.nats_flush import flush
from eagleeye_otel.nats_options import connect_options, describe_nats_error, rate_limited_error_callback, redacted_urls
from eagleeye_otel.routing._health import DEFAULT_HEALTH_TTL, InstanceHealth
from eagleeye_otel.routing._inline import InlineDeliveryClient
from eagleeye_otel.routing._state import InstanceState, RouterStats
from eagleeye_otel.routing._view import EngineView, Entry
from eagleeye_otel.semconv import (
    DEFAULT_DIAGNOSIS_SUBJECT_PREFIX,
    DEFAULT_ROUTING_SNAPSHOT_SUBJECT,
    DEFAULT_ROUTING_SUBJECT,
    ROUTING_STALE_AFTER_S,
)
from eagleeye_otel.settings import NatsSettings

__all__ = ["DEFAULT_MAX_INSTANCES", "RouterClient"]

_logger = logging.getLogger(__name__)

DEFAULT_MAX_INSTANCES = 100_000
"""Bound on tracked (instance, engine) pairs: far above real fleets, low enough that a flood of fake
instances costs at most a few hundred MiB."""

_FLUSH_TIMEOUT_S = 2
_START_DEADLINE_S = 15.0
"""Longest start() waits for NATS: three tries of a 2 s connect timeout and a pause of at most 0.5 s fit within it."""


class RouterClient:
    """Subscribes to the routing subject and keeps the newest load of every engine.

    Args:
        nats_settings: servers, credentials and TLS; defaults to ``NatsSettings()`` (the local server).
        nc: an already connected client to use instead; :meth:`close` then leaves it open.
        subject: the routing subject publishers send to.
        snapshot_subject: where to ask publishers for their current state when joining.
        stale_after: seconds without a message after which an engine is dropped from the view. Publishers
            send a heartbeat every second, so the default tolerates two lost heartbeats.
        max_instances: bound on tracked (instance, engine) pairs.
        client_name: name shown in NATS monitoring.
        clock: monotonic seconds; injectable for tests.
        follow_health: also follow the diagnosis findings, so that :meth:`pick` skips engines whose node or
            devices (the message's ``node`` and ``devices``) have a critical one.
        diagnosis_subject: where the diagnosis service publishes findings.
        health_ttl: seconds a finding counts after the service last published it (it restates them every 5 s).
        coalesce_reads: seconds, on a connection of its own: while routing messages arrive within this time of
            each other, read them at most once per this time, so that one event-loop wake-up takes several. Each
            message may wait that much longer; 0 (the default) reads at once. At thousands of messages a second,
            0.0005 halves the client's CPU per message and adds about half a millisecond of latency.

    Raises:
        ConfigError: an argument is out of range; the error names it.
    """

    def __init__(
        self,
        *,
        nats_settings: NatsSettings | None = None,
        nc: Client | None = None,
        subject: str = DEFAULT_ROUTING_SUBJECT,
        snapshot_subject: str = DEFAULT_ROUTING_SNAPSHOT_SUBJECT,
        stale_after: float = ROUTING_STALE_AFTER_S,
        max_instances: int = DEFAULT_MAX_INSTANCES,
        client_name: str = "eagle-eye-router",
        clock: Callable[[], float] = time.monotonic,
        follow_health: bool = False,
        diagnosis_subject: str = f"{DEFAULT_DIAGNOSIS_SUBJECT_PREFIX}.>",
        health_ttl: float = DEFAULT_HEALTH_TTL,
        coalesce_reads: float = 0.0,
    ) -> None:
        if nats_settings is not None and nc is not None:
            raise ConfigError("nc", nc, "pass either nats_settings or nc, not both")
        for name, value in (
            ("subject", subject),
            ("snapshot_subject", snapshot_subject),
            ("diagnosis_subject", diagnosis_subject),
        ):
            if not value or any(c.isspace() for c in value):
                raise ConfigError(name, value, "must be a non-empty NATS subject without spaces")
        if subject == snapshot_subject:
            raise ConfigError("snapshot_subject", snapshot_subject, "must differ from subject")
        if not (isinstance(stale_after, int | float) and math.isfinite(stale_after) and stale_after > 0):
            raise ConfigError("stale_after", stale_after, "must be a positive number of seconds")
        if not (isinstance(coalesce_reads, int | float) and 0 <= coalesce_reads <= 1):
            raise ConfigError("coalesce_reads", coalesce_reads, "must be between 0 and 1 second")
        if not (isinstance(max_instances, int) and max_instances > 0):
            raise ConfigError("max_instances", max_instances, "must be a positive integer")
        self._nats_settings = nats_settings or NatsSettings()
        self._nc = nc
        self._owns_nc = nc is None
        self._subject = subject
        self._snapshot_subject = snapshot_subject
        self._stale_after = float(stale_after)
        self._max_instances = max_instances
        self._coalesce_reads = float(coalesce_reads)
        self._client_name = client_name
        self._clock = clock
        self._health = InstanceHealth(ttl=health_ttl, clock=clock) if follow_health else None
        self._diagnosis_subject = diagnosis_subject
        self._view = EngineView(stale_after=self._stale_after, max_instances=max_instances, clock=clock)
        self._subscriptions: list[Subscription] = []
        self._inbox = ""

    # -- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (unless a client was given), subscribe, and ask publishers for their current state.

        Replies to the snapshot request arrive on a private inbox and go through the same ingest, so the view
        fills within a round trip instead of waiting for the next heartbeat. Calling it again does nothing.

        Raises:
            RouterConnectError: NATS is unreachable, refused the credentials, or the subscription failed.
        """
        if self._subscriptions:
            return
        nc = self._nc if self._nc is not None else await self._connect()
        self._nc = nc
        handle = self.handle

        async def on_message(msg: Msg) -> None:  # nats-py requires a coroutine function
            handle(msg.data)

        async def on_reply(msg: Msg) -> None:
            if msg.data:  # an empty reply is the server's "no responders" status: no publisher is up yet
                handle(msg.data)

        try:
            self._inbox = nc.new_inbox()
            routing = await nc.subscribe(self._subject, cb=on_message)
            self._subscriptions = [routing, await nc.subscribe(self._inbox, cb=on_reply)]
            if isinstance(nc, InlineDeliveryClient):
                nc.deliver_inline(routing, self._view.ingest)
            if self._health is not None:
                health = self._health.handle

                async def on_finding(msg: Msg) -> None:
                    health(msg.data)

                self._subscriptions.append(await nc.subscribe(self._diagnosis_subject, cb=on_finding))
            await self._request_snapshot()
            await flush(nc, _FLUSH_TIMEOUT_S)  # the subscriptions exist on the server once it returns
        except (nats.errors.Error, OSError, asyncio.TimeoutError) as error:
            servers = [url.geturl() for url in nc.servers]
            await self.close()
            raise RouterConnectError(
                redacted_urls(servers), f"subscribing failed: {describe_nats_error(error)}"
            ) from error

    async def close(self) -> None:
        """Unsubscribe, and close the connection if this client opened it. The view stays readable."""
        subscriptions, self._subscriptions = self._subscriptions, []
        nc = self._nc
        if nc is None:
            return
        if self._owns_nc:
            self._nc = None
            await nc.close()
            return
        for subscription in subscriptions:
            if isinstance(nc, InlineDeliveryClient):
                nc.stop_inline(subscription)
            try:
                await subscription.unsubscribe()
            except nats.errors.Error as error:
                _logger.debug("unsubscribing failed: %s", error)

    async def __aenter__(self) -> RouterClient:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _connect(self) -> Client:
        """Fail fast at start, then never give up: a long-running router must outlive a NATS restart."""
        nc = InlineDeliveryClient(coalesce_s=self._coalesce_reads)
        options = connect_options(self._nats_settings, name=self._client_name, background=False)
        log_error = rate_limited_error_callback(_logger)
        # nats-py reports the causes only to error_cb, then raises a bare NoServersError.
        recent: deque[str] = deque(maxlen=3)

        async def on_error(error: Exception) -> None:
            recent.append(describe_nats_error(error))
            await log_error(error)

        try:
            # Under a deadline: nats-py can hang for good after a failed TLS handshake (nats-io/nats.py#718).
            await asyncio.wait_for(
                nc.connect(
                    **options,
                    error_cb=on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                ),
                _START_DEADLINE_S,
            )
        except (nats.errors.Error, OSError, asyncio.TimeoutError) as error:
            reason = "; ".join(dict.fromkeys(recent)) or describe_nats_error(error)
            raise RouterConnectError(redacted_urls(self._nats_settings.urls), reason) from error
        nc.options["max_reconnect_attempts"] = -1
        return nc

    async def _request_snapshot(self) -> None:
        nc = self._nc
        if nc is not None:
            await nc.publish(self._snapshot_subject, b"", reply=self._inbox)

    async def _on_disconnected(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            _logger.warning("router lost its NATS connection; reconnecting, engines go stale meanwhile")

    async def _on_reconnected(self) -> None:
        """Ask again for every engine's state: messages sent during the outage were lost."""
        _logger.info("router reconnected to NATS")
        try:
            await self._request_snapshot()
        except nats.errors.Error as error:
            _logger.warning("snapshot request after reconnecting failed: %s", error)

    # -- ingest ----------------------------------------------------------------------------------------------

    def handle(self, data: bytes) -> bool:
        """Decode, validate and apply one payload from the routing subject.

        Never raises on bad input: it is counted in :attr:`stats` and logged at most once a minute. Messages are
        ordered by ``(started, seq)`` per (instance, engine): a new ``started`` (a publisher restart) replaces
        the state held whatever its ``seq``, and an older process's late messages are dropped (``superseded``).

        Returns:
            ``True`` when the message updated the view.
        """
        return self._view.ingest((data,)) == 1

    def handle_many(self, payloads: Iterable[bytes]) -> int:
        """Apply payloads that arrived together, in order, as :meth:`handle` would; the clock is read once.

        Returns:
            How many updated the view.
        """
        return self._view.ingest(payloads)

    # -- reads -----------------------------------------------------------------------------------------------

    def instances(self, model: str | None = None) -> list[InstanceState]:
        """Every engine heard from within ``stale_after`` seconds, optionally only those serving ``model``."""
        return [self._state(entry) for entry in self._fresh(model)]

    def get(self, instance: str, engine: int = 0) -> InstanceState | None:
        """The state of one engine, or ``None`` when unknown or stale."""
        entry = self._view.get((instance, engine))
        return None if entry is None else self._state(entry)

    def pick(self, model: str | None = None) -> InstanceState | None:
        """The least loaded fresh engine: fewest waiting, then fewest running, then lowest KV-cache usage.

        Exact ties are broken at random, so that routers do not all send to the same idle engine between two
        of its messages. ``None`` when no fresh engine serves ``model`` (with ``follow_health``, no healthy one).
        """
        candidates = self._fresh(model)
        if self._health is not None:
            health = self._health
            candidates = [e for e in candidates if health.healthy(e[0].node, e[0].devices)]
        if not candidates:
            return None
        least = min(map(_load, candidates))
        return self._state(random.choice([e for e in candidates if _load(e) == least]))

    def _state(self, entry: Entry) -> InstanceState:
        message, received_at = entry
        findings = () if self._health is None else self._health.findings(message.node, message.devices)
        return InstanceState(message, received_at, findings)

    def _fresh(self, model: str | None) -> list[Entry]:
        view = self._view
        view.expire(self._clock())
        entries = view.states.values()
        if model is None:
            return list(entries)
        return [entry for entry in entries if entry[0].model == model]

    @property
    def stats(self) -> RouterStats:
        """Ingest counters, for logs, metrics and tests."""
        view = self._view
        rejected = view.invalid + view.oversized + view.out_of_order + view.duplicates + view.superseded + view.overflow
        return RouterStats(
            received=view.accepted + rejected,
            accepted=view.accepted,
            invalid=view.invalid,
            oversized=view.oversized,
            out_of_order=view.out_of_order,
            duplicates=view.duplicates,
            superseded=view.superseded,
            overflow=view.overflow,
            expired=view.expired,
            findings_invalid=0 if self._health is None else self._health.invalid,
            findings_overflow=0 if self._health is None else self._health.overflow,
        )


def _load(entry: Entry) -> tuple[int, int, float]:
    message = entry[0]
    return (message.num_requests_waiting, message.num_requests_running, message.kv_cache_usage)
