"""The local test server: sekmet-fhir (a FHIR R4 server on FastAPI + SQLite) on 127.0.0.1.

Always started with safe settings: it listens on loopback only, its order simulator is off (otherwise it
acts on ServiceRequest, Task and MedicationRequest by itself), it keeps no traffic log, and its store is in
memory unless a SQLite file is given. Install it with the project's `server` or `dev` extra.

- `LocalServer(port=None, data=None)`: a server owned by this process (tests, the demo); `start()` returns the
  base URL once `/metadata` answers from the process it launched, `stop()` ends it; also a context manager. On
  Linux it also ends when the process that started it dies. A port already in use is refused before launching
  (`PortInUseError`), so that another server answering there is never taken for this one.
- `start_detached(...)`, `stop_detached()`, `detached()`: the one server of `fhir-adapter server start|stop`,
  remembered in a small state file (`$FHIR_ADAPTER_STATE`, default `~/.local/state/fhir-adapter`).

>>> LocalServer(port=8090).settings()["host"]
'127.0.0.1'
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

HOST = "127.0.0.1"
#: Settings that make sekmet safe for tests and the demo (see the project's notes on the test server).
SAFE_SETTINGS: dict[str, Any] = {"host": HOST, "simulator": {"enabled": False}, "log_inbound": False}
#: Environment variables through which sekmet would override the settings file.
SEKMET_ENV = ("SEKMET_CONFIG", "SEKMET_BASE_URL", "SEKMET_DB", "SEKMET_PUBLIC_URL", "SEKMET_PORT")
STATE_FILE = "server.json"
LAUNCH = "from sekmet.cli import app; app(prog_name='sekmet')"


class ServerError(RuntimeError):
    """The local server could not be started or stopped; the message says why (with its log's last lines)."""


class PortInUseError(ServerError):
    """The port asked for is already taken on 127.0.0.1 (by another server or program)."""

    def __init__(self, port: int, detail: str = "") -> None:
        super().__init__(f"port {port} on {HOST} is already in use" + (f"; {detail}" if detail else ""))
        self.port = port


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    """Whether `port` on 127.0.0.1 is taken, i.e. a server could not bind there (as uvicorn binds: SO_REUSEADDR,
    so connections closing in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _listening(pid: int, port: int) -> bool | None:
    """Linux: whether process `pid` holds the socket listening on 127.0.0.1:`port`; None where /proc cannot tell."""
    address = f"{int.from_bytes(socket.inet_aton(HOST), sys.byteorder):08X}:{port:04X}"
    try:
        table = Path("/proc/net/tcp").read_text(encoding="ascii").splitlines()[1:]
    except OSError:
        return None
    inodes = {f"socket:[{row[9]}]" for row in map(str.split, table) if row[1] == address and row[3] == "0A"}
    try:
        return any(os.readlink(fd) in inodes for fd in Path(f"/proc/{pid}/fd").iterdir())
    except FileNotFoundError:  # the process is gone
        return False
    except OSError:
        return None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM this process when its parent dies, so a killed test run leaves no server behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class LocalServer:
    """sekmet on 127.0.0.1; `port` None picks a free one, `data` None keeps the store in memory.
    `overrides`: more sekmet settings (e.g. `server_auth` for auth tests); the safe ones always win."""

    port: int | None = None
    data: Path | None = None
    workdir: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _tempdir: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/fhir"

    @property
    def log_path(self) -> Path | None:
        return self.workdir / "server.log" if self.workdir else None

    def settings(self) -> dict[str, Any]:
        return {**self.overrides, **SAFE_SETTINGS, "port": self.port, "base_url": self.base_url,
                "db_path": str(Path(self.data).resolve()) if self.data else ":memory:"}

    def start(self, timeout: float = 60.0, *, detach: bool = False) -> str:
        """Start sekmet and wait until `/metadata` answers from it; returns the base URL.
        Raises `PortInUseError` if the port asked for is taken, `ServerError` if the server fails otherwise."""
        if importlib.util.find_spec("sekmet") is None:
            raise ServerError("sekmet-fhir is not installed: pip install -e '.[server]' (or '.[dev]')")
        if self.data:
            Path(self.data).resolve().parent.mkdir(parents=True, exist_ok=True)
        if self.workdir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="fhir-adapter-server-")
            self.workdir = Path(self._tempdir.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        chosen = self.port is not None
        if chosen and port_in_use(self.port):  # type: ignore[arg-type]
            raise PortInUseError(self.port)  # type: ignore[arg-type]
        for _attempt in range(3):
            if not chosen:
                self.port = free_port()
            try:
                self._launch(timeout, detach)
                return self.base_url
            except ServerError as exc:
                if "address already in use" not in str(exc).lower():
                    raise
                if chosen:  # taken between the check and the launch
                    raise PortInUseError(self.port, str(exc)) from None  # type: ignore[arg-type]
        raise ServerError(f"no free port found for the local server after 3 tries (last: {self.port})")

    def _launch(self, timeout: float, detach: bool) -> None:
        settings_path = self.workdir / "settings.yaml"  # type: ignore[operator]
        settings_path.write_text(yaml.safe_dump(self.settings(), sort_keys=False), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k not in SEKMET_ENV}
        with open(self.log_path, "wb") as log:  # type: ignore[arg-type]
            self.process = subprocess.Popen(
                [sys.executable, "-c", LAUNCH, "serve", "-c", str(settings_path)], cwd=self.workdir, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=detach, preexec_fn=None if detach or sys.platform != "linux" else _die_with_parent)
        deadline = time.monotonic() + timeout
        with requests.Session() as probe:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise ServerError(f"the local FHIR server exited (status {self.process.returncode}); "
                                      f"its log ({self.log_path}) ends with:\n{_tail(self.log_path)}")
                try:
                    if probe.get(f"{self.base_url}/metadata", timeout=2).status_code == 200 and self._serving():
                        return
                except requests.RequestException:
                    pass
                time.sleep(0.05)
        self.stop()
        raise ServerError(f"the local FHIR server did not answer within {timeout:.0f} s; its log ends with:\n"
                          f"{_tail(self.log_path)}")

    def _serving(self) -> bool:
        """The launched process is alive and (where /proc tells) holds the listening socket: an answer on the
        port is then its own, not another server's."""
        return self.running() and _listening(self.process.pid, self.port) is not False  # type: ignore[union-attr,arg-type]

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """End the server (SIGTERM, then SIGKILL after `timeout`) and remove its temporary directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir, self.workdir = None, None

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the detached server of `fhir-adapter server start|stop` ----------------------------------------------

def state_dir() -> Path:
    """Where the detached server keeps its settings, log and state file."""
    if os.environ.get("FHIR_ADAPTER_STATE"):
        return Path(os.environ["FHIR_ADAPTER_STATE"])
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "fhir-adapter"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # Linux: make sure the pid was not reused by another program
        return b"sekmet" in cmdline.read_bytes()
    return True


def detached() -> dict[str, Any] | None:
    """The running detached server's state (pid, port, base_url, data, log), or None."""
    path = state_dir() / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not _alive(int(state.get("pid", 0))):
        path.unlink(missing_ok=True)
        return None
    return state


def start_detached(port: int | None = None, data: Path | None = None, timeout: float = 60.0) -> dict[str, Any]:
    """Start the server in the background, or return the one already running."""
    running = detached()
    if running:
        return {**running, "already_running": True}
    directory = state_dir()
    server = LocalServer(port=port, data=data, workdir=directory)
    server.start(timeout, detach=True)
    state = {"pid": server.process.pid, "port": server.port, "base_url": server.base_url,  # type: ignore[union-attr]
             "data": str(Path(data).resolve()) if data else None, "log": str(server.log_path)}
    (directory / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    return state


def stop_detached(timeout: float = 10.0) -> dict[str, Any] | None:
    """Stop the detached server; returns its state, or None if none was running."""
    state = detached()
    if state is None:
        return None
    pid = int(state["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    (state_dir() / STATE_FILE).unlink(missing_ok=True)
    return state
