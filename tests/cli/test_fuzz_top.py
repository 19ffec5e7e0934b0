"""Hostile names on ``eagle-eye top``'s screen: whatever an engine or a finding calls itself, the screen renders it
literally (no rich markup, no terminal escape sequence), and bad finding payloads never stop the view."""

from __future__ import annotations

import io
from typing import Any

import msgspec
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rich.console import Console

from eagleeye_otel.cli._top import TopScreen
from eagleeye_otel.cli._top_model import Sort
from eagleeye_otel.routing import RouterClient, RoutingMessage

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = 1000.0
HOSTILE_NAMES = [
    "pod[/]",  # an unbalanced closing tag: rich raised MarkupError and top exited
    "[bold red]pod[/bold red]",
    "[link=http://evil]pod[/link]",
    "pod\x1b[2J\x1b[H",  # clear the operator's screen
    "pod\x1b]0;owned\x07",  # set the terminal's title
    "pod\x1b]52;c;ZXZpbA==\x07",  # write the clipboard (OSC 52)
    "\u202edop",  # right-to-left override: reads as "pod"
    "pod\r\n\x00\x08",
]


def _screen(instance: str, finding_text: str) -> str:
    clock = lambda: NOW  # noqa: E731
    client = RouterClient(clock=clock)
    message = RoutingMessage(
        version=1,
        instance=instance,
        model=finding_text or "m",
        engine=0,
        timestamp=1.7e9,
        seq=1,
        started=1.7e9,
        num_requests_waiting=0,
        num_requests_running=0,
        kv_cache_usage=0.5,
    )
    assert client.handle(msgspec.json.encode(message))
    screen = TopScreen(stale=3.0, sort=Sort("i"))
    finding: dict[str, Any] = {
        "node": finding_text,
        "device": finding_text or None,
        "fault": finding_text or "f",
        "severity": "critical",
        "conclusion": finding_text,
        "action": finding_text,
        "evidence": {finding_text: finding_text},
        "first_seen": 1.7e9,
        "last_seen": 1.7e9,
        "change": finding_text,
    }
    assert screen.findings.handle(msgspec.json.encode(finding))
    output = io.StringIO()
    Console(file=output, force_terminal=True, color_system="truecolor", width=400).print(screen.render(client, NOW, 60))
    return output.getvalue()


def _without_styles(text: str) -> str:
    """The screen with rich's own SGR sequences (``ESC [ ... m``) removed: what remains must hold no ESC."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("\x1b[", i):
            end = i + 2
            while end < len(text) and (text[end].isdigit() or text[end] == ";"):
                end += 1
            if end < len(text) and text[end] == "m":
                i = end + 1
                continue
        out.append(text[i])
        i += 1
    return "".join(out)


@FUZZ
@given(
    instance=st.sampled_from(HOSTILE_NAMES) | st.text(min_size=1, max_size=40),
    finding_text=st.sampled_from(HOSTILE_NAMES) | st.text(max_size=40),
)
@example(instance="pod[/]", finding_text="[/]")
def test_any_name_is_shown_literally_and_no_escape_sequence_reaches_the_terminal(
    instance: str, finding_text: str
) -> None:
    screen = _without_styles(_screen(instance, finding_text))
    assert "\x1b" not in screen and "\x07" not in screen and "\u202e" not in screen
    if instance.isprintable() and "[" in instance:
        assert instance in screen  # markup shown as typed, not interpreted


def test_bad_finding_payloads_leave_the_view_working() -> None:
    screen = TopScreen(stale=3.0, sort=Sort("i"))
    for payload in (b"\xff", b'{"node": "\xff\xfe"}', b"[" * 100_000, b" " * 100_000, b"{}"):
        assert not screen.findings.handle(payload)
    assert screen.findings.active() == []
