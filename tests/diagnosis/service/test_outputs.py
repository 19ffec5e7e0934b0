"""The finding message, the metrics and the OTel log events, each read back the way its consumer reads it."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from eagleeye_otel.diagnosis import Finding, FindingChange, FindingChanges, FindingMessage, encode_message
from eagleeye_otel.diagnosis._board import FindingBoard
from eagleeye_otel.diagnosis._outputs import FindingEvents, changes_in_order, register_diagnosis_metrics
from eagleeye_otel.semconv import _diagnosis as dx
from eagleeye_otel.semconv import _hardware as hw

CONTRACT = {"node", "device", "fault", "severity", "conclusion", "action", "evidence", "first_seen", "last_seen"}


def test_the_message_is_the_finding_contract_plus_its_change(findings: list[Finding]) -> None:
    payload = encode_message(findings[1], FindingChange.OPENED)
    document = json.loads(payload)
    assert document.keys() >= CONTRACT
    assert document["change"] == "opened"
    assert document["severity"] == "critical"
    assert document["resolved_at"] is None
    assert document["evidence"] == {"xid": 79, "count": 1}
    assert msgspec.json.decode(payload, type=Finding) == findings[1]  # a consumer of the contract alone
    assert msgspec.json.decode(payload, type=FindingMessage) == FindingMessage.of(findings[1], FindingChange.OPENED)


def test_resolutions_are_announced_first(findings: list[Finding]) -> None:
    changes = FindingChanges(opened=(findings[0],), updated=(findings[2],), resolved=(findings[1],))
    assert [change for change, _ in changes_in_order(changes)] == [
        FindingChange.RESOLVED,
        FindingChange.OPENED,
        FindingChange.UPDATED,
    ]


def _points(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, Any], float]]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        (dict(point.attributes or {}), point.value)
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def test_metrics_state_each_active_finding_and_each_device_worst_state(findings: list[Finding]) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    board = FindingBoard()
    register_diagnosis_metrics(provider, board)
    devices = (("node-a", "GPU-a0", "gpu"), ("node-a", "GPU-a1", "gpu"), ("node-a", "GPU-a2", "gpu"))
    board.update(findings, FindingChanges(), (*devices, ("node-b", "GPU-b0", "gpu")))

    active = _points(reader, dx.EAGLEEYE_DIAGNOSIS_FINDINGS)
    assert len(active) == len(findings) and all(value == 1 for _, value in active)
    by_fault = {attributes[dx.EAGLEEYE_DIAGNOSIS_FAULT]: attributes for attributes, _ in active}
    assert by_fault["xid_79"] == {
        hw.EAGLEEYE_NODE_NAME: "node-b",
        hw.HW_ID: "GPU-b0",
        dx.EAGLEEYE_DIAGNOSIS_FAULT: "xid_79",
        dx.EAGLEEYE_DIAGNOSIS_SEVERITY: "critical",
    }
    assert hw.HW_ID not in by_fault["kernel_log_lost"]  # node-wide

    status = {
        attributes[hw.HW_ID]: attributes[hw.HW_STATE]
        for attributes, value in _points(reader, dx.HW_STATUS)
        if value == 1
    }
    assert status == {"GPU-a0": "ok", "GPU-a1": "degraded", "GPU-a2": "ok", "GPU-b0": "failed"}
    assert len(_points(reader, dx.HW_STATUS)) == 4 * len(hw.HW_STATES)

    board.update([], FindingChanges(resolved=tuple(findings)))
    assert _points(reader, dx.EAGLEEYE_DIAGNOSIS_FINDINGS) == []
    assert {a[hw.HW_STATE] for a, value in _points(reader, dx.HW_STATUS) if value == 1} == {"ok"}
    provider.shutdown()


def test_each_change_is_one_log_event_with_the_message_as_its_body(findings: list[Finding]) -> None:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    events = FindingEvents(provider)
    critical = findings[1]
    events.emit(FindingChange.OPENED, critical)
    resolved = msgspec.structs.replace(critical, resolved_at=critical.last_seen + 10)
    events.emit(FindingChange.RESOLVED, resolved)

    opened_record, resolved_record = (data.log_record for data in exporter.get_finished_logs())
    assert opened_record.event_name == dx.EAGLEEYE_DIAGNOSIS_FINDING_EVENT
    assert opened_record.severity_number is SeverityNumber.ERROR
    assert opened_record.timestamp == int(critical.last_seen * 1e9)
    assert dict(opened_record.attributes or {}) == {
        hw.EAGLEEYE_NODE_NAME: "node-b",
        hw.HW_ID: "GPU-b0",
        dx.EAGLEEYE_DIAGNOSIS_FAULT: "xid_79",
        dx.EAGLEEYE_DIAGNOSIS_SEVERITY: "critical",
        dx.EAGLEEYE_DIAGNOSIS_CHANGE: "opened",
    }
    assert opened_record.body == msgspec.to_builtins(FindingMessage.of(critical, FindingChange.OPENED))
    assert resolved_record.severity_number is SeverityNumber.INFO
    assert resolved_record.timestamp == int(resolved.resolved_at * 1e9)  # type: ignore[operator]
    provider.shutdown()
