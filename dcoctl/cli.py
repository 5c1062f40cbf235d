"""``dcoctl``: command-line interface.

``up`` starts a daemon (in the background unless ``--foreground``) and
returns only once the tunnel is usable or has definitely failed; ``down``
and ``peers`` talk to running daemons over their UNIX control sockets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from . import runtime
from .config import ClientConfig, load_client_config
from .datapath import DatapathChoice
from .errors import ConfigError, DcoctlError
from .server_config import ServerConfig, is_server_config, load_server_config

log = logging.getLogger("dcoctl")


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"dcoctl: {message}", err=True)
    sys.exit(code)


def _setup_logging(verbosity: int, stream: Any = None) -> None:
    level = logging.DEBUG if verbosity >= 5 else logging.INFO
    logging.basicConfig(
        level=level, stream=stream or sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )


def load_config(path: Path) -> ClientConfig | ServerConfig:
    """Load a client profile or a server config, whichever ``path`` holds."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror or exc}", str(path)) from None
    if is_server_config(text):
        return load_server_config(path)
    return load_client_config(path)


def choose_datapath(requested: str) -> DatapathChoice:
    """Pick the data path for ``up`` and say why."""
    if requested == "dco":
        raise DcoctlError(
            "--datapath dco: kernel offload is not available in this version "
            "of dcoctl yet; use --datapath userspace"
        )
    if requested == "userspace":
        return DatapathChoice("userspace", "requested with --datapath userspace")
    return DatapathChoice(
        "userspace",
        "kernel DCO backends are not implemented in this version; using the userspace data path",
    )


@click.group()
@click.version_option(package_name="dcoctl")
def main() -> None:
    """OpenVPN-compatible tunnels on Linux (kernel DCO or userspace data path)."""


def _credentials(
    cfg: ClientConfig | ServerConfig, interactive: bool
) -> tuple[str | None, str | None]:
    if isinstance(cfg, ServerConfig) or not cfg.auth_user_pass:
        return None, None
    username, password = cfg.auth_username, cfg.auth_password
    if username is not None and password is not None:
        return username, password
    if not interactive:
        raise DcoctlError(
            f"{cfg.source}: auth-user-pass needs a username and password and "
            "there is no terminal to ask on; name a file: auth-user-pass FILE"
        )
    if username is None:
        username = click.prompt("Username", err=True)
    password = click.prompt("Password", hide_input=True, err=True)
    return username, password


