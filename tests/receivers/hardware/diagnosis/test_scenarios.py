"""Fault patterns from the C doubles through the monitor, a real nats-server and the diagnosis service to findings.

Each test writes a fault into a double and checks the order of events the recorder saw: the first hardware export
that carries the fault, then the finding, with no more exports in between than the rule's hysteresis needs (none for
a critical finding, one for a warning that must hold twice), so the finding is out within 2 s of appearing in the
telemetry at the monitor's 1 s period. Deadlines are generous (15 s); the ordering is the claim. Clearing the fault
must then publish the resolution.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from eagleeye_otel.diagnosis import FindingChange, FindingMessage, Severity
from eagleeye_otel.routing import RouterClient, RoutingMessage
from eagleeye_otel.semconv import _hardware as hw
from eagleeye_otel.settings import NatsSettings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

Eventually = Callable[..., Awaitable[None]]


@dataclass(frozen=True)
class Expected:
    fault: str
    device: str | None
    severity: Severity
    action_words: tuple[str, ...]
    """Words the action must contain (the knowledge base's wording may change; its intent may not)."""


async def wait_opened(pipeline: Any, eventually: Eventually, since: float, expected: Expected) -> FindingMessage:
    def opened() -> list[tuple[Any, FindingMessage]]:
        return [
            (r, f)
            for r, f in pipeline.findings(since)
            if f.change is FindingChange.OPENED and (f.fault, f.device) == (expected.fault, expected.device)
        ]

    await eventually(lambda: bool(opened()), timeout=15)
    (_, finding), *_ = opened()
    assert finding.severity is expected.severity
    assert finding.node == pipeline.node
    assert all(word in finding.action.lower() for word in expected.action_words), finding.action
    assert finding.conclusion and finding.evidence
    assert finding.first_seen <= finding.last_seen <= time.time() and finding.resolved_at is None
    return finding


def assert_prompt(
    pipeline: Any, since: float, finding: FindingMessage, shows: Callable[[dict[Any, float]], bool]
) -> None:
    """The finding came after the first export that showed the fault, and before the export after next."""
    hardware = pipeline.hardware(since)
    first = next(i for i, received in enumerate(hardware) if shows(pipeline.points(received.data)))
    (at,) = [r.at for r, f in pipeline.findings(since) if f == finding]
    between = [r for r in hardware[first + 1 :] if r.at < at]
    allowed = 0 if finding.severity is Severity.CRITICAL else 1
    assert hardware[first].at <= at, "the finding came before any telemetry showed the fault"
    assert len(between) <= allowed, f"{len(between)} exports went by before the finding"


async def wait_resolved(pipeline: Any, eventually: Eventually, since: float, fault: str, device: str | None) -> None:
    def resolved() -> list[FindingMessage]:
        return [
            f
            for _, f in pipeline.findings(since)
            if f.change is FindingChange.RESOLVED and (f.fault, f.device) == (fault, device)
        ]

    await eventually(lambda: bool(resolved()), timeout=30)
    assert resolved()[0].resolved_at is not None
    assert all((f.fault, f.device) != (fault, device) for f in pipeline.service.board.view.active)


async def test_a_healthy_node_produces_no_finding(pipeline: Any, eventually: Eventually) -> None:
    await eventually(lambda: len(pipeline.hardware()) >= 5, timeout=20)
    assert pipeline.findings() == []
    assert pipeline.service.board.view.active == ()
    devices = {device for _, device, _ in pipeline.service.board.view.devices}
    assert devices == {pipeline.uuid(0), pipeline.uuid(1), "npu-0-0", "npu-1-0"}


async def test_thermal_throttling(pipeline: Any, nvml: Any, eventually: Eventually) -> None:
    gpu = pipeline.uuid(1)
    since = time.monotonic()
    pipeline.nvml_write(nvml.node(2, extra="gpu 1 clock_reasons 0x40\n"))  # hw_thermal_slowdown
    expected = Expected("gpu_hw_thermal_slowdown", gpu, Severity.CRITICAL, ("cooling",))
    finding = await wait_opened(pipeline, eventually, since, expected)
    throttled = pipeline.point(
        hw.EAGLEEYE_HW_GPU_CLOCK_EVENT_ACTIVE, gpu, **{hw.EAGLEEYE_HW_GPU_CLOCK_EVENT_REASON: "hw_thermal_slowdown"}
    )
    assert_prompt(pipeline, since, finding, lambda points: points.get(throttled) == 1)

    cleared = time.monotonic()
    pipeline.nvml_write(nvml.node(2))
    await wait_resolved(pipeline, eventually, cleared, "gpu_hw_thermal_slowdown", gpu)


async def test_ecc_double_bit_errors(pipeline: Any, nvml: Any, eventually: Eventually) -> None:
    gpu = pipeline.uuid(1)
    since = time.monotonic()
    pipeline.nvml_write(nvml.node(2, extra="gpu 1 field 4 2\n"))  # volatile uncorrected ECC count
    finding = await wait_opened(
        pipeline, eventually, since, Expected("gpu_ecc_uncorrected", gpu, Severity.CRITICAL, ("drain", "reset"))
    )
    assert finding.evidence["value"] == 2, finding.evidence  # the telemetry's numbers, not just a verdict
    uncorrected = pipeline.point(hw.HW_ERRORS, gpu, **{hw.ERROR_TYPE: "uncorrected"})
    assert_prompt(pipeline, since, finding, lambda points: points.get(uncorrected) == 2)

    cleared = time.monotonic()
    pipeline.nvml_write(nvml.node(2))  # the counter starts over after a GPU reset
    await wait_resolved(pipeline, eventually, cleared, "gpu_ecc_uncorrected", gpu)


async def test_xid_79_and_the_gpu_falling_off_the_bus(pipeline: Any, nvml: Any, eventually: Eventually) -> None:
    gpu = pipeline.uuid(0)  # at PCI 0000:18:00.0 in the double
    since = time.monotonic()
    pipeline.log_kernel(
        "[ 9812.004523] NVRM: Xid (PCI:0000:18:00): 79, pid=2411, name=python3, GPU has fallen off the bus."
    )
    pipeline.nvml_write(nvml.node(2, extra="gpu 0 fail * 15\n"))  # NVML_ERROR_GPU_IS_LOST from every call
    xid = await wait_opened(pipeline, eventually, since, Expected("xid_79", gpu, Severity.CRITICAL, ("drain",)))
    event = pipeline.point(
        hw.EAGLEEYE_KERNEL_LOG_EVENTS,
        None,
        **{
            hw.EAGLEEYE_KERNEL_LOG_KIND: "xid",
            hw.EAGLEEYE_KERNEL_LOG_CODE: "79",
            hw.EAGLEEYE_KERNEL_LOG_DEVICE: "0000:18:00.0",
        },
    )
    assert_prompt(pipeline, since, xid, lambda points: points.get(event) == 1)
    lost = await wait_opened(pipeline, eventually, since, Expected("gpu_lost", gpu, Severity.CRITICAL, ("drain",)))
    failed = pipeline.point(hw.HW_STATUS, gpu, **{hw.HW_STATE: "failed"})
    assert_prompt(pipeline, since, lost, lambda points: points.get(failed) == 1)

    cleared = time.monotonic()
    pipeline.nvml_write(nvml.node(2))  # the GPU answers again (after a power cycle)
    await wait_resolved(pipeline, eventually, cleared, "gpu_lost", gpu)


async def test_row_remap_failure(pipeline: Any, nvml: Any, eventually: Eventually) -> None:
    gpu = pipeline.uuid(0)
    since = time.monotonic()
    pipeline.nvml_write(nvml.node(2, extra="gpu 0 field 145 1\n"))
    finding = await wait_opened(
        pipeline, eventually, since, Expected("gpu_row_remap_failure", gpu, Severity.CRITICAL, ("replacement",))
    )
    failure = pipeline.point(hw.EAGLEEYE_HW_GPU_REMAPPED_ROWS_FAILURE, gpu)
    assert_prompt(pipeline, since, finding, lambda points: points.get(failure) == 1)

    cleared = time.monotonic()
    pipeline.nvml_write(nvml.node(2))
    await wait_resolved(pipeline, eventually, cleared, "gpu_row_remap_failure", gpu)


async def test_ascend_major_alarm_and_error_codes(pipeline: Any, eventually: Eventually) -> None:
    chip = "npu-1-0"
    since = time.monotonic()
    pipeline.dcmi_write(pipeline.dcmi_text(health=2, errorcodes=(0x80E01801, 0x80E18402)))
    health = await wait_opened(pipeline, eventually, since, Expected("npu_health", chip, Severity.CRITICAL, ("reset",)))
    alarm = pipeline.point(hw.EAGLEEYE_HW_NPU_HEALTH, chip)
    assert_prompt(pipeline, since, health, lambda points: points.get(alarm) == 2)
    worn = await wait_opened(
        pipeline, eventually, since, Expected("npu_hbm_isolated_rows_limit", chip, Severity.CRITICAL, ("repair",))
    )
    code = pipeline.point(hw.EAGLEEYE_HW_NPU_ERROR_CODE_ACTIVE, chip, **{hw.EAGLEEYE_HW_NPU_ERROR_CODE: "0x80E18402"})
    assert_prompt(pipeline, since, worn, lambda points: points.get(code) == 1)
    await wait_opened(
        pipeline, eventually, since, Expected("npu_hbm_uncorrectable", chip, Severity.WARNING, ("restart",))
    )

    cleared = time.monotonic()
    pipeline.dcmi_write(pipeline.dcmi_text())
    await wait_resolved(pipeline, eventually, cleared, "npu_health", chip)
    await wait_resolved(pipeline, eventually, cleared, "npu_hbm_isolated_rows_limit", chip)


async def test_a_router_stops_picking_the_engine_on_the_failing_gpu(
    pipeline: Any, nvml: Any, eventually: Eventually
) -> None:
    """Part of the claim for routers: within seconds of the telemetry, pick() avoids the engine; then it returns."""
    settings = NatsSettings(servers=(pipeline.nats_url,))
    router = RouterClient(nats_settings=settings, follow_health=True, stale_after=600)  # no heartbeats here
    await router.start()
    sick, well = pipeline.uuid(1), pipeline.uuid(0)
    try:
        for instance, gpu, waiting in (("pod-on-gpu1", sick, 0), ("pod-on-gpu0", well, 4)):
            message = RoutingMessage(
                version=1,
                instance=instance,
                model="llama",
                engine=0,
                timestamp=time.time(),
                seq=1,
                started=1_700_000_000.0,
                num_requests_waiting=waiting,
                num_requests_running=0,
                kv_cache_usage=0.0,
                node=pipeline.node,
                devices=(gpu,),
            )
            assert router.handle(msgspec.json.encode(message))
        assert router.pick().message.instance == "pod-on-gpu1"  # type: ignore[union-attr]

        pipeline.nvml_write(nvml.node(2, extra="gpu 1 field 4 1\n"))
        await eventually(lambda: not router.get("pod-on-gpu1").healthy, timeout=15)  # type: ignore[union-attr]
        assert router.pick().message.instance == "pod-on-gpu0"  # type: ignore[union-attr]

        pipeline.nvml_write(nvml.node(2))
        await eventually(lambda: router.get("pod-on-gpu1").healthy, timeout=30)  # type: ignore[union-attr]
        assert router.pick().message.instance == "pod-on-gpu1"  # type: ignore[union-attr]
    finally:
        await router.close()
