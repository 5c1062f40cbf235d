"""Control-channel protection: none, tls-auth, tls-crypt, tls-crypt-v2 (reference B).

A wrapper turns ``prefix ‖ body`` (see :mod:`.packet`) into wire bytes and
back. Each wrapper instance belongs to one TLS session (one hard reset): it
owns that session's outgoing replay counter and incoming replay window, so a
new session needs a new wrapper (:meth:`ControlWrap.fresh`).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from abc import ABC, abstractmethod

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..errors import RemoteProtocolError
from .packet import PREFIX_SIZE, Opcode, unpack_byte0
from .replay import ReplayWindow
from .statickey import KeyDirection, StaticKey

#: Digests ``auth`` may name for tls-auth, with their output sizes.
TLS_AUTH_DIGESTS: dict[str, str] = {
    "SHA1": "sha1",
    "SHA224": "sha224",
    "SHA256": "sha256",
    "SHA384": "sha384",
    "SHA512": "sha512",
}
TLS_CRYPT_TAG_SIZE = 32
#: tls-crypt-v2 clients that understand early negotiation start here (B.4).
EARLY_NEG_START = 0x0F000000
_WKC_OPCODES = frozenset({Opcode.CONTROL_HARD_RESET_CLIENT_V3, Opcode.CONTROL_WKC_V1})


class ControlWrap(ABC):
    """One session's control-channel wrapping."""

    #: Bytes the wrapping adds to a plain control packet.
    overhead: int = 0

    @abstractmethod
    def wrap(self, prefix: bytes, body: bytes, now: float) -> bytes:
        """Protect one outgoing control packet."""

    @abstractmethod
    def unwrap(self, packet: bytes, now: float) -> tuple[bytes, bytes]:
        """Verify and strip the wrapping; returns (prefix, body).

        Raises :class:`RemoteProtocolError` for anything forged, replayed or
        truncated: the caller drops such packets without a reply.
        """

    @abstractmethod
    def fresh(self) -> ControlWrap:
        """A wrapper with the same keys and new replay state (new session)."""

    def skip_send_ids(self, count: int) -> None:
        """Account for packets sent on our behalf (the stateless reset, B.5)."""
        del count  # no counter without protection


class PlainWrap(ControlWrap):
    """No control-channel protection."""

    def wrap(self, prefix: bytes, body: bytes, now: float) -> bytes:
        return prefix + body

    def unwrap(self, packet: bytes, now: float) -> tuple[bytes, bytes]:
        if len(packet) < PREFIX_SIZE:
            raise RemoteProtocolError("control packet too short")
        return packet[:PREFIX_SIZE], packet[PREFIX_SIZE:]

    def fresh(self) -> PlainWrap:
        return PlainWrap()


class _CountingWrap(ControlWrap):
    """Shared replay bookkeeping of tls-auth and tls-crypt (reference B.2)."""

    def __init__(self, start_pid: int = 0) -> None:
        self._start_pid = start_pid
        self._send_pid = start_pid
        self._send_time = 0
        self._replay = ReplayWindow(64)

    def _next_pid(self, now: float) -> bytes:
        if self._send_time == 0:
            self._send_time = int(now)
        self._send_pid += 1
        if self._send_pid > 0xFFFFFFFF:
            # Wrap the 32-bit id by moving to a new time epoch, as OpenVPN does.
            self._send_pid = 1
            self._send_time = max(int(now), self._send_time + 1)
        return struct.pack(">II", self._send_pid, self._send_time)

    def skip_send_ids(self, count: int) -> None:
        self._send_pid += count

    def _check_replay(self, pid_time: bytes) -> tuple[int, int]:
        pid, net_time = struct.unpack(">II", pid_time)
        if not self._replay.check(pid, net_time):
            raise RemoteProtocolError(f"replayed control packet (packet id {pid})")
        return pid, net_time


