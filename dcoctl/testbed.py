"""Network namespaces and stock OpenVPN peers, for ``dcoctl demo`` and tests.

:class:`NetnsPair` creates two fresh network namespaces joined by a veth pair
(underlay addresses from 198.18.0.0/15 and an IPv6 ULA), and removes them
again on exit. :class:`OpenVPNServer` and :class:`OpenVPNClient` run Debian's
``/usr/sbin/openvpn`` inside such a namespace so dcoctl can be tested against
the reference implementation.

Nothing here touches the root namespace: all addresses, routes and tun
devices live inside the namespaces this module creates, every name carries a
random suffix, and only processes started here are ever signalled (by PID).
Everything needs root.
"""

from __future__ import annotations

import base64
import contextlib
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Self

from .pki import PKI, Identity, make_static_key
from .protocol.tlscryptv2 import (
    format_server_key,
    generate_server_key,
    make_client_key,
    parse_server_key,
)

__all__ = [
    "OPENVPN",
    "NetnsPair",
    "OpenVPNClient",
    "OpenVPNServer",
    "TestbedError",
    "require_root_and_tools",
]

OPENVPN = shutil.which("openvpn") or "/usr/sbin/openvpn"
"""Path of the stock OpenVPN binary."""

READY_MARKER = "Initialization Sequence Completed"

Proto = Literal["udp", "tcp"]
Wrap = Literal["tls-auth", "tls-crypt", "tls-crypt-v2"]
#: Who makes tls-crypt-v2 client keys for :meth:`OpenVPNServer.client_profile`.
ClientKeygen = Literal["openvpn", "dcoctl"]

_LOG_TAIL_LINES = 40


class TestbedError(RuntimeError):
    """The test bed could not be set up (namespace, veth or OpenVPN peer)."""

    __test__ = False  # not a pytest test class despite the name


def require_root_and_tools() -> None:
    """Raise :class:`TestbedError` unless we are root and ``ip``/``openvpn`` exist."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append("must run as root (network namespaces need CAP_SYS_ADMIN)")
    if shutil.which("ip") is None:
        problems.append("the 'ip' command (iproute2) is not installed")
    if not (os.path.isfile(OPENVPN) and os.access(OPENVPN, os.X_OK)):
        problems.append("the 'openvpn' binary is not installed (apt-get install openvpn)")
    if not os.path.exists("/dev/net/tun"):
        problems.append("/dev/net/tun is missing (modprobe tun)")
    if problems:
        raise TestbedError("test bed unavailable: " + "; ".join(problems))


def _ip(*args: str) -> None:
    """Run ``ip ARGS`` and raise :class:`TestbedError` with its stderr on failure."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise TestbedError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")


