"""A hand-built sweep that reaches every metric: a GPU with every field, a lost GPU, an Ascend chip, kernel-log
events and each source state; shared by the instrument and OTLP encoder tests."""

from __future__ import annotations

from eagleeye_otel.receivers.hardware._model import (
    DeviceIdentity,
    DeviceStatus,
    GpuReading,
    KernelEventKind,
    KernelLogSummary,
    NpuReading,
    SourceState,
    SourceStatus,
    Sweep,
)

H100 = DeviceIdentity(
    id="GPU-11111111-2222-3333-4444-555555555555",
    type="gpu",
    vendor="nvidia",
    index=0,
    model="NVIDIA H100 80GB HBM3",
    serial="1650123456789",
    pci_bus_id="0000:3b:00.0",
    driver_version="570.124.06",
    firmware_version="96.00.99.00.01",
)
LOST = DeviceIdentity(id="GPU-lost", type="gpu", vendor="nvidia", index=1, pci_bus_id="0000:5e:00.0")
ASCEND = DeviceIdentity(id="npu-0-0", type="npu", vendor="huawei", index=0, model="910B3", firmware_version="7.1")

GPU = GpuReading(
    identity=H100,
    utilization=0.93,
    memory_utilization=0.41,
    memory_used_bytes=60 * 2**30,
    memory_total_bytes=80 * 2**30,
    temperature_c=71.0,
    memory_temperature_c=80.0,
    slowdown_temperature_c=87.0,
    shutdown_temperature_c=92.0,
    power_w=612.5,
    power_limit_w=700.0,
    energy_j=123456.789,
    sm_clock_hz=1.98e9,
    memory_clock_hz=2.619e9,
    clock_event_reasons=frozenset({"sw_power_cap", "something_new"}),
    ecc_corrected_volatile=3,
    ecc_uncorrected_volatile=0,
    ecc_corrected_aggregate=40,
    ecc_uncorrected_aggregate=1,
    retired_pages_sbe=1,
    retired_pages_dbe=0,
    retired_pages_pending=False,
    remapped_rows_correctable=2,
    remapped_rows_uncorrectable=1,
    remapped_rows_pending=True,
    remapped_rows_failure=False,
    pcie_replays=5,
    pcie_link_generation=5,
    pcie_link_width=16,
    pcie_tx_bytes_per_s=1.5e9,
    pcie_rx_bytes_per_s=2.5e8,
    nvlink_errors={"crc_flit": 7, "replay": 1},
    recovery_action=0,
    xid_counts={13: 2, 79: 1},
)
NPU = NpuReading(
    identity=ASCEND,
    card_id=0,
    device_id=0,
    health=2,
    error_codes=(0x80E01801, 0x80E18402),
    temperature_c=55.0,
    power_w=88.5,
    aicore_utilization=0.5,
    hbm_utilization=0.25,
    npu_utilization=0.6,
    hbm_used_bytes=16 * 2**30,
    hbm_total_bytes=64 * 2**30,
    aicore_frequency_hz=1.8e9,
)
XID_79 = (KernelEventKind.XID, "79", "0000:5e:00.0")
SXID = (KernelEventKind.SXID, "20034", None)
SWEEP = Sweep(
    node="node-a",
    taken_at=1.0,
    gpus=(
        GPU,
        GpuReading(
            identity=LOST,
            status=DeviceStatus.LOST,
            detail="GPU is lost",
            power_w=1.0,
            xid_counts={79: 1},
            xid_last_seen={79: 1_700_000_079.5},
        ),
    ),
    npus=(NPU,),
    kernel_log=KernelLogSummary(
        counts={XID_79: 2, SXID: 1},
        last_messages={XID_79: "...", SXID: "..."},
        malformed=4,
        lines=100,
        overflow=5,
        lost=6,
        last_seen={XID_79: 1_700_000_079.0, SXID: 1_700_000_034.0},
    ),
    sources={
        "nvml": SourceStatus(SourceState.OK),
        "dcmi": SourceStatus(SourceState.HUNG, None, "listing the chips: dcmi_get_card_list has not returned"),
        "kernel_log": SourceStatus(SourceState.UNAVAILABLE, "not_readable", "kernel log: /dev/kmsg: EACCES"),
    },
)