@main.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", help="Instance name (default: the config file's stem).")
@click.option(
    "--datapath",
    type=click.Choice(["auto", "userspace", "dco"]),
    default=None,
    help="Data path; default 'auto' (or dcoctl-datapath in the config).",
)
@click.option("--foreground", is_flag=True, help="Stay in the foreground (for systemd).")
@click.option(
    "--timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for the tunnel before giving up.",
)
@click.option("--status-fd", type=int, default=None, hidden=True)
def up(
    config: Path,
    name: str | None,
    datapath: str | None,
    foreground: bool,
    timeout: float,
    status_fd: int | None,
) -> None:
    """Bring up the tunnel described by CONFIG (an OpenVPN .ovpn/.conf file)."""
    try:
        cfg = load_config(config)
        instance = runtime.check_name(name or config.stem)
        choice = choose_datapath(datapath or cfg.datapath)
    except (ConfigError, DcoctlError) as exc:
        _fail(str(exc), 2)
        return
    if os.geteuid() != 0:
        _fail("must run as root (needs CAP_NET_ADMIN for the tunnel interface)")
    if runtime.is_running(instance):
        _fail(f"instance '{instance}' is already running; 'dcoctl down {instance}' first")
    _cleanup_stale(instance, quiet=True)
    if foreground:
        credentials = _read_credentials_from_parent() if status_fd is not None else None
        try:
            username, password = credentials or _credentials(cfg, sys.stdin.isatty())
        except DcoctlError as exc:
            _fail(str(exc), 2)
            return
        sys.exit(_run_daemon(cfg, instance, choice, username, password, status_fd))
    try:
        username, password = _credentials(cfg, sys.stdin.isatty())
    except DcoctlError as exc:
        _fail(str(exc), 2)
        return
    sys.exit(_spawn_daemon(config, cfg, instance, choice, datapath, timeout, username, password))


def _read_credentials_from_parent() -> tuple[str | None, str | None] | None:
    data = sys.stdin.read()
    if not data:
        return None
    payload = json.loads(data)
    return payload.get("username"), payload.get("password")


def _run_daemon(
    cfg: ClientConfig | ServerConfig,
    name: str,
    choice: DatapathChoice,
    username: str | None,
    password: str | None,
    status_fd: int | None,
) -> int:
    from .daemon import ClientDaemon  # deferred: pulls in asyncio and pyroute2

    if TYPE_CHECKING:
        from .server_daemon import ServerDaemon

    _setup_logging(cfg.verb)
    status_file = os.fdopen(status_fd, "w", buffering=1) if status_fd is not None else None

    def report(kind: str, text: str) -> None:
        if status_file is not None:
            try:
                status_file.write(json.dumps({"kind": kind, "text": text}) + "\n")
            except OSError:
                pass
        elif kind == "ready":
            print(f"{name}: {text}", flush=True)
        elif kind == "error":
            print(f"dcoctl: {text}", file=sys.stderr, flush=True)

    daemon: ClientDaemon | ServerDaemon
    if isinstance(cfg, ServerConfig):
        from .server_daemon import ServerDaemon

        daemon = ServerDaemon(cfg, name, choice, report)
    else:
        daemon = ClientDaemon(cfg, name, choice, username, password, report)
    try:
        return asyncio.run(daemon.run())
    except DcoctlError as exc:
        report("error", str(exc))
        return 1


def _spawn_daemon(
    config: Path,
    cfg: ClientConfig | ServerConfig,
    name: str,
    choice: DatapathChoice,
    datapath: str | None,
    timeout: float,
    username: str | None,
    password: str | None,
) -> int:
    runtime.ensure_runtime_dir()
    read_fd, write_fd = os.pipe()
    argv = [
        sys.executable,
        "-m",
        "dcoctl",
        "up",
        str(config.resolve()),
        "--name",
        name,
        "--foreground",
        "--status-fd",
        str(write_fd),
    ]
    if datapath:
        argv += ["--datapath", datapath]
    logfile = open(runtime.log_path(name), "ab")  # noqa: SIM115 - handed to the child
    child = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=logfile,
        stderr=logfile,
        pass_fds=(write_fd,),
        start_new_session=True,
        close_fds=True,
    )
    logfile.close()
    os.close(write_fd)
    assert child.stdin is not None
    child.stdin.write(json.dumps({"username": username, "password": password}).encode())
    child.stdin.close()
    if choice.kind == "userspace" and choice.reason:
        click.echo(f"dcoctl: {name}: data path userspace: {choice.reason}", err=True)
    deadline = time.monotonic() + timeout
    last_status = "starting"
    buffer = b""
    with os.fdopen(read_fd, "rb", buffering=0) as status:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            ready, _, _ = select.select([status], [], [], remaining)
            if not ready:
                continue
            chunk = status.read(65536)
            if not chunk:
                break  # the daemon exited
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                message = json.loads(line)
                if message["kind"] == "ready":
                    click.echo(f"{name}: {message['text']}")
                    return 0
                if message["kind"] == "error":
                    child.wait(timeout=15)
                    _fail(message["text"])
                last_status = message["text"]
    if child.poll() is None:
        # Timed out: stop the daemon we started and let it clean up.
        child.terminate()
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        _cleanup_stale(name, quiet=True)
        _fail(
            f"timed out after {timeout:g} s waiting for the tunnel (last status: "
            f"{last_status}); see {runtime.log_path(name)}"
        )
    _cleanup_stale(name, quiet=True)
    _fail(
        f"daemon exited with status {child.returncode} before the tunnel came up "
        f"(last status: {last_status}); see {runtime.log_path(name)}"
    )
    return 1


def _cleanup_stale(name: str, quiet: bool = False) -> bool:
    """Undo what a dead daemon left behind; True if there was something."""
    state = runtime.InstanceState.load(name)
    found = False
    if state is not None:
        if runtime.pid_alive(state.pid) and state.pid != os.getpid():
            if quiet:
                return False
            raise DcoctlError(
                f"instance '{name}' (pid {state.pid}) is not answering on its control socket"
            )
        if state.netns != runtime.netns_id():
            raise DcoctlError(
                f"instance '{name}' ran in another network namespace; run "
                "'dcoctl down' there (e.g. with ip netns exec)"
            )
        from .netlink.links import cleanup_sync

        cleanup_sync(state.interface or None, state.routes or None)
        found = True
        if not quiet:
            click.echo(f"{name}: cleaned up after a daemon that died (pid {state.pid})")
    for path in (runtime.state_path(name), runtime.socket_path(name)):
        if path.exists():
            path.unlink()
            found = True
    return found


@main.command()
@click.argument("name")
@click.option("--timeout", type=float, default=20.0, show_default=True)
def down(name: str, timeout: float) -> None:
    """Stop instance NAME: notify the server, remove interface and routes."""
    try:
        reply = runtime.request(name, {"cmd": "down"})
    except (OSError, ValueError):
        try:
            if not _cleanup_stale(name):
                click.echo(f"{name}: not running")
        except DcoctlError as exc:
            _fail(str(exc))
        return
    pid = int(reply.get("pid", 0))
    deadline = time.monotonic() + timeout
    while pid and runtime.pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid and runtime.pid_alive(pid):
        _fail(f"{name}: daemon (pid {pid}) did not stop within {timeout:g} s")
    _cleanup_stale(name, quiet=True)
    click.echo(f"{name}: down")


