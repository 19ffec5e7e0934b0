"""Shared fixtures: a real ``nats-server`` on a free loopback port; a real Prometheus server. Under ``CI=true`` an
unexpected skip fails the run (``tests/helpers/ci_skips.py``)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from eagleeye_otel.nats_server import EmbeddedNatsServer, free_port
from tests.helpers.nats_auth import AuthServer, auth_server
from tests.helpers.pki import Pki, make_pki


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.import_plugin("tests.helpers.ci_skips")


@pytest.fixture
def nats_server() -> Iterator[EmbeddedNatsServer]:
    """A fresh nats-server for one test; ``stop()``/``start()`` keep its port."""
    server = EmbeddedNatsServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def _eventually(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The test PKI (:class:`~tests.helpers.pki.Pki`), made once per run."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def auth(pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AuthServer]:
    """nats-server running ``deploy/nats/eagle-eye-auth.conf`` over TLS, one password per component."""
    with auth_server(pki, tmp_path, monkeypatch) as server:
        yield server


@pytest.fixture
def eventually() -> Callable[..., Awaitable[None]]:
    """``await eventually(predicate, timeout=10)``: poll until true, else fail the test."""
    return _eventually


# -- a real Prometheus server ------------------------------------------------------------------------------


class PrometheusServer:
    """``/usr/bin/prometheus`` on a free loopback port, scraping ``targets`` every 0.5 s, with a throwaway TSDB.

    ``query(promql)`` returns the instant vector's samples as ``(labels, value)``; ``wait_for(promql, predicate)``
    polls until the samples satisfy ``predicate``.
    """

    BINARY = "/usr/bin/prometheus"

    def __init__(self, workdir: Path, targets: list[str]) -> None:
        self.host = "127.0.0.1"
        self.port = free_port(self.host)
        self.log_path = workdir / "prometheus.log"
        self._workdir = workdir
        self._targets = targets
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        config = self._workdir / "prometheus.yml"
        targets = ", ".join(json.dumps(t) for t in self._targets)
        config.write_text(
            "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n"
            f"scrape_configs:\n  - job_name: eagle_eye\n    static_configs:\n      - targets: [{targets}]\n"
        )
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                [
                    self.BINARY,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self._workdir / 'tsdb'}",
                    f"--web.listen-address={self.host}:{self.port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise AssertionError(f"prometheus exited with {self._process.returncode}:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"prometheus was not ready within 30 s:\n{self.log_text()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log_text(self) -> str:
        return self.log_path.read_bytes().decode(errors="replace") if self.log_path.exists() else ""

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data``."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=5) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        data = self.api("query", query=promql)
        assert data["resultType"] == "vector", data
        return [(sample["metric"], float(sample["value"][1])) for sample in data["result"]]

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[list[tuple[dict[str, str], float]]], bool] = bool,
        timeout: float = 20.0,
    ) -> list[tuple[dict[str, str], float]]:
        deadline = time.monotonic() + timeout
        while True:
            samples = self.query(promql)
            if predicate(samples):
                return samples
            if time.monotonic() > deadline:
                targets = self.api("targets")["activeTargets"]
                raise AssertionError(f"{promql!r} gave {samples} after {timeout:g} s; targets: {targets}")
            time.sleep(0.25)


@pytest.fixture
def start_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[list[str]], PrometheusServer]]:
    """``start_prometheus(["127.0.0.1:9464"])``: a real Prometheus scraping those targets; stopped after the test."""
    if not os.access(PrometheusServer.BINARY, os.X_OK):
        pytest.fail(f"{PrometheusServer.BINARY} is missing; scripts/bootstrap.sh installs it")
    servers: list[PrometheusServer] = []

    def start(targets: list[str]) -> PrometheusServer:
        server = PrometheusServer(tmp_path_factory.mktemp("prometheus"), targets)
        servers.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
