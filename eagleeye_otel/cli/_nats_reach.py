"""Whether NATS answers, said in one line: commands that need it now fail fast, services say they will wait.

nats-py's default error callback logs a traceback for every failed attempt, and its final error ("no servers
available") hides why; here the attempts are quiet, and the line names the servers, what the last attempt met, and
what to do or what happens meanwhile. ``top`` and ``simulate`` are useless without NATS and exit 1; the services
(``hardware-monitor``, ``diagnose``) keep serving Prometheus and the report and reconnect in the background, as a
DaemonSet or Deployment started before NATS must.
"""

from __future__ import annotations

import asyncio

import click
import nats.errors
from nats.aio.client import Client
from rich.console import Console
from rich.markup import escape

from eagleeye_otel.nats_options import connect_options, describe_nats_error, redacted_urls
from eagleeye_otel.settings import NatsSettings

__all__ = ["NO_NATS_HINT", "connect_now", "reachable_or_say"]

NO_NATS_HINT = "is a NATS server running there? `eagle-eye up` starts one; or set EAGLEEYE_NATS_URL to yours"
_CONNECT_DEADLINE_S = 15.0
"""nats-py can hang after a failed TLS handshake (nats-io/nats.py#718), so connecting has a deadline."""


class _Unreachable(Exception):
    """No server answered; the message names the servers and the last error."""


async def connect_now(settings: NatsSettings, *, name: str, hint: str = NO_NATS_HINT) -> Client:
    """One connection, tried on every server a few times, that reconnects forever once it is up.

    Args:
        settings: servers, credentials and TLS.
        name: the client name shown in NATS monitoring.
        hint: what the user can do, appended to the error.

    Raises:
        click.ClickException: no server answered: one line naming the servers, the last error and ``hint``.
    """
    try:
        nc = await _connect(settings, name=name)
    except _Unreachable as error:
        raise click.ClickException(f"{error}; {hint}") from error
    nc.options["max_reconnect_attempts"] = -1
    return nc


async def reachable_or_say(settings: NatsSettings, console: Console, *, meanwhile: str) -> bool:
    """For a service: whether a server answers now; if none does, one ``!`` line saying what goes on meanwhile."""
    try:
        nc = await _connect(settings, name="eagle-eye-probe")
    except _Unreachable as error:
        console.print(f"[yellow]![/] {escape(str(error))}: {escape(meanwhile)}; reconnecting in the background")
        return False
    await nc.close()
    return True


async def _connect(settings: NatsSettings, *, name: str) -> Client:
    errors: list[Exception] = []

    async def error_cb(error: Exception) -> None:
        errors[:] = [error]  # quiet; the last attempt's error explains a failure

    nc = Client()
    try:
        options = connect_options(settings, name=name, background=False)
        await asyncio.wait_for(nc.connect(**options, error_cb=error_cb), _CONNECT_DEADLINE_S)
    except (nats.errors.Error, OSError, asyncio.TimeoutError) as error:
        cause = errors[-1] if errors and isinstance(error, nats.errors.NoServersError) else error
        reason = "no answer" if isinstance(cause, asyncio.TimeoutError) else describe_nats_error(cause)
        raise _Unreachable(f"cannot reach NATS at {', '.join(redacted_urls(settings.urls))} ({reason})") from error
    return nc
