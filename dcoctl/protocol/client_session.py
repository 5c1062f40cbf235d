"""The client role of an OpenVPN 2.x session (reference A.10, C, F).

The client sends the hard reset, speaks first inside TLS (key-method 2 with
its peer-info), then pulls its configuration: PUSH_REQUEST every 5 s until a
(possibly multi-part) PUSH_REPLY arrives, and only then derives the first
data keys with the cipher and derivation method the server chose.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import RemoteProtocolError
from .events import ControlMessageReceived, KeyInstalled, SessionEstablished
from .keymethod import IVProto, KeyMethod2Message, options_string, peer_info
from .keys import AEAD_KEY_SIZES
from .options import PushAccumulator, PushedOptions
from .packet import (
    EARLY_NEG_FLAG_RESEND_WKC,
    SESSION_ID_SIZE,
    TLV_TYPE_EARLY_NEG_FLAGS,
    ControlPacket,
    Opcode,
    pull_early_negotiation,
)
from .session import KeyState, Session, SessionSettings, SessionState
from .wrapping import TLSAuthWrap

#: PUSH_REQUEST_INTERVAL: how often an unanswered PUSH_REQUEST is repeated.
PUSH_REQUEST_INTERVAL = 5.0
#: What we claim in IV_VER: servers gate features on 2.x version numbers.
PEER_INFO_VERSION = "2.6.14"


@dataclass(frozen=True)
class ClientSettings(SessionSettings):
    """What the client core needs from the configuration."""

    data_ciphers_fallback: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: Announce TLS-EKM (IV_PROTO bit 3); False forces the legacy PRF.
    announce_ekm: bool = True
    pull_filters: tuple[tuple[str, str], ...] = ()
    route_nopull: bool = False
    #: Extra peer-info lines (``setenv UV_*``, ``IV_GUI_VER``).
    extra_peer_info: tuple[tuple[str, str], ...] = ()
    #: tls-crypt-v2: send HARD_RESET_CLIENT_V3 with the wrapped client key.
    tls_crypt_v2: bool = False


class ClientSession(Session):
    """One OpenVPN client session (hard reset to close), sans I/O."""

    settings: ClientSettings

    def __init__(
        self, settings: ClientSettings, random_bytes: Callable[[int], bytes] = os.urandom
    ) -> None:
        super().__init__(settings, random_bytes)
        self._push = PushAccumulator(settings.pull_filters, settings.route_nopull)
        self._next_push_request: float | None = None
        self._push_deadline: float | None = None
        self.pushed: PushedOptions | None = None
        self._auth_token: str | None = None

    def connect(self, now: float) -> None:
        """Start the session: queue HARD_RESET_CLIENT_V2 (V3 for tls-crypt-v2)."""
        if self.state is not SessionState.IDLE:
            raise RuntimeError("connect() called twice")
        sid = b"\x00" * SESSION_ID_SIZE
        while sid == b"\x00" * SESSION_ID_SIZE:
            sid = self._random(SESSION_ID_SIZE)
        self.own_session_id = sid
        opcode = (
            Opcode.CONTROL_HARD_RESET_CLIENT_V3
            if self.settings.tls_crypt_v2
            else Opcode.CONTROL_HARD_RESET_CLIENT_V2
        )
        self._current = self._new_key_state(0, now, opcode)
        self.state = SessionState.HANDSHAKE

    def send_exit(self) -> bool:
        """Tell the server we are leaving; True if sent on the control channel.

        Only possible when the server negotiated ``cc-exit``; otherwise the
        driver sends OCC_EXIT through the data channel instead (E.7).
        """
        if self.pushed is None or not self.pushed.cc_exit:
            return False
        return self.send_control("EXIT")

    # -- hooks -------------------------------------------------------------------
    def _accept_first_packet(self, packet: ControlPacket) -> None:
        if packet.opcode is not Opcode.CONTROL_HARD_RESET_SERVER_V2 or packet.key_id != 0:
            raise RemoteProtocolError("expected HARD_RESET_SERVER_V2 first")
        self.remote_session_id = packet.session_id

    def _handle_reset_payload(
        self, ks: KeyState, opcode: Opcode, payload: bytes, now: float
    ) -> None:
        if opcode is not Opcode.CONTROL_HARD_RESET_SERVER_V2:
            raise RemoteProtocolError(f"{opcode.name} is not sent by servers")
        tlvs = pull_early_negotiation(payload)
        flags = int.from_bytes(tlvs.get(TLV_TYPE_EARLY_NEG_FLAGS, b"\x00\x00"), "big")
        if flags & EARLY_NEG_FLAG_RESEND_WKC and self.settings.tls_crypt_v2:
            # A stateless server wants our wrapped key again: an empty
            # CONTROL_WKC_V1 carries it together with the ack (B.4).
            ks.sender.queue(Opcode.CONTROL_WKC_V1, b"")
        super()._handle_reset_payload(ks, opcode, payload, now)

    def _may_send_key(self, ks: KeyState) -> bool:
        return True  # the client speaks first

    def _key_method_message(self, ks: KeyState) -> KeyMethod2Message:
        s = self.settings
        proto = IVProto.DATA_V2 | IVProto.REQUEST_PUSH | IVProto.AUTH_PENDING_KW
        proto |= IVProto.CC_EXIT_NOTIFY | IVProto.AUTH_FAIL_TEMP
        if s.announce_ekm:
            proto |= IVProto.TLS_KEY_EXPORT
        variables = {
            "IV_VER": PEER_INFO_VERSION,
            "IV_PLAT": "linux",
            "IV_TCPNL": "1",
            "IV_MTU": "1600",
        }
        if "AES-256-GCM" in s.data_ciphers and "AES-128-GCM" in s.data_ciphers:
            variables["IV_NCP"] = "2"
        variables["IV_CIPHERS"] = ":".join(s.data_ciphers)
        variables["IV_PROTO"] = str(proto)
        variables.update(dict(s.extra_peer_info))
        password = self._auth_token if self._auth_token is not None else s.password
        username = s.username
        if username is None and password is not None:
            username = ""
        options = options_string(
            proto=s.proto, tun_mtu=s.tun_mtu, server=False, tls_auth=isinstance(s.wrap, TLSAuthWrap)
        )
        return KeyMethod2Message(ks.source, options, username, password, peer_info(variables))

    def _initial_key_active(self, ks: KeyState, now: float) -> None:
        self.state = SessionState.PULL
        self.send_control("PUSH_REQUEST")
        self._next_push_request = now + PUSH_REQUEST_INTERVAL
        self._push_deadline = now + self.settings.hand_window

    def _role_deadlines(self) -> list[float]:
        return [d for d in (self._next_push_request, self._push_deadline) if d is not None]

    def _role_timers(self, current: KeyState, now: float) -> bool:
        if self._push_deadline is not None and now >= self._push_deadline:
            self._close(
                "timeout",
                f"no PUSH_REPLY from the server within {self.settings.hand_window} seconds",
                reconnect=True,
            )
            return False
        if self._next_push_request is not None and now >= self._next_push_request:
            self.send_control("PUSH_REQUEST")
            self._next_push_request = now + PUSH_REQUEST_INTERVAL
        return True

    # -- control messages (reference F.1) ----------------------------------
    def _control_message(self, ks: KeyState, text: str, now: float) -> None:
        command = text.split(",", 1)[0]
        detail = text[len(command) + 1 :]
        if command == "PUSH_REPLY":
            self._push_reply(text, now)
        elif command == "AUTH_FAILED":
            temp = detail.startswith("TEMP")
            self._close(
                "auth-failed", f"AUTH_FAILED{': ' + detail if detail else ''}", reconnect=temp
            )
        elif command in ("RESTART", "HALT"):
            flags = ""
            if detail.startswith("[") and "]" in detail:
                flags, detail = detail[1:].split("]", 1)
            self._close(
                command.lower(),
                f"server sent {command}{': ' + detail if detail else ''}",
                reconnect=command == "RESTART",
                advance="N" in flags,
            )
        elif command == "EXIT":
            self._close("exit", "server is exiting (EXIT)", reconnect=True)
        elif command == "AUTH_PENDING":
            timeout = float(self.settings.hand_window)
            if detail.startswith("timeout "):
                try:
                    timeout = float(detail.split()[1])
                except (IndexError, ValueError):
                    pass
            if self._push_deadline is not None:
                self._push_deadline = now + timeout
            self._events.append(ControlMessageReceived(text))
        else:
            self._events.append(ControlMessageReceived(text))

    def _push_reply(self, text: str, now: float) -> None:
        if self.state is not SessionState.PULL:
            return  # a late duplicate of a reply we already applied
        try:
            options = self._push.feed(text)
        except PermissionError as exc:
            self._close("protocol-error", str(exc), reconnect=False)
            return
        except RemoteProtocolError as exc:
            self._close("protocol-error", str(exc), reconnect=True)
            return
        if options is None:
            return
        problem = self._check_push(options)
        if problem is not None:
            self._close("protocol-error", problem, reconnect=False)
            return
        self.pushed = options
        self.cipher = options.cipher or self.settings.data_ciphers_fallback
        self.key_derivation = "tls-ekm" if options.tls_ekm else "prf"
        self.peer_id = options.peer_id
        self._auth_token = options.auth_token
        self._next_push_request = None
        self._push_deadline = None
        ks = self._current
        assert ks is not None and self.cipher is not None
        keys = self._generate_keys(ks)
        self.state = SessionState.ESTABLISHED
        self.established_at = now
        self._reneg_at = self._reneg_deadline(now)
        self._events.append(KeyInstalled(ks.key_id, keys, True, self.peer_id))
        self._events.append(
            SessionEstablished(options, self.cipher, self.key_derivation, self.peer_id)
        )

    def _check_push(self, options: PushedOptions) -> str | None:
        cipher = options.cipher or self.settings.data_ciphers_fallback
        if cipher is None or cipher not in AEAD_KEY_SIZES:
            return (
                f"server negotiated data cipher '{cipher or 'BF-CBC'}'; dcoctl only "
                "supports AEAD ciphers (AES-GCM, CHACHA20-POLY1305)"
            )
        if options.cipher and cipher not in self.settings.data_ciphers:
            return (
                f"server pushed cipher {cipher}, which is not in data-ciphers "
                f"{':'.join(self.settings.data_ciphers)}"
            )
        if options.tls_ekm and not self.settings.announce_ekm:
            return "server demands TLS-EKM key derivation that we did not offer"
        return None
