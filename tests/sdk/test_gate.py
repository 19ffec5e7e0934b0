"""The main-process gate: the first process owns the pipeline; its spawned and forked children set up nothing."""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
import subprocess
import sys
from pathlib import Path
from unittest.mock import patch

import pytest

from eagleeye_otel.sdk import EAGLEEYE_OWNER_PID, CreatorPid, claim_ownership, configure_global_meter_provider
from eagleeye_otel.sdk._gate import _ancestor_pids


def test_the_first_claim_records_this_process() -> None:
    env: dict[str, str] = {}
    assert claim_ownership(env)
    assert env == {EAGLEEYE_OWNER_PID: str(os.getpid())}
    assert claim_ownership(env), "claiming again in the owner must succeed"


def test_a_live_ancestor_keeps_ownership() -> None:
    env = {EAGLEEYE_OWNER_PID: str(os.getppid())}
    assert not claim_ownership(env)
    assert env == {EAGLEEYE_OWNER_PID: str(os.getppid())}


def test_a_dead_owner_is_replaced() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    env = {EAGLEEYE_OWNER_PID: str(dead.pid)}
    assert claim_ownership(env)
    assert env[EAGLEEYE_OWNER_PID] == str(os.getpid())


def test_a_live_process_that_is_not_an_ancestor_does_not_own_this_one() -> None:
    """A mark copied from an unrelated process (here: our own child) must not silence this process."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        env = {EAGLEEYE_OWNER_PID: str(other.pid)}
        assert claim_ownership(env)
        assert env[EAGLEEYE_OWNER_PID] == str(os.getpid())
    finally:
        other.kill()
        other.wait()


def test_a_malformed_mark_is_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    env = {EAGLEEYE_OWNER_PID: "not-a-pid"}
    with caplog.at_level(logging.WARNING):
        assert claim_ownership(env)
    assert EAGLEEYE_OWNER_PID in caplog.text
    assert env[EAGLEEYE_OWNER_PID] == str(os.getpid())


def test_ancestors_follow_parent_links_in_proc(tmp_path: Path) -> None:
    parent, grandparent = os.getppid(), 4242
    for pid, ppid, comm in ((parent, grandparent, "py (x) y"), (grandparent, 1, "init-ish")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(f"{pid} ({comm}) S {ppid} 1 1 0 -1\n")
    assert _ancestor_pids(tmp_path) == {parent, grandparent}


def test_ancestors_of_this_process_include_its_parent() -> None:
    assert os.getppid() in _ancestor_pids()


def test_creator_pid_is_current_in_the_creating_process() -> None:
    assert CreatorPid().is_current


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_children_of_the_owner_configure_nothing_and_open_no_port(method: str) -> None:
    """What vLLM's engine core and workers see: the owner's mark, inherited, and a live owner above them."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = {
            "OTEL_METRICS_EXPORTER": "prometheus",
            "OTEL_EXPORTER_PROMETHEUS_HOST": "127.0.0.1",
            "OTEL_EXPORTER_PROMETHEUS_PORT": str(port),
        }
        with patch.dict(os.environ, env):
            os.environ.pop(EAGLEEYE_OWNER_PID, None)
            assert claim_ownership()
            with multiprocessing.get_context(method).Pool(1) as pool:
                # Had a child tried to set up, binding the held port would have raised ConfigError here.
                assert pool.apply(configure_global_meter_provider) is None
                assert pool.apply(claim_ownership) is False
                assert pool.apply(os.getenv, (EAGLEEYE_OWNER_PID,)) == str(os.getpid())
