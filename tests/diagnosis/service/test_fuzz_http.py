"""Hostile requests on the diagnosis HTTP endpoint (a real socket) and hostile telemetry text in its report:
any query is answered 200 or 400 with JSON, never a traceback; silent clients are cut off; every value a
finding carries is escaped in the HTML."""

from __future__ import annotations

import html
import json
import socket
from collections.abc import Iterator
from urllib.parse import quote

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eagleeye_otel.diagnosis import Finding, FindingChanges, Severity
from eagleeye_otel.diagnosis._board import BoardView, FindingBoard
from eagleeye_otel.diagnosis._http import DiagnosisHttpServer
from eagleeye_otel.diagnosis._report import render_report

pytestmark = pytest.mark.integration

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _finding(node: str, device: str | None, fault: str, severity: Severity = Severity.CRITICAL) -> Finding:
    return Finding(
        node=node,
        device=device,
        fault=fault,
        severity=severity,
        conclusion=f"{fault} on {device or node}.",
        action="Drain the node.",
        evidence={"value": 1.0, "label": device or node},
        first_seen=1.8e9 - 10,
        last_seen=1.8e9,
    )


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    board = FindingBoard()
    board.update([_finding("node-a", "GPU-a", "xid_79"), _finding("node-b", None, "kernel_log_lost")], FindingChanges())
    server = DiagnosisHttpServer(board, host="127.0.0.1", port=0, health=lambda: {"status": "ok"}, client_timeout=0.5)
    try:
        yield server.port
    finally:
        server.close()


def request(port: int, raw: bytes) -> tuple[int, bytes]:
    """Send ``raw`` as is and read the whole answer (HTTP/1.0: the server closes after it); status 0 for an
    HTTP/0.9 answer (a bare error page), which is what the server gives a request line it cannot read."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(raw)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    if not answer.startswith(b"HTTP/"):
        return 0, answer
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def get(port: int, target: bytes) -> tuple[int, bytes]:
    return request(port, b"GET " + target + b" HTTP/1.0\r\nHost: x\r\n\r\n")


def _check_answer(status: int, body: bytes) -> None:
    assert status in (200, 400, 404), status
    document = json.loads(body)
    if status != 200:
        assert isinstance(document["error"], str)
    else:
        assert set(document) == {"updated_at", "active", "resolved"}


_names = st.sampled_from(["node", "severity", "device", "Node", "severity[]", "", "x"])
_values = st.text(max_size=30) | st.sampled_from(["critical", "warning,info", "node-a", "GPU-a", ",,,", " "])


@FUZZ
@given(params=st.lists(st.tuples(_names, _values), max_size=6), raw_tail=st.binary(max_size=20))
def test_any_query_is_answered_with_json(port: int, params: list[tuple[str, str]], raw_tail: bytes) -> None:
    query = "&".join(f"{quote(name)}={quote(value)}" for name, value in params)
    tail = quote(raw_tail).encode()  # percent-encoded bytes: invalid UTF-8 among them
    _check_answer(*get(port, b"/api/findings?" + query.encode() + b"&node=" + tail))


@FUZZ
@given(target=st.binary(min_size=1, max_size=200).filter(lambda b: not any(c in b for c in b" \r\n\x00")))
def test_any_request_target_is_answered(port: int, target: bytes) -> None:
    status, _ = get(port, b"/" + target)
    assert 200 <= status < 600
    assert get(port, b"/healthz")[0] == 200  # and the server still serves


HOSTILE = {
    "10k-parameters": (b"GET /api/findings?" + b"node=a&" * 9000 + b" HTTP/1.0\r\n\r\n", 200),
    "unknown-parameter": (b"GET /api/findings?" + b"x=1&" * 1000 + b" HTTP/1.0\r\n\r\n", 400),
    "100k-severities": (b"GET /api/findings?severity=" + b"critical," * 7000 + b" HTTP/1.0\r\n\r\n", 200),
    "request-line-over-64-KiB": (b"GET /?" + b"a" * 70_000 + b" HTTP/1.0\r\n\r\n", 414),
    "200-headers": (b"GET / HTTP/1.0\r\n" + b"X-A: b\r\n" * 200 + b"\r\n", 431),
    "not-http": (b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 40 + b"\r\n\r\n", 0),
    "post": (b"POST /api/findings HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello", 501),
    "invalid-utf8-path": (b"GET /api/\xff\xfe HTTP/1.0\r\n\r\n", 404),
}


@pytest.mark.parametrize(("raw", "expected"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_requests_get_an_error_status(port: int, raw: bytes, expected: int) -> None:
    status, _ = request(port, raw)
    assert status == expected
    assert get(port, b"/healthz")[0] == 200


@pytest.mark.parametrize("sent", [b"", b"GET /api/findings HTTP/1.0\r\n"], ids=["nothing", "no-blank-line"])
def test_a_silent_client_is_cut_off(port: int, sent: bytes) -> None:
    """It used to hold its server thread until it went away: a few thousand of them and the service ran out."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(sent)
        assert connection.recv(65536) == b""  # closed by the server, well before this socket's own timeout
    assert get(port, b"/healthz")[0] == 200


# -- hostile telemetry text in the report --------------------------------------------------------------------

INJECTED = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "</td><x-eagle-injected>")
_injected = st.sampled_from(INJECTED)
_other = st.text(max_size=20) | st.sampled_from(["&lt;", "\u202e", "\x00", "<", "&"])


@FUZZ
@given(
    node=_injected | _other,
    device=st.none() | _injected | _other,
    fault=_injected | _other,
    label=_injected,
)
def test_every_value_a_finding_carries_is_escaped_in_the_report(
    node: str, device: str | None, fault: str, label: str
) -> None:
    finding = msgspec.structs.replace(_finding(node, device, fault), evidence={label: label, "n": [label]})
    page = render_report(BoardView(updated_at=1.8e9, active=(finding,), resolved=(finding,)))
    for text in (node, device, fault, label):
        if text in INJECTED:
            assert text not in page
            assert html.escape(text, quote=True) in page
    assert "<script" not in page and "<img" not in page and "<x-eagle" not in page
