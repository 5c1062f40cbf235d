"""tls-crypt-v2 keys: server key, client keys and the wrapped client key WKc (reference B.4).

Sans-I/O helpers for both ends of ``tls-crypt-v2``:

* the **server key** (128 bytes, one OpenVPN ``struct key``: a 64-byte cipher
  part and a 64-byte HMAC part, of which AES-256-CTR uses Ke = bytes 0..31
  and HMAC-SHA256 uses Ka = bytes 64..95);
* **client keys**: a fresh 256-byte tls-crypt key Kc followed by
  ``WKc = T ‖ AES-256-CTR(Ke, IV=T[:16], Kc ‖ metadata) ‖ len`` where
  ``len`` (u16, big-endian) is the length of WKc itself and
  ``T = HMAC-SHA256(Ka, len ‖ Kc ‖ metadata)``;
* the server receive path: :func:`split_wkc` cuts WKc off a
  HARD_RESET_CLIENT_V3 / CONTROL_WKC_V1 packet and :func:`unwrap_client_key`
  recovers Kc and the metadata from it.

Key files use PEM armour around base64 and are written byte-for-byte like
``openvpn --genkey tls-crypt-v2-server`` / ``tls-crypt-v2-client`` (64
characters per line). The front part of a V3/WKC_V1 packet is plain
tls-crypt with Kc (:class:`.wrapping.TLSCryptWrap`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import struct
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..errors import ConfigError, RemoteProtocolError
from .packet import Opcode
from .statickey import STATIC_KEY_SIZE, StaticKey

__all__ = [
    "CLIENT_KEY_LABEL",
    "METADATA_TYPE_TIMESTAMP",
    "METADATA_TYPE_USER",
    "SERVER_KEY_LABEL",
    "SERVER_KEY_SIZE",
    "TLSCryptV2ServerKey",
    "WKC_MAX_SIZE",
    "WKC_MIN_SIZE",
    "format_server_key",
    "generate_server_key",
    "make_client_key",
    "metadata_timestamp",
    "parse_client_key",
    "parse_server_key",
    "split_wkc",
    "timestamp_metadata",
    "unwrap_client_key",
    "wrap_client_key",
]

SERVER_KEY_LABEL = "OpenVPN tls-crypt-v2 server key"
CLIENT_KEY_LABEL = "OpenVPN tls-crypt-v2 client key"
#: One OpenVPN ``struct key``: cipher[64] ‖ hmac[64].
SERVER_KEY_SIZE = 128
TAG_SIZE = 32
LENGTH_SIZE = 2
#: Smallest WKc: tag, Kc and the length field, with no metadata.
WKC_MIN_SIZE = TAG_SIZE + STATIC_KEY_SIZE + LENGTH_SIZE
#: TLS_CRYPT_V2_MAX_WKC_LEN in OpenVPN.
WKC_MAX_SIZE = 1024
#: TLS_CRYPT_V2_MAX_METADATA_LEN: what fits into the largest WKc.
METADATA_MAX_SIZE = WKC_MAX_SIZE - WKC_MIN_SIZE
#: Metadata type byte: user-defined bytes follow.
METADATA_TYPE_USER = 0x00
#: Metadata type byte: a u64 big-endian unix time follows (OpenVPN's default).
METADATA_TYPE_TIMESTAMP = 0x01

_PEM_LINE = 64
_WKC_OPCODES = frozenset({Opcode.CONTROL_HARD_RESET_CLIENT_V3, Opcode.CONTROL_WKC_V1})


@dataclass(frozen=True)
class TLSCryptV2ServerKey:
    """The 128 raw bytes of a tls-crypt-v2 server key."""

    data: bytes

    def __post_init__(self) -> None:
        if len(self.data) != SERVER_KEY_SIZE:
            raise ValueError(f"tls-crypt-v2 server key must be {SERVER_KEY_SIZE} bytes")

    def __repr__(self) -> str:
        # Never let key material reach a log line or a traceback.
        return f"TLSCryptV2ServerKey(<{SERVER_KEY_SIZE} bytes>)"

    @property
    def encryption_key(self) -> bytes:
        """Ke: the AES-256-CTR key, bytes 0..31 (start of the cipher part)."""
        return self.data[:32]

    @property
    def auth_key(self) -> bytes:
        """Ka: the HMAC-SHA256 key, bytes 64..95 (start of the HMAC part)."""
        return self.data[64:96]


# -- PEM ---------------------------------------------------------------------


def _pem_encode(label: str, data: bytes) -> str:
    """PEM armour exactly as OpenVPN (OpenSSL ``PEM_write_bio``) writes it."""
    b64 = base64.b64encode(data).decode("ascii")
    body = "".join(f"{b64[i : i + _PEM_LINE]}\n" for i in range(0, len(b64), _PEM_LINE))
    return f"-----BEGIN {label}-----\n{body}-----END {label}-----\n"


def _pem_decode(
    text: str, label: str, source: str, what: str, first_line: int | None = None
) -> bytes:
    """The base64 payload of the first ``label`` PEM block in ``text``.

    Text around the block is ignored. Errors are :class:`ConfigError` naming
    ``source`` and, if ``first_line`` (the line of ``source`` where ``text``
    starts) is known, the line of the BEGIN marker.
    """
    begin_line, end_line = f"-----BEGIN {label}-----", f"-----END {label}-----"
    lines = text.splitlines()
    try:
        begin = next(i for i, line in enumerate(lines) if line.strip() == begin_line)
    except StopIteration:
        hint = ""
        other = SERVER_KEY_LABEL if label == CLIENT_KEY_LABEL else CLIENT_KEY_LABEL
        if f"-----BEGIN {other}-----" in text:
            hint = f" (this is a {other.removeprefix('OpenVPN ')}, not a {what})"
        raise ConfigError(f"no '{begin_line}' line in {what}{hint}", source) from None
    where = first_line + begin if first_line is not None else None
    chunks: list[str] = []
    for i in range(begin + 1, len(lines)):
        stripped = lines[i].strip()
        if stripped == end_line:
            break
        chunks.append("".join(stripped.split()))
    else:
        raise ConfigError(f"no '{end_line}' line in {what}", source, where)
    try:
        return base64.b64decode("".join(chunks), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{what} is not valid base64", source, where) from None


# -- server key --------------------------------------------------------------


def generate_server_key() -> TLSCryptV2ServerKey:
    """A fresh random server key (like ``openvpn --genkey tls-crypt-v2-server``)."""
    return TLSCryptV2ServerKey(os.urandom(SERVER_KEY_SIZE))


def parse_server_key(
    text: str, source: str = "<tls-crypt-v2 server key>", first_line: int | None = None
) -> TLSCryptV2ServerKey:
    """Parse a ``-----BEGIN OpenVPN tls-crypt-v2 server key-----`` file.

    Raises :class:`ConfigError` (naming ``source``, and a line if
    ``first_line`` says where ``text`` starts in it) for a missing block,
    bad base64 or a payload that is not 128 bytes.
    """
    data = _pem_decode(text, SERVER_KEY_LABEL, source, "tls-crypt-v2 server key", first_line)
    if len(data) != SERVER_KEY_SIZE:
        raise ConfigError(
            f"tls-crypt-v2 server key holds {len(data)} bytes, expected {SERVER_KEY_SIZE}",
            source,
        )
    return TLSCryptV2ServerKey(data)


def format_server_key(key: TLSCryptV2ServerKey) -> str:
    """Render ``key`` exactly as ``openvpn --genkey tls-crypt-v2-server FILE`` writes it."""
    return _pem_encode(SERVER_KEY_LABEL, key.data)


# -- client keys ---------------------------------------------------------------


def _ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    transform = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return transform.update(data) + transform.finalize()


def _tag(server_key: TLSCryptV2ServerKey, net_len: bytes, plaintext: bytes) -> bytes:
    return hmac.new(server_key.auth_key, net_len + plaintext, "sha256").digest()


def timestamp_metadata(now: float | None = None) -> bytes:
    """OpenVPN's default metadata: type 0x01 followed by a u64 big-endian unix time."""
    stamp = int(time.time() if now is None else now)
    return struct.pack(">BQ", METADATA_TYPE_TIMESTAMP, stamp)


