"""A pytest plugin: under ``CI=true`` a skipped test fails the run, unless :data:`ALLOWED_SKIPS` names it.

A skip hides what CI did not check (a missing binary, a fixture that gave up): a green run must mean every test ran.
The one exception today is the real-GPU tests on a runner without a GPU. ``tests/conftest.py`` loads this plugin;
its own tests run it in a separate pytest (``tests/test_ci_skips.py``).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Mapping
from typing import Final

import pytest

__all__ = ["ALLOWED_SKIPS", "CiSkipGate", "ci_is_strict"]

ALLOWED_SKIPS: Final[Mapping[str, str]] = {"gpu": "no NVIDIA GPU"}
"""Marker -> how the one skip reason allowed to tests carrying it begins. Nothing else may skip under CI."""

_SKIPPED_PREFIX = "Skipped: "


def ci_is_strict(environ: Mapping[str, str] = os.environ) -> bool:
    """``CI=true`` (as GitHub Actions, GitLab and most runners set it; ``1`` too)."""
    return environ.get("CI", "").strip().lower() in ("true", "1")


def pytest_configure(config: pytest.Config) -> None:
    """Arm the gate under CI only: a developer's machine may lack Chromium and still run the rest."""
    if ci_is_strict():
        config.pluginmanager.register(CiSkipGate(), "eagle-eye-ci-skips")


class CiSkipGate:
    """Collects the skips the allow-list does not name; fails the session and lists them when there are any."""

    def __init__(self) -> None:
        self.unexpected: list[tuple[str, str]] = []

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if report.skipped and not hasattr(report, "wasxfail"):
            reason = _reason(report)
            if not _allowed(item, reason):
                self.unexpected.append((report.nodeid, reason))
        return report

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """A module or class skipped while collected (``allow_module_level``, ``importorskip``): never allowed."""
        if report.skipped:
            self.unexpected.append((report.nodeid, _reason(report)))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.unexpected and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.unexpected:
            return
        terminalreporter.section("skips not allowed under CI=true", red=True, bold=True)
        for nodeid, reason in self.unexpected:
            terminalreporter.line(f"{nodeid}: {reason}", red=True)
        allowed = "; ".join(f"marked {marker} and skipped with {text!r}..." for marker, text in ALLOWED_SKIPS.items())
        terminalreporter.line(f"{len(self.unexpected)} skip(s) fail this run; allowed: {allowed}")


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The reason given to ``pytest.skip`` (the report holds ``(path, line, "Skipped: reason")``)."""
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix(_SKIPPED_PREFIX)


def _allowed(item: pytest.Item, reason: str) -> bool:
    return any(
        item.get_closest_marker(marker) is not None and reason.startswith(prefix)
        for marker, prefix in ALLOWED_SKIPS.items()
    )
