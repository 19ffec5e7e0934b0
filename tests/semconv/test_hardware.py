"""The hardware metric table: well-formed, and its copies of upstream ``hw.*`` values still match upstream."""

from __future__ import annotations

import inspect
import re

import pytest
from opentelemetry.semconv._incubating.attributes import error_attributes, hw_attributes, network_attributes
from opentelemetry.semconv._incubating.metrics import hw_metrics

from eagleeye_otel.semconv import _hardware as hw

_UNIT = re.compile(r"1|s|By|By/s|Cel|W|J|Hz|\{[a-z]+\}")

# Upstream factories create synchronous instruments where we observe: the matching observable kind.
_KIND_OF_UPSTREAM = {
    "create_counter": hw.HwInstrument.COUNTER,
    "create_up_down_counter": hw.HwInstrument.UP_DOWN_COUNTER,
    "create_observable_gauge": hw.HwInstrument.GAUGE,
}


class _RecordingMeter:
    """Stands in for a meter and records what an upstream ``create_*`` factory asked for."""

    def __init__(self) -> None:
        self.created: tuple[str, str, str] | None = None

    def __getattr__(self, method: str):
        def create(**kwargs):
            self.created = (method, kwargs["name"], kwargs["unit"])

        return create


def _upstream(name: str) -> tuple[str, str, str]:
    factory = getattr(hw_metrics, "create_" + name.replace(".", "_"))
    meter = _RecordingMeter()
    if "callbacks" in inspect.signature(factory).parameters:
        factory(meter, None)
    else:
        factory(meter)
    assert meter.created is not None
    return meter.created


_UPSTREAM_METRICS = [metric for metric in hw.HARDWARE_METRICS if metric.name.startswith("hw.")]


def test_the_table_has_the_upstream_metrics_the_issue_names():
    assert {metric.name for metric in _UPSTREAM_METRICS} == {
        "hw.gpu.utilization",
        "hw.gpu.memory.utilization",
        "hw.gpu.memory.usage",
        "hw.gpu.memory.limit",
        "hw.temperature",
        "hw.temperature.limit",
        "hw.power",
        "hw.energy",
        "hw.errors",
        "hw.status",
    }


@pytest.mark.parametrize("metric", _UPSTREAM_METRICS, ids=lambda metric: metric.name)
def test_upstream_metric_names_units_and_instruments_match(metric):
    constant = next(name for name, value in vars(hw).items() if value == metric.name and name.startswith("HW_"))
    assert getattr(hw_metrics, constant) == metric.name
    method, name, unit = _upstream(metric.name)
    assert (name, unit, _KIND_OF_UPSTREAM[method]) == (metric.name, metric.unit, metric.instrument)


def test_upstream_attribute_names_match():
    for constant in (
        "HW_ID",
        "HW_NAME",
        "HW_TYPE",
        "HW_VENDOR",
        "HW_MODEL",
        "HW_SERIAL_NUMBER",
        "HW_DRIVER_VERSION",
        "HW_FIRMWARE_VERSION",
        "HW_STATE",
        "HW_GPU_TASK",
        "HW_SENSOR_LOCATION",
        "HW_LIMIT_TYPE",
    ):
        assert getattr(hw, constant) == getattr(hw_attributes, constant), constant
    assert hw.ERROR_TYPE == error_attributes.ERROR_TYPE
    assert hw.NETWORK_IO_DIRECTION == network_attributes.NETWORK_IO_DIRECTION


def test_upstream_attribute_values_match():
    assert set(hw.HW_STATES) <= {value.value for value in hw_attributes.HwStateValues}
    assert hw_attributes.HwTypeValues.GPU.value == hw.HW_TYPE_GPU
    assert hw.HW_TYPE_NPU not in {value.value for value in hw_attributes.HwTypeValues}
    limits = {value.value for value in hw_attributes.HwLimitTypeValues}
    assert {hw.LIMIT_THROTTLED, hw.LIMIT_HIGH_CRITICAL} <= limits
    assert hw_attributes.HwGpuTaskValues.GENERAL.value == "general"


def test_names_are_unique_and_own_names_stay_in_the_eagleeye_hw_namespace():
    names = [metric.name for metric in hw.HARDWARE_METRICS]
    assert len(names) == len(set(names))
    for name in names:
        assert name.startswith(("hw.", "eagleeye.hw.")), name
    own_attributes = [value for name, value in vars(hw).items() if name.startswith("EAGLEEYE_") and name not in names]
    for value in own_attributes:
        assert value.startswith(("eagleeye.hw.", "eagleeye.node.")), value


def test_every_metric_is_well_formed():
    for metric in hw.HARDWARE_METRICS:
        assert _UNIT.fullmatch(metric.unit), (metric.name, metric.unit)
        assert metric.description.endswith("."), metric.name
        assert metric.sources, metric.name
        assert set(metric.sources) <= {hw.HW_TYPE_GPU, hw.HW_TYPE_NPU, hw.NODE}, metric.name
        assert len(metric.attributes) == len(set(metric.attributes)), metric.name
        identifying = {*hw.DEVICE_ATTRIBUTES, *hw.DEVICE_DESCRIPTION_ATTRIBUTES} - {hw.HW_TYPE}
        assert not set(metric.attributes) & identifying, metric.name


def test_clock_event_reasons_are_the_nvml_bits_in_order():
    import pynvml  # noqa: PLC0415 - the nvidia extra, installed by the test command

    prefix = "nvmlClocksThrottleReason"
    by_bit = {
        getattr(pynvml, name): re.sub(r"(?<!^)(?=[A-Z])", "_", name.removeprefix(prefix)).lower()
        for name in dir(pynvml)
        if name.startswith(prefix) and name.removeprefix(prefix) not in ("All", "None", "UserDefinedClocks")
    }
    assert tuple(by_bit[1 << bit] for bit in range(len(by_bit))) == hw.CLOCK_EVENT_REASONS