def metadata_timestamp(metadata: bytes) -> int | None:
    """The unix time in type-0x01 ``metadata``, or None for any other metadata."""
    if len(metadata) != 9 or metadata[0] != METADATA_TYPE_TIMESTAMP:
        return None
    stamp: int = struct.unpack(">Q", metadata[1:])[0]
    return stamp


def wrap_client_key(
    server_key: TLSCryptV2ServerKey, client_key: StaticKey, metadata: bytes
) -> bytes:
    """WKc for ``client_key`` (Kc) and ``metadata`` under ``server_key``.

    ``WKc = T ‖ AES-256-CTR(Ke, IV=T[:16], Kc ‖ metadata) ‖ len`` with
    ``T = HMAC-SHA256(Ka, len ‖ Kc ‖ metadata)`` and ``len`` the u16
    big-endian length of WKc. ``metadata`` includes its type byte and may
    be at most 734 bytes.
    """
    if len(metadata) > METADATA_MAX_SIZE:
        raise ValueError(f"tls-crypt-v2 metadata is limited to {METADATA_MAX_SIZE} bytes")
    plaintext = client_key.data + metadata
    net_len = struct.pack(">H", TAG_SIZE + len(plaintext) + LENGTH_SIZE)
    tag = _tag(server_key, net_len, plaintext)
    return tag + _ctr(server_key.encryption_key, tag[:16], plaintext) + net_len


