"""The server role of an OpenVPN 2.x session (reference B.5, C, F.4, F.5).

A server session starts from the client's reset: statefully (TCP, or UDP
without cookies) it answers with HARD_RESET_SERVER_V2 itself; after the
stateless UDP handshake of :mod:`.handshake` it starts as if its reset had
been sent and acknowledged. It reads the client's key-method message first,
answers with its own, and asks its driver to authenticate the client
(:class:`AuthenticationRequested`). The driver answers with
:meth:`ServerSession.accept_client` (address, routes, pushes) or
:meth:`ServerSession.reject_client`; the session then negotiates the cipher
as 2.6 does, derives keys and sends the PUSH_REPLY.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import RemoteProtocolError
from .events import (
    AuthenticationRequested,
    ControlMessageReceived,
    KeyInstalled,
    SessionEstablished,
)
from .keymethod import IVProto, KeyMethod2Message, options_string
from .keys import AEAD_KEY_SIZES
from .options import PushAccumulator, format_push_replies
from .packet import SESSION_ID_SIZE, ControlPacket, Opcode
from .session import KeyPhase, KeyState, Session, SessionSettings, SessionState
from .wrapping import TLSAuthWrap

#: After AUTH_FAILED, keep the session this long so the message is delivered.
REJECT_LINGER = 3.0


@dataclass(frozen=True)
class ServerSettings(SessionSettings):
    """What a server session needs besides the shared settings."""


def negotiate_cipher(server_ciphers: tuple[str, ...], peer_info: dict[str, str]) -> str | None:
    """OpenVPN 2.6's NCP: the first of the server's ciphers the client has (F.5)."""
    if "IV_CIPHERS" in peer_info:
        offered = {c.upper() for c in peer_info["IV_CIPHERS"].split(":")}
    elif peer_info.get("IV_NCP", "0").isdigit() and int(peer_info.get("IV_NCP", "0")) >= 2:
        offered = {"AES-256-GCM", "AES-128-GCM"}
    else:
        offered = set()
    for cipher in server_ciphers:
        if cipher in offered and cipher in AEAD_KEY_SIZES:
            return cipher
    return None


class ServerSession(Session):
    """One client's session on a server, sans I/O."""

    is_server = True
    settings: ServerSettings

    def __init__(
        self,
        settings: ServerSettings,
        first: ControlPacket,
        now: float,
        *,
        cookie: bytes | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        """Start from the client's first packet.

        ``cookie`` is set when the stateless handshake already answered the
        reset: it is our session id, and ``first`` is the client's follow-up.
        """
        super().__init__(settings, random_bytes)
        self.remote_session_id = first.session_id
        self.state = SessionState.HANDSHAKE
        self.peer_info: dict[str, str] = {}
        self.username: str | None = None
        self._authorized: bool | None = None
        self._push_requested = False
        self._reply: list[str] = []
        self._close_at: float | None = None
        self._reject_reason = ""
        if cookie is not None:
            self.own_session_id = cookie
            ks = self._new_key_state(0, now, None)
            # Our reset (id 0) went out statelessly and the client acked it;
            # its reset (id 0) was received; the wrap counter used pid 1.
            ks.sender.next_message_id = 1
            ks.receiver.next_expected = 1
            ks.phase = KeyPhase.START
            self._wrap.skip_send_ids(1)
            self._current = ks
            self.receive_unwrapped(first, now)
        else:
            sid = b"\x00" * SESSION_ID_SIZE
            while sid == b"\x00" * SESSION_ID_SIZE:
                sid = self._random(SESSION_ID_SIZE)
            self.own_session_id = sid
            self._current = self._new_key_state(0, now, Opcode.CONTROL_HARD_RESET_SERVER_V2)
            self.receive_unwrapped(first, now)

    # -- driver decisions --------------------------------------------------------
    def accept_client(self, push: list[str], peer_id: int, now: float) -> None:
        """Authentication passed: negotiate, derive keys, push ``push`` + our options."""
        if self._authorized is not None or self.state is SessionState.CLOSED:
            return
        cipher = negotiate_cipher(self.settings.data_ciphers, self.peer_info)
        if cipher is None:
            self.reject_client("Data channel cipher negotiation failed (no shared cipher)", now)
            return
        proto = int(self.peer_info.get("IV_PROTO", "0") or 0)
        if not proto & IVProto.DATA_V2:
            self.reject_client("Data channel negotiation failed (missing DATA_V2)", now)
            return
        self._authorized = True
        self.cipher = cipher
        self.peer_id = peer_id
        self.key_derivation = "tls-ekm" if proto & IVProto.TLS_KEY_EXPORT else "prf"
        options = list(push) + [f"peer-id {peer_id}", f"cipher {cipher}"]
        if proto & IVProto.CC_EXIT_NOTIFY:
            flags = ["cc-exit"] + (["tls-ekm"] if self.key_derivation == "tls-ekm" else [])
            options.append("protocol-flags " + " ".join(flags))
        elif self.key_derivation == "tls-ekm":
            options.append("key-derivation tls-ekm")
        if "IV_MTU" in self.peer_info:
            options.append(f"tun-mtu {self.settings.tun_mtu}")
        self._reply = format_push_replies(options)
        ks = self._current
        assert ks is not None
        keys = self._generate_keys(ks)
        self.state = SessionState.ESTABLISHED
        self.established_at = now
        self._reneg_at = self._reneg_deadline(now)
        self._events.append(KeyInstalled(ks.key_id, keys, True, peer_id))
        pushed = PushAccumulator().feed_all(self._reply)
        self._events.append(SessionEstablished(pushed, cipher, self.key_derivation, peer_id))
        if self._push_requested or proto & IVProto.REQUEST_PUSH:
            self._send_push_reply()

    def reject_client(self, reason: str, now: float) -> None:
        """Authentication failed: AUTH_FAILED to the client, then close."""
        if self._authorized is not None:
            return
        self._authorized = False
        self._reject_reason = reason
        self.send_control(f"AUTH_FAILED,{reason}" if reason else "AUTH_FAILED")
        self._close_at = now + REJECT_LINGER

    def send_restart(self) -> None:
        """Ask the client to reconnect (server shutting down, explicit-exit-notify)."""
        self.send_control("RESTART")

    # -- hooks -------------------------------------------------------------------
    def _accept_first_packet(self, packet: ControlPacket) -> None:
        raise RemoteProtocolError("session already has a peer")  # set in __init__

    def _handle_reset_payload(
        self, ks: KeyState, opcode: Opcode, payload: bytes, now: float
    ) -> None:
        if opcode is Opcode.CONTROL_HARD_RESET_SERVER_V2:
            raise RemoteProtocolError("HARD_RESET_SERVER_V2 is not sent by clients")
        super()._handle_reset_payload(ks, opcode, payload, now)

    def _may_send_key(self, ks: KeyState) -> bool:
        return ks.peer_message is not None  # the client speaks first

    def _key_method_message(self, ks: KeyState) -> KeyMethod2Message:
        s = self.settings
        options = options_string(
            proto=s.proto, tun_mtu=s.tun_mtu, server=True, tls_auth=isinstance(s.wrap, TLSAuthWrap)
        )
        return KeyMethod2Message(ks.source, options)

    def _consume_plaintext(self, ks: KeyState, now: float) -> None:
        first = ks.peer_message is None
        super()._consume_plaintext(ks, now)
        if first and ks.peer_message is not None and ks.key_id == 0:
            message = ks.peer_message
            self.peer_info = message.peer_info_vars()
            self.username = message.username
            cert = ks.tls.peer_certificate
            self._events.append(
                AuthenticationRequested(
                    common_name=_common_name(cert) if cert is not None else None,
                    username=message.username,
                    password=message.password,
                    peer_info=dict(self.peer_info),
                )
            )

    def _initial_key_active(self, ks: KeyState, now: float) -> None:
        if self.state is SessionState.HANDSHAKE:
            self.state = SessionState.PULL

    def _rekeyed(self, ks: KeyState, now: float) -> None:
        if self.cipher is None:
            return  # never authorized: nothing to rekey
        super()._rekeyed(ks, now)

    def _role_deadlines(self) -> list[float]:
        return [self._close_at] if self._close_at is not None else []

    def _role_timers(self, current: KeyState, now: float) -> bool:
        if self._close_at is not None and now >= self._close_at:
            self._close("auth-failed", self._reject_reason or "AUTH_FAILED", reconnect=False)
            return False
        return True

    def _control_message(self, ks: KeyState, text: str, now: float) -> None:
        command = text.split(",", 1)[0]
        if command == "PUSH_REQUEST":
            self._push_requested = True
            if self._authorized and self._reply:
                self._send_push_reply()
            elif self._authorized is False:
                self.send_control(f"AUTH_FAILED,{self._reject_reason}")
        elif command == "EXIT":
            self._close("exit", "client sent EXIT", reconnect=False)
        else:
            self._events.append(ControlMessageReceived(text))

    def _send_push_reply(self) -> None:
        for message in self._reply:
            self.send_control(message)


def _common_name(cert: object) -> str | None:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    assert isinstance(cert, x509.Certificate)
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else None