def _stop_process(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """SIGTERM ``proc`` (by PID), wait, then SIGKILL. Safe to call twice."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout)


def _tail(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


class NetnsPair:
    """Two network namespaces joined by a veth pair.

    ``ns_server`` (side A) gets ``198.18.N.1/24`` and ``fd00:198:18:N::1/64``,
    ``ns_client`` (side B) ``.2`` of each, with N random so parallel instances
    differ. ``lo`` and the veth ends are up. Leaving the context (or
    :meth:`close`) kills processes still running in either namespace and
    deletes both namespaces, which also removes the veth pair.
    """

    def __init__(self, prefix: str = "dco") -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,20}", prefix):
            raise ValueError(f"bad namespace prefix {prefix!r}")
        suffix = secrets.token_hex(3)
        self.suffix = suffix
        self.ns_server = f"{prefix}-a-{suffix}"
        self.ns_client = f"{prefix}-b-{suffix}"
        self.veth_server = f"vd{suffix}a"
        self.veth_client = f"vd{suffix}b"
        index = random.randrange(512)  # 512 /24s in 198.18.0.0/15
        second, third = 18 + index // 256, index % 256
        self.prefixlen = 24
        self.prefixlen6 = 64
        self.server_ip = f"198.{second}.{third}.1"
        self.client_ip = f"198.{second}.{third}.2"
        self.server_ip6 = f"fd00:198:{second}:{third}::1"
        self.client_ip6 = f"fd00:198:{second}:{third}::2"
        self._created: list[str] = []
        self._procs: list[subprocess.Popen[Any]] = []

    # -- lifecycle ---------------------------------------------------------

    def __enter__(self) -> Self:
        self.create()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def create(self) -> None:
        """Create the namespaces, the veth pair and the addresses."""
        try:
            for ns in (self.ns_server, self.ns_client):
                _ip("netns", "add", ns)
                self._created.append(ns)
            # Both ends are created directly inside their namespaces; nothing
            # ever appears in the root namespace.
            _ip(
                "link", "add", self.veth_server, "netns", self.ns_server, "type", "veth",
                "peer", "name", self.veth_client, "netns", self.ns_client,
            )  # fmt: skip
            for ns, dev in self._sides():
                # Keep static IPv6 addresses across set_link(down)/up.
                for conf in ("all", "default", dev):
                    self.run(
                        ns, ["sysctl", "-qw", f"net.ipv6.conf.{conf}.keep_addr_on_down=1"],
                        check=False, capture_output=True,
                    )  # fmt: skip
                _ip("-n", ns, "link", "set", "lo", "up")
                self._add_addresses(ns, dev)
                _ip("-n", ns, "link", "set", dev, "up")
            self.wait_carrier()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Kill our processes and delete both namespaces. Idempotent."""
        for proc in self._procs:
            _stop_process(proc, timeout=3.0)
        self._procs.clear()
        for ns in list(self._created):
            self._kill_namespace_pids(ns)
        for ns in list(self._created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
            self._created.remove(ns)

    @staticmethod
    def _kill_namespace_pids(ns: str) -> None:
        """SIGKILL processes left inside ``ns`` (a namespace this object created)."""
        proc = subprocess.run(
            ["ip", "netns", "pids", ns], capture_output=True, text=True, check=False
        )
        pids = [int(p) for p in proc.stdout.split() if p.isdigit() and int(p) != os.getpid()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 3.0
        for pid in pids:
            while time.monotonic() < deadline and _pid_alive(pid):
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                if _pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)

    # -- helpers -----------------------------------------------------------

    def _sides(self) -> list[tuple[str, str]]:
        return [(self.ns_server, self.veth_server), (self.ns_client, self.veth_client)]

    def _add_addresses(self, ns: str, dev: str) -> None:
        ip4, ip6 = (
            (self.server_ip, self.server_ip6)
            if ns == self.ns_server
            else (self.client_ip, self.client_ip6)
        )
        _ip("-n", ns, "addr", "replace", f"{ip4}/{self.prefixlen}", "dev", dev)
        _ip("-n", ns, "-6", "addr", "replace", f"{ip6}/{self.prefixlen6}", "dev", dev, "nodad")

    def veth(self, ns: str) -> str:
        """The veth end that lives in namespace ``ns``."""
        for name, dev in self._sides():
            if name == ns:
                return dev
        raise ValueError(f"{ns!r} is not one of this pair's namespaces")

    def run(self, ns: str, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
        """``subprocess.run(["ip", "netns", "exec", ns, *argv], **kw)``."""
        return subprocess.run(["ip", "netns", "exec", ns, *argv], **kw)

    def popen(self, ns: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in ``ns``; it is stopped (by PID) when the pair closes."""
        proc: subprocess.Popen[Any] = subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kw)
        self._procs.append(proc)
        return proc

    def ping(self, ns: str, address: str, count: int = 3, wait: int = 2) -> bool:
        """Whether ``ping -c COUNT -i 0.2 -W WAIT ADDRESS`` from ``ns`` gets any reply."""
        if shutil.which("ping") is None:
            raise TestbedError("the 'ping' command is not installed (apt-get install iputils-ping)")
        proc = self.run(
            ns,
            ["ping", "-c", str(count), "-i", "0.2", "-W", str(wait), address],
            capture_output=True,
            check=False,
        )
        return proc.returncode == 0

    def wait_carrier(self, timeout: float = 5.0) -> None:
        """Wait until both veth ends report carrier (linkwatch lags up to ~1 s)."""
        deadline = time.monotonic() + timeout
        while True:
            pending = [
                dev
                for ns, dev in self._sides()
                if "LOWER_UP" not in _link_flags(ns, dev) or "NO-CARRIER" in _link_flags(ns, dev)
            ]
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise TestbedError(f"no carrier on {', '.join(pending)} after {timeout:g}s")
            time.sleep(0.05)

    def set_link(self, ns: str, up: bool) -> None:
        """Take the underlay veth end in ``ns`` down or bring it back up."""
        dev = self.veth(ns)
        _ip("-n", ns, "link", "set", dev, "up" if up else "down")
        if up:
            self._add_addresses(ns, dev)
            with contextlib.suppress(TestbedError):
                self.wait_carrier()

    def __repr__(self) -> str:
        return (
            f"NetnsPair(ns_server={self.ns_server!r}, ns_client={self.ns_client!r}, "
            f"server_ip={self.server_ip!r}, client_ip={self.client_ip!r})"
        )


def _link_flags(ns: str, dev: str) -> set[str]:
    proc = subprocess.run(
        ["ip", "-n", ns, "-o", "link", "show", "dev", dev],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    match = re.search(r"<([^>]*)>", proc.stdout)
    return set(match.group(1).split(",")) if match else set()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def _write_file(path: Path, text: str, mode: int = 0o600) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, mode)
    return path


def _inline(tag: str, text: str) -> str:
    return f"<{tag}>\n{text.strip()}\n</{tag}>"


class _OpenVPNProcess:
    """A stock ``openvpn --config FILE`` running inside a namespace."""

    def __init__(self, netns: str, workdir: Path, name: str) -> None:
        self.netns = netns
        self.workdir = Path(workdir)
        self.name = name
        self.config_path = self.workdir / f"{name}.conf"
        self.log_path = self.workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log_fh: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """PID of the openvpn process (``ip netns exec`` execs into it)."""
        return self.process.pid if self.process is not None else None

    def _write_config(self) -> str:
        raise NotImplementedError

    def _launch(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        _write_file(self.config_path, config)
        self._log_fh = open(self.log_path, "wb")  # closed in stop()
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, OPENVPN, "--config", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
        )

    def start(self, wait: bool = True, timeout: float = 20.0) -> None:
        """Start openvpn; with ``wait``, block until it is ready (see :meth:`wait_ready`)."""
        if self.process is not None:
            raise TestbedError(f"{self.name} already started")
        try:
            self._launch()
            if wait:
                self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def log_text(self) -> str:
        """Everything openvpn has logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def is_running(self) -> bool:
        """Whether the openvpn process is still alive."""
        return self.process is not None and self.process.poll() is None

    def is_ready(self) -> bool:
        """Whether openvpn logged ``Initialization Sequence Completed``."""
        return READY_MARKER in self.log_text()

    def wait_for(self, pattern: str, timeout: float = 20.0) -> bool:
        """Wait until the log matches regex ``pattern``; False on timeout or exit."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            if regex.search(self.log_text()):
                return True
            if not self.is_running() or time.monotonic() >= deadline:
                return bool(regex.search(self.log_text()))
            time.sleep(0.1)

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait for ``Initialization Sequence Completed``; raise with the log tail if not."""
        if self.wait_for(re.escape(READY_MARKER), timeout):
            return
        state = "exited" if not self.is_running() else f"not ready after {timeout:g}s"
        raise TestbedError(
            f"openvpn {self.name} in {self.netns} {state}; log tail:\n{_tail(self.log_text())}"
        )

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM openvpn (by PID), wait, then SIGKILL. Idempotent."""
        if self.process is not None:
            _stop_process(self.process, timeout)
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None

    def __enter__(self) -> Self:
        if self.process is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class OpenVPNServer(_OpenVPNProcess):
    """A stock OpenVPN server (``server`` macro, ``dev tun``) inside ``netns``.

    The config and every file it references are written into ``workdir``;
    openvpn's output goes to ``workdir/server.log``. Use it as a context
    manager (starts and waits for readiness, stops on exit) or call
    :meth:`start` / :meth:`stop`. :meth:`client_profile` renders a matching
    inline client ``.ovpn``.

    ``wrap`` selects the control-channel protection. For ``tls-auth`` and
    ``tls-crypt``, ``static_key`` is the shared static key file text (default:
    a fresh one). For ``tls-crypt-v2``, ``static_key`` is the *server* key
    (``-----BEGIN OpenVPN tls-crypt-v2 server key-----``, default: a fresh
    one) and every :meth:`client_profile` gets its own client key.
    """

    def __init__(
        self,
        netns: str,
        workdir: Path,
        pki: PKI,
        *,
        proto: Proto = "udp",
        port: int = 1194,
        listen_ipv6: bool = False,
        local: str | None = None,
        wrap: Wrap | None = None,
        static_key: str | None = None,
        auth_digest: str = "SHA1",
        data_ciphers: str = "AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305",
        reneg_sec: int | None = None,
        keepalive: tuple[int, int] | None = (10, 60),
        server_net: str = "10.8.0.0 255.255.255.0",
        server_ipv6: str | None = None,
        topology: str = "subnet",
        push: Sequence[str] = (),
        auth_user_pass_verify: Literal["accept", "reject"] | None = None,
        crl_pem: str | None = None,
        explicit_exit_notify: int | None = 1,
        dco: bool = False,
        extra: Sequence[str] = (),
        verb: int = 4,
        name: str = "server",
    ) -> None:
        super().__init__(netns, workdir, name)
        if proto not in ("udp", "tcp"):
            raise ValueError(f"proto must be 'udp' or 'tcp', not {proto!r}")
        if wrap not in (None, "tls-auth", "tls-crypt", "tls-crypt-v2"):
            raise ValueError(f"unknown wrap {wrap!r}")
        self.pki = pki
        self.proto: Proto = proto
        self.port = port
        self.listen_ipv6 = listen_ipv6
        self.local = local
        self.wrap: Wrap | None = wrap
        self.static_key_text: str | None = None
        if wrap == "tls-crypt-v2":
            # Validate early: a bad key should fail here, not inside openvpn.
            server_key = (
                parse_server_key(static_key, "static_key")
                if static_key is not None
                else generate_server_key()
            )
            self.static_key_text = static_key or format_server_key(server_key)
        elif wrap is not None:
            self.static_key_text = static_key or make_static_key()
        self.auth_digest = auth_digest
        self.data_ciphers = data_ciphers
        self.reneg_sec = reneg_sec
        self.keepalive = keepalive
        self.server_net = server_net
        self.server_ipv6 = server_ipv6
        self.topology = topology
        self.push = list(push)
        self.auth_user_pass_verify = auth_user_pass_verify
        self.crl_pem = crl_pem
        self.explicit_exit_notify = explicit_exit_notify
        self.dco = dco
        self.extra = list(extra)
        self.verb = verb
        self.tun_name = f"tunsrv{secrets.token_hex(3)}"
        self.status_path = self.workdir / f"{name}-status.log"

    @property
    def tunnel_ip(self) -> str:
        """The server's own tunnel address (first host of ``server_net``), e.g. 10.8.0.1."""
        network = self.server_net.split()[0]
        a, b, c, d = (int(x) for x in network.split("."))
        value = ((a << 24) | (b << 16) | (c << 8) | d) + 1
        return ".".join(str((value >> s) & 0xFF) for s in (24, 16, 8, 0))

    @property
    def server_cn(self) -> str:
        """Common name of the server certificate."""
        return self.pki.server.common_name

    def _server_proto(self) -> str:
        if self.proto == "udp":
            return "udp6" if self.listen_ipv6 else "udp"
        return "tcp6-server" if self.listen_ipv6 else "tcp-server"

    def _write_config(self) -> str:
        d = self.workdir
        _write_file(d / "ca.crt", self.pki.ca_cert_pem, 0o644)
        _write_file(d / "server.crt", self.pki.server.cert_pem, 0o644)
        _write_file(d / "server.key", self.pki.server.key_pem)
        lines = [
            f"# generated by dcoctl.testbed for netns {self.netns}",
            f"dev {self.tun_name}",
            "dev-type tun",
            f"proto {self._server_proto()}",
            f"port {self.port}",
        ]
        if self.local is not None:
            lines.append(f"local {self.local}")
        lines += [
            f"server {self.server_net}",
            f"topology {self.topology}",
            f"ca {d / 'ca.crt'}",
            f"cert {d / 'server.crt'}",
            f"key {d / 'server.key'}",
            "dh none",
            f"data-ciphers {self.data_ciphers}",
            f"auth {self.auth_digest}",
            f"status {self.status_path} 1",
            f"tmp-dir {d}",
            f"verb {self.verb}",
        ]
        if not self.dco:
            lines.append("disable-dco")
        if self.server_ipv6 is not None:
            lines.append(f"server-ipv6 {self.server_ipv6}")
        if self.keepalive is not None:
            lines.append(f"keepalive {self.keepalive[0]} {self.keepalive[1]}")
        if self.reneg_sec is not None:
            lines.append(f"reneg-sec {self.reneg_sec}")
        if self.static_key_text is not None:
            _write_file(d / "wrap.key", self.static_key_text)
            if self.wrap == "tls-auth":
                lines.append(f"tls-auth {d / 'wrap.key'} 0")
            elif self.wrap == "tls-crypt-v2":
                lines.append(f"tls-crypt-v2 {d / 'wrap.key'}")
            else:
                lines.append(f"tls-crypt {d / 'wrap.key'}")
        if self.crl_pem is not None:
            _write_file(d / "crl.pem", self.crl_pem, 0o644)
            lines.append(f"crl-verify {d / 'crl.pem'}")
        if self.auth_user_pass_verify is not None:
            code = 0 if self.auth_user_pass_verify == "accept" else 1
            script = _write_file(d / "verify.sh", f"#!/bin/sh\nexit {code}\n", 0o755)
            lines += ["script-security 2", f"auth-user-pass-verify {script} via-file"]
        if self.proto == "udp" and self.explicit_exit_notify is not None:
            lines.append(f"explicit-exit-notify {self.explicit_exit_notify}")
        lines += [f'push "{p}"' for p in self.push]
        lines += self.extra
        return "\n".join(lines) + "\n"

    def status_text(self) -> str:
        """The openvpn status file (rewritten every second)."""
        try:
            return self.status_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def make_tls_crypt_v2_client_key(
        self, keygen: ClientKeygen = "openvpn", metadata: bytes | None = None
    ) -> str:
        """A new tls-crypt-v2 client key (PEM text) for this server's key.

        ``keygen="openvpn"`` runs the stock binary (the server key is written
        to ``workdir/wrap.key`` for it); ``"dcoctl"`` uses
        :func:`~dcoctl.protocol.tlscryptv2.make_client_key`. ``metadata``
        includes its type byte; with openvpn only type 0x00 is possible.
        """
        if self.wrap != "tls-crypt-v2" or self.static_key_text is None:
            raise ValueError("this server does not use tls-crypt-v2")
        if keygen == "dcoctl":
            return make_client_key(parse_server_key(self.static_key_text), metadata)
        if keygen != "openvpn":
            raise ValueError(f"unknown tls-crypt-v2 key generator {keygen!r}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        key_path = _write_file(self.workdir / "wrap.key", self.static_key_text)
        argv = [OPENVPN, "--tls-crypt-v2", str(key_path), "--genkey", "tls-crypt-v2-client"]
        if metadata is not None:
            if not metadata or metadata[0] != 0x00:
                raise ValueError("openvpn's key generator only takes user metadata (type 0x00)")
            argv.append(base64.b64encode(metadata[1:]).decode("ascii"))
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        match = re.search(
            r"^-----BEGIN OpenVPN tls-crypt-v2 client key-----$.*?"
            r"^-----END OpenVPN tls-crypt-v2 client key-----$\n?",
            proc.stdout,
            re.MULTILINE | re.DOTALL,
        )
        if proc.returncode != 0 or match is None:
            raise TestbedError(
                f"openvpn --genkey tls-crypt-v2-client failed: {_tail(proc.stdout + proc.stderr)}"
            )
        return match.group(0)

    def client_profile(
        self,
        name: str,
        remote_host: str,
        extra_lines: Sequence[str] = (),
        *,
        identity: Identity | None = None,
        remote_port: int | None = None,
        data_ciphers: str | None = None,
        auth_user_pass: tuple[str, str] | None = None,
        verb: int = 4,
        tls_crypt_v2_keygen: ClientKeygen = "openvpn",
        tls_crypt_v2_metadata: bytes | None = None,
    ) -> str:
        """A ready-to-use inline client ``.ovpn`` for this server.

        The client certificate is ``identity`` or else ``pki.issue_client(name)``
        (issued once and remembered in ``pki.clients``). ``auth_user_pass``
        inlines a ``<auth-user-pass>`` block; ``extra_lines`` are appended.

        With ``wrap="tls-crypt-v2"`` a new client key is made for every call
        and inlined as ``<tls-crypt-v2>``: by ``openvpn --tls-crypt-v2 SRV
        --genkey tls-crypt-v2-client`` (``tls_crypt_v2_keygen="openvpn"``) or
        by :func:`dcoctl.protocol.tlscryptv2.make_client_key` (``"dcoctl"``).
        ``tls_crypt_v2_metadata`` is the full metadata (type byte first;
        default: the timestamp); openvpn's CLI only takes user metadata
        (type 0x00), so other types need the ``"dcoctl"`` generator.
        """
        ident = identity if identity is not None else self.pki.issue_client(name)
        client_proto = "udp" if self.proto == "udp" else "tcp-client"
        lines = [
            f"# client profile {name!r} generated by dcoctl.testbed",
            "client",
            "dev tun",
            f"proto {client_proto}",
            f"remote {remote_host} {remote_port if remote_port is not None else self.port}",
            "nobind",
            "remote-cert-tls server",
            f"verify-x509-name {self.server_cn} name",
            f"data-ciphers {data_ciphers if data_ciphers is not None else self.data_ciphers}",
            f"verb {verb}",
        ]
        if self.wrap == "tls-auth" or self.auth_digest.upper() != "SHA1":
            lines.append(f"auth {self.auth_digest}")
        if self.proto == "udp":
            lines.append("explicit-exit-notify 1")
        lines += [
            _inline("ca", self.pki.ca_cert_pem),
            _inline("cert", ident.cert_pem),
            _inline("key", ident.key_pem),
        ]
        if self.static_key_text is not None:
            if self.wrap == "tls-auth":
                lines += ["key-direction 1", _inline("tls-auth", self.static_key_text)]
            elif self.wrap == "tls-crypt-v2":
                client_key = self.make_tls_crypt_v2_client_key(
                    tls_crypt_v2_keygen, tls_crypt_v2_metadata
                )
                lines.append(_inline("tls-crypt-v2", client_key))
            else:
                lines.append(_inline("tls-crypt", self.static_key_text))
        if auth_user_pass is not None:
            lines.append(_inline("auth-user-pass", f"{auth_user_pass[0]}\n{auth_user_pass[1]}"))
        lines += list(extra_lines)
        return "\n".join(lines) + "\n"


class OpenVPNClient(_OpenVPNProcess):
    """A stock OpenVPN client running ``profile`` (``.ovpn`` text) inside ``netns``.

    The profile is written to ``workdir/<name>.conf`` and output goes to
    ``workdir/<name>.log``. As a context manager it starts and waits for
    ``Initialization Sequence Completed``; use ``start(wait=False)`` to watch
    a connection that is expected to fail.
    """

    def __init__(
        self,
        netns: str,
        workdir: Path,
        profile: str,
        *,
        name: str = "client",
        dco: bool = False,
    ) -> None:
        super().__init__(netns, workdir, name)
        self.profile = profile
        self.dco = dco

    def _write_config(self) -> str:
        text = self.profile if self.profile.endswith("\n") else self.profile + "\n"
        if not self.dco and not re.search(r"^\s*disable-dco\b", text, re.MULTILINE):
            text += "disable-dco\n"
        return text
