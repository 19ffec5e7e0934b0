"""A nats-server running the shipped ``deploy/nats/eagle-eye-auth.conf`` over TLS, and each component's credentials.

The server reads the passwords from its environment, as the file says; each component gets its password from a file
(``EAGLEEYE_NATS_PASSWORD_FILE``, the Kubernetes-secret way) and verifies the server with the test CA.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from eagleeye_otel.nats_server import EmbeddedNatsServer
from eagleeye_otel.settings import NatsSettings, Settings
from tests.helpers.pki import Pki, tls_args

ROOT = Path(__file__).resolve().parents[2]
AUTH_CONF = ROOT / "deploy" / "nats" / "eagle-eye-auth.conf"
COMPONENTS = ("vllm", "router", "hardware", "diagnosis", "metrics-reader")
"""The users of the file, ``eagle-eye-<component>``."""


def password_variable(component: str) -> str:
    """The server-side variable holding ``component``'s password: ``EAGLE_EYE_METRICS_READER_PASSWORD``."""
    return f"EAGLE_EYE_{component.upper().replace('-', '_')}_PASSWORD"


@dataclass
class AuthServer:
    """The running server, the PKI it uses and every component's password (also written to a file)."""

    server: EmbeddedNatsServer
    pki: Pki
    passwords: dict[str, str]
    directory: Path
    monitor_port: int | None = None
    """nats-server's HTTP monitoring port (``/connz``), when asked for."""

    @property
    def url(self) -> str:
        return f"tls://{self.server.host}:{self.server.port}"

    def env(self, component: str, *, password: str | None = None) -> dict[str, str]:
        """The ``EAGLEEYE_NATS_*`` variables of ``component`` (a wrong ``password`` if given)."""
        path = self.directory / f"{component}.password"
        path.write_text((password if password is not None else self.passwords[component]) + "\n")
        return {
            "EAGLEEYE_NATS_URL": self.url,
            "EAGLEEYE_NATS_USER": f"eagle-eye-{component}",
            "EAGLEEYE_NATS_PASSWORD_FILE": str(path),
            "EAGLEEYE_NATS_TLS_CA": str(self.pki.ca),
        }

    def nats(self, component: str, *, password: str | None = None) -> NatsSettings:
        """``component``'s settings, read by ``Settings.from_env`` as the component reads them."""
        return Settings.from_env(self.env(component, password=password)).nats

    async def connect(self, component: str, **options: Any) -> Client:
        """A plain nats-py client logged in as ``component`` (a stand-in, or a forger holding its credential)."""
        return await nats.connect(
            self.url,
            user=f"eagle-eye-{component}",
            password=self.passwords[component],
            tls=self.pki.client_context(),
            connect_timeout=5,
            max_reconnect_attempts=1,
            **options,
        )

    def violations(self) -> list[str]:
        """The server's log lines about refused publishes and subscriptions."""
        return [line for line in self.server.log_tail(1_000_000).splitlines() if "Violation" in line]

    def authentication_errors(self) -> int:
        return self.server.log_tail(1_000_000).count("authentication error")


@contextmanager
def auth_server(
    pki: Pki, directory: Path, monkeypatch: pytest.MonkeyPatch, *, monitor_port: int | None = None
) -> Iterator[AuthServer]:
    """nats-server ``-c deploy/nats/eagle-eye-auth.conf`` with TLS, random passwords in its environment."""
    # Leading "-1": unquoted, nats-server would parse such a value as a number and refuse to start; the file's
    # instructions (the variable holds the password in double quotes) must hold for any password.
    passwords = {component: f"-1{secrets.token_urlsafe(24)}" for component in COMPONENTS}
    for component, password in passwords.items():
        monkeypatch.setenv(password_variable(component), f'"{password}"')
    args = ["-c", str(AUTH_CONF), *tls_args(pki.server_cert, pki.server_key)]
    if monitor_port is not None:
        args += ["--http_port", str(monitor_port)]
    with EmbeddedNatsServer(extra_args=args) as server:
        yield AuthServer(server, pki, passwords, directory, monitor_port)
