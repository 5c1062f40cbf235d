"""The asyncio daemon behind ``dcoctl up server.conf`` (server mode).

One UDP socket (or TCP listener), one tun, many clients. Packets from an
unknown UDP address go through the stateless cookie handshake; a client
gets a :class:`ServerSession`, a peer-id (lowest free), an address from
the pool or its ccd entry, and a data channel in :class:`ServerDatapath`.
Every session event, tagged with its peer-id, and every data-path report
go through one queue handled in order by :meth:`ServerDaemon._consume`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

from . import runtime
from .client import control_wrap_for_server, tls_settings
from .datapath import DatapathChoice
from .errors import DcoctlError, RemoteProtocolError
from .netlink.links import LinkManager, RouteSet, netmask_to_prefixlen
from .protocol.events import (
    AuthenticationRequested,
    ControlMessageReceived,
    Event,
    KeyInstalled,
    KeyRetired,
    PeerDeleted,
    PeerEvent,
    PingTimeout,
    PrimaryKeyChanged,
    RenegotiationCompleted,
    SessionClosed,
    SessionEstablished,
    TLSEstablished,
)
from .protocol.handshake import HandshakeAccept, HandshakeReply, StatelessResponder
from .protocol.packet import (
    DATA_OPCODES,
    EARLY_NEG_FLAG_RESEND_WKC,
    TLV_TYPE_EARLY_NEG_FLAGS,
    Opcode,
    pull_control_body,
)
from .protocol.server_session import ServerSession, ServerSettings
from .protocol.session import SessionState
from .protocol.tlscryptv2 import parse_server_key, split_wkc, unwrap_client_key
from .protocol.wrapping import EARLY_NEG_START, ControlWrap, TLSCryptWrap
from .server_config import CcdEntry, ServerConfig, load_ccd_entry, parse_ccd
from .userspace.server_datapath import ServerDatapath

log = logging.getLogger("dcoctl")

_WKC_OPCODES = frozenset({Opcode.CONTROL_HARD_RESET_CLIENT_V3, Opcode.CONTROL_WKC_V1})
#: HARD_RESET_SERVER_V2 payload asking an early-negotiation client to resend WKc.
_RESEND_WKC_TLV = struct.pack(">HHH", TLV_TYPE_EARLY_NEG_FLAGS, 2, EARLY_NEG_FLAG_RESEND_WKC)


def _early_negotiation(packet: bytes) -> bool:
    """Does a tls-crypt wrapped reset carry an early-negotiation packet id (B.4)?"""
    pid = int.from_bytes(packet[9:13], "big") if len(packet) >= 13 else 0
    return pid & 0xFF000000 == EARLY_NEG_START


Address = tuple[Any, ...]


@dataclass
class ClientInstance:
    """One connected (or connecting) client."""

    peer_id: int
    session: ServerSession
    send: Callable[[bytes], None]
    remote: Address
    transport: str
    created: float
    common_name: str | None = None
    username: str | None = None
    vpn_ipv4: ipaddress.IPv4Address | None = None
    vpn_ipv6: ipaddress.IPv6Address | None = None
    ccd: CcdEntry | None = None
    connected_since: float | None = None
    last_rekey: float | None = None
    timer: asyncio.TimerHandle | None = None
    tcp: asyncio.Transport | None = None
    closing: bool = False
    authenticating: bool = False


def _address_key(addr: Address) -> bytes:
    return f"{addr[0]}|{addr[1]}".encode()


class _UDPServer(asyncio.DatagramProtocol):
    def __init__(self, daemon: ServerDaemon) -> None:
        self.daemon = daemon
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector transport is a DatagramTransport in all but its class tree.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if data:
            self.daemon.udp_received(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp socket error: %s", exc)


class _TCPClient(asyncio.Protocol):
    def __init__(self, daemon: ServerDaemon) -> None:
        self.daemon = daemon
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.instance: ClientInstance | None = None
        self.peer: Address = ("?", 0)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.peer = transport.get_extra_info("peername") or ("?", 0)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > 1 << 20:
            self._abort("receive buffer overflow")
            return
        while len(self.buffer) >= 2:
            (length,) = struct.unpack_from(">H", self.buffer)
            if length == 0:
                self._abort("zero-length record")
                return
            if len(self.buffer) < 2 + length:
                return
            packet = bytes(self.buffer[2 : 2 + length])
            del self.buffer[: 2 + length]
            self.daemon.tcp_received(self, packet)

    def send(self, packet: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(struct.pack(">H", len(packet)) + packet)

    def _abort(self, why: str) -> None:
        log.info("dropping TCP client %s: %s", self.peer[0], why)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.instance is not None:
            self.daemon.remove_client(self.instance, "TCP connection closed")


class ServerDaemon:
    """A server instance: sockets, tun, and the clients behind it."""

    def __init__(
        self,
        cfg: ServerConfig,
        name: str,
        choice: DatapathChoice,
        status: Callable[[str, str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.name = name
        self.choice = choice
        self._status = status or (lambda kind, text: None)
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.datapath = ServerDatapath(
            self.events, client_to_client=cfg.client_to_client, replay_window=cfg.replay_window
        )
        self.ifname = cfg.dev if cfg.dev not in ("tun", "") else name
        self.settings = self._settings()
        self.responder = StatelessResponder(self.settings.wrap, cfg.hand_window)
        self._v2_key = (
            parse_server_key(cfg.tls_crypt_v2_key_pem, cfg.source)
            if cfg.tls_crypt_v2_key_pem
            else None
        )
        self.clients: dict[int, ClientInstance] = {}
        self._by_addr: dict[bytes, ClientInstance] = {}
        self._pool4: dict[ipaddress.IPv4Address, int] = {}
        self._udp: _UDPServer | None = None
        self._tcp_server: asyncio.Server | None = None
        self._links = LinkManager(on_change=self._persist_undo)
        self._stop = asyncio.Event()
        self._state = runtime.InstanceState(name, os.getpid(), runtime.netns_id(), cfg.source)
        self.dropped_handshakes = 0
        self._persisted = self._load_pool()

    # -- ifconfig-pool-persist and status files ------------------------------------
    def _load_pool(self) -> dict[str, ipaddress.IPv4Address]:
        """``common_name,address`` lines, as OpenVPN's ipp.txt holds them."""
        path = self.cfg.ifconfig_pool_persist
        result: dict[str, ipaddress.IPv4Address] = {}
        if path is None or not path.exists():
            return result
        for number, line in enumerate(path.read_text().splitlines(), 1):
            parts = line.strip().split(",")
            if len(parts) < 2 or not parts[0]:
                continue
            try:
                result[parts[0]] = ipaddress.IPv4Address(parts[1])
            except ValueError:
                log.warning("%s:%d: ignoring invalid pool entry", path, number)
        return result

    def _save_pool(self) -> None:
        path = self.cfg.ifconfig_pool_persist
        if path is None:
            return
        lines = [f"{name},{address}," for name, address in sorted(self._persisted.items())]
        try:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("\n".join(lines) + "\n")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("%s: cannot write %s: %s", self.name, path, exc)

    def write_status(self) -> None:
        """``status FILE``: OpenVPN's version-1 status format, rewritten in place."""
        path = self.cfg.status_file
        if path is None:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        rows = [
            "OpenVPN CLIENT LIST",
            f"Updated,{stamp}",
            "Common Name,Real Address,Bytes Received,Bytes Sent,Connected Since",
        ]
        routes = ["ROUTING TABLE", "Virtual Address,Common Name,Real Address,Last Ref"]
        for peer in self.status()["peers"]:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(peer["connected_since"] or 0))
            rows.append(
                f"{peer['common_name']},{peer['remote']},{peer['rx_bytes']},"
                f"{peer['tx_bytes']},{since}"
            )
            if peer["vpn_ipv4"]:
                routes.append(f"{peer['vpn_ipv4']},{peer['common_name']},{peer['remote']},{stamp}")
        text = "\n".join(rows + routes + ["GLOBAL STATS", "END"]) + "\n"
        try:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("%s: cannot write status file %s: %s", self.name, path, exc)

    async def _status_loop(self) -> None:
        while True:
            self.write_status()
            await asyncio.sleep(max(1, self.cfg.status_interval))

    def _settings(self) -> ServerSettings:
        cfg = self.cfg
        tls = tls_settings(cfg)
        proto = "tcp" if cfg.proto.startswith("tcp") else "udp"
        return ServerSettings(
            tls=tls,
            wrap=control_wrap_for_server(cfg),
            proto=proto,
            data_ciphers=tuple(cfg.data_ciphers),
            reneg_sec=cfg.reneg_sec,
            hand_window=cfg.hand_window,
            tls_timeout=float(cfg.tls_timeout),
            tun_mtu=cfg.tun_mtu,
        )

    # -- lifecycle ------------------------------------------------------------
    async def run(self) -> int:
        """Serve until ``down`` or a signal."""
        control = await runtime.claim_instance(self.name, self.status, self.request_stop)
        consumer = asyncio.create_task(self._consume())
        try:
            await self._links.open()
            await self.datapath.open(self.ifname, self.cfg.tun_mtu)
            self.ifname = self.datapath.ifname
            self._state.interface = self.ifname
            self._state.save()
            await self._configure_tun()
            await self._open_sockets()
            where = f"{self.cfg.proto} port {self.cfg.port}"
            message = (
                f"server up: {self.ifname} {self.cfg.server_ip}/"
                f"{netmask_to_prefixlen(self.cfg.server_netmask)} on {where}"
            )
            log.info(
                "%s: %s (data path %s: %s)",
                self.name,
                message,
                self.choice.kind,
                self.choice.reason,
            )
            self._status("ready", message)
            status_task = asyncio.create_task(self._status_loop())
            await self._stop.wait()
            status_task.cancel()
            await self._say_goodbye()
            return 0
        except DcoctlError as exc:
            log.error("%s", exc)
            self._status("error", str(exc))
            return 1
        except OSError as exc:
            log.error("%s: %s", self.name, exc)
            self._status("error", f"cannot open the server socket: {exc.strerror or exc}")
            return 1
        finally:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
            for inst in list(self.clients.values()):
                self.remove_client(inst, "server shutting down", notify=False)
            if self._udp is not None and self._udp.transport is not None:
                self._udp.transport.close()
            if self._tcp_server is not None:
                self._tcp_server.close()
            with contextlib.suppress(DcoctlError):
                await self._links.undo_all()
            await self.datapath.close()
            self._links.close()
            control.close()
            for path in (runtime.socket_path(self.name), runtime.state_path(self.name)):
                with contextlib.suppress(OSError):
                    path.unlink()

    def request_stop(self, reason: str) -> None:
        """Shut down gracefully."""
        log.info("%s: stopping (%s)", self.name, reason)
        self._stop.set()

    async def _say_goodbye(self) -> None:
        # explicit-exit-notify on a server: tell clients to reconnect (E.7).
        if not self.cfg.explicit_exit_notify or not self.clients:
            return
        for inst in self.clients.values():
            if inst.session.state is SessionState.ESTABLISHED:
                inst.session.send_restart()
                self._transmit(inst)
        await asyncio.sleep(0.5)
        for inst in self.clients.values():
            self._transmit(inst)

    def _persist_undo(self, undo: RouteSet) -> None:
        self._state.routes = undo.to_json()
        self._state.save()

    async def _configure_tun(self) -> None:
        cfg = self.cfg
        await self._links.set_link(self.ifname, mtu=cfg.tun_mtu, up=True)
        await self._links.add_address(
            self.ifname, cfg.server_ip, netmask_to_prefixlen(cfg.server_netmask)
        )
        if cfg.server_ipv6_network is not None:
            net6 = ipaddress.IPv6Network(cfg.server_ipv6_network, strict=False)
            await self._links.add_address(
                self.ifname, str(net6.network_address + 1), net6.prefixlen
            )
        for route in cfg.routes:
            net = ipaddress.ip_network(f"{route.network}/{route.netmask}", strict=False)
            await self._links.add_route(
                str(net.network_address), net.prefixlen, ifname=self.ifname, metric=route.metric
            )

    async def _open_sockets(self) -> None:
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        v6 = cfg.proto.endswith("6") or (cfg.local is not None and ":" in cfg.local)
        family = socket.AF_INET6 if v6 else socket.AF_INET
        host = cfg.local or ("::" if v6 else "0.0.0.0")
        if cfg.proto.startswith("tcp"):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if v6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((host, cfg.port))
            sock.listen(128)
            self._tcp_server = await loop.create_server(lambda: _TCPClient(self), sock=sock)
            return
        sock = socket.socket(family, socket.SOCK_DGRAM)
        if v6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
        sock.bind((host, cfg.port))
        protocol = _UDPServer(self)
        await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
        self._udp = protocol

    # -- packet intake ----------------------------------------------------------
    def udp_received(self, data: bytes, addr: Address) -> None:
        """A datagram on the server socket."""
        opcode = data[0] >> 3
        now = time.time()
        if opcode == Opcode.DATA_V2 and len(data) >= 4:
            peer_id = int.from_bytes(data[1:4], "big")
            inst = self.clients.get(peer_id)
            if inst is not None and inst.transport == "udp":
                if self.datapath.receive(peer_id, data) and inst.remote != addr:
                    self._float(inst, addr)
            return
        inst = self._by_addr.get(_address_key(addr))
        if opcode in DATA_OPCODES:
            if inst is not None:
                self.datapath.receive(inst.peer_id, data)
            return
        wrap = None
        if opcode in _WKC_OPCODES:
            try:
                data, wrap = self._client_wrap(data)
            except RemoteProtocolError as exc:
                self.dropped_handshakes += 1
                log.debug("%s: bad tls-crypt-v2 packet from %s: %s", self.name, addr[0], exc)
                return
        if inst is not None:
            inst.session.receive_packet(data, now)
            self._after_input(inst)
            return
        if wrap is not None and opcode == Opcode.CONTROL_HARD_RESET_CLIENT_V3:
            if not _early_negotiation(data):
                # An older tls-crypt-v2 client cannot resend its key: accept it
                # statefully, as OpenVPN does unless force-cookie is set.
                if self.cfg.tls_crypt_v2_force_cookie:
                    self.dropped_handshakes += 1
                    return
                self._stateful_start(data, wrap, addr, now)
                return
        outcome = self.responder.handle(
            data,
            _address_key(addr),
            now,
            wrap=wrap,
            reply_payload=_RESEND_WKC_TLV if wrap is not None else b"",
        )
        if isinstance(outcome, HandshakeReply):
            if self._udp is not None and self._udp.transport is not None:
                self._udp.transport.sendto(outcome.packet, addr)
        elif isinstance(outcome, HandshakeAccept):
            udp = self._udp
            assert udp is not None and udp.transport is not None
            transport = udp.transport

            def send(packet: bytes, _addr: Address = addr) -> None:
                transport.sendto(packet, _addr)

            self._new_client(outcome.packet, outcome.cookie, send, addr, "udp", now, outcome.wrap)
        else:
            self.dropped_handshakes += 1
            log.debug("%s: dropped packet from %s: %s", self.name, addr[0], outcome.reason)

    def _client_wrap(self, data: bytes) -> tuple[bytes, ControlWrap]:
        """Strip WKc from a tls-crypt-v2 packet; the wrap made from the client's key."""
        if self._v2_key is None:
            raise RemoteProtocolError("tls-crypt-v2 packet but no tls-crypt-v2 server key")
        front, wkc = split_wkc(data)
        kc, _metadata = unwrap_client_key(self._v2_key, wkc)
        return front, TLSCryptWrap(kc, is_server=True)

    def _stateful_start(self, data: bytes, wrap: ControlWrap, addr: Address, now: float) -> None:
        try:
            prefix, body = wrap.fresh().unwrap(data, now)
            packet = pull_control_body(prefix, body)
        except RemoteProtocolError as exc:
            self.dropped_handshakes += 1
            log.debug("%s: dropped packet from %s: %s", self.name, addr[0], exc)
            return
        udp = self._udp
        assert udp is not None and udp.transport is not None
        transport = udp.transport

        def send(packet: bytes, _addr: Address = addr) -> None:
            transport.sendto(packet, _addr)

        self._new_client(packet, None, send, addr, "udp", now, wrap)

    def tcp_received(self, conn: _TCPClient, data: bytes) -> None:
        """A whole record on a TCP connection."""
        now = time.time()
        inst = conn.instance
        wrap: ControlWrap | None = None
        if data[0] >> 3 in _WKC_OPCODES:
            try:
                data, wrap = self._client_wrap(data)
            except RemoteProtocolError as exc:
                conn._abort(f"bad tls-crypt-v2 packet ({exc})")  # noqa: SLF001
                return
        if inst is None:
            try:
                wrap = wrap or self.settings.wrap
                prefix, body = wrap.fresh().unwrap(data, now)
                packet = pull_control_body(prefix, body)
            except (RemoteProtocolError, IndexError) as exc:
                conn._abort(f"bad first packet ({exc})")  # noqa: SLF001
                return
            if packet.opcode not in (
                Opcode.CONTROL_HARD_RESET_CLIENT_V2,
                Opcode.CONTROL_HARD_RESET_CLIENT_V3,
            ):
                conn._abort("first packet is not a client reset")  # noqa: SLF001
                return
            conn.instance = self._new_client(packet, None, conn.send, conn.peer, "tcp", now, wrap)
            if conn.instance is not None:
                conn.instance.tcp = conn.transport
            return
        if data[0] >> 3 in DATA_OPCODES:
            self.datapath.receive(inst.peer_id, data)
            return
        inst.session.receive_packet(data, now)
        self._after_input(inst)

    def _new_client(
        self,
        packet: Any,
        cookie: bytes | None,
        send: Callable[[bytes], None],
        addr: Address,
        transport: str,
        now: float,
        wrap: ControlWrap | None = None,
    ) -> ClientInstance | None:
        if len(self.clients) >= self.cfg.max_clients:
            log.warning(
                "%s: refusing %s: max-clients %d reached", self.name, addr[0], self.cfg.max_clients
            )
            return None
        peer_id = next(i for i in range(len(self.clients) + 1) if i not in self.clients)
        try:
            settings = self.settings if wrap is None else replace(self.settings, wrap=wrap)
            session = ServerSession(settings, packet, now, cookie=cookie)
        except RemoteProtocolError as exc:
            log.debug("%s: bad session start from %s: %s", self.name, addr[0], exc)
            return None
        inst = ClientInstance(peer_id, session, send, addr, transport, now)
        self.clients[peer_id] = inst
        if transport == "udp":
            self._by_addr[_address_key(addr)] = inst
        log.info(
            "%s: %s:%s: new %s session (peer-id %d)",
            self.name,
            addr[0],
            addr[1],
            transport,
            peer_id,
        )
        self._after_input(inst)
        return inst

    def _float(self, inst: ClientInstance, addr: Address) -> None:
        # Only authenticated data may move a client (reference E.1).
        log.info(
            "%s: peer %d floated from %s:%s to %s:%s",
            self.name,
            inst.peer_id,
            inst.remote[0],
            inst.remote[1],
            addr[0],
            addr[1],
        )
        self._by_addr.pop(_address_key(inst.remote), None)
        inst.remote = addr
        self._by_addr[_address_key(addr)] = inst
        udp = self._udp
        assert udp is not None and udp.transport is not None
        transport = udp.transport

        def send(packet: bytes, _addr: Address = addr) -> None:
            transport.sendto(packet, _addr)

        inst.send = send
        self.datapath.set_send(inst.peer_id, send)

    # -- per-client transmit / timers ---------------------------------------------
    def _after_input(self, inst: ClientInstance) -> None:
        while (event := inst.session.next_event()) is not None:
            # Key changes reach the data path before the next packet is read:
            # a peer that starts a soft reset drops its oldest key at once and
            # sends data right behind it, so a reply must not use that key.
            if not self._apply_key_event(inst.peer_id, event):
                self.events.put_nowait(PeerEvent(inst.peer_id, event))
        self._transmit(inst)

    def _apply_key_event(self, peer_id: int, event: Event) -> bool:
        """Execute a key event on the data path now; False if it is not one."""
        if isinstance(event, KeyInstalled):
            self.datapath.install_key(peer_id, event.key_id, event.keys, primary=event.primary)
        elif isinstance(event, PrimaryKeyChanged):
            self.datapath.promote_key(peer_id, event.key_id)
        elif isinstance(event, KeyRetired):
            self.datapath.retire_key(peer_id, event.key_id)
        else:
            return False
        return True

    def _transmit(self, inst: ClientInstance) -> None:
        for packet in inst.session.packets_to_send(time.time()):
            inst.send(packet)
        if inst.timer is not None:
            inst.timer.cancel()
            inst.timer = None
        deadline = inst.session.get_timer()
        if deadline is not None and not inst.closing:
            delay = max(0.0, deadline - time.time())
            inst.timer = asyncio.get_running_loop().call_later(delay, self._on_timer, inst)

    def _on_timer(self, inst: ClientInstance) -> None:
        inst.timer = None
        if self.clients.get(inst.peer_id) is not inst:
            return
        inst.session.handle_timer(time.time())
        self._after_input(inst)

    def remove_client(self, inst: ClientInstance, reason: str, notify: bool = True) -> None:
        """Forget a client: data path, address, routes, peer-id."""
        if self.clients.get(inst.peer_id) is not inst:
            return
        inst.closing = True
        if inst.timer is not None:
            inst.timer.cancel()
        del self.clients[inst.peer_id]
        self._by_addr.pop(_address_key(inst.remote), None)
        counters = self.datapath.remove_peer(inst.peer_id)
        if inst.vpn_ipv4 is not None:
            self._pool4.pop(inst.vpn_ipv4, None)
        if inst.tcp is not None:
            inst.tcp.close()
        sent = counters.tx_bytes if counters else 0
        received = counters.rx_bytes if counters else 0
        log.info(
            "%s: peer %d (%s) removed: %s; %d bytes in, %d out",
            self.name,
            inst.peer_id,
            inst.common_name or inst.remote[0],
            reason,
            received,
            sent,
        )
        if notify and inst.connected_since is not None and self.cfg.client_disconnect:
            self._run_hook(
                self.cfg.client_disconnect,
                inst,
                "client-disconnect",
                {"bytes_received": str(received), "bytes_sent": str(sent)},
            )

    # -- events -------------------------------------------------------------------
    async def _consume(self) -> None:
        while True:
            event = await self.events.get()
            try:
                await self._handle(event)
            except DcoctlError as exc:
                log.error("%s: %s", self.name, exc)

    async def _handle(self, event: Event) -> None:
        if isinstance(event, PingTimeout):
            if event.peer_id is not None and (inst := self.clients.get(event.peer_id)):
                self.remove_client(inst, f"no packets for {event.seconds} s (ping-restart)")
            return
        if isinstance(event, PeerDeleted):
            if (inst := self.clients.get(event.peer_id)) is not None:
                self.remove_client(inst, event.reason)
            return
        if not isinstance(event, PeerEvent):
            return
        inst = self.clients.get(event.peer_id)
        if inst is None:
            return
        inner = event.event
        if isinstance(inner, TLSEstablished):
            log.info(
                "%s: peer %d: TLS %s with %s",
                self.name,
                inst.peer_id,
                inner.version,
                inner.peer_subject,
            )
        elif isinstance(inner, AuthenticationRequested):
            if not inst.authenticating:
                inst.authenticating = True
                asyncio.create_task(self._authenticate(inst, inner))
        elif isinstance(inner, RenegotiationCompleted):
            inst.last_rekey = time.time()
        elif isinstance(inner, SessionEstablished):
            inst.connected_since = inst.last_rekey = time.time()
            log.info(
                "%s: peer %d (%s) connected from %s:%s, %s, %s, address %s",
                self.name,
                inst.peer_id,
                inst.common_name,
                inst.remote[0],
                inst.remote[1],
                inner.cipher,
                inner.key_derivation,
                inst.vpn_ipv4,
            )
        elif isinstance(inner, SessionClosed):
            self.remove_client(inst, inner.reason)
        elif isinstance(inner, ControlMessageReceived):
            log.info("%s: peer %d says: %s", self.name, inst.peer_id, inner.text)

    async def _authenticate(self, inst: ClientInstance, request: AuthenticationRequested) -> None:
        cfg = self.cfg
        now = time.time()
        name = request.common_name
        if cfg.username_as_common_name and request.username:
            name = request.username
        inst.common_name = name
        inst.username = request.username
        problem = await self._verify_credentials(inst, request)
        if problem is None and not cfg.duplicate_cn and name is not None:
            for other in list(self.clients.values()):
                if other is not inst and other.common_name == name and other.connected_since:
                    self.remove_client(other, f"replaced by a new connection of {name}")
        ccd = None
        if problem is None and cfg.client_config_dir is not None and name is not None:
            try:
                ccd = load_ccd_entry(cfg.client_config_dir, name, exclusive=cfg.ccd_exclusive)
            except DcoctlError as exc:
                log.error("%s: %s", self.name, exc)
                problem = "client configuration error"
            if ccd is None and cfg.ccd_exclusive:
                problem = f"no client-config-dir entry for '{name}' (ccd-exclusive)"
            elif ccd is not None and ccd.disable:
                problem = "client is disabled in client-config-dir"
        if problem is None and cfg.client_connect:
            ccd, problem = await self._client_connect(inst, ccd)
        if problem is None:
            inst.ccd = ccd
            problem = self._assign_addresses(inst)
        if self.clients.get(inst.peer_id) is not inst:
            return
        if problem is not None:
            log.warning("%s: peer %d (%s) rejected: %s", self.name, inst.peer_id, name, problem)
            inst.session.reject_client(problem if problem.startswith("Data") else "", now)
        else:
            self.datapath.add_peer(
                inst.peer_id, inst.send, interval=cfg.server_ping, timeout=cfg.server_ping_restart
            )
            self.datapath.set_routes(inst.peer_id, self._owned_addresses(inst), self._iroutes(inst))
            inst.session.accept_client(self._push_options(inst), inst.peer_id, time.time())
            if inst.session.state is not SessionState.ESTABLISHED:
                self.datapath.remove_peer(inst.peer_id)
        self._after_input(inst)

    async def _client_connect(
        self, inst: ClientInstance, ccd: CcdEntry | None
    ) -> tuple[CcdEntry | None, str | None]:
        """Run ``client-connect``; what it writes to $1 is read like a ccd file."""
        assert self.cfg.client_connect is not None
        fd, path = tempfile.mkstemp(prefix="dcoctl-cc-")
        os.close(fd)
        try:
            ok = await self._run_script(
                self.cfg.client_connect, [path], self._script_env(inst, "client-connect")
            )
            if not ok:
                return ccd, "client-connect script refused the client"
            text = Path(path).read_text()
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if not text.strip():
            return ccd, None
        try:
            extra = parse_ccd(text, f"{self.cfg.client_connect} output")
        except DcoctlError as exc:
            log.error("%s: %s", self.name, exc)
            return ccd, "client-connect script wrote an invalid configuration"
        if ccd is None:
            return extra, None
        merged = replace(
            ccd,
            push=ccd.push + extra.push,
            iroutes=ccd.iroutes + extra.iroutes,
            ifconfig_push=extra.ifconfig_push or ccd.ifconfig_push,
            push_reset=ccd.push_reset or extra.push_reset,
            disable=ccd.disable or extra.disable,
        )
        return merged, None

    async def _verify_credentials(
        self, inst: ClientInstance, request: AuthenticationRequested
    ) -> str | None:
        cfg = self.cfg
        if cfg.auth_user_pass_verify is None:
            return None
        if not request.username and not request.password:
            if getattr(cfg, "auth_user_pass_optional", False):
                return None
            return "username/password required"
        command, method = cfg.auth_user_pass_verify
        env = self._script_env(inst, "user-pass-verify")
        env["username"] = request.username or ""
        args: list[str] = []
        tmp: str | None = None
        if method == "via-env":
            env["password"] = request.password or ""
        else:
            fd, tmp = tempfile.mkstemp(prefix="dcoctl-auth-")
            with os.fdopen(fd, "w") as handle:
                handle.write(f"{request.username or ''}\n{request.password or ''}\n")
            args = [tmp]
        try:
            ok = await self._run_script(command, args, env)
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        return None if ok else "auth-user-pass-verify script refused the credentials"

    async def _run_script(self, command: str, args: list[str], env: dict[str, str]) -> bool:
        import shlex

        if self.cfg.script_security < 2:
            log.error("%s: not running %s: needs script-security 2", self.name, command)
            return False
        full_env = dict(os.environ)
        full_env.update(env)
        try:
            proc = await asyncio.create_subprocess_exec(
                *shlex.split(command), *args, env=full_env, stdin=asyncio.subprocess.DEVNULL
            )
            return await asyncio.wait_for(proc.wait(), 30) == 0
        except (OSError, TimeoutError) as exc:
            log.error("%s: script %s failed: %s", self.name, command, exc)
            return False

    def _run_hook(
        self, command: str, inst: ClientInstance, kind: str, extra: dict[str, str]
    ) -> None:
        env = self._script_env(inst, kind)
        env.update(extra)
        asyncio.get_running_loop().create_task(self._run_script(command, [], env))

    def _script_env(self, inst: ClientInstance, kind: str) -> dict[str, str]:
        env = {
            "script_type": kind,
            "dev": self.ifname,
            "common_name": inst.common_name or "",
            "trusted_ip": str(inst.remote[0]),
            "trusted_port": str(inst.remote[1]),
            "untrusted_ip": str(inst.remote[0]),
            "untrusted_port": str(inst.remote[1]),
        }
        if inst.vpn_ipv4 is not None:
            env["ifconfig_pool_remote_ip"] = str(inst.vpn_ipv4)
        return env

    # -- addresses and pushes ------------------------------------------------------
    def _assign_addresses(self, inst: ClientInstance) -> str | None:
        cfg = self.cfg
        if inst.ccd is not None and inst.ccd.ifconfig_push is not None:
            address = ipaddress.IPv4Address(inst.ccd.ifconfig_push[0])
            owner = self._pool4.get(address)
            if owner is not None and owner != inst.peer_id:
                return f"ifconfig-push address {address} is in use"
        else:
            if cfg.pool_start is None or cfg.pool_end is None:
                return "no address pool configured"
            start = ipaddress.IPv4Address(cfg.pool_start)
            end = ipaddress.IPv4Address(cfg.pool_end)
            address = start
            remembered = self._persisted.get(inst.common_name or "")
            if (
                remembered is not None
                and start <= remembered <= end
                and (remembered not in self._pool4)
            ):
                address = remembered  # ifconfig-pool-persist: same client, same address
            while address in self._pool4:
                address += 1
                if address > end:
                    return "address pool exhausted"
        self._pool4[address] = inst.peer_id
        inst.vpn_ipv4 = address
        if inst.common_name and self._persisted.get(inst.common_name) != address:
            self._persisted[inst.common_name] = address
            self._save_pool()
        if cfg.pool_ipv6_start is not None:
            # OpenVPN pairs the pools: the n-th IPv4 address gets the n-th IPv6 one.
            index = int(address) - int(ipaddress.IPv4Address(cfg.pool_start or address))
            inst.vpn_ipv6 = ipaddress.IPv6Address(cfg.pool_ipv6_start) + index
        return None

    def _owned_addresses(
        self, inst: ClientInstance
    ) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        out: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
        if inst.vpn_ipv4 is not None:
            out.append(inst.vpn_ipv4)
        if inst.vpn_ipv6 is not None:
            out.append(inst.vpn_ipv6)
        return out

    def _iroutes(self, inst: ClientInstance) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        if inst.ccd is None:
            return []
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [
            ipaddress.ip_network(f"{net}/{bits}", strict=False) for net, bits in inst.ccd.iroutes
        ]
        nets += [
            ipaddress.ip_network(f"{net}/{bits}", strict=False)
            for net, bits in inst.ccd.iroutes_ipv6
        ]
        return nets

    def _push_options(self, inst: ClientInstance) -> list[str]:
        cfg = self.cfg
        ccd = inst.ccd
        options = [] if ccd is not None and ccd.push_reset else list(cfg.push)
        if ccd is not None:
            options += list(ccd.push)
            options = [o for o in options if not any(o.startswith(r) for r in ccd.push_remove)]
        options += [f"route-gateway {cfg.server_ip}", "topology subnet"]
        if cfg.pushed_ping:
            options.append(f"ping {cfg.pushed_ping}")
        if cfg.pushed_ping_restart:
            options.append(f"ping-restart {cfg.pushed_ping_restart}")
        if inst.vpn_ipv6 is not None and cfg.server_ipv6_network is not None:
            net6 = ipaddress.IPv6Network(cfg.server_ipv6_network, strict=False)
            options.append(
                f"ifconfig-ipv6 {inst.vpn_ipv6}/{net6.prefixlen} {net6.network_address + 1}"
            )
        netmask = cfg.server_netmask
        if ccd is not None and ccd.ifconfig_push is not None:
            netmask = ccd.ifconfig_push[1]
        options.append(f"ifconfig {inst.vpn_ipv4} {netmask}")
        return options

    # -- control socket -------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The ``peers --json`` view: one entry per connected client."""
        peers = []
        for inst in sorted(self.clients.values(), key=lambda i: i.peer_id):
            session = inst.session
            if session.state is not SessionState.ESTABLISHED:
                continue
            counters = self.datapath.counters(inst.peer_id)
            peers.append(
                {
                    "peer_id": inst.peer_id,
                    "common_name": inst.common_name,
                    "remote": f"{inst.remote[0]}:{inst.remote[1]}",
                    "proto": inst.transport,
                    "state": session.state.value,
                    "vpn_ipv4": str(inst.vpn_ipv4) if inst.vpn_ipv4 else None,
                    "vpn_ipv6": str(inst.vpn_ipv6) if inst.vpn_ipv6 else None,
                    "cipher": session.cipher,
                    "key_derivation": session.key_derivation,
                    "key_id": session.primary_key_id,
                    "connected_since": int(inst.connected_since) if inst.connected_since else None,
                    "last_rekey": int(inst.last_rekey) if inst.last_rekey else None,
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
            "mode": "server",
            "datapath": self.choice.kind,
            "datapath_reason": self.choice.reason,
            "pid": os.getpid(),
            "config": self.cfg.source,
            "ready": True,
            "last_error": None,
            "dropped_handshakes": self.dropped_handshakes,
            "peers": peers,
        }
