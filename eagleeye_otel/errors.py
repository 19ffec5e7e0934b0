"""Exceptions raised by Eagle Eye.

Everything descends from :class:`EagleEyeError`; subclasses also inherit the stdlib type a caller would expect, so
``except ValueError`` keeps working around a bad setting.
"""

from __future__ import annotations

__all__ = ["ConfigError", "EagleEyeError", "NatsServerError", "RouterConnectError"]


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
