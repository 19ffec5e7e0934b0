"""Rule conditions on the device's model, driver and firmware, and the series selectors."""

from __future__ import annotations

import pytest

from eagleeye_otel.diagnosis._conditions import Selector, Template, When
from eagleeye_otel.diagnosis._spec import WhenSpec
from eagleeye_otel.diagnosis._telemetry import DeviceView
from eagleeye_otel.errors import ConfigError
from eagleeye_otel.semconv import _hardware as semconv


def _device(model: str | None = "NVIDIA H100 80GB HBM3", driver: str | None = "550.54.15", **extra: str) -> DeviceView:
    description = {semconv.HW_VENDOR: "nvidia", **extra}
    if model is not None:
        description[semconv.HW_MODEL] = model
    if driver is not None:
        description[semconv.HW_DRIVER_VERSION] = driver
    return DeviceView("GPU-x", semconv.HW_TYPE_GPU, "GPU 0", description)


@pytest.mark.parametrize(
    ("spec", "matches"),
    [
        (WhenSpec(), True),
        (WhenSpec(type="gpu"), True),
        (WhenSpec(type="npu"), False),
        (WhenSpec(vendor="NVIDIA"), True),
        (WhenSpec(model="H100*"), True),
        (WhenSpec(model="*h100*"), True),
        (WhenSpec(model="NVIDIA H100 80GB HBM3"), True),
        (WhenSpec(model=["A100*", "H200*"]), False),
        (WhenSpec(driver=">=550"), True),
        (WhenSpec(driver=">550"), True),  # 550.54 > 550.0
        (WhenSpec(driver="<550"), False),
        (WhenSpec(driver="==550"), True),  # every 550.x
        (WhenSpec(driver="==550.54.15"), True),
        (WhenSpec(driver="!=550"), False),
        (WhenSpec(driver=">=550,<560"), True),
        (WhenSpec(driver=">=555,<560"), False),
        (WhenSpec(firmware=">=96"), False),  # firmware unknown: no match
    ],
)
def test_when(spec, matches):
    assert When(spec, "f.yaml: rules[0].when").matches(_device()) is matches


def test_unknown_model_or_driver_matches_no_condition_on_it():
    assert not When(WhenSpec(model="*"), "w").matches(_device(model=None))
    assert not When(WhenSpec(driver=">=1"), "w").matches(_device(driver=None))
    assert When(WhenSpec(type="gpu"), "w").matches(_device(model=None, driver=None))


def test_an_event_device_nobody_described_meets_only_a_type_condition():
    assert When(WhenSpec(type="gpu"), "w").applies(None)
    assert not When(WhenSpec(model="H100*"), "w").applies(None)


def test_ascend_driver_versions_compare_by_their_numbers():
    npu = _device(model="910B3", driver="24.1.rc2")
    assert When(WhenSpec(driver=">=24.1"), "w").matches(npu)
    assert not When(WhenSpec(driver=">=24.2"), "w").matches(npu)


@pytest.mark.parametrize("bad", ["newest", ">=", "~550", ">=550;<560"])
def test_a_malformed_version_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="expected comparisons") as raised:
        When(WhenSpec(driver=bad), "f.yaml: rules[0].when")
    assert raised.value.setting == "f.yaml: rules[0].when.driver"


def test_a_selector_names_itself_and_checks_the_metric():
    selector = Selector(semconv.HW_ERRORS, {semconv.ERROR_TYPE: ["nvlink_replay", "nvlink_recovery"]}, "w")
    assert str(selector) == "hw.errors{error.type=nvlink_recovery|nvlink_replay}"
    with pytest.raises(ConfigError, match=r"hw\.errors carries error\.type"):
        Selector(semconv.HW_ERRORS, {"error.kind": "x"}, "w")


def test_a_template_that_does_not_fit_its_value_is_shown_as_written():
    template = Template("{value:.0f} °C", frozenset({"value"}), "w")
    assert template.render({"value": 71.6}) == "72 °C"
    assert template.render({"value": None}) == "{value:.0f} °C"
    with pytest.raises(ConfigError, match="not a valid template"):
        Template("{value", frozenset({"value"}), "w")
