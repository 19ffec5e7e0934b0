"""Inside vLLM, Eagle Eye's records go through vLLM's handlers, whatever the root logger's level."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
from vllm.config.logging import LoggingConfig
from vllm.logger import configure_logging

from eagleeye_otel.instrumentation.vllm._logging import PACKAGE_LOGGER, follow_vllm_logging


@pytest.fixture
def loggers() -> Iterator[tuple[logging.Logger, logging.Logger, io.StringIO]]:
    """Eagle Eye's package logger and vLLM's, with vLLM's handlers writing into a buffer; all restored after."""
    ours, theirs, root = logging.getLogger(PACKAGE_LOGGER), logging.getLogger("vllm"), logging.getLogger()
    saved = [(lg, lg.level, list(lg.handlers), lg.propagate) for lg in (ours, theirs, root)]
    factory = logging.getLogRecordFactory()
    configure_logging(LoggingConfig())  # what `vllm serve` does before it builds the engine
    buffer = io.StringIO()
    streams = [(h, h.setStream(buffer)) for h in theirs.handlers if isinstance(h, logging.StreamHandler)]
    ours.handlers.clear()
    ours.setLevel(logging.NOTSET)
    ours.propagate = True
    yield ours, theirs, buffer
    for handler, stream in streams:
        handler.setStream(stream)
    logging.setLogRecordFactory(factory)
    for lg, level, handlers, propagate in saved:
        lg.setLevel(level)
        lg.handlers[:] = handlers
        lg.propagate = propagate


def test_warnings_survive_a_root_logger_set_to_error(loggers) -> None:
    ours, theirs, buffer = loggers
    logging.getLogger().setLevel(logging.ERROR)  # what vLLM's API server's SageMaker import does

    assert follow_vllm_logging()
    logging.getLogger(f"{PACKAGE_LOGGER}.exporters.nats").warning("NATS connection lost")

    line = buffer.getvalue()
    assert "NATS connection lost" in line and "WARNING" in line  # in vLLM's format, beside vLLM's own lines
    assert ours.getEffectiveLevel() == theirs.getEffectiveLevel()


def test_a_users_own_configuration_is_left_alone(loggers) -> None:
    ours, _, buffer = loggers
    ours.setLevel(logging.CRITICAL)

    assert not follow_vllm_logging()
    logging.getLogger(f"{PACKAGE_LOGGER}.exporters.nats").warning("NATS connection lost")
    assert ours.handlers == [] and buffer.getvalue() == ""


def test_following_twice_adds_no_second_handler(loggers) -> None:
    ours, theirs, _ = loggers
    follow_vllm_logging()
    follow_vllm_logging()
    assert ours.handlers == theirs.handlers
