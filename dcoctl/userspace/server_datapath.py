"""The userspace data path of a server: one tun, many peers.

Packets read from the tun go to the peer that owns the destination address
(its VPN address or one of its iroutes, longest prefix first). Packets from
a peer are checked against the addresses that peer may use as a source,
then written to the tun, or, with ``client-to-client``, handed straight to
the peer that owns the destination. Keys and keepalives are per peer and
driven by protocol events exactly as for a client.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..protocol.datachannel import (
    OCC_EXIT,
    OCC_MAGIC,
    PING_MAGIC,
    DataChannel,
    DataCounters,
)
from ..protocol.events import Event, PeerDeleted, PingTimeout
from ..protocol.keepalive import Keepalive
from ..protocol.keys import DataKeys
from .tun import TunDevice, open_tun

log = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class _Peer:
    peer_id: int
    send: Callable[[bytes], None]
    channel: DataChannel
    keepalive: Keepalive
    addresses: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = field(default_factory=set)
    iroutes: list[IPNetwork] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    timed_out: bool = False
    spoofed: int = 0


def destination(packet: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Destination address of an IPv4/IPv6 packet (None if malformed)."""
    version = packet[0] >> 4 if packet else 0
    if version == 4 and len(packet) >= 20:
        return ipaddress.IPv4Address(packet[16:20])
    if version == 6 and len(packet) >= 40:
        return ipaddress.IPv6Address(packet[24:40])
    return None


