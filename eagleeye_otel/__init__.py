"""Eagle Eye: OpenTelemetry-based observability for AI inference."""

from eagleeye_otel.version import __version__

__all__ = ["__version__"]
