"""Eagle Eye's settings, read once from the environment and validated.

:meth:`Settings.from_env` is the only code in Eagle Eye that reads ``os.environ`` (with
:meth:`HardwareSettings.from_env`, kept apart so that a bad hardware-monitor setting never turns off the vLLM
plugin's publishing). A bad value raises :class:`~eagleeye_otel.errors.ConfigError` naming the variable, so a
service stops at start and vLLM's plugin can log one clear error and stay out of the way.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from eagleeye_otel import environment_variables as ev
from eagleeye_otel._env import EnvReader, is_kind
from eagleeye_otel._nats_settings import DEFAULT_NATS_URL, NatsSettings, nats_settings_from_env
from eagleeye_otel.errors import ConfigError
from eagleeye_otel.nats_subjects import check_subject, subject_token
from eagleeye_otel.semconv import (
    DEFAULT_HARDWARE_SUBJECT_PREFIX,
    DEFAULT_METRICS_SUBJECT,
    DEFAULT_ROUTING_SNAPSHOT_SUBJECT,
    DEFAULT_ROUTING_SUBJECT,
    ROUTING_STALE_AFTER_S,
    VLLM_METRICS,
)

__all__ = [
    "DEFAULT_NATS_URL",
    "EnvReader",
    "HardwareSettings",
    "MetricsSettings",
    "NatsSettings",
    "RoutingSettings",
    "Settings",
    "check_subject",
    "default_instance_id",
    "subject_token",
]

_MAX_HEARTBEAT_S = ROUTING_STALE_AFTER_S / 2
"""Routers forget an engine they hear nothing from for ``ROUTING_STALE_AFTER_S``; two heartbeats must fit in that
window, so a single lost one never makes an idle engine vanish from their views."""
_MAX_DEVICES, _MAX_DEVICE_ID = 64, 128
"""Bounds of the routing message's ``devices``."""


@dataclass(frozen=True)
class RoutingSettings:
    """What the routing publisher sends, where, and how often when idle."""

    enabled: bool = True
    subject: str = DEFAULT_ROUTING_SUBJECT
    snapshot_subject: str = DEFAULT_ROUTING_SNAPSHOT_SUBJECT
    # A lambda on purpose: default_instance_id is defined further down the module.
    instance_id: str = field(default_factory=lambda: default_instance_id())  # noqa: PLW0108
    endpoint: str | None = None
    heartbeat_interval: float = 1.0
    node: str | None = None
    """The node the instance runs on, named as the hardware monitor names it."""
    devices: tuple[str, ...] = ()
    """The accelerators it uses, named as the hardware monitor names them (GPU UUIDs, ``npu-<card>-<device>``)."""


@dataclass(frozen=True)
class MetricsSettings:
    """Where the NATS metric exporter (entry point ``eagle_eye_nats``) publishes, and which vLLM metrics to record."""

    subject: str = DEFAULT_METRICS_SUBJECT
    overrides: Mapping[str, bool] = field(default_factory=dict)
    """vLLM metric name to on/off, over the defaults of :data:`~eagleeye_otel.semconv.VLLM_METRICS`."""


