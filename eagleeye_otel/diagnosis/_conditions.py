"""The pieces rules are built from: which devices a rule applies to, which series it reads, and its texts.

Each is checked when the knowledge base loads (a metric name not in the hardware conventions, an attribute the
metric does not carry, a malformed version, a placeholder the rule cannot fill), so a typo in a rule file stops the
service at start with the file and key named, instead of a rule that silently never fires.
"""

from __future__ import annotations

import fnmatch
import operator
import re
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from eagleeye_otel.diagnosis._spec import WhenSpec
from eagleeye_otel.diagnosis._telemetry import DeviceView, NodeView, Series, SeriesKey
from eagleeye_otel.errors import ConfigError
from eagleeye_otel.semconv import _hardware as hw

__all__ = ["COMMON_PLACEHOLDERS", "OPERATORS", "Selector", "Template", "When", "device_placeholders"]

_METRICS: Final = {metric.name: metric for metric in hw.HARDWARE_METRICS}

OPERATORS: Final[Mapping[str, Callable[[float, float], bool]]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}

COMMON_PLACEHOLDERS: Final = frozenset({"node", "device", "device_name", "model", "driver"})
"""What every conclusion and action may name, besides the placeholders of its rule's kind."""

_VERSION = re.compile(r"\s*(?P<op>>=|<=|==|!=|>|<)?\s*(?P<version>\d+(?:\.\d+)*)\s*")


class When:
    """Which devices a rule applies to: type, vendor, model globs, driver and firmware version ranges.

    Args:
        spec: ``type``, ``vendor``, ``model`` (a glob or a list of globs, matched case-insensitively against the
            model name with and without its first word, so ``H100*`` matches ``NVIDIA H100 80GB HBM3``),
            ``driver`` and ``firmware`` (comparisons such as ``">=550"`` or ``">=550,<560"``; components compare as
            numbers, missing ones count as 0, ``==550`` matches every 550.x). A device whose model or version is
            unknown does not match a condition on it.
        where: file and key, for errors.

    Raises:
        ConfigError: a version comparison cannot be parsed.
    """

    def __init__(self, spec: WhenSpec, where: str) -> None:
        self.type = spec.type
        self.vendor = spec.vendor
        models = [spec.model] if isinstance(spec.model, str) else spec.model or []
        self.models = tuple(pattern.lower() for pattern in models)
        self.driver = _versions(spec.driver, f"{where}.driver")
        self.firmware = _versions(spec.firmware, f"{where}.firmware")
        self.constrained = any((self.type, self.vendor, self.models, self.driver, self.firmware))
        self._described_only = any((self.vendor, self.models, self.driver, self.firmware))

    def applies(self, device: DeviceView | None) -> bool:
        """Like :meth:`matches`, for an event's device, which the telemetry may not describe (only a kernel-log
        line named it): such a device meets a ``type`` condition (the event's kind says what it is) but no
        condition on its vendor, model or versions."""
        return not self._described_only if device is None else self.matches(device)

    def matches(self, device: DeviceView) -> bool:
        """Whether the rule applies to ``device``, as its description says."""
        if not self.constrained:
            return True
        if self.type is not None and device.type != self.type:
            return False
        description = device.description
        if self.vendor is not None and description.get(hw.HW_VENDOR, "").lower() != self.vendor.lower():
            return False
        if self.models and not _model_matches(description.get(hw.HW_MODEL), self.models):
            return False
        if self.driver and not _version_matches(description.get(hw.HW_DRIVER_VERSION), self.driver):
            return False
        return not self.firmware or _version_matches(description.get(hw.HW_FIRMWARE_VERSION), self.firmware)


def _model_matches(model: str | None, patterns: Sequence[str]) -> bool:
    if not model:
        return False
    names = (model.lower(), model.partition(" ")[2].lower())
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns for name in names)


_Comparison = tuple[Callable[[Any, Any], bool], tuple[int, ...]]


def _versions(spec: str | None, where: str) -> tuple[_Comparison, ...]:
    if spec is None:
        return ()
    comparisons = []
    for part in spec.split(","):
        match = _VERSION.fullmatch(part)
        if match is None:
            raise ConfigError(where, spec, "expected comparisons such as '>=550' or '>=550,<560.28'")
        numbers = tuple(int(number) for number in match["version"].split("."))
        comparisons.append((OPERATORS[match["op"] or "=="], numbers))
    return tuple(comparisons)


