"""``eagle-eye top``: its numbers without a terminal, then the real command in a real terminal (tmux)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from eagleeye_otel.cli._top_model import FindingBoard, Sort, TokenRates, rows_of
from eagleeye_otel.nats_server import EmbeddedNatsServer
from eagleeye_otel.routing import RoutingMessage
from eagleeye_otel.routing._state import InstanceState

EAGLE_EYE = str(Path(sys.executable).parent / "eagle-eye")
STARTED = 1_700_000_000.0


def _message(instance: str, *, seq: int = 1, waiting: int = 0, tokens: int = 0, at: float = 0.0) -> RoutingMessage:
    return RoutingMessage(
        version=1,
        instance=instance,
        model="llama",
        engine=0,
        timestamp=STARTED + at,
        seq=seq,
        num_requests_waiting=waiting,
        num_requests_running=2,
        kv_cache_usage=0.25,
        started=STARTED,
        node="node-1",
        devices=("GPU-1",),
        generation_tokens_total=tokens,
    )


def _finding(change: str = "opened", **extra: object) -> bytes:
    finding = {
        "node": "node-1", "device": "GPU-1", "fault": "xid_79", "severity": "critical",
        "conclusion": "GPU-1 fell off the bus (Xid 79)", "action": "drain and reset the GPU",
        "evidence": {"xid": 79}, "first_seen": STARTED, "last_seen": STARTED, "change": change, **extra,
    }  # fmt: skip
    return msgspec.json.encode(finding)


def test_tokens_per_second_come_from_generation_total_differences_over_a_second() -> None:
    rates = TokenRates()
    key = ("a", 0)
    assert rates.update([InstanceState(_message("a", tokens=100), 0.0)]) == {key: None}
    assert rates.update([InstanceState(_message("a", seq=2, tokens=150, at=0.5), 0.0)]) == {key: None}
    assert rates.update([InstanceState(_message("a", seq=3, tokens=400, at=1.5), 0.0)]) == {key: 200.0}
    heartbeat = _message("a", seq=4, tokens=400, at=2.5)
    assert rates.update([InstanceState(heartbeat, 0.0)]) == {key: 0.0}
    restarted = msgspec.structs.replace(heartbeat, started=STARTED + 10, generation_tokens_total=5)
    assert rates.update([InstanceState(restarted, 0.0)]) == {key: None}


def test_findings_board_keeps_active_findings_until_resolved_or_unheard() -> None:
    now = [0.0]
    board = FindingBoard(ttl=15.0, clock=lambda: now[0])
    assert board.handle(_finding())
    assert not board.handle(b"{not json")
    assert [(f.fault, f.change) for f in board.active()] == [("xid_79", "opened")]
    board.handle(_finding("resolved", resolved_at=STARTED + 5))
    assert board.active() == []
    board.handle(_finding("active"))
    now[0] = 16.0
    assert board.active() == []


def test_rows_sort_by_the_pressed_key_and_reverse_when_pressed_again() -> None:
    states = [
        InstanceState(_message("inst-a", waiting=5), 10.0),
        InstanceState(_message("inst-b", waiting=1), 10.0),
        InstanceState(_message("inst-c", waiting=9), 1.0),
    ]
    rows = rows_of(states, {}, now=11.0, stale_after=3.0)
    assert [r.stale for r in rows] == [False, False, True]
    sort = Sort()
    assert [r.instance for r in sort.apply(rows)] == ["inst-a", "inst-b", "inst-c"]
    assert sort.press("w")
    assert [r.instance for r in sort.apply(rows)] == ["inst-c", "inst-a", "inst-b"]
    sort.press("w")
    assert [r.instance for r in sort.apply(rows)] == ["inst-b", "inst-a", "inst-c"]
    assert not sort.press("x")


# -- the real command in tmux -----------------------------------------------------------------------------------


def _publish_until(url: str, stop: threading.Event) -> None:
    """Three instances with different queues and one finding, restated as a real fleet and the diagnosis do."""
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    encode = msgspec.json.Encoder().encode
    with socket.create_connection((host, int(port))) as sock:
        sock.recv(4096)  # INFO
        sock.sendall(b'CONNECT {"verbose":false}\r\n')
        seq = 0
        while not stop.is_set():
            seq += 1
            frames = []
            for name, waiting in (("inst-a", 5), ("inst-b", 1), ("inst-c", 9)):
                payload = encode(_message(name, seq=seq, waiting=waiting, tokens=seq * 100, at=seq * 0.2))
                frames.append(b"PUB eagle_eye.routing_metrics %d\r\n%s\r\n" % (len(payload), payload))
            finding = _finding("active")
            frames.append(b"PUB eagle_eye.diagnosis.node-1 %d\r\n%s\r\n" % (len(finding), finding))
            sock.sendall(b"".join(frames))
            stop.wait(0.2)


@pytest.fixture
def tmux() -> Iterator[Callable[..., str]]:
    """``tmux(*args)`` on a private server, killed afterwards, so tests never touch the user's sessions."""
    assert shutil.which("tmux"), "tmux is missing: scripts/bootstrap.sh installs it"
    socket_name = f"eagle-eye-test-{uuid.uuid4().hex[:8]}"

    def run(*args: str) -> str:
        return subprocess.run(["tmux", "-L", socket_name, *args], check=True, capture_output=True, text=True).stdout

    try:
        yield run
    finally:
        subprocess.run(["tmux", "-L", socket_name, "kill-server"], check=False, capture_output=True)


