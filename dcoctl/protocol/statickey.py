"""OpenVPN static key files ("OpenVPN Static key V1", 2048 bits).

Used by ``tls-auth`` and ``tls-crypt`` (reference B.1). The 256 bytes are two
128-byte keys, each a 64-byte cipher part followed by a 64-byte HMAC part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from ..errors import ConfigError

STATIC_KEY_BEGIN = "-----BEGIN OpenVPN Static key V1-----"
STATIC_KEY_END = "-----END OpenVPN Static key V1-----"
STATIC_KEY_SIZE = 256

_HEX = re.compile(r"[0-9a-fA-F]*")


class KeyDirection(Enum):
    """``key-direction`` / second argument of ``tls-auth`` (reference B.1)."""

    BIDIRECTIONAL = None
    NORMAL = 0
    INVERSE = 1


@dataclass(frozen=True)
class StaticKey:
    """The 256 raw bytes of a static key file."""

    data: bytes

    def __post_init__(self) -> None:
        if len(self.data) != STATIC_KEY_SIZE:
            raise ValueError("static key must be 256 bytes")

    def __repr__(self) -> str:
        # Never let key material reach a log line or a traceback.
        return "StaticKey(<256 bytes>)"

    def cipher(self, index: int) -> bytes:
        """The 64-byte cipher part of key ``index`` (0 or 1)."""
        return self.data[128 * index : 128 * index + 64]

    def hmac(self, index: int) -> bytes:
        """The 64-byte HMAC part of key ``index`` (0 or 1)."""
        return self.data[128 * index + 64 : 128 * index + 128]

    def directional_hmac(self, direction: KeyDirection) -> tuple[bytes, bytes]:
        """(send, receive) HMAC key parts for a ``key-direction``."""
        if direction is KeyDirection.NORMAL:
            return self.hmac(0), self.hmac(1)
        if direction is KeyDirection.INVERSE:
            return self.hmac(1), self.hmac(0)
        return self.hmac(0), self.hmac(0)


def parse_static_key(text: str, source: str = "<static key>", first_line: int = 1) -> StaticKey:
    """Parse the text of an OpenVPN static key file.

    Anything before the BEGIN line and after the END line is ignored (files
    commonly start with ``#`` comments); inside, only hex digits and
    whitespace are allowed. Errors name ``source`` and the offending line.
    """
    lines = text.splitlines()
    try:
        begin = next(i for i, line in enumerate(lines) if line.strip() == STATIC_KEY_BEGIN)
    except StopIteration:
        raise ConfigError(f"no '{STATIC_KEY_BEGIN}' line in static key", source) from None
    hexdigits: list[str] = []
    for i in range(begin + 1, len(lines)):
        stripped = lines[i].strip()
        if stripped == STATIC_KEY_END:
            break
        compact = "".join(stripped.split())
        if not _HEX.fullmatch(compact):
            raise ConfigError("static key contains a non-hex character", source, first_line + i)
        hexdigits.append(compact)
    else:
        raise ConfigError(f"no '{STATIC_KEY_END}' line in static key", source)
    data = bytes.fromhex("".join(hexdigits)) if len("".join(hexdigits)) % 2 == 0 else b""
    if len(data) != STATIC_KEY_SIZE:
        raise ConfigError(
            f"static key holds {len(data)} bytes, expected {STATIC_KEY_SIZE}",
            source,
            first_line + begin,
        )
    return StaticKey(data)


def format_static_key(key: StaticKey) -> str:
    """Render ``key`` exactly as ``openvpn --genkey secret`` writes it."""
    hexstr = key.data.hex()
    body = "\n".join(hexstr[i : i + 32] for i in range(0, len(hexstr), 32))
    return f"#\n# 2048 bit OpenVPN static key\n#\n{STATIC_KEY_BEGIN}\n{body}\n{STATIC_KEY_END}\n"
