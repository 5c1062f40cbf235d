"""AEAD data-channel packets in the OpenVPN 2.6 format (reference E).

``op ‖ peer-id ‖ packet-id ‖ tag ‖ ciphertext``: the tag sits *before* the
ciphertext, the nonce is ``packet-id ‖ nonce tail`` and the AAD is the first
8 bytes (DATA_V2) or just the packet id (DATA_V1).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from .keys import DataKeys
from .packet import Opcode, pack_byte0
from .replay import ReplayWindow

#: Plaintext of a keepalive packet (E.5); never forwarded to the tun.
PING_MAGIC = bytes.fromhex("2a187bf3641eb4cb07ed2d0a981fc748")
#: Prefix of OCC messages inside the data channel (E.6).
OCC_MAGIC = bytes.fromhex("287f346bd4ef7a812d56b8d3afc5459c")
OCC_EXIT = 6
TAG_SIZE = 16
#: 2.6 starts a renegotiation once a key's packet id reaches this (G.2).
PACKET_ID_SOFT_LIMIT = 0xFF000000
DATA_V2_OVERHEAD = 4 + 4 + TAG_SIZE


def _aead(cipher: str, key: bytes) -> AESGCM | ChaCha20Poly1305:
    if cipher == "CHACHA20-POLY1305":
        return ChaCha20Poly1305(key)
    return AESGCM(key)


class DataChannelKey:
    """Encryption and decryption with one key_id (both directions)."""

    __slots__ = ("key_id", "keys", "_enc", "_dec", "_send_pid", "_replay", "_peer_id")

    def __init__(
        self, key_id: int, keys: DataKeys, peer_id: int | None, replay_window: int = 64
    ) -> None:
        self.key_id = key_id
        self.keys = keys
        self._enc = _aead(keys.cipher, keys.encrypt_key)
        self._dec = _aead(keys.cipher, keys.decrypt_key)
        self._send_pid = 0
        self._replay = ReplayWindow(replay_window)
        self._peer_id = peer_id

    @property
    def packets_sent(self) -> int:
        """Packet ids used so far in the sending direction."""
        return self._send_pid

    @property
    def nearly_exhausted(self) -> bool:
        """The send counter is close enough to wrapping to demand a rekey."""
        return self._send_pid >= PACKET_ID_SOFT_LIMIT

    def encrypt(self, plaintext: bytes) -> bytes:
        """One wire packet (without TCP framing) carrying ``plaintext``."""
        self._send_pid += 1
        if self._send_pid > 0xFFFFFFFF:
            raise OverflowError("data channel packet id exhausted; renegotiate first")
        pid = struct.pack(">I", self._send_pid)
        if self._peer_id is None:
            header = bytes([pack_byte0(Opcode.DATA_V1, self.key_id)])
            aad = pid
        else:
            header = struct.pack(
                ">I", (pack_byte0(Opcode.DATA_V2, self.key_id) << 24) | self._peer_id
            )
            aad = header + pid
        sealed = self._enc.encrypt(pid + self.keys.encrypt_nonce_tail, plaintext, aad)
        return header + pid + sealed[-TAG_SIZE:] + sealed[:-TAG_SIZE]

    def decrypt(self, packet: bytes) -> bytes | None:
        """Plaintext of an incoming packet, or None if forged or replayed."""
        header_size = 1 if packet[0] >> 3 == Opcode.DATA_V1 else 4
        if len(packet) < header_size + 4 + TAG_SIZE:
            return None
        pid = packet[header_size : header_size + 4]
        aad = pid if header_size == 1 else packet[: header_size + 4]
        tag = packet[header_size + 4 : header_size + 4 + TAG_SIZE]
        body = packet[header_size + 4 + TAG_SIZE :]
        (packet_id,) = struct.unpack(">I", pid)
        if not self._replay.check(packet_id):
            return None
        try:
            plaintext = self._dec.decrypt(pid + self.keys.decrypt_nonce_tail, body + tag, aad)
        except InvalidTag:
            return None
        # Only an authenticated packet may move the replay window.
        self._replay.commit(packet_id)
        return plaintext


@dataclass
class DataCounters:
    """Per-peer traffic counters as ``dcoctl peers`` reports them."""

    rx_bytes: int = 0
    tx_bytes: int = 0
    rx_packets: int = 0
    tx_packets: int = 0
    rx_dropped: int = 0


class DataChannel:
    """The set of live keys of one peer, mirroring the kernel's two slots.

    ``primary`` encrypts; any installed key decrypts packets carrying its
    key_id. The protocol core decides when keys are installed, promoted and
    retired (events :class:`~dcoctl.protocol.events.KeyInstalled` etc.); this
    class only executes those decisions, exactly like the DCO backends.
    """

    def __init__(self, peer_id: int | None, replay_window: int = 64) -> None:
        self.peer_id = peer_id
        self.replay_window = replay_window
        self._keys: dict[int, DataChannelKey] = {}
        self.primary: int | None = None
        self.counters = DataCounters()

    def install(self, key_id: int, keys: DataKeys, *, primary: bool) -> None:
        """Add a key; the first key (or ``primary=True``) becomes primary."""
        self._keys[key_id] = DataChannelKey(key_id, keys, self.peer_id, self.replay_window)
        if primary or self.primary is None:
            self.primary = key_id

    def promote(self, key_id: int) -> None:
        """Start encrypting with ``key_id`` (the old primary still decrypts)."""
        if key_id in self._keys:
            self.primary = key_id

    def retire(self, key_id: int) -> None:
        """Forget ``key_id`` entirely."""
        self._keys.pop(key_id, None)
        if self.primary == key_id:
            self.primary = max(self._keys, default=None) if self._keys else None

    @property
    def ready(self) -> bool:
        """A primary key is installed."""
        return self.primary is not None

    @property
    def installed(self) -> tuple[int, ...]:
        """key_ids currently installed."""
        return tuple(self._keys)

    def primary_key(self) -> DataChannelKey | None:
        """The key used for sending."""
        return None if self.primary is None else self._keys.get(self.primary)

    def encrypt(self, plaintext: bytes, *, count: bool = True) -> bytes | None:
        """Encrypt with the primary key; None if no key is installed."""
        key = self.primary_key()
        if key is None:
            return None
        packet = key.encrypt(plaintext)
        if count:
            self.counters.tx_packets += 1
            self.counters.tx_bytes += len(plaintext)
        return packet

    def decrypt(self, packet: bytes) -> bytes | None:
        """Decrypt with the key named by byte 0; None (and counted) if dropped."""
        key = self._keys.get(packet[0] & 0x07)
        plaintext = key.decrypt(packet) if key is not None else None
        if plaintext is None:
            self.counters.rx_dropped += 1
            return None
        if plaintext != PING_MAGIC:
            self.counters.rx_packets += 1
            self.counters.rx_bytes += len(plaintext)
        return plaintext
