"""The CI skip gate (``tests/helpers/ci_skips.py``), run as CI runs it: a separate pytest session on test files that
skip, with and without ``CI=true``, judged by its exit status and what it prints."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

_INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\nmarkers =\n    gpu: needs a real NVIDIA GPU\n"


def _run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None, source: str) -> pytest.RunResult:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    pytester.makeini(_INI)
    pytester.makepyfile(source)
    return pytester.runpytest("-p", "tests.helpers.ci_skips", "-rs")


_GPU_SKIP = """
import pytest

@pytest.mark.gpu
def test_on_a_real_gpu():
    pytest.skip("no NVIDIA GPU here: NVML library not found")

def test_runs():
    pass
"""


def test_an_unexpected_skip_fails_the_run_under_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run(
        pytester,
        monkeypatch,
        "true",
        "import pytest\n\ndef test_needs_chromium():\n    pytest.skip('chromium is missing')\n\n"
        "def test_runs():\n    pass\n",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*skips not allowed under CI=true*",
            "test_an_unexpected_skip_fails_the_run_under_ci.py::test_needs_chromium: chromium is missing",
            "1 skip(s) fail this run; allowed: marked gpu and skipped with 'no NVIDIA GPU'...",
        ]
    )


def test_the_gpu_tests_may_skip_for_want_of_a_gpu(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run(pytester, monkeypatch, "true", _GPU_SKIP)
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED * no NVIDIA GPU here: NVML library not found"])  # -rs: the reason
    result.stdout.no_fnmatch_line("*not allowed*")


@pytest.mark.parametrize(
    "source",
    [
        pytest.param(
            "import pytest\n\n@pytest.mark.gpu\ndef test_gpu():\n    pytest.skip('a real libnvidia-ml.so.1 is here')\n",
            id="gpu-marked-other-reason",
        ),
        pytest.param(
            "import pytest\n\ndef test_unmarked():\n    pytest.skip('no NVIDIA GPU here')\n", id="right-reason-unmarked"
        ),
        pytest.param(
            "import pytest\n\n@pytest.mark.skip(reason='later')\ndef test_marked_skip():\n    pass\n", id="skip-marker"
        ),
        pytest.param(
            "import pytest\n\npytest.skip('no tmux', allow_module_level=True)\n\ndef test_x():\n    pass\n",
            id="module-level",
        ),
        pytest.param(
            "import pytest\n\n@pytest.fixture\ndef prometheus():\n    pytest.skip('no prometheus')\n\n"
            "def test_with(prometheus):\n    pass\n",
            id="fixture",
        ),
    ],
)
def test_only_the_allow_list_may_skip(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str) -> None:
    result = _run(pytester, monkeypatch, "true", source)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*skips not allowed under CI=true*"])


@pytest.mark.parametrize("ci", [None, "false", ""])
def test_outside_ci_a_skip_is_only_reported(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str | None
) -> None:
    result = _run(pytester, monkeypatch, ci, "import pytest\n\ndef test_x():\n    pytest.skip('chromium is missing')\n")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["SKIPPED * chromium is missing"])


def test_a_failure_keeps_its_own_exit_status(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _run(
        pytester,
        monkeypatch,
        "true",
        "import pytest\n\ndef test_x():\n    pytest.skip('x')\n\ndef test_y():\n    assert 0\n",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=1, skipped=1)
