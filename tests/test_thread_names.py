"""``name_os_thread``: the kernel's name for a thread, as ``top -H`` and ``/proc`` show it."""

from __future__ import annotations

import threading
from pathlib import Path

from eagleeye_otel.exporters.nats import RoutingPublisher
from eagleeye_otel.settings import NatsSettings, RoutingSettings
from eagleeye_otel.thread_names import name_os_thread


def _kernel_names() -> set[str]:
    return {(task / "comm").read_text().strip() for task in Path("/proc/self/task").iterdir()}


def test_the_kernel_sees_the_name_cut_to_15_bytes() -> None:
    seen: list[str] = []

    def run() -> None:
        name_os_thread("eagle-eye-a-rather-long-name")
        seen.append(Path("/proc/thread-self/comm").read_text().strip())

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert seen == ["eagle-eye-a-rat"]


def test_the_routing_publisher_thread_is_named_in_the_kernel() -> None:
    """What an operator looking at vLLM's API server with ``top -H`` sees: Eagle Eye's publisher by name."""
    publisher = RoutingPublisher(
        nats_settings=NatsSettings(servers=("nats://127.0.0.1:1",)),
        routing=RoutingSettings(),
        client_name="thread-name-check",
    )
    publisher.start()
    try:
        assert "eagle-eye-routi" in _kernel_names()
    finally:
        publisher.stop()
