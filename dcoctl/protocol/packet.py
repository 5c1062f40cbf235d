"""Wire codecs for OpenVPN control and data packets (reference A.2-A.6, E.1).

Pure functions only. A control packet on the wire is ``prefix ‖ wrapped(body)``
where ``prefix`` is ``byte0 ‖ own_session_id`` (9 bytes) and ``body`` is the
"plaintext form" after the prefix: ack block, message id, payload. The
wrapping modes (:mod:`.wrapping`) only ever transform ``body``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from ..errors import RemoteProtocolError

SESSION_ID_SIZE = 8
PREFIX_SIZE = 1 + SESSION_ID_SIZE
#: RELIABLE_ACK_SIZE in OpenVPN: more ack ids than this in one block is invalid.
MAX_ACKS = 8
#: CONTROL_SEND_ACK_MAX: acks piggy-backed on packets that carry a message id.
MAX_PIGGYBACK_ACKS = 4
#: PEER_ID value meaning "not assigned" (MAX_PEER_ID).
PEER_ID_UNDEF = 0xFFFFFF


class Opcode(IntEnum):
    """Packet opcodes, the high 5 bits of byte 0."""

    CONTROL_HARD_RESET_CLIENT_V1 = 1
    CONTROL_HARD_RESET_SERVER_V1 = 2
    CONTROL_SOFT_RESET_V1 = 3
    CONTROL_V1 = 4
    ACK_V1 = 5
    DATA_V1 = 6
    CONTROL_HARD_RESET_CLIENT_V2 = 7
    CONTROL_HARD_RESET_SERVER_V2 = 8
    DATA_V2 = 9
    CONTROL_HARD_RESET_CLIENT_V3 = 10
    CONTROL_WKC_V1 = 11


DATA_OPCODES = frozenset({Opcode.DATA_V1, Opcode.DATA_V2})
CONTROL_OPCODES = frozenset(
    {
        Opcode.CONTROL_SOFT_RESET_V1,
        Opcode.CONTROL_V1,
        Opcode.ACK_V1,
        Opcode.CONTROL_HARD_RESET_CLIENT_V2,
        Opcode.CONTROL_HARD_RESET_SERVER_V2,
        Opcode.CONTROL_HARD_RESET_CLIENT_V3,
        Opcode.CONTROL_WKC_V1,
    }
)
HARD_RESET_OPCODES = frozenset(
    {
        Opcode.CONTROL_HARD_RESET_CLIENT_V2,
        Opcode.CONTROL_HARD_RESET_SERVER_V2,
        Opcode.CONTROL_HARD_RESET_CLIENT_V3,
    }
)


def pack_byte0(opcode: Opcode, key_id: int) -> int:
    """byte0 = opcode << 3 | key_id."""
    return (int(opcode) << 3) | (key_id & 0x07)


def unpack_byte0(byte0: int) -> tuple[Opcode, int]:
    """Split byte 0; unknown opcodes raise :class:`RemoteProtocolError`."""
    try:
        return Opcode(byte0 >> 3), byte0 & 0x07
    except ValueError:
        raise RemoteProtocolError(f"unknown opcode {byte0 >> 3}") from None


@dataclass(frozen=True, slots=True)
class ControlPacket:
    """A control packet in its unwrapped, logical form (reference A.4)."""

    opcode: Opcode
    key_id: int
    session_id: bytes
    acks: tuple[int, ...] = ()
    remote_session_id: bytes | None = None
    message_id: int | None = None
    payload: bytes = b""

    @property
    def prefix(self) -> bytes:
        """byte0 ‖ own session id: the part every wrapping leaves in clear."""
        return bytes([pack_byte0(self.opcode, self.key_id)]) + self.session_id


def push_control_body(packet: ControlPacket) -> bytes:
    """Encode what follows the 9-byte prefix: ack block, message id, payload."""
    if len(packet.acks) > MAX_ACKS:
        raise ValueError("too many acks in one packet")
    parts = [bytes([len(packet.acks)])]
    if packet.acks:
        parts.append(struct.pack(f">{len(packet.acks)}I", *packet.acks))
        if packet.remote_session_id is None or len(packet.remote_session_id) != SESSION_ID_SIZE:
            raise ValueError("acks need the remote session id")
        parts.append(packet.remote_session_id)
    if packet.opcode != Opcode.ACK_V1:
        if packet.message_id is None:
            raise ValueError(f"{packet.opcode.name} needs a message id")
        parts.append(struct.pack(">I", packet.message_id))
        parts.append(packet.payload)
    return b"".join(parts)


def pull_control_body(prefix: bytes, body: bytes) -> ControlPacket:
    """Decode an unwrapped control packet from its prefix and body."""
    if len(prefix) != PREFIX_SIZE:
        raise RemoteProtocolError("control packet too short")
    opcode, key_id = unpack_byte0(prefix[0])
    if opcode not in CONTROL_OPCODES:
        raise RemoteProtocolError(f"{opcode.name} is not a control opcode")
    if not body:
        raise RemoteProtocolError("control packet without ack block")
    count = body[0]
    if count > MAX_ACKS:
        raise RemoteProtocolError(f"ack block claims {count} ids (max {MAX_ACKS})")
    offset = 1
    acks: tuple[int, ...] = ()
    remote_sid = None
    if count:
        end = offset + 4 * count + SESSION_ID_SIZE
        if len(body) < end:
            raise RemoteProtocolError("truncated ack block")
        acks = struct.unpack_from(f">{count}I", body, offset)
        remote_sid = body[offset + 4 * count : end]
        offset = end
    message_id = None
    payload = b""
    if opcode != Opcode.ACK_V1:
        if len(body) < offset + 4:
            raise RemoteProtocolError("truncated message id")
        (message_id,) = struct.unpack_from(">I", body, offset)
        payload = body[offset + 4 :]
    elif len(body) != offset:
        raise RemoteProtocolError("trailing bytes after ACK_V1")
    return ControlPacket(opcode, key_id, prefix[1:], acks, remote_sid, message_id, payload)


def push_data_v2_header(key_id: int, peer_id: int) -> bytes:
    """The 4-byte P_DATA_V2 header: opcode/key-id and the 24-bit peer-id."""
    return struct.pack(">I", (pack_byte0(Opcode.DATA_V2, key_id) << 24) | (peer_id & 0xFFFFFF))


# Early-negotiation TLVs carried in a hard-reset payload (reference B.4).
TLV_TYPE_EARLY_NEG_FLAGS = 0x0001
EARLY_NEG_FLAG_RESEND_WKC = 0x0001


def pull_early_negotiation(payload: bytes) -> dict[int, bytes]:
    """Parse the TLV list in a hard reset's payload; unknown types are kept."""
    tlvs: dict[int, bytes] = {}
    offset = 0
    while offset < len(payload):
        if len(payload) - offset < 4:
            raise RemoteProtocolError("truncated early-negotiation TLV")
        tlv_type, length = struct.unpack_from(">HH", payload, offset)
        offset += 4
        if len(payload) - offset < length:
            raise RemoteProtocolError("early-negotiation TLV overruns the packet")
        tlvs[tlv_type] = payload[offset : offset + length]
        offset += length
    return tlvs