def make_client_key(
    server_key: TLSCryptV2ServerKey, metadata: bytes | None = None, now: float | None = None
) -> str:
    """A new client key file (like ``openvpn --tls-crypt-v2 SRV --genkey tls-crypt-v2-client``).

    A random 256-byte Kc is wrapped with ``server_key``. ``metadata`` is the
    full metadata including its type byte (e.g. ``b"\\x00" + user_bytes``);
    by default it is the timestamp of ``now`` (default: the current time).
    Returns the PEM text ``base64(Kc ‖ WKc)``.
    """
    if metadata is None:
        metadata = timestamp_metadata(now)
    client_key = StaticKey(os.urandom(STATIC_KEY_SIZE))
    wkc = wrap_client_key(server_key, client_key, metadata)
    return _pem_encode(CLIENT_KEY_LABEL, client_key.data + wkc)


def parse_client_key(
    text: str, source: str = "<tls-crypt-v2 client key>", first_line: int | None = None
) -> tuple[StaticKey, bytes]:
    """Split a tls-crypt-v2 client key file into (Kc, WKc).

    WKc stays opaque to the client, but its length field must match its size
    and it must lie within OpenVPN's limits (290..1024 bytes); anything else
    is a :class:`ConfigError` naming ``source`` (and a line if ``first_line``
    says where ``text`` starts in it, e.g. an inline ``<tls-crypt-v2>`` block).
    """
    what = "tls-crypt-v2 client key"
    raw = _pem_decode(text, CLIENT_KEY_LABEL, source, what, first_line)
    wkc = raw[STATIC_KEY_SIZE:]
    if len(wkc) < WKC_MIN_SIZE:
        raise ConfigError(f"{what} too short ({len(raw)} bytes)", source)
    if len(wkc) > WKC_MAX_SIZE:
        raise ConfigError(
            f"{what}: wrapped key of {len(wkc)} bytes exceeds {WKC_MAX_SIZE} bytes", source
        )
    if int.from_bytes(wkc[-LENGTH_SIZE:], "big") != len(wkc):
        raise ConfigError(f"{what}: wrapped client key has a bad length field", source)
    return StaticKey(raw[:STATIC_KEY_SIZE]), wkc


# -- server receive path -------------------------------------------------------


def _check_wkc_size(size: int) -> None:
    if size < WKC_MIN_SIZE:
        raise RemoteProtocolError(f"tls-crypt-v2 wrapped client key too short ({size} bytes)")
    if size > WKC_MAX_SIZE:
        raise RemoteProtocolError(f"tls-crypt-v2 wrapped client key too long ({size} bytes)")


def unwrap_client_key(server_key: TLSCryptV2ServerKey, wkc: bytes) -> tuple[StaticKey, bytes]:
    """Recover (Kc, metadata) from a client's WKc.

    Checks the size limits and the trailing length field, decrypts, and
    verifies the tag in constant time. Anything wrong raises
    :class:`RemoteProtocolError` with a short reason; the packet carrying
    this WKc must then be dropped. ``metadata`` includes its type byte.
    """
    if len(wkc) < LENGTH_SIZE:
        raise RemoteProtocolError("tls-crypt-v2 wrapped client key too short")
    if int.from_bytes(wkc[-LENGTH_SIZE:], "big") != len(wkc):
        raise RemoteProtocolError("tls-crypt-v2 wrapped client key length mismatch")
    _check_wkc_size(len(wkc))
    tag, net_len = wkc[:TAG_SIZE], wkc[-LENGTH_SIZE:]
    plaintext = _ctr(server_key.encryption_key, tag[:16], wkc[TAG_SIZE:-LENGTH_SIZE])
    if not hmac.compare_digest(tag, _tag(server_key, net_len, plaintext)):
        raise RemoteProtocolError("tls-crypt-v2 client key authentication failed (wrong key?)")
    return StaticKey(plaintext[:STATIC_KEY_SIZE]), plaintext[STATIC_KEY_SIZE:]


def split_wkc(packet: bytes) -> tuple[bytes, bytes]:
    """Cut WKc off a received HARD_RESET_CLIENT_V3 or CONTROL_WKC_V1 packet.

    The last two bytes are WKc's length, and WKc is that many bytes at the
    end. Returns ``(packet without WKc, WKc)``; the front part is then
    unwrapped as tls-crypt with the Kc from :func:`unwrap_client_key`.
    Raises :class:`RemoteProtocolError` if the packet is not one of those
    opcodes or the length is out of range or larger than the packet.
    """
    if not packet:
        raise RemoteProtocolError("empty packet")
    opcode = packet[0] >> 3
    if opcode not in _WKC_OPCODES:
        raise RemoteProtocolError(f"opcode {opcode} carries no tls-crypt-v2 client key")
    if len(packet) < 1 + LENGTH_SIZE:
        raise RemoteProtocolError("tls-crypt-v2 packet too short for a wrapped client key")
    size = int.from_bytes(packet[-LENGTH_SIZE:], "big")
    _check_wkc_size(size)
    if size >= len(packet):
        raise RemoteProtocolError(
            f"tls-crypt-v2 wrapped client key ({size} bytes) does not fit the packet "
            f"({len(packet)} bytes)"
        )
    return packet[:-size], packet[-size:]
