"""A nats-py client that hands one subscription's payloads to a function straight from the protocol parser.

nats-py delivers every message by building a ``Msg``, putting it on the subscription's queue and awaiting the
callback coroutine from the subscription's task; its parser also matches each frame with a regular expression and
awaits a coroutine per message. For the routing subscription that bookkeeping costs more than decoding and
validating the message. The ingest is synchronous, never blocks and never raises, so it can run where the parser
would otherwise queue the message: here every ``MSG`` frame of an inline subscription that one socket read
brought is cut out of the read with a few byte operations, and the payloads go to the ingest as one list, in the
order the server sent them. When the router falls behind, the socket and then the server push back (the server
cuts off a slow consumer) instead of nats-py's pending queue growing by up to 64 MiB.

At a high, steady rate (hundreds of engines stepping tens of times a second) the socket wakes the event loop for
nearly every message, and on a small VM a wake-up costs about a hundred microseconds of CPU, many times what the
message costs. With ``coalesce_s`` set, when a read follows the previous one within that time, the connection stops
reading for that long and then takes everything that arrived meanwhile in one read: a message waits at most
``coalesce_s`` longer, and only while messages arrive that fast. It is off by default: it trades latency for CPU.

Anything else (``PING``, ``INFO``, errors, other subscriptions, messages with a reply subject or headers) goes
through nats-py's own parser and ``Client._process_msg``, which stays overridden so that inline payloads taking
that path still reach the ingest. Both are private to nats-py, stable throughout nats-py 2;
:data:`INLINE_DELIVERY` is ``False`` when the installed nats-py no longer has the shapes relied on, and delivery
then falls back to the subscription's ordinary callback, which is always registered too.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.subscription import Subscription
from nats.protocol import parser as nats_parser

from eagleeye_otel.log_limiter import LogLimiter

__all__ = ["INLINE_DELIVERY", "Ingest", "InlineDeliveryClient"]

_logger = logging.getLogger(__name__)

_EXPECTED_PARAMETERS = ("self", "sid", "subject", "reply", "data", "headers")
INLINE_DELIVERY = (
    tuple(inspect.signature(Client._process_msg).parameters) == _EXPECTED_PARAMETERS
    and tuple(inspect.signature(nats_parser.Parser.parse).parameters) == ("self", "data")
    and isinstance(getattr(nats_parser, "AWAITING_CONTROL_LINE", None), int)
)
"""Whether this nats-py lets :class:`InlineDeliveryClient` deliver inline."""

Ingest = Callable[[list[bytes]], object]
"""Takes the payloads that arrived together, in order; synchronous and quick."""

_MSG = b"MSG "
_CRLF = b"\r\n"


class InlineDeliveryClient(Client):
    """A ``nats.aio.client.Client`` where chosen subscriptions bypass the per-message queue and task.

    Args:
        coalesce_s: how long reading pauses after a read that came within this time of the previous one; 0 (the
            default) reads as soon as data arrives.
    """

    def __init__(self, *, coalesce_s: float = 0.0) -> None:
        super().__init__()
        self.coalesce_s = coalesce_s
        self._inline: dict[int, Ingest] = {}
        self._ingest_errors = LogLimiter(_logger)
        self._last_read = -math.inf
        self._paused: asyncio.ReadTransport | None = None
        if INLINE_DELIVERY:
            self._ps = _BatchingParser(self)

    def deliver_inline(self, subscription: Subscription, ingest: Ingest) -> bool:
        """Hand ``subscription``'s payloads to ``ingest`` from the parser; ``False`` where nats-py does not allow it.

        ``ingest`` runs on the connection's reading path. Messages with headers still go through the
        subscription's callback.
        """
        if not INLINE_DELIVERY:
            return False
        self._inline[subscription._id] = ingest
        return True

    def stop_inline(self, subscription: Subscription) -> None:
        """Stop inline delivery, before unsubscribing."""
        self._inline.pop(subscription._id, None)

    def _deliver(self, ingest: Ingest, payloads: list[bytes], size: int) -> None:
        stats = self.stats
        stats["in_msgs"] += len(payloads)
        stats["in_bytes"] += size
        try:
            ingest(payloads)
        except Exception:  # an ingest bug must not take the connection's reader down
            self._ingest_errors.warning("routing ingest failed on %d messages", len(payloads), exc_info=True)

    def _inline_read(self) -> None:
        """After a read that delivered inline: pause reading for ``coalesce_s`` when reads come that fast."""
        now = time.monotonic()
        recent, self._last_read = now - self._last_read < self.coalesce_s, now
        if not recent or self._paused is not None:
            return
        writer = getattr(self._transport, "_io_writer", None)  # nats-py's TCP and TLS transports; not websockets
        transport = getattr(writer, "transport", None)
        if not isinstance(transport, asyncio.ReadTransport) or not transport.is_reading():
            return
        transport.pause_reading()
        self._paused = transport
        asyncio.get_running_loop().call_later(self.coalesce_s, self._resume_reading, transport)

    def _resume_reading(self, transport: asyncio.ReadTransport) -> None:
        self._paused = None
        if not transport.is_closing():
            transport.resume_reading()

    async def _process_msg(self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        ingest = self._inline.get(sid)
        if ingest is None or headers:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        self._deliver(ingest, [data], len(data))


class _BatchingParser(nats_parser.Parser):
    """nats-py's parser with a fast path for runs of plain ``MSG`` frames of inline subscriptions."""

    nc: InlineDeliveryClient

    async def parse(self, data: bytes = b"") -> None:
        if self.state != nats_parser.AWAITING_CONTROL_LINE:  # nats-py's parser is inside a frame: let it finish
            await super().parse(data)
            return
        if self.buf:
            data = bytes(self.buf) + data
            self.buf.clear()
        position, delivered = self._cut_inline(data)
        if delivered:
            self.nc._inline_read()
        if position < len(data):
            await super().parse(data[position:])

    def _cut_inline(self, data: bytes) -> tuple[int, bool]:
        """Deliver the leading inline ``MSG`` frames of ``data``; returns where the first other frame starts, and
        whether any was delivered.

        A frame cut off by the end of the read stays for the next one (in ``buf``, as nats-py keeps it).
        """
        nc = self.nc
        inline = nc._inline
        position, end = 0, len(data)
        run_sid, run_ingest, size, delivered = -1, None, 0, False
        payloads: list[bytes] = []
        while data.startswith(_MSG, position):
            line_end = data.find(_CRLF, position)
            if line_end < 0:
                break
            fields = data[position + 4 : line_end].split()
            if len(fields) != 3 or not fields[1].isdigit() or not fields[2].isdigit():
                break  # a reply subject, or something nats-py's parser should judge
            sid = int(fields[1])
            ingest = inline.get(sid)
            if ingest is None:
                break
            start = line_end + 2
            stop = start + int(fields[2])
            if stop + 2 > end:  # the payload is not all here yet
                self.buf.extend(data[position:])
                position = end
                break
            if sid != run_sid:
                if payloads:
                    nc._deliver(run_ingest, payloads, size)  # type: ignore[arg-type]
                run_sid, run_ingest, payloads, size, delivered = sid, ingest, [], 0, True
            payloads.append(data[start:stop])
            size += stop - start
            position = stop + 2
        else:
            if position < end and _MSG.startswith(data[position:]):  # "M", "MS", "MSG": the rest is coming
                self.buf.extend(data[position:])
                position = end
        if payloads:
            nc._deliver(run_ingest, payloads, size)  # type: ignore[arg-type]
        return position, delivered