class TLSAuthWrap(_CountingWrap):
    """``tls-auth``: an HMAC over every control packet (reference B.2)."""

    def __init__(self, key: StaticKey, direction: KeyDirection, digest: str = "SHA1") -> None:
        super().__init__()
        try:
            self._hash = TLS_AUTH_DIGESTS[digest.upper()]
        except KeyError:
            raise ValueError(f"unsupported tls-auth digest {digest!r}") from None
        self._key = key
        self._direction = direction
        self._digest = digest
        self._size = hashlib.new(self._hash).digest_size
        send, recv = key.directional_hmac(direction)
        self._send_key = send[: self._size]
        self._recv_key = recv[: self._size]
        self.overhead = self._size + 8

    def _mac(self, key: bytes, pid_time: bytes, prefix: bytes, body: bytes) -> bytes:
        return hmac.new(key, pid_time + prefix + body, self._hash).digest()

    def wrap(self, prefix: bytes, body: bytes, now: float) -> bytes:
        pid_time = self._next_pid(now)
        return prefix + self._mac(self._send_key, pid_time, prefix, body) + pid_time + body

    def unwrap(self, packet: bytes, now: float) -> tuple[bytes, bytes]:
        if len(packet) < PREFIX_SIZE + self.overhead + 1:
            raise RemoteProtocolError("tls-auth packet too short")
        prefix = packet[:PREFIX_SIZE]
        tag = packet[PREFIX_SIZE : PREFIX_SIZE + self._size]
        pid_time = packet[PREFIX_SIZE + self._size : PREFIX_SIZE + self._size + 8]
        body = packet[PREFIX_SIZE + self._size + 8 :]
        if not hmac.compare_digest(tag, self._mac(self._recv_key, pid_time, prefix, body)):
            raise RemoteProtocolError("tls-auth HMAC mismatch (wrong key or key-direction?)")
        self._replay.commit(*self._check_replay(pid_time))
        return prefix, body

    def fresh(self) -> TLSAuthWrap:
        return TLSAuthWrap(self._key, self._direction, self._digest)


class TLSCryptWrap(_CountingWrap):
    """``tls-crypt`` (and the Kc part of tls-crypt-v2): AES-256-CTR + HMAC-SHA256.

    Key slices are fixed by role (reference B.3): the server sends with key 0
    and the client with key 1. ``wkc`` (tls-crypt-v2 clients only) is appended
    in clear to HARD_RESET_CLIENT_V3 and CONTROL_WKC_V1 packets.
    """

    def __init__(
        self,
        key: StaticKey,
        *,
        is_server: bool,
        wkc: bytes | None = None,
        early_negotiation: bool = False,
    ) -> None:
        super().__init__(EARLY_NEG_START if early_negotiation else 0)
        self._key = key
        self._is_server = is_server
        self.wkc = wkc
        self._early = early_negotiation
        send_index, recv_index = (0, 1) if is_server else (1, 0)
        self._send_ke = key.cipher(send_index)[:32]
        self._send_ka = key.hmac(send_index)[:32]
        self._recv_ke = key.cipher(recv_index)[:32]
        self._recv_ka = key.hmac(recv_index)[:32]
        self.overhead = 8 + TLS_CRYPT_TAG_SIZE

    @staticmethod
    def _ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
        transform = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
        return transform.update(data) + transform.finalize()

    def wrap(self, prefix: bytes, body: bytes, now: float) -> bytes:
        header = prefix + self._next_pid(now)
        tag = hmac.new(self._send_ka, header + body, "sha256").digest()
        packet = header + tag + self._ctr(self._send_ke, tag[:16], body)
        opcode, _ = unpack_byte0(prefix[0])
        if self.wkc is not None and opcode in _WKC_OPCODES:
            packet += self.wkc
        return packet

    def unwrap(self, packet: bytes, now: float) -> tuple[bytes, bytes]:
        header_size = PREFIX_SIZE + 8
        if len(packet) < header_size + TLS_CRYPT_TAG_SIZE + 1:
            raise RemoteProtocolError("tls-crypt packet too short")
        header = packet[:header_size]
        tag = packet[header_size : header_size + TLS_CRYPT_TAG_SIZE]
        body = self._ctr(self._recv_ke, tag[:16], packet[header_size + TLS_CRYPT_TAG_SIZE :])
        expected = hmac.new(self._recv_ka, header + body, "sha256").digest()
        if not hmac.compare_digest(tag, expected):
            raise RemoteProtocolError("tls-crypt authentication failed (wrong key?)")
        self._replay.commit(*self._check_replay(header[PREFIX_SIZE:]))
        return header[:PREFIX_SIZE], body

    def fresh(self) -> TLSCryptWrap:
        return TLSCryptWrap(
            self._key, is_server=self._is_server, wkc=self.wkc, early_negotiation=self._early
        )
