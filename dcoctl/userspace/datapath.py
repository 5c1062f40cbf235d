"""The userspace data path: tun device <-> AEAD <-> transport.

Correct before fast: one asyncio reader on the tun file descriptor, one
packet at a time. Keys come from protocol events exactly as they would go
to the kernel; keepalive pings and ping-restart run here because no kernel
does it for us.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ..datapath import Datapath
from ..protocol.datachannel import OCC_EXIT, OCC_MAGIC, PING_MAGIC, DataChannel, DataCounters
from ..protocol.events import Event, PingTimeout
from ..protocol.keepalive import Keepalive
from ..protocol.keys import DataKeys
from .tun import TunDevice, open_tun

log = logging.getLogger(__name__)


class UserspaceDatapath(Datapath):
    """tun + Python AEAD for one peer (client mode)."""

    kind = "userspace"

    def __init__(
        self,
        events: asyncio.Queue[Event],
        send: Callable[[bytes], None] | None = None,
        replay_window: int = 64,
    ) -> None:
        super().__init__(events)
        self._send = send
        self._tun: TunDevice | None = None
        self._channel = DataChannel(None, replay_window)
        self._replay_window = replay_window
        self._keepalive = Keepalive()
        self._timer: asyncio.TimerHandle | None = None
        self._reported_timeout = False

    @property
    def ifname(self) -> str:
        return self._tun.name if self._tun is not None else ""

    def attach(self, send: Callable[[bytes], None] | None) -> None:
        """Point outgoing packets at a (new) transport, or nowhere."""
        self._send = send

    async def open(self, ifname: str, mtu: int) -> None:
        if self._tun is None:
            self._tun = open_tun(ifname)
            asyncio.get_running_loop().add_reader(self._tun.fd, self._tun_readable)

    # -- keys -----------------------------------------------------------
    def install_key(
        self, key_id: int, keys: DataKeys, *, primary: bool, peer_id: int | None
    ) -> None:
        if not self._channel.installed:
            # A new session (maybe a new peer-id): start from a clean channel
            # but keep counting into the same totals.
            counters = self._channel.counters
            self._channel = DataChannel(peer_id, self._replay_window)
            self._channel.counters = counters
            self._keepalive.start(time.time())
            self._reported_timeout = False
        self._channel.install(key_id, keys, primary=primary)
        self._arm_timer()

    def promote_key(self, key_id: int) -> None:
        self._channel.promote(key_id)

    def retire_key(self, key_id: int) -> None:
        self._channel.retire(key_id)

    def clear_keys(self) -> None:
        for key_id in self._channel.installed:
            self._channel.retire(key_id)

    # -- keepalive --------------------------------------------------------
    def set_keepalive(self, interval: int, timeout: int) -> None:
        self._keepalive.interval = interval
        self._keepalive.timeout = timeout
        self._keepalive.start(time.time())
        self._arm_timer()

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self._keepalive.timer()
        if deadline is None or not self._channel.ready:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, deadline - time.time())
        self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = time.time()
        if self._keepalive.expired(now):
            if not self._reported_timeout:
                self._reported_timeout = True
                self.events.put_nowait(PingTimeout(self._keepalive.timeout))
            return
        if self._keepalive.ping_due(now):
            self._transmit(PING_MAGIC, count=False)
        self._arm_timer()

    # -- packets ------------------------------------------------------------
    def _transmit(self, plaintext: bytes, count: bool = True) -> None:
        if self._send is None:
            return
        packet = self._channel.encrypt(plaintext, count=count)
        if packet is None:
            return
        self._send(packet)
        self._keepalive.sent(time.time())

    def _tun_readable(self) -> None:
        if self._tun is not None:
            for packet in self._tun.read_batch():
                self._transmit(packet)

    def receive_from_peer(self, packet: bytes) -> None:
        plaintext = self._channel.decrypt(packet)
        if plaintext is None:
            return
        self._keepalive.received(time.time())
        if plaintext == PING_MAGIC:
            return
        if plaintext.startswith(OCC_MAGIC):
            if plaintext[16:17] == bytes([OCC_EXIT]):
                log.info("peer sent OCC_EXIT")
            return
        if self._tun is not None:
            try:
                self._tun.write(plaintext)
            except OSError as exc:
                log.debug("tun write failed: %s", exc)

    def send_exit_notification(self) -> None:
        self._transmit(OCC_MAGIC + bytes([OCC_EXIT]), count=False)

    def counters(self) -> DataCounters:
        return self._channel.counters

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._tun is not None:
            try:
                asyncio.get_running_loop().remove_reader(self._tun.fd)
            except RuntimeError:
                pass
            self._tun.close()
            self._tun = None