@dataclass(frozen=True)
class Settings:
    """Everything Eagle Eye reads from its environment."""

    nats: NatsSettings = field(default_factory=NatsSettings)
    routing: RoutingSettings = field(default_factory=RoutingSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the settings.

        Args:
            environ: the variables to read; defaults to ``os.environ``.

        Raises:
            ConfigError: a variable has a value that cannot be used; the error names it.
        """
        env = EnvReader(os.environ if environ is None else environ)
        nats = nats_settings_from_env(env)
        routing = RoutingSettings(
            enabled=_flag(ev.EAGLEEYE_ROUTING_ENABLED, env.get(ev.EAGLEEYE_ROUTING_ENABLED), default=True),
            subject=_subject(
                ev.EAGLEEYE_ROUTING_SUBJECT, env.get(ev.EAGLEEYE_ROUTING_SUBJECT), DEFAULT_ROUTING_SUBJECT
            ),
            snapshot_subject=_subject(
                ev.EAGLEEYE_ROUTING_SNAPSHOT_SUBJECT,
                env.get(ev.EAGLEEYE_ROUTING_SNAPSHOT_SUBJECT),
                DEFAULT_ROUTING_SNAPSHOT_SUBJECT,
            ),
            instance_id=env.get(ev.EAGLEEYE_INSTANCE_ID) or default_instance_id(env.raw),
            endpoint=_endpoint(env.get(ev.EAGLEEYE_INSTANCE_ENDPOINT)),
            heartbeat_interval=_heartbeat(env.get(ev.EAGLEEYE_HEARTBEAT_INTERVAL)),
            node=env.get(ev.EAGLEEYE_NODE_NAME) or env.get("NODE_NAME") or socket.gethostname(),
            devices=_devices(env),
        )
        if routing.subject == routing.snapshot_subject:
            raise ConfigError(
                ev.EAGLEEYE_ROUTING_SNAPSHOT_SUBJECT,
                routing.snapshot_subject,
                "must differ from the routing subject",
            )
        metrics = MetricsSettings(
            subject=_subject(
                ev.EAGLEEYE_METRICS_SUBJECT, env.get(ev.EAGLEEYE_METRICS_SUBJECT), DEFAULT_METRICS_SUBJECT
            ),
            overrides=_metric_overrides(env.get(ev.EAGLEEYE_METRICS_ENABLE), env.get(ev.EAGLEEYE_METRICS_DISABLE)),
        )
        if metrics.subject == routing.subject:
            # Routers decode every message on the routing subject as JSON; OTLP protobuf there would break them.
            raise ConfigError(ev.EAGLEEYE_METRICS_SUBJECT, metrics.subject, "must differ from the routing subject")
        return cls(nats=nats, routing=routing, metrics=metrics)


@dataclass(frozen=True)
class HardwareSettings:
    """What the hardware monitor reads and where it publishes.

    Attributes:
        node_name: the node reported for (``host.name``; ``<node>`` of the subject).
        k8s_node_name: the Kubernetes node name when ``NODE_NAME`` gave one, for ``k8s.node.name``.
        subject_prefix: metrics go to ``<prefix>.<node>`` (:attr:`subject`).
        nvml_library: a ``libnvidia-ml.so.1`` to load instead of the loader's search.
        dcmi_library: a ``libdcmi.so`` to load instead of the usual paths.
        kernel_log: ``auto``, ``off``, or a log file path.
        host_root: where the host's filesystem is mounted.
    """

    node_name: str = field(default_factory=socket.gethostname)
    k8s_node_name: str | None = None
    subject_prefix: str = DEFAULT_HARDWARE_SUBJECT_PREFIX
    nvml_library: Path | None = None
    dcmi_library: Path | None = None
    kernel_log: str = "auto"
    host_root: Path = Path("/")

    @property
    def subject(self) -> str:
        """The NATS subject of this node's hardware metrics."""
        return f"{self.subject_prefix}.{subject_token(self.node_name)}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HardwareSettings:
        """Read and validate the hardware monitor's settings.

        Args:
            environ: the variables to read; defaults to ``os.environ``.

        Raises:
            ConfigError: a variable has a value that cannot be used; the error names it.
        """
        env = EnvReader(os.environ if environ is None else environ)
        k8s_node_name = env.get("NODE_NAME")
        kernel_log = env.get(ev.EAGLEEYE_KERNEL_LOG) or "auto"
        if kernel_log not in ("auto", "off"):
            kernel_log = str(env.path(ev.EAGLEEYE_KERNEL_LOG))
        host_root = Path(env.get(ev.EAGLEEYE_HOST_ROOT) or "/")
        if not is_kind(host_root, Path.is_dir):
            raise ConfigError(ev.EAGLEEYE_HOST_ROOT, str(host_root), "no such directory")
        return cls(
            node_name=env.get(ev.EAGLEEYE_NODE_NAME) or k8s_node_name or socket.gethostname(),
            k8s_node_name=k8s_node_name,
            subject_prefix=_subject(
                ev.EAGLEEYE_HARDWARE_SUBJECT_PREFIX,
                env.get(ev.EAGLEEYE_HARDWARE_SUBJECT_PREFIX),
                DEFAULT_HARDWARE_SUBJECT_PREFIX,
            ),
            nvml_library=env.path(ev.EAGLEEYE_NVML_LIBRARY),
            dcmi_library=env.path(ev.EAGLEEYE_DCMI_LIBRARY),
            kernel_log=kernel_log,
            host_root=host_root,
        )


def default_instance_id(environ: Mapping[str, str] | None = None) -> str:
    """A routing instance id unique per process and stable for the life of a pod: ``<pod>-<pid>``."""
    env = os.environ if environ is None else environ
    host = env.get("POD_NAME") or env.get("HOSTNAME") or socket.gethostname()
    return f"{host}-{os.getpid()}"


def _subject(name: str, value: str | None, default: str) -> str:
    if value is None:
        return default
    check_subject(name, value)
    return value


def _endpoint(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a bad port, or an unclosed IPv6 bracket
        valid = False
    if not valid:
        raise ConfigError(ev.EAGLEEYE_INSTANCE_ENDPOINT, value, "must be an http(s)://host[:port] URL")
    return value


def _metric_overrides(enable: str | None, disable: str | None) -> dict[str, bool]:
    known = {spec.name for spec in VLLM_METRICS}
    overrides: dict[str, bool] = {}
    for name, value, on in ((ev.EAGLEEYE_METRICS_ENABLE, enable, True), (ev.EAGLEEYE_METRICS_DISABLE, disable, False)):
        for metric in (part.strip() for part in (value or "").split(",")):
            if not metric:
                continue
            if metric not in known:
                raise ConfigError(name, value, f"{metric!r} is not a vLLM metric (see docs/metrics.md)")
            if overrides.get(metric, on) != on:
                raise ConfigError(name, value, f"{metric!r} is also in {ev.EAGLEEYE_METRICS_ENABLE}")
            overrides[metric] = on
    return overrides


def _devices(env: EnvReader) -> tuple[str, ...]:
    """:envvar:`EAGLEEYE_INSTANCE_DEVICES`, else the GPU UUIDs the container runtime or CUDA was given.

    Indices (``0,1``) cannot be matched to the monitor's UUIDs without NVML, nor Ascend device numbers to its
    ``npu-<card>-<device>`` ids without DCMI, so those give no devices; set the variable instead.
    """
    explicit = env.get(ev.EAGLEEYE_INSTANCE_DEVICES)
    if explicit is not None:
        devices = tuple(part.strip() for part in explicit.split(",") if part.strip())
        if len(devices) > _MAX_DEVICES or any(len(device) > _MAX_DEVICE_ID for device in devices):
            raise ConfigError(
                ev.EAGLEEYE_INSTANCE_DEVICES, explicit, f"at most {_MAX_DEVICES} ids of {_MAX_DEVICE_ID} characters"
            )
        return devices
    for name in ("NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"):
        uuids = tuple(part.strip() for part in (env.get(name) or "").split(",") if part.strip().startswith("GPU-"))
        if uuids:
            return uuids[:_MAX_DEVICES]
    return ()


def _flag(name: str, value: str | None, *, default: bool) -> bool:
    if value is None:
        return default
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(name, value, "must be true or false")


def _heartbeat(value: str | None) -> float:
    if value is None:
        return 1.0
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(ev.EAGLEEYE_HEARTBEAT_INTERVAL, value, "must be a number of seconds") from None
    if not 0 < seconds <= _MAX_HEARTBEAT_S:
        raise ConfigError(
            ev.EAGLEEYE_HEARTBEAT_INTERVAL,
            value,
            f"must be in (0, {_MAX_HEARTBEAT_S:g}] seconds: routers forget an engine silent for "
            f"{ROUTING_STALE_AFTER_S:g} s (RouterClient's stale_after), so two heartbeats must fit in that time",
        )
    return seconds
