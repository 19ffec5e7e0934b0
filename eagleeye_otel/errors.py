"""Exceptions raised by Eagle Eye.

Everything descends from :class:`EagleEyeError`; subclasses also inherit the stdlib type a caller would expect, so
``except ValueError`` keeps working around a bad setting.
"""

from __future__ import annotations

__all__ = ["ConfigError", "EagleEyeError", "HardwareUnavailable", "NatsServerError", "RouterConnectError"]


class EagleEyeError(Exception):
    """Root of every error Eagle Eye raises."""


class ConfigError(EagleEyeError, ValueError):
    """A setting has a value Eagle Eye cannot use.

    Attributes:
        setting: the environment variable (or option) that holds the bad value.
        value: the value as given.
    """

    def __init__(self, setting: str, value: object, reason: str) -> None:
        super().__init__(f"{setting}={value!r}: {reason}")
        self.setting = setting
        self.value = value
        self.reason = reason


class NatsServerError(EagleEyeError, RuntimeError):
    """The embedded ``nats-server`` could not be found or started."""


class RouterConnectError(EagleEyeError, ConnectionError):
    """A router client could not connect or subscribe to NATS.

    Attributes:
        servers: the servers tried, without credentials.
        reason: what NATS or the network answered.
    """

    def __init__(self, servers: tuple[str, ...], reason: str) -> None:
        super().__init__(f"cannot receive routing metrics from NATS at {', '.join(servers)}: {reason}")
        self.servers = servers
        self.reason = reason


class HardwareUnavailable(EagleEyeError, RuntimeError):
    """A hardware source cannot be used on this node (vendor library missing, or it refused to start).

    Raised when a source is opened, never during a sweep, so the monitor can skip the source and say why.

    Attributes:
        reason: one line naming what was tried and what failed.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
