"""The asyncio daemon behind ``dcoctl up`` (client mode).

It is the only place where the protocol core meets sockets, clocks, the tun
device and routes. Everything that happens (protocol events, data-path
reports such as ping timeouts) goes through one :class:`asyncio.Queue` and
is handled in order by :meth:`ClientDaemon._consume_events`.

Lifecycle: open the interface, then for each ``remote`` in turn: resolve,
connect, run one :class:`ClientSession` until it ends; reconnect with
backoff when the end is recoverable, stop when it is not. The first
successful push makes the daemon *ready* (``up`` returns 0); a fatal error
before that makes ``up`` fail with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import runtime
from .client import client_settings
from .config import ClientConfig, Remote
from .datapath import DatapathChoice
from .errors import DatapathError, DcoctlError
from .netlink.links import LinkManager, RouteSet, netmask_to_prefixlen
from .protocol.client_session import ClientSession
from .protocol.events import (
    ControlMessageReceived,
    Event,
    KeyInstalled,
    KeyRetired,
    PingTimeout,
    PrimaryKeyChanged,
    RenegotiationCompleted,
    RenegotiationStarted,
    SessionClosed,
    SessionEstablished,
    TLSEstablished,
)
from .protocol.options import PushedOptions
from .protocol.packet import DATA_OPCODES
from .protocol.session import SessionState
from .scripts import run_script
from .transport import TCPTransport, Transport, UDPTransport
from .userspace.datapath import UserspaceDatapath

log = logging.getLogger("dcoctl")

StatusCallback = Callable[[str, str], None]


class Fatal(DcoctlError):
    """The instance cannot continue (the message says why)."""


@dataclass
class _AttemptEnd:
    reason: str
    reconnect: bool
    advance: bool = True


class ClientDaemon:
    """One client instance: a tun interface and a session to one server."""

    def __init__(
        self,
        cfg: ClientConfig,
        name: str,
        choice: DatapathChoice,
        username: str | None = None,
        password: str | None = None,
        status: StatusCallback | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = name
        self.choice = choice
        self.username = username
        self.password = password
        self._status = status or (lambda kind, text: None)
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.datapath = UserspaceDatapath(self.events, replay_window=cfg.replay_window)
        self.ifname = cfg.dev if cfg.dev not in ("tun", "") else name
        self.session: ClientSession | None = None
        self.transport: Transport | None = None
        self.remote: Remote | None = None
        self.remote_addr: tuple[str, int] | None = None
        self._links = LinkManager(on_change=self._persist_undo)
        self._timer: asyncio.TimerHandle | None = None
        self._attempt_end: asyncio.Future[_AttemptEnd] | None = None
        self._stop = asyncio.Event()
        self._stop_reason = ""
        self.ready = False
        self.connected_since: float | None = None
        self.last_rekey: float | None = None
        self.pushed: PushedOptions | None = None
        self.vpn_ipv4: str | None = None
        self.vpn_ipv6: str | None = None
        self._last_error = ""
        self._state = runtime.InstanceState(name, os.getpid(), runtime.netns_id(), cfg.source)
        self._configured = False

    # -- entry point ------------------------------------------------------
    async def run(self) -> int:
        """Run until ``down``/signal (0) or a fatal error (1)."""
        server = await runtime.claim_instance(self.name, self.status, self.request_stop)
        consumer = asyncio.create_task(self._consume_events())
        exit_code = 0
        try:
            await self._links.open()
            await self.datapath.open(self.ifname, self.cfg.tun_mtu)
            self.ifname = self.datapath.ifname
            self._state.interface = self.ifname
            self._state.save()
            log.info(
                "%s: data path %s (%s), interface %s",
                self.name,
                self.choice.kind,
                self.choice.reason,
                self.ifname,
            )
            await self._connect_loop()
        except Fatal as exc:
            log.error("%s", exc)
            self._status("error", str(exc))
            exit_code = 1
        except DcoctlError as exc:
            log.error("%s", exc)
            self._status("error", str(exc))
            exit_code = 1
        finally:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
            await self._teardown()
            server.close()
            with contextlib.suppress(OSError):
                runtime.socket_path(self.name).unlink()
            with contextlib.suppress(OSError):
                runtime.state_path(self.name).unlink()
        return exit_code

    def request_stop(self, reason: str) -> None:
        """Begin a graceful shutdown (signal handler, ``down`` command)."""
        if not self._stop.is_set():
            log.info("%s: stopping (%s)", self.name, reason)
            self._stop_reason = reason
            self._stop.set()
            self._end_attempt(_AttemptEnd(reason, reconnect=False))

    # -- connection attempts -------------------------------------------------------
    async def _connect_loop(self) -> None:
        remotes = list(self.cfg.remotes)
        if self.cfg.remote_random:
            random.shuffle(remotes)
        failures = 0
        index = 0
        attempts: dict[int, int] = {}
        while not self._stop.is_set():
            remote = remotes[index % len(remotes)]
            attempts[index % len(remotes)] = attempts.get(index % len(remotes), 0) + 1
            end = await self._attempt(remote)
            if self._stop.is_set():
                return
            if not end.reconnect:
                raise Fatal(end.reason)
            self._last_error = end.reason
            log.warning("%s: %s; reconnecting", self.name, end.reason)
            self._status("status", end.reason)
            if self.ready:
                failures = 0
            failures += 1
            limit = self.cfg.connect_retry_max
            if limit is not None and all(attempts.get(i, 0) >= limit for i in range(len(remotes))):
                raise Fatal(f"giving up after {limit} attempts per remote: {end.reason}")
            if end.advance:
                index += 1
            delay = min(
                self.cfg.connect_retry * 2 ** max(0, failures // len(remotes) - 1),
                self.cfg.connect_retry_max_backoff,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def _attempt(self, remote: Remote) -> _AttemptEnd:
        self.remote = remote
        try:
            family, addr = await self._resolve(remote)
        except OSError as exc:
            return _AttemptEnd(f"cannot resolve {remote.host}: {exc}", reconnect=True)
        self.remote_addr = addr
        loop = asyncio.get_running_loop()
        self._attempt_end = loop.create_future()
        transport: Transport
        if remote.transport == "tcp":
            transport = TCPTransport(self._on_packet, self._on_transport_error)
        else:
            transport = UDPTransport(self._on_packet, self._on_transport_error)
        where = f"{addr[0]}:{addr[1]} ({remote.transport})"
        log.info("%s: connecting to %s", self.name, where)
        self._status("status", f"connecting to {where}")
        try:
            lport = None if self.cfg.nobind else self.cfg.lport
            if isinstance(transport, TCPTransport):
                await transport.connect(
                    family, addr, lport, timeout=min(self.cfg.server_poll_timeout, 30)
                )
            else:
                assert isinstance(transport, UDPTransport)
                await transport.connect(family, addr, lport)
        except TimeoutError:
            return _AttemptEnd(f"server {where} unreachable: TCP connect timed out", reconnect=True)
        except OSError as exc:
            return _AttemptEnd(f"server {where} unreachable: {exc.strerror or exc}", reconnect=True)
        self.transport = transport
        self.datapath.attach(transport.send)
        try:
            settings = client_settings(self.cfg, remote.transport, self.username, self.password)
        except DcoctlError as exc:
            transport.close()
            raise Fatal(str(exc)) from None
        self.session = ClientSession(settings)
        self.session.connect(time.time())
        self._transmit()
        poll = loop.call_later(self.cfg.server_poll_timeout, self._check_server_answered, where)
        try:
            end = await self._attempt_end
        finally:
            poll.cancel()
            await self._finish_session(
                end_reason=self._attempt_end.result() if self._attempt_end.done() else None
            )
        return end

    def _check_server_answered(self, where: str) -> None:
        session = self.session
        if session is not None and session.remote_session_id is None:
            self._end_attempt(
                _AttemptEnd(
                    f"server {where} did not answer within {self.cfg.server_poll_timeout:g} s "
                    "(unreachable, or wrong tls-auth/tls-crypt key?)",
                    reconnect=True,
                )
            )

    async def _resolve(self, remote: Remote) -> tuple[socket.AddressFamily, tuple[str, int]]:
        loop = asyncio.get_running_loop()
        family = remote.family or socket.AF_UNSPEC
        infos = await loop.getaddrinfo(
            remote.host, remote.port, family=family, type=socket.SOCK_STREAM
        )
        if not infos:
            raise OSError(f"no address for {remote.host}")
        fam, _, _, _, sockaddr = infos[0]
        return fam, (str(sockaddr[0]), int(sockaddr[1]))

    async def _finish_session(self, end_reason: _AttemptEnd | None) -> None:
        session, transport = self.session, self.transport
        if session is not None and self._stop.is_set():
            await self._notify_exit(session)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.datapath.clear_keys()
        self.datapath.attach(None)
        if transport is not None:
            transport.close()
        self.session = None
        self.transport = None
        if self._configured and not (self.cfg.persist_tun and not self._stop.is_set()):
            await self._unconfigure()

    async def _notify_exit(self, session: ClientSession) -> None:
        """explicit-exit-notify: tell the server before going (E.7)."""
        if session.state is not SessionState.ESTABLISHED:
            return
        if session.send_exit():
            self._transmit()
            await asyncio.sleep(0.3)
            self._transmit()
            return
        if self.cfg.explicit_exit_notify and isinstance(self.transport, UDPTransport):
            for _ in range(min(self.cfg.explicit_exit_notify, 2)):
                self.datapath.send_exit_notification()
                await asyncio.sleep(0.2)

    def _end_attempt(self, end: _AttemptEnd) -> None:
        if self._attempt_end is not None and not self._attempt_end.done():
            self._attempt_end.set_result(end)

    # -- packet and timer plumbing (aioquic-style transmit) ------------------------
    def _on_packet(self, data: bytes) -> None:
        session = self.session
        if session is None:
            return
        if data[0] >> 3 in DATA_OPCODES:
            self.datapath.receive_from_peer(data)
            return
        session.receive_packet(data, time.time())
        self._drain_session()
        self._transmit()

    def _on_transport_error(self, message: str) -> None:
        session = self.session
        if session is not None and session.state is not SessionState.ESTABLISHED:
            where = f"{self.remote_addr[0]}:{self.remote_addr[1]}" if self.remote_addr else "?"
            self._end_attempt(_AttemptEnd(f"server {where} unreachable: {message}", reconnect=True))
        elif self.transport is not None and self.transport.closed:
            self._end_attempt(_AttemptEnd(message, reconnect=True, advance=False))
        else:
            log.debug("%s: transport error: %s", self.name, message)

    def _drain_session(self) -> None:
        session = self.session
        if session is None:
            return
        while (event := session.next_event()) is not None:
            # Key changes reach the data path before the next packet is read
            # (see ServerDaemon._after_input); everything else is queued.
            if not self._apply_key_event(event):
                self.events.put_nowait(event)

    def _apply_key_event(self, event: Event) -> bool:
        """Execute a key event on the data path now; False if it is not one."""
        if isinstance(event, KeyInstalled):
            self.datapath.install_key(
                event.key_id, event.keys, primary=event.primary, peer_id=event.peer_id
            )
        elif isinstance(event, PrimaryKeyChanged):
            self.datapath.promote_key(event.key_id)
        elif isinstance(event, KeyRetired):
            self.datapath.retire_key(event.key_id)
        else:
            return False
        return True

    def _transmit(self) -> None:
        session, transport = self.session, self.transport
        if session is None or transport is None:
            return
        for packet in session.packets_to_send(time.time()):
            transport.send(packet)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = session.get_timer()
        if deadline is not None:
            delay = max(0.0, deadline - time.time())
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        session = self.session
        if session is None:
            return
        session.handle_timer(time.time())
        self._drain_session()
        self._transmit()

    # -- the event queue -------------------------------------------------------------
    async def _consume_events(self) -> None:
        while True:
            event = await self.events.get()
            try:
                await self._handle_event(event)
            except DcoctlError as exc:
                log.error("%s: %s", self.name, exc)
                self._end_attempt(_AttemptEnd(str(exc), reconnect=False))

    async def _handle_event(self, event: Event) -> None:
        if isinstance(event, TLSEstablished):
            log.info(
                "%s: TLS %s %s established with %s",
                self.name,
                event.version,
                event.cipher,
                event.peer_subject,
            )
            if event.key_id == 0:
                self._status("status", f"TLS established with {event.peer_subject}")
        elif isinstance(event, RenegotiationStarted):
            log.info(
                "%s: renegotiation of key %d started by %s",
                self.name,
                event.key_id,
                "us" if event.initiated_locally else "the server",
            )
        elif isinstance(event, RenegotiationCompleted):
            self.last_rekey = time.time()
            log.info("%s: key %d installed", self.name, event.key_id)
        elif isinstance(event, SessionEstablished):
            await self._established(event)
        elif isinstance(event, SessionClosed):
            level = logging.INFO if event.kind == "local" else logging.WARNING
            log.log(level, "%s: session ended: %s", self.name, event.reason)
            self._end_attempt(_AttemptEnd(event.reason, event.reconnect, event.advance))
        elif isinstance(event, PingTimeout):
            self._end_attempt(
                _AttemptEnd(
                    f"no packets from the server for {event.seconds} s (ping-restart)",
                    reconnect=True,
                    advance=False,
                )
            )
        elif isinstance(event, ControlMessageReceived):
            log.info("%s: server says: %s", self.name, event.text)

    async def _established(self, event: SessionEstablished) -> None:
        options = event.options
        self.pushed = options
        self.connected_since = time.time()
        self.last_rekey = self.connected_since
        ping = options.ping if options.ping is not None else self.cfg.ping
        restart = (
            options.ping_restart if options.ping_restart is not None else self.cfg.ping_restart
        )
        self.datapath.set_keepalive(ping, restart)
        if not self._configured:
            await self._configure(options)
        message = (
            f"tunnel up: {self.ifname} {self.vpn_ipv4 or ''}"
            f"{' ' + self.vpn_ipv6 if self.vpn_ipv6 else ''} via "
            f"{self.remote_addr[0] if self.remote_addr else '?'}, cipher {event.cipher}, "
            f"keys from {event.key_derivation}, peer-id {event.peer_id}"
        )
        log.info("%s: %s", self.name, message)
        if not self.ready:
            self.ready = True
            self._status("ready", message)

    # -- interface configuration -------------------------------------------------------
    async def _configure(self, options: PushedOptions) -> None:
        links = self._links
        mtu = options.tun_mtu or self.cfg.tun_mtu
        await links.set_link(self.ifname, mtu=mtu, up=True)
        gateway: str | None = options.route_gateway
        if options.ifconfig is not None:
            local, second = options.ifconfig
            if options.topology == "subnet":
                prefix = netmask_to_prefixlen(second)
                await links.add_address(self.ifname, local, prefix)
            else:
                await links.add_address(self.ifname, local, 32, peer=second)
                gateway = gateway or second
            self.vpn_ipv4 = local
        if options.ifconfig_ipv6 is not None:
            iface = ipaddress.ip_interface(options.ifconfig_ipv6[0])
            await links.add_address(self.ifname, str(iface.ip), iface.network.prefixlen)
            self.vpn_ipv6 = str(iface.ip)
        if gateway == "dhcp":
            gateway = None
        wanted4: list[tuple[str, int, str | None, int | None]] = []
        wanted6: list[tuple[str, int, str | None, int | None]] = []
        metric_default = options.route_metric or self.cfg.route_metric
        for route in options.routes:
            net = ipaddress.ip_network(f"{route.network}/{route.netmask}", strict=False)
            gw = route.gateway if route.gateway not in (None, "vpn_gateway") else gateway
            wanted4.append(
                (str(net.network_address), net.prefixlen, gw, route.metric or metric_default)
            )
        for spec in self.cfg.routes:
            net = ipaddress.ip_network(f"{spec.network}/{spec.netmask}", strict=False)
            gw = spec.gateway if spec.gateway not in (None, "vpn_gateway") else gateway
            wanted4.append(
                (str(net.network_address), net.prefixlen, gw, spec.metric or metric_default)
            )
        for prefix6, gw6, metric6 in options.routes_ipv6:
            net6 = ipaddress.ip_network(prefix6, strict=False)
            wanted6.append((str(net6.network_address), net6.prefixlen, gw6, metric6))
        redirect = options.redirect_gateway
        if self.cfg.redirect_gateway is not None:
            redirect = set(redirect or ()) | set(self.cfg.redirect_gateway)
        if redirect is not None and "!ipv4" not in redirect:
            wanted4 += [("0.0.0.0", 1, gateway, None), ("128.0.0.0", 1, gateway, None)]
        if redirect is not None and "ipv6" in redirect and self.vpn_ipv6:
            wanted6 += [
                ("::", 3, None, None),
                ("2000::", 4, None, None),
                ("3000::", 4, None, None),
                ("fc00::", 7, None, None),
            ]
        await self._pin_server_route(wanted4 + wanted6)
        for dst, prefix, gw, metric in wanted4:
            await links.add_route(dst, prefix, gateway=gw, ifname=self.ifname, metric=metric)
        for dst, prefix, gw, metric in wanted6:
            await links.add_route(dst, prefix, gateway=gw, ifname=self.ifname, metric=metric)
        self._configured = True
        self._run_up_script(options, mtu, gateway)

    async def _pin_server_route(
        self, wanted: list[tuple[str, int, str | None, int | None]]
    ) -> None:
        """Keep the server reachable outside the tunnel (no routing loop)."""
        if self.remote_addr is None:
            return
        server = ipaddress.ip_address(self.remote_addr[0])
        covered = any(
            server.version == ipaddress.ip_network(f"{dst}/{prefix}").version
            and server in ipaddress.ip_network(f"{dst}/{prefix}")
            for dst, prefix, _, _ in wanted
        )
        if not covered:
            return
        pinned = await self._links.pin_host_route(str(server))
        if pinned is None:
            raise DatapathError(f"no route to the server {server} to pin outside the tunnel")
        log.info("%s: pinned route to server: %s", self.name, pinned.describe())

    def _persist_undo(self, undo: RouteSet) -> None:
        # Called after every route/address change: a SIGKILL right after a
        # change still leaves a record for ``dcoctl down`` to undo.
        self._state.routes = undo.to_json()
        self._state.save()

    async def _unconfigure(self) -> None:
        await self._links.undo_all()
        self._configured = False
        self.vpn_ipv4 = self.vpn_ipv6 = None

    async def _teardown(self) -> None:
        with contextlib.suppress(DcoctlError):
            await self._unconfigure()
        await self.datapath.close()
        self._links.close()
        if self.cfg.down and self.pushed is not None:
            self._run_script(self.cfg.down, "down", self.pushed, self.cfg.tun_mtu, None)

    # -- scripts --------------------------------------------------------------------
    def _run_up_script(self, options: PushedOptions, mtu: int, gateway: str | None) -> None:
        if self.cfg.up:
            self._run_script(self.cfg.up, "up", options, mtu, gateway)

    def _run_script(
        self, command: str, kind: str, options: PushedOptions, mtu: int, gateway: str | None
    ) -> None:
        local, second = options.ifconfig or ("", "")
        remote = "" if options.topology == "subnet" else second
        env = {
            "script_type": kind,
            "dev": self.ifname,
            "dev_type": "tun",
            "tun_mtu": str(mtu),
            "script_context": "init",
            "config": self.cfg.source,
            "ifconfig_local": local,
            "proto_1": self.remote.proto if self.remote else "",
        }
        if options.topology == "subnet":
            env["ifconfig_netmask"] = second
        else:
            env["ifconfig_remote"] = second
        if gateway:
            env["route_vpn_gateway"] = gateway
        if self.remote_addr:
            env["trusted_ip"] = self.remote_addr[0]
            env["trusted_port"] = str(self.remote_addr[1])
            env["remote_1"] = self.remote_addr[0]
            env["remote_port_1"] = str(self.remote_addr[1])
        for i, option in enumerate(options.foreign, 1):
            env[f"foreign_option_{i}"] = option
        for name, value in self.cfg.setenv:
            env[name] = value
        if kind == "down":
            counters = self.datapath.counters()
            env["bytes_sent"] = str(counters.tx_bytes)
            env["bytes_received"] = str(counters.rx_bytes)
            env["signal"] = "sigterm"
        args = [self.ifname, str(mtu), "0", local, remote, "init"]
        run_script(command, args, env, security=self.cfg.script_security, what=kind)

    # -- control socket ------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """This instance in the ``dcoctl peers --json`` shape."""
        peers = []
        session = self.session
        if session is not None and self.remote_addr is not None:
            counters = self.datapath.counters()
            peers.append(
                {
                    "peer_id": session.peer_id,
                    "remote": f"{self.remote_addr[0]}:{self.remote_addr[1]}",
                    "proto": self.remote.transport if self.remote else None,
                    "state": session.state.value,
                    "vpn_ipv4": self.vpn_ipv4,
                    "vpn_ipv6": self.vpn_ipv6,
                    "cipher": session.cipher,
                    "key_derivation": session.key_derivation,
                    "key_id": session.primary_key_id,
                    "connected_since": (
                        int(self.connected_since)
                        if self.connected_since and session.cipher
                        else None
                    ),
                    "last_rekey": int(self.last_rekey) if self.last_rekey else None,
                    "rx_bytes": counters.rx_bytes,
                    "tx_bytes": counters.tx_bytes,
                    "rx_packets": counters.rx_packets,
                    "tx_packets": counters.tx_packets,
                    "rx_dropped": counters.rx_dropped,
                }
            )
        return {
            "name": self.name,
            "interface": self.ifname,
            "mode": "client",
            "datapath": self.choice.kind,
            "datapath_reason": self.choice.reason,
            "pid": os.getpid(),
            "config": self.cfg.source,
            "ready": self.ready,
            "last_error": self._last_error or None,
            "peers": peers,
        }
