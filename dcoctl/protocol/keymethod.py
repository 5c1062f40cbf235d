"""Key-method 2 messages, options strings and peer-info (reference C).

The first application-data message each side writes into a fresh TLS
session. The client's carries 48 bytes of pre-master secret (used only by
the legacy PRF), both carry two 32-byte randoms, then four length-prefixed
strings: options, username, password, peer-info.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..errors import RemoteProtocolError

KEY_METHOD_2 = 2
PRE_MASTER_SIZE = 48
RANDOM_SIZE = 32
#: OpenVPN's TLS_OPTIONS_LEN; strings longer than this are refused.
MAX_STRING = 4096


class IVProto:
    """IV_PROTO bits (reference C.4)."""

    DATA_V2 = 1 << 1
    REQUEST_PUSH = 1 << 2
    TLS_KEY_EXPORT = 1 << 3
    AUTH_PENDING_KW = 1 << 4
    NCP_P2P = 1 << 5
    DNS_OPTION = 1 << 6
    CC_EXIT_NOTIFY = 1 << 7
    AUTH_FAIL_TEMP = 1 << 8
    DYN_TLS_CRYPT = 1 << 9


@dataclass(frozen=True)
class KeySource:
    """Random material one side contributes to the legacy PRF (D.3)."""

    random1: bytes
    random2: bytes
    pre_master: bytes | None = None


@dataclass(frozen=True)
class KeyMethod2Message:
    """A decoded key-method 2 message."""

    source: KeySource
    options: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    peer_info: str | None = None

    def peer_info_vars(self) -> dict[str, str]:
        """peer-info as a dict (``IV_PROTO`` → ``"990"``...)."""
        result = {}
        for line in (self.peer_info or "").splitlines():
            name, sep, value = line.partition("=")
            if sep:
                result[name.strip()] = value.strip()
        return result


def _push_string(value: str | None) -> bytes:
    # Absent strings are a bare zero length, not a lone NUL (reference C.2, J.6).
    if value is None:
        return b"\x00\x00"
    raw = value.encode() + b"\x00"
    if len(raw) > MAX_STRING:
        raise ValueError("key-method string too long")
    return struct.pack(">H", len(raw)) + raw


def _pull_string(data: bytes, offset: int, what: str) -> tuple[str | None, int]:
    if len(data) < offset + 2:
        raise RemoteProtocolError(f"key-method message truncated before {what}")
    (length,) = struct.unpack_from(">H", data, offset)
    offset += 2
    if length == 0:
        return None, offset
    if length > MAX_STRING or len(data) < offset + length:
        raise RemoteProtocolError(f"key-method {what} string overruns the message")
    raw = data[offset : offset + length]
    if raw[-1] != 0:
        raise RemoteProtocolError(f"key-method {what} string is not NUL-terminated")
    return raw[:-1].decode("utf-8", "replace"), offset + length


def push_key_method_2(message: KeyMethod2Message) -> bytes:
    """Encode a key-method 2 message (client when ``pre_master`` is set)."""
    src = message.source
    parts = [b"\x00\x00\x00\x00", bytes([KEY_METHOD_2])]
    if src.pre_master is not None:
        parts.append(src.pre_master)
    parts += [
        src.random1,
        src.random2,
        _push_string(message.options),
        _push_string(message.username),
        _push_string(message.password),
        _push_string(message.peer_info),
    ]
    return b"".join(parts)


def pull_key_method_2(data: bytes, *, from_client: bool) -> tuple[KeyMethod2Message, int]:
    """Decode a key-method 2 message sent by a client or a server.

    Returns the message and the number of bytes it occupied: a server that
    saw IV_PROTO's REQUEST_PUSH bit may send PUSH_REPLY right behind it, in
    the same TLS read.
    """
    fixed = 5 + (PRE_MASTER_SIZE if from_client else 0) + 2 * RANDOM_SIZE
    if len(data) < fixed:
        raise RemoteProtocolError("key-method message too short")
    if data[:4] != b"\x00\x00\x00\x00":
        raise RemoteProtocolError("key-method message does not start with four zero bytes")
    if data[4] & 0x0F != KEY_METHOD_2:
        raise RemoteProtocolError(f"unsupported key method {data[4] & 0x0F}")
    offset = 5
    pre_master = None
    if from_client:
        pre_master = data[offset : offset + PRE_MASTER_SIZE]
        offset += PRE_MASTER_SIZE
    random1 = data[offset : offset + RANDOM_SIZE]
    random2 = data[offset + RANDOM_SIZE : offset + 2 * RANDOM_SIZE]
    offset += 2 * RANDOM_SIZE
    options, offset = _pull_string(data, offset, "options")
    username, offset = _pull_string(data, offset, "username")
    password, offset = _pull_string(data, offset, "password")
    # peer-info is optional for very old peers; 2.x always writes it.
    peer_info = None
    if offset < len(data):
        peer_info, offset = _pull_string(data, offset, "peer-info")
    message = KeyMethod2Message(
        KeySource(random1, random2, pre_master), options or "", username, password, peer_info
    )
    return message, offset


def options_string(
    *, proto: str, tun_mtu: int, server: bool, tls_auth: bool, key_direction: int | None = None
) -> str:
    """The OCC options string (C.3); the values are cosmetic for 2.6 peers."""
    proto_name = {"udp": "UDPv4", "tcp": "TCPv4_SERVER" if server else "TCPv4_CLIENT"}[proto]
    parts = [
        "V4",
        "dev-type tun",
        f"link-mtu {tun_mtu + 21}",
        f"tun-mtu {tun_mtu}",
        f"proto {proto_name}",
    ]
    if key_direction is not None and tls_auth:
        parts.append(f"keydir {key_direction}")
    parts += ["auth SHA1", "keysize 128"]
    if tls_auth:
        parts.append("tls-auth")
    parts += ["key-method 2", "tls-server" if server else "tls-client"]
    return ",".join(parts)


def peer_info(variables: dict[str, str]) -> str:
    """Render peer-info: ``NAME=value`` lines, each ending in a newline."""
    return "".join(f"{name}={value}\n" for name, value in variables.items())