def source(packet: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """Source address of an IPv4/IPv6 packet (None if malformed)."""
    version = packet[0] >> 4 if packet else 0
    if version == 4 and len(packet) >= 20:
        return ipaddress.IPv4Address(packet[12:16])
    if version == 6 and len(packet) >= 40:
        return ipaddress.IPv6Address(packet[8:24])
    return None


class ServerDatapath:
    """tun + Python AEAD for many peers."""

    kind = "userspace"

    def __init__(
        self,
        events: asyncio.Queue[Event],
        *,
        client_to_client: bool = False,
        replay_window: int = 64,
    ) -> None:
        self.events = events
        self.client_to_client = client_to_client
        self._replay_window = replay_window
        self._tun: TunDevice | None = None
        self._peers: dict[int, _Peer] = {}
        self._by_address: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, int] = {}
        self.no_route = 0

    @property
    def ifname(self) -> str:
        """The tun interface name."""
        return self._tun.name if self._tun is not None else ""

    async def open(self, ifname: str, mtu: int) -> None:
        """Create the tun device."""
        if self._tun is None:
            self._tun = open_tun(ifname)
            asyncio.get_running_loop().add_reader(self._tun.fd, self._tun_readable)

    async def close(self) -> None:
        """Stop all peers and close the tun."""
        for peer_id in list(self._peers):
            self.remove_peer(peer_id)
        if self._tun is not None:
            asyncio.get_running_loop().remove_reader(self._tun.fd)
            self._tun.close()
            self._tun = None

    # -- peers --------------------------------------------------------------
    def add_peer(
        self, peer_id: int, send: Callable[[bytes], None], *, interval: int, timeout: int
    ) -> None:
        """Register a peer; ``send`` puts one wire packet on its transport."""
        keepalive = Keepalive(interval, timeout)
        keepalive.start(time.time())
        self._peers[peer_id] = _Peer(
            peer_id, send, DataChannel(peer_id, self._replay_window), keepalive
        )

    def set_send(self, peer_id: int, send: Callable[[bytes], None]) -> None:
        """The peer floated to a new address."""
        peer = self._peers.get(peer_id)
        if peer is not None:
            peer.send = send

    def set_routes(
        self,
        peer_id: int,
        addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address],
        iroutes: list[IPNetwork],
    ) -> None:
        """Addresses and iroutes owned by ``peer_id`` (replaces earlier ones)."""
        peer = self._peers[peer_id]
        for address in peer.addresses:
            self._by_address.pop(address, None)
        peer.addresses = set(addresses)
        peer.iroutes = sorted(iroutes, key=lambda n: n.prefixlen, reverse=True)
        for address in addresses:
            self._by_address[address] = peer_id

    def remove_peer(self, peer_id: int) -> DataCounters | None:
        """Forget a peer; returns its final counters."""
        peer = self._peers.pop(peer_id, None)
        if peer is None:
            return None
        if peer.timer is not None:
            peer.timer.cancel()
        for address in peer.addresses:
            if self._by_address.get(address) == peer_id:
                del self._by_address[address]
        return peer.channel.counters

    def counters(self, peer_id: int) -> DataCounters:
        """Traffic counters of one peer."""
        return self._peers[peer_id].channel.counters

    # -- keys ---------------------------------------------------------------
    def install_key(self, peer_id: int, key_id: int, keys: DataKeys, *, primary: bool) -> None:
        """Install data keys for a peer."""
        peer = self._peers.get(peer_id)
        if peer is not None:
            peer.channel.install(key_id, keys, primary=primary)
            self._arm(peer)

    def promote_key(self, peer_id: int, key_id: int) -> None:
        """Start encrypting with ``key_id``."""
        if (peer := self._peers.get(peer_id)) is not None:
            peer.channel.promote(key_id)

    def retire_key(self, peer_id: int, key_id: int) -> None:
        """Delete ``key_id``."""
        if (peer := self._peers.get(peer_id)) is not None:
            peer.channel.retire(key_id)

    # -- keepalive ----------------------------------------------------------
    def _arm(self, peer: _Peer) -> None:
        if peer.timer is not None:
            peer.timer.cancel()
            peer.timer = None
        deadline = peer.keepalive.timer()
        if deadline is None or not peer.channel.ready or peer.timed_out:
            return
        delay = max(0.0, deadline - time.time())
        peer.timer = asyncio.get_running_loop().call_later(delay, self._on_timer, peer.peer_id)

    def _on_timer(self, peer_id: int) -> None:
        peer = self._peers.get(peer_id)
        if peer is None:
            return
        peer.timer = None
        now = time.time()
        if peer.keepalive.expired(now):
            peer.timed_out = True
            self.events.put_nowait(PingTimeout(peer.keepalive.timeout, peer_id))
            return
        if peer.keepalive.ping_due(now):
            self._send(peer, PING_MAGIC, count=False)
        self._arm(peer)

    # -- packets --------------------------------------------------------------
    def _send(self, peer: _Peer, plaintext: bytes, count: bool = True) -> None:
        packet = peer.channel.encrypt(plaintext, count=count)
        if packet is not None:
            peer.send(packet)
            peer.keepalive.sent(time.time())

    def _owner(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> _Peer | None:
        peer_id = self._by_address.get(address)
        if peer_id is not None:
            return self._peers.get(peer_id)
        best: tuple[int, _Peer] | None = None
        for peer in self._peers.values():
            for network in peer.iroutes:
                if address.version == network.version and address in network:
                    if best is None or network.prefixlen > best[0]:
                        best = (network.prefixlen, peer)
                    break
        return best[1] if best else None

    def _tun_readable(self) -> None:
        if self._tun is None:
            return
        for packet in self._tun.read_batch():
            dst = destination(packet)
            peer = self._owner(dst) if dst is not None else None
            if peer is None:
                self.no_route += 1
                continue
            self._send(peer, packet)

    def receive(self, peer_id: int, packet: bytes) -> bool:
        """A data packet from ``peer_id``; True if it authenticated."""
        peer = self._peers.get(peer_id)
        if peer is None:
            return False
        plaintext = peer.channel.decrypt(packet)
        if plaintext is None:
            return False
        peer.keepalive.received(time.time())
        if plaintext == PING_MAGIC:
            return True
        if plaintext.startswith(OCC_MAGIC):
            if plaintext[16:17] == bytes([OCC_EXIT]):
                # explicit-exit-notify from a client without cc-exit (E.7).
                self.events.put_nowait(PeerDeleted(peer_id, "client sent OCC exit"))
            return True
        src = source(plaintext)
        if src is None or not (
            src in peer.addresses
            or any(src.version == n.version and src in n for n in peer.iroutes)
        ):
            # A client may only send from addresses it owns (OpenVPN drops these too).
            peer.spoofed += 1
            return True
        dst = destination(plaintext)
        if self.client_to_client and dst is not None:
            target = self._owner(dst)
            if target is not None and target is not peer:
                self._send(target, plaintext)
                return True
        if self._tun is not None:
            try:
                self._tun.write(plaintext)
            except OSError as exc:
                log.debug("tun write failed: %s", exc)
        return True