def _format_bytes(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.2f} {unit}" if unit != "B" else f"{count} B"
        value /= 1024
    return f"{count} B"


def _ago(timestamp: int | None) -> str:
    if not timestamp:
        return "never"
    seconds = int(time.time() - timestamp)
    parts: list[str] = []
    for unit, size in (("hour", 3600), ("minute", 60), ("second", 1)):
        amount, seconds = divmod(seconds, size)
        if amount or (unit == "second" and not parts):
            parts.append(f"{amount} {unit}{'s' if amount != 1 else ''}")
    return ", ".join(parts) + " ago"


def render_instance(instance: dict[str, Any]) -> str:
    """One instance in the style of ``wg show``."""
    lines = [
        click.style("interface", bold=True) + f": {instance['interface']}",
        f"  instance: {instance['name']} ({instance['mode']})",
        f"  datapath: {instance['datapath']} ({instance['datapath_reason']})",
    ]
    if instance.get("last_error") and not instance.get("peers"):
        lines.append(f"  last error: {instance['last_error']}")
    for peer in instance.get("peers", []):
        lines += [
            "",
            click.style("peer", bold=True) + f": {peer['peer_id']}",
            *([f"  common name: {peer['common_name']}"] if peer.get("common_name") else []),
            f"  endpoint: {peer['remote']} ({peer.get('proto')})",
            f"  state: {peer.get('state')}",
            f"  vpn address: {peer['vpn_ipv4'] or '-'}"
            + (f", {peer['vpn_ipv6']}" if peer.get("vpn_ipv6") else ""),
            f"  cipher: {peer['cipher'] or '-'} (key id {peer['key_id']}, "
            f"{peer.get('key_derivation') or '-'})",
            f"  connected: {_ago(peer['connected_since'])}",
            f"  latest rekey: {_ago(peer['last_rekey'])}",
            f"  transfer: {_format_bytes(peer['rx_bytes'])} received "
            f"({peer['rx_packets']} packets), {_format_bytes(peer['tx_bytes'])} sent "
            f"({peer['tx_packets']} packets)",
        ]
    return "\n".join(lines)


@main.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def peers(name: str | None, as_json: bool) -> None:
    """Show running instances and their peers."""
    names = [name] if name else runtime.running_instances()
    instances = []
    for instance in names:
        try:
            reply = runtime.request(instance, {"cmd": "status"})
        except (OSError, ValueError):
            if name:
                _fail(f"{name}: not running")
            continue
        instances.append(reply["instance"])
    if as_json:
        click.echo(json.dumps(instances, indent=2))
        return
    if not instances:
        click.echo("no running instances")
        return
    click.echo("\n\n".join(render_instance(i) for i in instances))


@main.command()
@click.option(
    "--seconds",
    type=int,
    default=3,
    show_default=True,
    help="Length of the throughput measurement.",
)
@click.option("--keep-logs", is_flag=True, help="Keep the demo's configs and logs.")
def demo(seconds: int, keep_logs: bool) -> None:
    """Run a complete demo tunnel between two throwaway namespaces."""
    from .demo import run_demo
    from .testbed import TestbedError

    try:
        run_demo(seconds, keep_logs)
    except TestbedError as exc:
        _fail(str(exc))


@main.command()
@click.argument(
    "kind",
    type=click.Choice(
        ["secret", "tls-auth", "tls-crypt", "tls-crypt-v2-server", "tls-crypt-v2-client"]
    ),
)
@click.argument("output", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--server-key",
    type=click.Path(exists=True, dir_okay=False),
    help="tls-crypt-v2 server key (for tls-crypt-v2-client).",
)
@click.option("--metadata", help="User metadata for a tls-crypt-v2 client key (text).")
def genkey(kind: str, output: str, server_key: str | None, metadata: str | None) -> None:
    """Generate keys in the formats of 'openvpn --genkey'.

    OUTPUT is a file (created with mode 0600) or '-' for stdout.
    """
    from .protocol.statickey import StaticKey, format_static_key
    from .protocol.tlscryptv2 import (
        format_server_key,
        generate_server_key,
        make_client_key,
        parse_server_key,
    )

    if kind == "tls-crypt-v2-server":
        text = format_server_key(generate_server_key())
    elif kind == "tls-crypt-v2-client":
        if server_key is None:
            _fail("tls-crypt-v2-client needs --server-key FILE", 2)
            return
        try:
            key = parse_server_key(Path(server_key).read_text(), server_key)
        except ConfigError as exc:
            _fail(str(exc), 2)
            return
        data = b"\x00" + metadata.encode() if metadata is not None else None
        text = make_client_key(key, data)
    else:
        text = format_static_key(StaticKey(os.urandom(256)))
    if output == "-":
        click.echo(text, nl=False)
        return
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
