"""A NATS flush that covers every command sent before it.

nats-py's ``Client.flush()`` writes its PING straight to the socket, while the commands issued just before it (a
``subscribe()``, a ``publish()``) still wait in the client's pending buffer for its flusher task. The PING then
reaches the server first, and the PONG comes back before the server has seen them: a subscription made just
before ``flush()`` may not exist on the server yet when ``flush()`` returns, so a message another connection
publishes at that moment is lost, and a publish may not have reached the server. :func:`flush` lets the flusher
write the pending buffer first, so that the PING goes out behind everything sent so far.
"""

from __future__ import annotations

import asyncio
import math

from nats.aio.client import Client
from nats.errors import FlushTimeoutError

__all__ = ["flush"]

_FIRST_POLL_S = 0.001
_MAX_POLL_S = 0.05


async def flush(nc: Client, timeout: float = 10) -> None:
    """Return once the server has processed everything sent on ``nc`` so far (a PING/PONG round trip).

    Args:
        nc: a connected client.
        timeout: seconds to wait at most, in all.

    Raises:
        nats.errors.FlushTimeoutError: no confirmation within ``timeout`` (for instance while reconnecting).
        nats.errors.ConnectionClosedError: the connection is closed.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pause = 0.0  # the flusher task is normally ready to run: one turn of the loop lets it write
    # While reconnecting, nats-py's flush() returns at once without asking the server: wait for the connection.
    while (nc.pending_data_size > 0 or not nc.is_connected) and not nc.is_closed:
        if loop.time() >= deadline:
            raise FlushTimeoutError
        await asyncio.sleep(pause)
        pause = min(max(2 * pause, _FIRST_POLL_S), _MAX_POLL_S)
    remaining = deadline - loop.time()
    if remaining <= 0:
        raise FlushTimeoutError
    # nats-py takes whole seconds; the outer bound keeps the real one.
    try:
        await asyncio.wait_for(nc.flush(timeout=math.ceil(remaining)), remaining)
    except asyncio.TimeoutError as error:
        raise FlushTimeoutError from error
