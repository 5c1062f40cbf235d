"""Runtime files of an instance and the CLI <-> daemon control protocol.

Each running instance owns, under ``/run/dcoctl/`` (``$DCOCTL_RUNTIME_DIR``
overrides it, e.g. for tests):

* ``NAME.sock``: a UNIX stream socket speaking one JSON object per line;
* ``NAME.json``: what must be undone if the daemon dies without cleaning up
  (its pid, interface, the routes it added, its network namespace);
* ``NAME.log``: the daemon's log when it runs in the background.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import signal
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import DcoctlError

#: wg-quick's rule: the instance name doubles as an interface name.
NAME_RE = re.compile(r"[a-zA-Z0-9_=+.-]{1,15}")


def runtime_dir() -> Path:
    """Directory holding sockets, state files and logs."""
    return Path(os.environ.get("DCOCTL_RUNTIME_DIR", "/run/dcoctl"))


def socket_path(name: str) -> Path:
    """The control socket of instance ``name``."""
    return runtime_dir() / f"{name}.sock"


def state_path(name: str) -> Path:
    """The crash-recovery state file of instance ``name``."""
    return runtime_dir() / f"{name}.json"


def log_path(name: str) -> Path:
    """The background daemon's log file."""
    return runtime_dir() / f"{name}.log"


def netns_id() -> int:
    """Identity of the current network namespace (inode of its nsfs file)."""
    return os.stat("/proc/self/ns/net").st_ino


def check_name(name: str) -> str:
    """Validate an instance name (it may become an interface name)."""
    if not NAME_RE.fullmatch(name):
        raise DcoctlError(
            f"invalid instance name '{name}': use 1-15 characters from a-z A-Z 0-9 _ = + . - "
            "(pass --name to choose one)"
        )
    return name


@dataclass
class InstanceState:
    """What ``dcoctl down`` needs to clean up after a daemon that died."""

    name: str
    pid: int
    netns: int
    config: str
    interface: str = ""
    #: :meth:`dcoctl.netlink.links.RouteSet.to_json` of what we added.
    routes: str = ""

    def save(self) -> None:
        """Write atomically (a crash mid-write must not leave half a file)."""
        path = state_path(self.name)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(asdict(self)))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)

    @classmethod
    def load(cls, name: str) -> InstanceState | None:
        """The saved state of ``name``, or None."""
        try:
            data = json.loads(state_path(name).read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None


def ensure_runtime_dir() -> Path:
    """Create the runtime directory, root-only."""
    directory = runtime_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory


def request(name: str, command: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one command to a running instance and return its reply.

    Raises ConnectionError (incl. FileNotFoundError/ConnectionRefusedError)
    when no daemon listens.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path(name)))
        sock.sendall(json.dumps(command).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data:
        raise ConnectionError(f"instance {name} closed the control socket")
    reply: dict[str, Any] = json.loads(data)
    return reply


async def serve_control(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    status: Callable[[], dict[str, Any]],
    stop: Callable[[str], None],
) -> None:
    """Answer one control-socket request: ``ping``, ``status`` or ``down``."""
    try:
        line = await asyncio.wait_for(reader.readline(), 10)
        request_obj = json.loads(line or b"{}")
        command = request_obj.get("cmd") if isinstance(request_obj, dict) else None
        reply: dict[str, Any]
        if command == "ping":
            reply = {"ok": True}
        elif command == "status":
            reply = {"ok": True, "instance": status()}
        elif command == "down":
            stop("dcoctl down")
            reply = {"ok": True, "pid": os.getpid()}
        else:
            reply = {"ok": False, "error": f"unknown command {command!r}"}
        writer.write(json.dumps(reply).encode() + b"\n")
        await writer.drain()
    except (OSError, ValueError, TimeoutError):
        pass  # a client that hung up or sent garbage: nothing to answer
    finally:
        writer.close()


async def claim_instance(
    name: str, status: Callable[[], dict[str, Any]], stop: Callable[[str], None]
) -> asyncio.Server:
    """Start-up every daemon shares: refuse a second instance of ``name``,
    route SIGTERM/SIGINT to ``stop`` and open the control socket."""
    ensure_runtime_dir()
    if is_running(name):
        raise DcoctlError(f"instance '{name}' is already running (dcoctl down {name})")
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, f"signal {sig.name}")
    return await start_control_server(name, status, stop)


async def start_control_server(
    name: str, status: Callable[[], dict[str, Any]], stop: Callable[[str], None]
) -> asyncio.Server:
    """Listen on ``name``'s control socket (root-only)."""
    server = await asyncio.start_unix_server(
        functools.partial(serve_control, status=status, stop=stop), path=str(socket_path(name))
    )
    os.chmod(socket_path(name), 0o600)
    return server


def is_running(name: str) -> bool:
    """Does a daemon answer on ``name``'s control socket?"""
    try:
        request(name, {"cmd": "ping"}, timeout=2.0)
        return True
    except (OSError, ValueError):
        return False


def running_instances() -> list[str]:
    """Names of instances that have a control socket."""
    directory = runtime_dir()
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.sock"))


def pid_alive(pid: int) -> bool:
    """Is there a process ``pid`` (that is not a zombie)?"""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status
