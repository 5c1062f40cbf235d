"""Underlay transports: one UDP socket or one TCP stream to the peer.

They move whole OpenVPN packets: UDP maps one packet to one datagram, TCP
frames each packet with a 2-byte big-endian length (reference A.1). Errors
and the end of the connection reach the owner through callbacks; no
protocol logic lives here.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable

from .errors import RemoteProtocolError

log = logging.getLogger(__name__)

PacketHandler = Callable[[bytes], None]
ErrorHandler = Callable[[str], None]


class Transport:
    """Common surface of :class:`UDPTransport` and :class:`TCPTransport`."""

    proto = "?"

    def __init__(self, on_packet: PacketHandler, on_error: ErrorHandler) -> None:
        self.on_packet = on_packet
        self.on_error = on_error
        self.remote: tuple[str, int] = ("", 0)
        self.local: tuple[str, int] = ("", 0)
        self.closed = False

    def send(self, packet: bytes) -> None:
        """Queue one OpenVPN packet for the peer."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the socket (idempotent)."""
        raise NotImplementedError


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: UDPTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data:
            self.owner.on_packet(data)

    def error_received(self, exc: Exception) -> None:
        # A connected UDP socket surfaces ICMP errors (port unreachable) here.
        self.owner.on_error(f"{exc.strerror or exc}" if isinstance(exc, OSError) else str(exc))

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.closed = True


class UDPTransport(Transport):
    """A connected UDP socket."""

    proto = "udp"

    def __init__(self, on_packet: PacketHandler, on_error: ErrorHandler) -> None:
        super().__init__(on_packet, on_error)
        self._transport: asyncio.DatagramTransport | None = None

    async def connect(
        self, family: socket.AddressFamily, remote: tuple[str, int], local_port: int | None = None
    ) -> None:
        """Open the socket towards ``remote`` (an address, not a name)."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 21)
            if local_port is not None:
                sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", local_port))
            sock.connect(remote)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        transport, _ = await loop.create_datagram_endpoint(lambda: _UDPProtocol(self), sock=sock)
        self._transport = transport
        self.remote = remote
        self.local = sock.getsockname()[:2]

    def send(self, packet: bytes) -> None:
        if self._transport is not None and not self.closed:
            self._transport.sendto(packet)

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()


class _TCPProtocol(asyncio.Protocol):
    def __init__(self, owner: TCPTransport) -> None:
        self.owner = owner
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 2:
            (length,) = struct.unpack_from(">H", self.buffer)
            if length == 0:
                self.owner.on_error(str(RemoteProtocolError("zero-length TCP record")))
                self.owner.close()
                return
            if len(self.buffer) < 2 + length:
                break
            packet = bytes(self.buffer[2 : 2 + length])
            del self.buffer[: 2 + length]
            self.owner.on_packet(packet)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.owner.closed:
            self.owner.closed = True
            self.owner.on_error(f"TCP connection closed by peer{f' ({exc})' if exc else ''}")


class TCPTransport(Transport):
    """A TCP stream with OpenVPN's 2-byte length framing."""

    proto = "tcp"

    def __init__(self, on_packet: PacketHandler, on_error: ErrorHandler) -> None:
        super().__init__(on_packet, on_error)
        self._transport: asyncio.Transport | None = None

    async def connect(
        self,
        family: socket.AddressFamily,
        remote: tuple[str, int],
        local_port: int | None = None,
        timeout: float = 10.0,
    ) -> None:
        """Connect to ``remote``; raises OSError/TimeoutError on failure."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if local_port is not None:
                sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", local_port))
            await asyncio.wait_for(loop.sock_connect(sock, remote), timeout)
        except (OSError, TimeoutError):
            sock.close()
            raise
        transport, _ = await loop.create_connection(lambda: _TCPProtocol(self), sock=sock)
        self._transport = transport
        self.remote = remote
        self.local = sock.getsockname()[:2]

    def send(self, packet: bytes) -> None:
        if self._transport is not None and not self.closed:
            self._transport.write(struct.pack(">H", len(packet)) + packet)

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()
