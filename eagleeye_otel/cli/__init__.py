"""The ``eagle-eye`` command line."""

from eagleeye_otel.cli._main import main

__all__ = ["main"]
