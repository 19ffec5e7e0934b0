"""``eagle-eye top``: a live terminal view of the fleet and of the active diagnosis findings, from NATS.

It is a :class:`~eagleeye_otel.routing.RouterClient` with a screen: the same validated ingest a router runs,
read a few times a second to draw the table, so what ``top`` shows is what a router would route on.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import termios
import time
import tty
from collections.abc import Iterator

import click
from nats.aio.msg import Msg
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from eagleeye_otel.cli._nats_reach import connect_now
from eagleeye_otel.cli._top_model import SORT_KEYS, FindingBoard, FindingMessage, Row, Sort, TokenRates, rows_of
from eagleeye_otel.errors import EagleEyeError
from eagleeye_otel.routing import RouterClient
from eagleeye_otel.semconv import DEFAULT_DIAGNOSIS_SUBJECT_PREFIX
from eagleeye_otel.settings import Settings

__all__ = ["TopScreen", "top"]

_FINDING_LINES = 8
"""Most findings listed beneath the table; the rest are counted."""
_DIAGNOSIS_SUBJECT = f"{DEFAULT_DIAGNOSIS_SUBJECT_PREFIX}.>"
_HINT = "is a NATS server running there? `eagle-eye up` starts one; or pass --nats-url (EAGLEEYE_NATS_URL)"
_CHROME_LINES = 10
"""Lines the headers, captions and the key help take besides the rows."""
_UNPRINTABLE = dict.fromkeys(
    [*range(0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)], "\ufffd"
)
"""Control characters (an escape sequence could rewrite the operator's terminal) and bidirectional overrides (could
make one name read as another), as they must never reach the screen from a message."""


@click.command()
@click.option("--nats-url", default=None, help="NATS server(s), comma-separated; default EAGLEEYE_NATS_URL.")
@click.option("--refresh", default=0.5, show_default=True, type=click.FloatRange(min=0.05), help="Seconds.")
@click.option("--stale", default=3.0, show_default=True, type=click.FloatRange(min=0.1), help="Grey after this many s.")
@click.option("--drop", default=30.0, show_default=True, type=click.FloatRange(min=0.2), help="Drop after this many s.")
@click.option("--sort", "sort_key", default="i", type=click.Choice(sorted(SORT_KEYS)), help="Initial sort key.")
def top(nats_url: str | None, refresh: float, stale: float, drop: float, sort_key: str) -> None:
    """Watch every instance's load and the active diagnosis findings live; q quits.

    Keys: i instance, w waiting, r running, k KV cache, t tokens/s, a age, h health (again: reverse).

    Exits 1 with one line when no NATS server answers at start; once connected, it rides out outages.
    """
    if drop <= stale:
        raise click.BadParameter("must be longer than --stale", param_hint="--drop")
    try:
        settings = Settings.from_env({**os.environ, "EAGLEEYE_NATS_URL": nats_url} if nats_url else None)
        asyncio.run(_run(settings, TopScreen(stale=stale, sort=Sort(sort_key)), refresh, drop))
    except EagleEyeError as error:
        raise click.ClickException(str(error)) from error


class TopScreen:
    """Turns a router's view and the findings into one screen; holds what outlives a refresh (rates, sort)."""

    def __init__(self, *, stale: float, sort: Sort) -> None:
        self.stale = stale
        self.sort = sort
        self.findings = FindingBoard()
        self._rates = TokenRates()

    def render(self, client: RouterClient, now: float, height: int) -> RenderableType:
        """The table of engines (as many as fit in ``height`` lines) and the findings beneath."""
        states = client.instances()
        rows = self.sort.apply(rows_of(states, self._rates.update(states), now, self.stale))
        findings = self.findings.active()
        shown = max(1, height - _CHROME_LINES - min(len(findings), _FINDING_LINES))
        stats = client.stats
        arrow = "↓" if self.sort.descending else "↑"
        caption = (
            f"{len(rows)} engines · sorted by {self.sort.column} {arrow} · {stats.accepted:,} messages accepted, "
            f"{stats.invalid + stats.oversized:,} invalid"
        )
        if len(rows) > shown:
            caption += f" · {len(rows) - shown} more below"
        parts: list[RenderableType] = [_instance_table(rows[:shown], caption), _findings_table(findings)]
        parts.append(Text("keys: i w r k t a h sort (again: reverse) · q quit", style="dim"))
        return Group(*parts)


