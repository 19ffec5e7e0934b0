"""Fixtures for the hardware sources: C doubles of the vendor libraries, built once per session with gcc."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from eagleeye_otel.receivers.hardware import NvmlSource

_DOUBLES = Path(__file__).parent / "doubles"

DCMI_SCENARIO_ENV = "EAGLEEYE_DCMI_DOUBLE_SCENARIO"
"""The DCMI double reads its scenario file from this variable at every call."""


def _build_shared_library(source: Path, target: Path, *flags: str) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.fail("gcc is needed to build the C test doubles of the vendor libraries")
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [gcc, "-shared", "-fPIC", "-O1", "-Wall", "-Wextra", "-Werror", *flags, "-o", str(target), str(source)],
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


NVML_SCENARIO_ENV = "EAGLEEYE_NVML_DOUBLE_SCENARIO"
"""The NVML double reads its scenario file from this variable at every call."""


@pytest.fixture(scope="session")
def nvml_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<tmp>/libnvidia-ml.so.1`` built from ``doubles/nvml_double.c``, with the real library's soname.

    pynvml loads NVML once per process, so every test passes this one path to ``NvmlSource.open``.
    """
    return _build_shared_library(
        _DOUBLES / "nvml_double.c",
        tmp_path_factory.mktemp("nvml") / "libnvidia-ml.so.1",
        "-Wl,-soname,libnvidia-ml.so.1",
    )


@pytest.fixture
def nvml_scenario(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], Path]:
    """``nvml_scenario(text)``: write the NVML double's scenario file and point the double at it.

    Calling it again replaces the file; the double notices the new inode and mtime at its next call.
    """
    path = tmp_path / "nvml_scenario.txt"
    monkeypatch.setenv(NVML_SCENARIO_ENV, str(path))
    last_ns = 0

    def write(text: str) -> Path:
        nonlocal last_ns
        staging = path.with_suffix(".new")
        staging.write_text(text)
        last_ns = max(time.time_ns(), last_ns + 1_000_000)  # a new mtime even within the clock's granularity
        os.utime(staging, ns=(last_ns, last_ns))
        staging.replace(path)  # atomic: a call of the double never reads half a file
        return path

    return write


def nvml_gpu_uuid(i: int) -> str:
    return f"GPU-{i:08x}-1111-2222-3333-44445555{i:04x}"


def _healthy_gpu(i: int) -> str:
    """Scenario lines of one healthy H100, the values distinct per GPU so that a mix-up shows."""
    numbers = {
        "util_gpu": 50 + i,
        "util_mem": 20 + i,
        "mem_total": 85520809984,
        "mem_used": (1 + i) * 1_073_741_824,
        "temp": 40 + i,
        "temp_slowdown": 87,
        "temp_shutdown": 92,
        "power_mw": 300_000 + i * 1_250,
        "power_limit_mw": 700_000,
        "energy_mj": 123_456_789 + i,
        "clock_sm_mhz": 1980 - i,
        "clock_mem_mhz": 2619,
        "clock_reasons": 0,
        "pcie_gen": 5,
        "pcie_width": 16,
        "pcie_tx_kbps": 1000 + i,
        "pcie_rx_kbps": 2000 + i,
        "supported_events": 0xC00F,
    }
    fields = {  # id: "value type"
        82: "55.5 d" if i % 2 else f"{50 + i} ui",
        **{3: f"{i} ull", 4: "0 ull", 5: f"{10 * i} ull", 6: "0 sll"},
        **{29: "0 ui", 30: "0 ui", 31: "0 ui"},
        **{142: f"{i} ui", 143: "0 ui", 144: "0 ui", 145: "0 ui"},
        **{94: f"{3 * i} ui", 230: "0 ui"},
        **{38: f"{i} ull", 45: "0 ull", 52: "0 ull", 59: "0 ull"},
    }
    lines = [
        f"gpu {i} uuid {nvml_gpu_uuid(i)}",
        f"gpu {i} name NVIDIA H100 80GB HBM3",
        f"gpu {i} serial 165022300{i:04d}",
        f"gpu {i} vbios 96.00.74.00.{i:02d}",
        f"gpu {i} pci_bus_id 00000000:{0x18 + 0x10 * i:02X}:00.0",
        *(f"gpu {i} {key} {value}" for key, value in numbers.items()),
        *(f"gpu {i} field {field} {value}" for field, value in fields.items()),
    ]
    return "\n".join(lines) + "\n"


class NvmlDouble:
    """The NVML double for one test: scenarios, sources opened on it, and the double's own counters."""

    def __init__(self, library: Path, write: Callable[[str], Path]) -> None:
        self.library = library
        self.write = write
        """``write(text)``: replace the scenario; the double rereads it at its next call."""
        self.sources: list[NvmlSource] = []
        self._lib = ctypes.CDLL(str(library))
        self._lib.eagleeye_double_calls.restype = ctypes.c_ulong
        self._lib.eagleeye_double_calls.argtypes = [ctypes.c_char_p, ctypes.c_int]
        self._lib.eagleeye_double_reset_calls()

    uuid = staticmethod(nvml_gpu_uuid)

    @staticmethod
    def node(count: int = 8, extra: str = "") -> str:
        """A healthy node of ``count`` GPUs (``_healthy_gpu``), then ``extra`` lines (later lines win)."""
        header = "driver_version 550.54.15\nnvml_version 12.550.54.15\n"
        return header + "".join(_healthy_gpu(i) for i in range(count)) + extra

    def open(self) -> NvmlSource:
        """``NvmlSource.open`` on the double, closed when the test ends."""
        self.sources.append(NvmlSource.open(str(self.library)))
        return self.sources[-1]

    def calls(self, function: str, gpu: int = -1) -> int:
        """Calls of ``function`` since the test began (on GPU ``gpu``; -1: all)."""
        return int(self._lib.eagleeye_double_calls(function.encode(), gpu))

    def init_count(self) -> int:
        """The double's ``nvmlInit`` reference count."""
        return int(self._lib.eagleeye_double_init_count())


@pytest.fixture
def nvml(nvml_library: Path, nvml_scenario: Callable[[str], Path]) -> Iterator[NvmlDouble]:
    """The NVML double; the test fails if it leaves nvmlInit/nvmlShutdown unbalanced."""
    double = NvmlDouble(nvml_library, nvml_scenario)
    before = double.init_count()
    yield double
    for source in double.sources:
        source.close()
    assert double.init_count() == before, "nvmlInit/nvmlShutdown unbalanced"
