"""The stateless UDP handshake of OpenVPN 2.6 servers (reference B.5).

A reset from an unknown address allocates nothing: the answer's session id
is an HMAC cookie over (time slot, client address, client session id). Only
a follow-up packet that acknowledges our reset under a cookie we can
recompute proves the client owns its address; then a session is created.
A flood of spoofed resets therefore costs one HMAC and one reply each, and
no memory.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from ..errors import RemoteProtocolError
from .packet import (
    SESSION_ID_SIZE,
    ControlPacket,
    Opcode,
    pull_control_body,
    push_control_body,
)
from .wrapping import ControlWrap

_RESETS = frozenset({Opcode.CONTROL_HARD_RESET_CLIENT_V2, Opcode.CONTROL_HARD_RESET_CLIENT_V3})
_FOLLOW_UPS = frozenset({Opcode.CONTROL_V1, Opcode.ACK_V1, Opcode.CONTROL_WKC_V1})


@dataclass(frozen=True)
class HandshakeReply:
    """Send ``packet`` back to the sender; keep no state."""

    packet: bytes


@dataclass(frozen=True)
class HandshakeAccept:
    """The sender proved its address: create a session from ``packet``."""

    packet: ControlPacket
    cookie: bytes
    wrap: ControlWrap


@dataclass(frozen=True)
class HandshakeDrop:
    """Ignore the packet (``reason`` is for counters and debug logs)."""

    reason: str


HandshakeOutcome = HandshakeReply | HandshakeAccept | HandshakeDrop


class StatelessResponder:
    """Answers resets and validates cookies for one server socket."""

    def __init__(
        self, wrap: ControlWrap, hand_window: int = 60, secret: bytes | None = None
    ) -> None:
        self._wrap = wrap
        self._secret = secret or os.urandom(32)
        # OpenVPN's slot length: cookies stay valid for 2-3 slots (60-90 s).
        self._slot_seconds = max(1, (hand_window + 1) // 2)

    def cookie(self, address: bytes, client_sid: bytes, slot: int) -> bytes:
        """Our session id for this client in time slot ``slot``."""
        digest = hmac.new(
            self._secret, slot.to_bytes(8, "big") + address + client_sid, hashlib.sha256
        ).digest()
        sid = digest[:SESSION_ID_SIZE]
        return sid if any(sid) else b"\x01" + sid[1:]

    def handle(
        self,
        data: bytes,
        address: bytes,
        now: float,
        wrap: ControlWrap | None = None,
        reply_payload: bytes = b"",
    ) -> HandshakeOutcome:
        """Process a control packet from an address that has no session.

        ``address`` is any stable encoding of the source (IP and port);
        ``wrap`` overrides the wrapping (tls-crypt-v2: the client's own key);
        ``reply_payload`` goes into our reset (early-negotiation TLVs, B.4).
        """
        template = wrap or self._wrap
        try:
            prefix, body = template.fresh().unwrap(data, now)
            packet = pull_control_body(prefix, body)
        except RemoteProtocolError as exc:
            return HandshakeDrop(str(exc))
        if packet.key_id != 0:
            return HandshakeDrop("unknown peer sent a key id other than 0")
        slot = int(now) // self._slot_seconds
        if packet.opcode in _RESETS:
            if packet.message_id != 0 or packet.acks:
                return HandshakeDrop("malformed client reset")
            sid = self.cookie(address, packet.session_id, slot)
            reply = ControlPacket(
                Opcode.CONTROL_HARD_RESET_SERVER_V2,
                0,
                sid,
                (0,),
                packet.session_id,
                0,
                reply_payload,
            )
            wire = template.fresh().wrap(reply.prefix, push_control_body(reply), now)
            return HandshakeReply(wire)
        if packet.opcode not in _FOLLOW_UPS:
            return HandshakeDrop(f"{packet.opcode.name} from an unknown peer")
        if not packet.acks or 0 not in packet.acks or max(packet.acks) > 1:
            return HandshakeDrop("first packet does not acknowledge our reset")
        if packet.message_id is not None and packet.message_id > 1:
            return HandshakeDrop("first packet has a message id beyond 1")
        assert packet.remote_session_id is not None
        for candidate in (slot, slot - 1, slot - 2):
            expected = self.cookie(address, packet.session_id, candidate)
            if hmac.compare_digest(packet.remote_session_id, expected):
                return HandshakeAccept(packet, expected, template)
        return HandshakeDrop("invalid or expired handshake cookie")