def _instance_table(rows: list[Row], caption: str) -> Table:
    table = Table(title="Eagle Eye · fleet", caption=caption, caption_justify="left", expand=True)
    table.add_column("instance", overflow="fold")
    table.add_column("eng", justify="right")
    table.add_column("model", overflow="ellipsis", max_width=24)
    table.add_column("waiting", justify="right")
    table.add_column("running", justify="right")
    table.add_column("kv cache", justify="right")
    table.add_column("tokens/s", justify="right")
    table.add_column("age", justify="right")
    table.add_column("health")
    for row in rows:
        rate = "-" if row.tokens_per_s is None else f"{row.tokens_per_s:,.0f}"
        health = _plain(row.health, style="green" if row.health == "ok" else _severity_style(row.health_rank))
        table.add_row(
            _plain(row.instance),
            str(row.engine),
            _plain(row.model),
            str(row.waiting),
            str(row.running),
            f"{row.kv_cache_usage:.0%}",
            rate,
            f"{row.age_s:.1f}s",
            health,
            style="dim" if row.stale else None,
        )
    return table


def _plain(text: str, style: str = "") -> Text:
    """Text from the network shown as it is: as a ``Text`` no ``[...]`` in it is read as markup (an unbalanced
    ``[/]`` made rich raise and ``top`` exit), and no control or bidirectional character reaches the terminal."""
    return Text(text.translate(_UNPRINTABLE), style=style)


def _severity_style(rank: int) -> str:
    return ("bold red", "yellow", "cyan")[min(rank, 2)]


def _findings_table(findings: list[FindingMessage]) -> RenderableType:
    if not findings:
        return Text("no active diagnosis findings", style="green")
    table = Table(title="active findings", expand=True, title_justify="left")
    for name in ("severity", "node", "device", "fault", "change", "conclusion", "action"):
        table.add_column(name, overflow="fold" if name in ("conclusion", "action") else "ellipsis")
    for finding in findings[:_FINDING_LINES]:
        severity = Text(finding.severity.value, style=_severity_style(_rank(finding)))
        table.add_row(
            severity,
            _plain(finding.node),
            _plain(finding.device or "(node)"),
            _plain(finding.fault),
            _plain(finding.change),
            _plain(finding.conclusion),
            _plain(finding.action),
        )
    if len(findings) > _FINDING_LINES:
        table.caption = f"{len(findings) - _FINDING_LINES} more"
    return table


def _rank(finding: FindingMessage) -> int:
    return finding.sort_key()[0]


@contextlib.contextmanager
def _keys(loop: asyncio.AbstractEventLoop, on_key: asyncio.Queue[str]) -> Iterator[None]:
    """Single key presses from the terminal, without echo, while the view runs; nothing when stdin is no tty."""
    if not sys.stdin.isatty():
        yield
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def read() -> None:
        for key in os.read(fd, 64).decode(errors="replace"):
            on_key.put_nowait(key)

    loop.add_reader(fd, read)
    try:
        yield
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _run(settings: Settings, screen: TopScreen, refresh: float, drop: float) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    keys: asyncio.Queue[str] = asyncio.Queue()
    console = Console()
    nc = await connect_now(settings.nats, name="eagle-eye-top", hint=_HINT)
    client = RouterClient(
        nc=nc,
        subject=settings.routing.subject,
        snapshot_subject=settings.routing.snapshot_subject,
        stale_after=drop,
        follow_health=True,
    )
    handle = screen.findings.handle

    async def on_finding(msg: Msg) -> None:
        handle(msg.data)

    try:
        await nc.subscribe(_DIAGNOSIS_SUBJECT, cb=on_finding)
        async with client:
            with _keys(loop, keys), Live(console=console, screen=True, auto_refresh=False) as live:
                while not stop.is_set():
                    live.update(screen.render(client, time.monotonic(), console.size.height), refresh=True)
                    with contextlib.suppress(asyncio.TimeoutError):
                        key = await asyncio.wait_for(keys.get(), refresh)
                        if key in ("q", "Q"):
                            stop.set()
                        else:
                            screen.sort.press(key)
    finally:
        await nc.close()
