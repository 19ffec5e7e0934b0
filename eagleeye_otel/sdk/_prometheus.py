"""Eagle Eye's Prometheus endpoint: a pull reader serving a private registry on its own port.

The stock ``prometheus`` entry point (``_AutoPrometheusMetricReader``) registers on prometheus_client's global
``REGISTRY``. vLLM's own ``/metrics`` on :8000 serves that same registry, so every Eagle Eye series would also
appear there, next to vLLM's native ``vllm:*`` series, with a second ``target_info``; and its HTTP server is
never closed. This reader keeps a registry of its own, so :9464 shows Eagle Eye's series and vLLM's :8000 shows
vLLM's, each exactly once; it closes its server on shutdown and does nothing in a forked copy of the process.
Eagle Eye's pipeline uses it for both ``prometheus`` and ``eagle_eye_prometheus``.
"""

from __future__ import annotations

import logging
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics.export import MetricsData
from prometheus_client import CollectorRegistry, start_http_server

from eagleeye_otel.sdk._gate import CreatorPid
from eagleeye_otel.sdk._settings import PipelineSettings

__all__ = ["PrometheusServingReader"]

_logger = logging.getLogger(__name__)


class PrometheusServingReader(PrometheusMetricReader):
    """A Prometheus reader that serves its own registry over HTTP.

    Args:
        host: address to listen on (``0.0.0.0`` to be scraped from other hosts).
        port: port to listen on; 0 picks a free one (see :attr:`port`).
        registry: the registry to serve; a new private one by default.

    Raises:
        OSError: the port cannot be bound.
    """

    def __init__(self, *, host: str, port: int, registry: CollectorRegistry | None = None) -> None:
        self._creator = CreatorPid()
        self._served = CollectorRegistry() if registry is None else registry
        super().__init__(registry=self._served)
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self._served)
        except OSError:
            super().shutdown()
            raise
        _logger.info("Eagle Eye serves Prometheus metrics on http://%s:%d/metrics", host, self.port)

    @property
    def port(self) -> int:
        """The port actually bound."""
        return int(self._server.server_port)

    @property
    def registry(self) -> CollectorRegistry:
        """The registry this reader's endpoint serves."""
        return self._served

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        """Hand a scrape's collection to the registry; a forked child, which has no server, keeps nothing."""
        if self._creator.is_current:
            super()._receive_metrics(metrics_data, timeout_millis=timeout_millis, **kwargs)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Close the HTTP server and release the port; nothing to do in a forked child."""
        if not self._creator.is_current:
            return
        self._server.shutdown()
        self._server.server_close()
        super().shutdown(timeout_millis=timeout_millis, **kwargs)


class _AutoPrometheusServingReader(PrometheusServingReader):
    """The ``eagle_eye_prometheus`` entry point: no arguments, host and port from the standard variables.

    Lets the stock SDK configurator (``OTEL_METRICS_EXPORTER=eagle_eye_prometheus``) use this reader too.

    Raises:
        ConfigError: :envvar:`OTEL_EXPORTER_PROMETHEUS_PORT` is not a port.
    """

    def __init__(self) -> None:
        settings = PipelineSettings.from_env(default_exporters=())
        super().__init__(host=settings.prometheus_host, port=settings.prometheus_port)