def _wait_for_screen(tmux: Callable[..., str], predicate: Callable[[str], bool], timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", "top")
        if predicate(screen):
            return screen
        time.sleep(0.2)
    raise AssertionError(f"screen never matched within {timeout} s:\n{screen}")


def _order(screen: str, names: tuple[str, ...]) -> list[str]:
    return sorted(names, key=screen.index)


@pytest.mark.integration
def test_top_in_a_real_terminal_shows_instances_and_findings_sorts_and_quits(
    nats_server: EmbeddedNatsServer, tmux: Callable[..., str], tmp_path: Path
) -> None:
    stop = threading.Event()
    publisher = threading.Thread(target=_publish_until, args=(nats_server.url, stop), daemon=True)
    publisher.start()
    exit_file = tmp_path / "exit"
    # Without COLUMNS and LINES, which pytest may set, rich sizes the view to the tmux window.
    command = (
        f"env -u COLUMNS -u LINES {EAGLE_EYE} top --nats-url {nats_server.url} --refresh 0.2; echo $? > {exit_file}"
    )
    try:
        tmux("new-session", "-d", "-s", "top", "-x", "180", "-y", "40", command)
        names = ("inst-a", "inst-b", "inst-c")
        screen = _wait_for_screen(tmux, lambda s: all(n in s for n in names) and "fell off the bus" in s)
        assert _order(screen, names) == ["inst-a", "inst-b", "inst-c"]
        assert "critical xid_79" in screen  # the health column matches the finding to the engines' device
        assert "drain and reset the GPU" in screen
        tmux("send-keys", "-t", "top", "w")
        screen = _wait_for_screen(tmux, lambda s: "sorted by waiting" in s)
        assert _order(screen, names) == ["inst-c", "inst-a", "inst-b"]
        tmux("send-keys", "-t", "top", "q")
        deadline = time.monotonic() + 10
        while not exit_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert exit_file.read_text().strip() == "0"
    finally:
        stop.set()
        publisher.join(5)


@pytest.mark.integration
def test_top_shows_the_fleet_eagle_eye_simulate_publishes(
    nats_server: EmbeddedNatsServer, tmux: Callable[..., str], tmp_path: Path
) -> None:
    env = {**os.environ, "EAGLEEYE_NATS_URL": nats_server.url}
    simulate = subprocess.Popen(
        [EAGLE_EYE, "simulate", "--instances", "3", "--duration", "60", "--seed", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    exit_file = tmp_path / "exit"
    command = (
        f"env -u COLUMNS -u LINES {EAGLE_EYE} top --nats-url {nats_server.url} --refresh 0.2; echo $? > {exit_file}"
    )
    try:
        tmux("new-session", "-d", "-s", "top", "-x", "160", "-y", "30", command)
        names = ("sim-0000", "sim-0001", "sim-0002")
        _wait_for_screen(tmux, lambda s: all(n in s for n in names) and "3 engines" in s)
        tmux("send-keys", "-t", "top", "r")
        _wait_for_screen(tmux, lambda s: "sorted by running" in s)
        tmux("send-keys", "-t", "top", "q")
        deadline = time.monotonic() + 10
        while not exit_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert exit_file.read_text().strip() == "0"
    finally:
        simulate.terminate()
        simulate.wait(10)