def _version_matches(version: str | None, comparisons: Sequence[_Comparison]) -> bool:
    if not version:
        return False
    numbers = tuple(int(part) for part in re.findall(r"\d+", version.split("-")[0])[:6])
    for compare, wanted in comparisons:
        if compare in (operator.eq, operator.ne):
            have = numbers[: len(wanted)]
        else:
            width = max(len(numbers), len(wanted))
            have, wanted_padded = numbers + (0,) * (width - len(numbers)), wanted + (0,) * (width - len(wanted))
            if not compare(have, wanted_padded):
                return False
            continue
        if not compare(have, wanted):
            return False
    return True


class Selector:
    """The series a rule reads: a hardware metric, narrowed by attribute values; matching series add up.

    Args:
        metric: a name from the hardware conventions (``hw.temperature``).
        attributes: attribute to a value or a list of accepted values (``{"error.type": ["nvlink_crc_flit"]}``).
        where: file and key, for errors.

    Raises:
        ConfigError: the metric is not a hardware metric, or does not carry one of the attributes.
    """

    def __init__(self, metric: str, attributes: Mapping[str, str | list[str]], where: str) -> None:
        known = _METRICS.get(metric)
        if known is None:
            raise ConfigError(f"{where}.metric", metric, "not a hardware metric (see docs/hardware.md)")
        for key in attributes:
            if key not in known.attributes:
                raise ConfigError(
                    f"{where}.attributes", key, f"{metric} carries {', '.join(known.attributes) or 'no attribute'}"
                )
        self.metric = metric
        self.filters = {
            key: frozenset([value] if isinstance(value, str) else value) for key, value in attributes.items()
        }
        exact = len(self.filters) == len(known.attributes) and all(len(v) == 1 for v in self.filters.values())
        self._key: SeriesKey | None = (
            tuple(sorted((key, next(iter(values))) for key, values in self.filters.items())) if exact else None
        )

    def series(self, node: NodeView, device: DeviceView | None) -> list[Series]:
        """The matching series the node's latest update carried."""
        if self._key is not None:
            by_key = (node.series if device is None else device.series).get(self.metric)
            found = None if by_key is None else by_key.get(self._key)
            return [found] if found is not None and found.seq == node.seq else []
        return [
            series
            for series in node.current(device, self.metric)
            if all(series.attributes.get(key) in values for key, values in self.filters.items())
        ]

    def total(self, node: NodeView, device: DeviceView | None) -> float | None:
        """The sum of the matching current series; None when there is none."""
        found = self.series(node, device)
        if not found:
            return None
        return found[0].value if len(found) == 1 else sum(series.value for series in found)

    def __str__(self) -> str:
        if not self.filters:
            return self.metric
        filters = ",".join(f"{key}={'|'.join(sorted(values))}" for key, values in sorted(self.filters.items()))
        return f"{self.metric}{{{filters}}}"


class Template:
    """A conclusion or action with ``{placeholders}`` (Python format syntax: ``{value:.0f}``).

    Args:
        text: the text.
        placeholders: the names the rule can fill.
        where: file and key, for errors.

    Raises:
        ConfigError: the text does not parse, or names something the rule cannot fill.
    """

    def __init__(self, text: str, placeholders: frozenset[str], where: str) -> None:
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
        except ValueError as error:
            raise ConfigError(where, text, f"not a valid template: {error}") from error
        for name in fields:
            if name not in placeholders:
                known = ", ".join(sorted(placeholders))
                raise ConfigError(where, text, f"unknown placeholder {{{name}}}; this rule can fill {known}")
        self.text = text

    def render(self, values: Mapping[str, Any]) -> str:
        """The text with ``values`` filled in; the text as written if a value does not fit its format."""
        try:
            return self.text.format_map(values)
        except (KeyError, ValueError, TypeError, IndexError):
            return self.text


def device_placeholders(
    node: NodeView, device: DeviceView | None, device_id: str | None, label: str = "Device"
) -> dict[str, Any]:
    """The placeholders every rule fills: node, device id and name, model and driver (``unknown`` if not known).

    A device the telemetry does not describe (only a kernel-log line names it) is called ``<label> <id>``, as in
    ``GPU 0000:3b:00.0``; one that no line names either, ``Unnamed <label>``.
    """
    description = {} if device is None else device.description
    if device is not None:
        name = device.name
    elif device_id is None:
        name = f"Unnamed {label}"
    else:
        name = device_id if device_id.startswith(label) else f"{label} {device_id}"
    return {
        "node": node.name,
        "device": device_id or "the node",
        "device_name": name,
        "model": description.get(hw.HW_MODEL, "unknown model"),
        "driver": description.get(hw.HW_DRIVER_VERSION, "unknown"),
    }
