"""Fixtures for the hardware sources: C doubles of the vendor libraries, built once per session with gcc."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

_DOUBLES = Path(__file__).parent / "doubles"

DCMI_SCENARIO_ENV = "EAGLEEYE_DCMI_DOUBLE_SCENARIO"
"""The DCMI double reads its scenario file from this variable at every call."""


def _build_shared_library(source: Path, target: Path) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is needed to build the C test doubles of the vendor libraries")
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [gcc, "-shared", "-fPIC", "-O1", "-Wall", "-Wextra", "-Werror", "-o", str(target), str(source)],
        check=True,
    )
    return target


@pytest.fixture(scope="session")
def dcmi_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<tmp>/libdcmi.so`` built from ``doubles/dcmi_double.c``."""
    return _build_shared_library(_DOUBLES / "dcmi_double.c", tmp_path_factory.mktemp("dcmi") / "libdcmi.so")


@pytest.fixture
def dcmi_scenario(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Path]:
    """``dcmi_scenario(text)``: write the DCMI double's scenario file and point the double at it.

    Calling it again rewrites the file; the double notices the new mtime at its next call.
    """
    path = tmp_path / "dcmi_scenario.txt"
    monkeypatch.setenv(DCMI_SCENARIO_ENV, str(path))
    last_ns = 0

    def write(text: str) -> Path:
        nonlocal last_ns
        path.write_text(text)
        last_ns = max(time.time_ns(), last_ns + 1_000_000)  # a new mtime even within the clock's granularity
        os.utime(path, ns=(last_ns, last_ns))
        return path

    return write
