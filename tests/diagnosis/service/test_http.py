"""The HTTP API on a real socket: findings as JSON with filters, the report page, the health check, errors."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from eagleeye_otel.diagnosis import Finding, FindingChanges
from eagleeye_otel.diagnosis._board import FindingBoard, FindingFilter
from eagleeye_otel.diagnosis._http import DiagnosisHttpServer

pytestmark = pytest.mark.integration


@pytest.fixture
def served(findings: list[Finding]) -> Iterator[tuple[str, FindingBoard]]:
    board = FindingBoard(resolved_kept=2)
    resolved = msgspec.structs.replace(findings[0], fault="old", resolved_at=findings[0].last_seen)
    board.update(findings, FindingChanges(resolved=(resolved,)))
    server = DiagnosisHttpServer(board, host="127.0.0.1", port=0, health=lambda: {"status": "ok", "nats": "up"})
    try:
        yield f"http://127.0.0.1:{server.port}", board
    finally:
        server.close()


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def findings_at(url: str) -> dict[str, Any]:
    status, content_type, body = get(url)
    assert (status, content_type) == (200, "application/json")
    document: dict[str, Any] = json.loads(body)
    return document


def test_every_active_finding_severity_first_with_the_recently_resolved(
    served: tuple[str, FindingBoard], findings: list[Finding]
) -> None:
    base, _ = served
    document = findings_at(f"{base}/api/findings")
    assert document["updated_at"] > 0
    assert [(f["node"], f["fault"]) for f in document["active"]] == [
        ("node-b", "xid_79"),
        ("node-b", "npu_health"),
        ("node-a", "kernel_log_lost"),
        ("node-a", "gpu_temperature_near_slowdown"),
        ("node-a", "gpu_power_at_limit"),
    ]
    assert msgspec.convert(document["active"][0], Finding) == findings[1]
    assert [f["fault"] for f in document["resolved"]] == ["old"]


@pytest.mark.parametrize(
    ("query", "faults"),
    [
        ("node=node-b", ["xid_79", "npu_health"]),
        ("severity=critical", ["xid_79", "npu_health"]),
        (
            "severity=warning,info&node=node-a",
            ["kernel_log_lost", "gpu_temperature_near_slowdown", "gpu_power_at_limit"],
        ),
        ("severity=warning&severity=critical&node=node-a", ["kernel_log_lost", "gpu_temperature_near_slowdown"]),
        ("device=GPU-a0", ["gpu_power_at_limit"]),
        ("node=nowhere", []),
    ],
)
def test_filters(served: tuple[str, FindingBoard], query: str, faults: list[str]) -> None:
    base, _ = served
    assert [f["fault"] for f in findings_at(f"{base}/api/findings?{query}")["active"]] == faults


@pytest.mark.parametrize(
    ("query", "complaint"),
    [("severity=fatal", "'fatal' is not a valid Severity"), ("colour=red", "unknown parameter 'colour'")],
)
def test_a_bad_query_is_a_400_that_says_why(served: tuple[str, FindingBoard], query: str, complaint: str) -> None:
    base, _ = served
    status, content_type, body = get(f"{base}/api/findings?{query}")
    assert (status, content_type) == (400, "application/json")
    assert complaint in json.loads(body)["error"]


def test_the_report_page_health_and_unknown_pages(served: tuple[str, FindingBoard]) -> None:
    base, _ = served
    status, content_type, body = get(f"{base}/?severity=critical")
    assert (status, content_type) == (200, "text/html; charset=utf-8")
    assert b"xid_79" in body and b"gpu_power_at_limit" not in body
    assert get(f"{base}/healthz")[::2] == (200, b'{"status":"ok","nats":"up"}')
    assert get(f"{base}/metrics")[0] == 404


def test_a_new_view_is_served_at_once(served: tuple[str, FindingBoard]) -> None:
    base, board = served
    board.update([], FindingChanges())
    assert findings_at(f"{base}/api/findings")["active"] == []


def test_the_filter_matches_node_wide_findings_by_an_empty_device(findings: list[Finding]) -> None:
    assert FindingFilter(devices=frozenset({""})).matches(findings[3])
    assert not FindingFilter(devices=frozenset({"GPU-a0"})).matches(findings[3])
