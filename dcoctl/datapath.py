"""The data-path interface: what carries tunnel packets once keys exist.

Two implementations: the userspace path (:mod:`dcoctl.userspace.datapath`)
and the kernel DCO backends (:mod:`dcoctl.netlink`). The daemon drives
either one with the same calls, straight from protocol events, and reads
back the same counters. Anything a data path notices on its own (a dead
peer, a kernel notification) is put on the daemon's event queue.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass

from .protocol.datachannel import DataCounters
from .protocol.events import Event
from .protocol.keys import DataKeys


@dataclass(frozen=True)
class DatapathChoice:
    """Which data path an instance uses and why (shown by ``peers``)."""

    kind: str  # "userspace", "ovpn", "ovpn-dco-v2"
    reason: str


class Datapath(ABC):
    """One tunnel interface and the peer(s) behind it."""

    #: "userspace", "ovpn" or "ovpn-dco-v2".
    kind: str = "abstract"

    def __init__(self, events: asyncio.Queue[Event]) -> None:
        self.events = events

    @property
    @abstractmethod
    def ifname(self) -> str:
        """The tunnel interface name."""

    @abstractmethod
    async def open(self, ifname: str, mtu: int) -> None:
        """Create (or open) the tunnel interface."""

    @abstractmethod
    def set_keepalive(self, interval: int, timeout: int) -> None:
        """Ping every ``interval`` s; report the peer dead after ``timeout`` s."""

    @abstractmethod
    def install_key(
        self, key_id: int, keys: DataKeys, *, primary: bool, peer_id: int | None
    ) -> None:
        """Install data keys (primary: encrypt with them at once)."""

    @abstractmethod
    def promote_key(self, key_id: int) -> None:
        """Encrypt with ``key_id`` from now on."""

    @abstractmethod
    def retire_key(self, key_id: int) -> None:
        """Delete ``key_id``."""

    @abstractmethod
    def clear_keys(self) -> None:
        """Drop every key (session ended); traffic stops until new keys arrive."""

    @abstractmethod
    def receive_from_peer(self, packet: bytes) -> None:
        """A P_DATA packet arrived on the transport."""

    @abstractmethod
    def send_exit_notification(self) -> None:
        """Send OCC_EXIT through the data channel (non cc-exit peers)."""

    @abstractmethod
    def counters(self) -> DataCounters:
        """Traffic counters of the peer."""

    @abstractmethod
    async def close(self) -> None:
        """Tear the interface down."""
