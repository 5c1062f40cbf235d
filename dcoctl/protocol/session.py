"""The client side of an OpenVPN 2.x session, sans I/O.

Theory of operation
-------------------
A session is one hard reset: one pair of session ids, one wrapping replay
state. Inside it live *key states*, one per key_id (reference A.9, G): each
has its own reliability layer (message ids restart at 0), its own TLS
connection and, once the key-method 2 exchange finished, its own data keys.

At most two key states matter at any time:

* ``current``: the newest key; it is negotiating, or it is established;
* ``lame duck``: the previous key, kept after a renegotiation so packets
  already in flight under it still decrypt. It dies when its transition
  window expires or when the next renegotiation starts.

Data keys leave this module only as events (:mod:`.events`): the data path,
userspace or kernel, installs them (``KeyInstalled``), switches encryption
(``PrimaryKeyChanged``, reference G.4: the new key is preferred only
``min(hand-window, reneg-sec/2)`` after the soft reset began, so both peers
can already decrypt it) and deletes them (``KeyRetired``).

The driver's loop is the aioquic one::

    session.connect(now)
    loop:
        send(session.packets_to_send(now))
        wait for a packet or session.get_timer()
        session.receive_packet(data, now) / session.handle_timer(now)
        while (event := session.next_event()) is not None: ...

Only control packets come in here; the driver hands P_DATA packets to the
data path directly.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from ..errors import AuthenticationError, RemoteProtocolError
from .events import (
    ControlMessageReceived,
    Event,
    KeyInstalled,
    KeyRetired,
    PrimaryKeyChanged,
    RenegotiationCompleted,
    RenegotiationStarted,
    SessionClosed,
    SessionEstablished,
    TLSEstablished,
)
from .keymethod import (
    PRE_MASTER_SIZE,
    RANDOM_SIZE,
    IVProto,
    KeyMethod2Message,
    KeySource,
    options_string,
    peer_info,
    pull_key_method_2,
    push_key_method_2,
)
from .keys import AEAD_KEY_SIZES, DataKeys, derive_key2_prf, slice_keys
from .options import PushAccumulator, PushedOptions
from .packet import (
    EARLY_NEG_FLAG_RESEND_WKC,
    HARD_RESET_OPCODES,
    MAX_ACKS,
    MAX_PIGGYBACK_ACKS,
    SESSION_ID_SIZE,
    TLV_TYPE_EARLY_NEG_FLAGS,
    ControlPacket,
    Opcode,
    pull_control_body,
    pull_early_negotiation,
    push_control_body,
)
from .reliable import ReliableReceiver, ReliableSender
from .tls import EKM_LABEL_DATAKEYS, TLSEngine, TLSSettings, describe_subject
from .wrapping import ControlWrap, PlainWrap

#: PUSH_REQUEST_INTERVAL: how often an unanswered PUSH_REQUEST is repeated.
PUSH_REQUEST_INTERVAL = 5.0
#: Room left in a 1250-byte datagram for headers (IPv6+UDP estimate, opcode,
#: session id, four piggy-backed acks, message id).
_CONTROL_HEADROOM = 48 + 1 + SESSION_ID_SIZE + 1 + 4 * MAX_PIGGYBACK_ACKS + SESSION_ID_SIZE + 4
PEER_INFO_VERSION = "2.6.14"


class SessionState(Enum):
    """Where the session as a whole stands."""

    IDLE = "idle"
    HANDSHAKE = "handshake"  # hard reset, TLS, key-method 2 for key 0
    PULL = "pull"  # key 0 active, waiting for PUSH_REPLY
    ESTABLISHED = "established"
    CLOSED = "closed"


class KeyPhase(Enum):
    """Per-key progress (OpenVPN's S_PRE_START .. S_GENERATED_KEYS)."""

    PRE_START = "pre-start"  # our reset queued, not yet acknowledged
    START = "start"  # resets exchanged: TLS and key-method 2 running
    ACTIVE = "active"  # both key-method messages done, ours acknowledged
    GENERATED = "generated"  # data keys derived and handed to the data path


@dataclass(frozen=True)
class ClientSettings:
    """What the client core needs from the configuration."""

    tls: TLSSettings
    wrap: ControlWrap = field(default_factory=PlainWrap)
    proto: str = "udp"
    data_ciphers: tuple[str, ...] = ("AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305")
    data_ciphers_fallback: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: Announce TLS-EKM (IV_PROTO bit 3); False forces the legacy PRF.
    announce_ekm: bool = True
    reneg_sec: int = 3600
    hand_window: int = 60
    tls_timeout: float = 2.0
    transition_window: int = 3600
    tun_mtu: int = 1500
    tls_mtu: int = 1250
    pull_filters: tuple[tuple[str, str], ...] = ()
    route_nopull: bool = False
    #: Extra peer-info lines (``setenv UV_*``, ``IV_GUI_VER``).
    extra_peer_info: tuple[tuple[str, str], ...] = ()
    #: tls-crypt-v2: send HARD_RESET_CLIENT_V3 with the wrapped client key.
    tls_crypt_v2: bool = False


@dataclass
class _KeyState:
    key_id: int
    opened_at: float
    tls: TLSEngine
    source: KeySource
    sender: ReliableSender
    receiver: ReliableReceiver = field(default_factory=ReliableReceiver)
    phase: KeyPhase = KeyPhase.PRE_START
    sent_key: bool = False
    peer_message: KeyMethod2Message | None = None
    plaintext: bytearray = field(default_factory=bytearray)
    tls_reported: bool = False
    active_at: float | None = None
    keys: DataKeys | None = None
    promote_at: float | None = None
    expires_at: float | None = None


def next_key_id(key_id: int) -> int:
    """key ids run 0, 1..7, 1..7, ... within a session (reference G.1)."""
    return 1 if key_id >= 7 else key_id + 1


class ClientSession:
    """One OpenVPN client session (hard reset to close), sans I/O."""

    def __init__(
        self, settings: ClientSettings, random_bytes: Callable[[int], bytes] = os.urandom
    ) -> None:
        self.settings = settings
        self._random = random_bytes
        self._wrap = settings.wrap.fresh()
        self._events: deque[Event] = deque()
        self.state = SessionState.IDLE
        self.own_session_id = b""
        self.remote_session_id: bytes | None = None
        self._current: _KeyState | None = None
        self._lame_duck: _KeyState | None = None
        self._push = PushAccumulator(settings.pull_filters, settings.route_nopull)
        self._next_push_request: float | None = None
        self._push_deadline: float | None = None
        self._reneg_at: float | None = None
        self.pushed: PushedOptions | None = None
        self.cipher: str | None = None
        self.key_derivation: str | None = None
        self.peer_id: int | None = None
        self.established_at: float | None = None
        self.last_rekey_at: float | None = None
        #: Wrapped/control packets dropped as invalid, with the last reason.
        self.dropped = 0
        self.last_drop_reason = ""
        self._auth_token: str | None = None

    # -- public API ------------------------------------------------------
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

    @property
    def current_key_id(self) -> int | None:
        """key_id of the newest key state."""
        return None if self._current is None else self._current.key_id

    @property
    def primary_key_id(self) -> int | None:
        """key_id the data path currently encrypts with."""
        for ks in (self._current, self._lame_duck):
            if ks is not None and ks.keys is not None and ks.promote_at is None:
                return ks.key_id
        return None

    def next_event(self) -> Event | None:
        """Pop the next event, or None."""
        return self._events.popleft() if self._events else None

    def receive_packet(self, data: bytes, now: float) -> None:
        """Process one control packet (transport framing already removed).

        Anything invalid (forged, replayed, for another session) is counted
        in :attr:`dropped` and otherwise ignored, as OpenVPN does.
        """
        if self.state in (SessionState.IDLE, SessionState.CLOSED) or not data:
            return
        try:
            prefix, body = self._wrap.unwrap(data, now)
            packet = pull_control_body(prefix, body)
            self._process(packet, now)
        except RemoteProtocolError as exc:
            self.dropped += 1
            self.last_drop_reason = str(exc)

    def packets_to_send(self, now: float) -> list[bytes]:
        """Wire packets to send now (retransmissions and acks included)."""
        out: list[bytes] = []
        if self.state is SessionState.IDLE:
            return out
        for ks in (self._current, self._lame_duck):
            if ks is not None:
                self._flush_tls(ks)
                out.extend(self._packets_for(ks, now))
        return out

    def get_timer(self) -> float | None:
        """The next moment :meth:`handle_timer` must be called."""
        if self.state in (SessionState.IDLE, SessionState.CLOSED):
            return None
        deadlines: list[float] = []
        for ks in (self._current, self._lame_duck):
            if ks is None:
                continue
            timer = ks.sender.timer()
            if timer is not None:
                deadlines.append(timer)
            if ks.receiver.has_pending_acks:
                deadlines.append(0.0)
            if ks.phase in (KeyPhase.PRE_START, KeyPhase.START):
                deadlines.append(ks.opened_at + self.settings.hand_window)
            if ks.promote_at is not None:
                deadlines.append(ks.promote_at)
            if ks.expires_at is not None:
                deadlines.append(ks.expires_at)
        for deadline in (self._next_push_request, self._push_deadline, self._reneg_at):
            if deadline is not None:
                deadlines.append(deadline)
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> None:
        """Run every deadline that has passed."""
        if self.state in (SessionState.IDLE, SessionState.CLOSED):
            return
        current = self._current
        assert current is not None
        if current.phase in (KeyPhase.PRE_START, KeyPhase.START) and (
            now >= current.opened_at + self.settings.hand_window
        ):
            self._close(
                "timeout",
                f"TLS key negotiation failed to occur within {self.settings.hand_window} "
                "seconds (check your network connectivity)",
                reconnect=True,
            )
            return
        if self._push_deadline is not None and now >= self._push_deadline:
            self._close(
                "timeout",
                f"no PUSH_REPLY from the server within {self.settings.hand_window} seconds",
                reconnect=True,
            )
            return
        if self._next_push_request is not None and now >= self._next_push_request:
            self._send_control(current, "PUSH_REQUEST")
            self._next_push_request = now + PUSH_REQUEST_INTERVAL
        for ks in (current, self._lame_duck):
            if ks is not None and ks.promote_at is not None and now >= ks.promote_at:
                self._promote(ks)
        lame = self._lame_duck
        if lame is not None and lame.expires_at is not None and now >= lame.expires_at:
            self._retire_lame_duck()
        if self._reneg_at is not None and now >= self._reneg_at:
            self.renegotiate(now)

    def renegotiate(self, now: float) -> None:
        """Start a soft reset from our side (``reneg-sec``, key exhaustion)."""
        current = self._current
        if self.state is not SessionState.ESTABLISHED or current is None:
            return
        if current.phase is not KeyPhase.GENERATED:
            return  # a renegotiation is already running
        self._start_renegotiation(now, locally=True)

    def send_exit(self) -> bool:
        """Tell the server we are leaving; True if sent on the control channel.

        Only possible when the server negotiated ``cc-exit``; otherwise the
        driver sends OCC_EXIT through the data channel instead (E.7).
        """
        ks = self._current
        if self.pushed is None or not self.pushed.cc_exit or ks is None:
            return False
        if ks.phase not in (KeyPhase.ACTIVE, KeyPhase.GENERATED):
            ks = self._lame_duck
        if ks is None:
            return False
        self._send_control(ks, "EXIT")
        return True

    def close(self, reason: str = "closed locally") -> None:
        """Stop the session without further packets."""
        if self.state is not SessionState.CLOSED:
            self._close("local", reason, reconnect=False)

    # -- packet intake ---------------------------------------------------
    def _process(self, packet: ControlPacket, now: float) -> None:
        if packet.opcode in (
            Opcode.CONTROL_HARD_RESET_CLIENT_V2,
            Opcode.CONTROL_HARD_RESET_CLIENT_V3,
            Opcode.CONTROL_WKC_V1,
        ):
            raise RemoteProtocolError(f"{packet.opcode.name} is not sent by servers")
        if self.remote_session_id is None:
            if packet.opcode is not Opcode.CONTROL_HARD_RESET_SERVER_V2 or packet.key_id != 0:
                raise RemoteProtocolError("expected HARD_RESET_SERVER_V2 first")
            self.remote_session_id = packet.session_id
        elif packet.session_id != self.remote_session_id:
            raise RemoteProtocolError("packet from an unknown session")
        if packet.acks and packet.remote_session_id != self.own_session_id:
            raise RemoteProtocolError("ack for another session id")
        ks = self._key_state(packet.key_id)
        if ks is None:
            current = self._current
            if (
                packet.opcode is Opcode.CONTROL_SOFT_RESET_V1
                and current is not None
                and current.phase is KeyPhase.GENERATED
                and packet.key_id == next_key_id(current.key_id)
            ):
                ks = self._start_renegotiation(now, locally=False)
            else:
                raise RemoteProtocolError(f"packet for unknown key id {packet.key_id}")
        ks.sender.acknowledge(packet.acks)
        if packet.message_id is not None:
            if packet.opcode in HARD_RESET_OPCODES and packet.message_id != 0:
                raise RemoteProtocolError("hard reset with a message id other than 0")
            ks.receiver.receive(packet.message_id, packet.opcode, packet.payload)
            for opcode, payload in ks.receiver.deliver():
                self._deliver(ks, opcode, payload, now)
        self._advance(ks, now)

    def _deliver(self, ks: _KeyState, opcode: Opcode, payload: bytes, now: float) -> None:
        if opcode is Opcode.CONTROL_HARD_RESET_SERVER_V2:
            tlvs = pull_early_negotiation(payload)
            flags = int.from_bytes(tlvs.get(TLV_TYPE_EARLY_NEG_FLAGS, b"\x00\x00"), "big")
            if flags & EARLY_NEG_FLAG_RESEND_WKC and self.settings.tls_crypt_v2:
                # A stateless server wants our wrapped key again: an empty
                # CONTROL_WKC_V1 carries it together with the ack (B.4).
                ks.sender.queue(Opcode.CONTROL_WKC_V1, b"")
            # OpenVPN's "burst": the peer is alive, resend what is pending now.
            ks.sender.reschedule_all(now)
        elif opcode in (Opcode.CONTROL_V1, Opcode.CONTROL_WKC_V1):
            ks.tls.feed(payload)
        elif opcode is not Opcode.CONTROL_SOFT_RESET_V1:
            raise RemoteProtocolError(f"unexpected {opcode.name}")

    def _advance(self, ks: _KeyState, now: float) -> None:
        if (
            ks.phase is KeyPhase.PRE_START
            and ks.sender.is_acked(0)
            and (ks.receiver.next_expected >= 1)
        ):
            ks.phase = KeyPhase.START
        if ks.phase is KeyPhase.PRE_START:
            return
        try:
            data = ks.tls.progress()
        except AuthenticationError as exc:
            self._close("tls-error", str(exc), reconnect=self.established_at is not None)
            return
        if ks.tls.handshake_done:
            if not ks.tls_reported:
                ks.tls_reported = True
                cert = ks.tls.peer_certificate
                self._events.append(
                    TLSEstablished(
                        ks.key_id,
                        ks.tls.version,
                        ks.tls.cipher,
                        describe_subject(cert) if cert is not None else "?",
                    )
                )
            if not ks.sent_key:
                ks.tls.write(push_key_method_2(self._key_method_message(ks)))
                ks.sent_key = True
        if data:
            ks.plaintext += data
            self._consume_plaintext(ks, now)
        if (
            ks.phase is KeyPhase.START
            and ks.sent_key
            and ks.peer_message is not None
            and ks.sender.idle
            and self.state is not SessionState.CLOSED
        ):
            ks.phase = KeyPhase.ACTIVE
            ks.active_at = now
            self._key_active(ks, now)

    def _consume_plaintext(self, ks: _KeyState, now: float) -> None:
        if ks.peer_message is None:
            message, used = pull_key_method_2(bytes(ks.plaintext), from_client=False)
            ks.peer_message = message
            del ks.plaintext[:used]
        while self.state is not SessionState.CLOSED:
            end = ks.plaintext.find(b"\x00")
            if end < 0:
                break
            raw = bytes(ks.plaintext[:end])
            del ks.plaintext[: end + 1]
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            if text and text.isprintable():
                self._control_message(ks, text, now)

    # -- control messages (reference F.1) ----------------------------------
    def _control_message(self, ks: _KeyState, text: str, now: float) -> None:
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
        cipher = options.cipher or self.settings.data_ciphers_fallback
        if cipher is None or cipher not in AEAD_KEY_SIZES:
            self._close(
                "protocol-error",
                f"server negotiated data cipher '{cipher or 'BF-CBC'}'; dcoctl only "
                "supports AEAD ciphers (AES-GCM, CHACHA20-POLY1305)",
                reconnect=False,
            )
            return
        if options.cipher and cipher not in self.settings.data_ciphers:
            self._close(
                "protocol-error",
                f"server pushed cipher {cipher}, which is not in "
                f"data-ciphers {':'.join(self.settings.data_ciphers)}",
                reconnect=False,
            )
            return
        if options.tls_ekm and not self.settings.announce_ekm:
            self._close(
                "protocol-error",
                "server demands TLS-EKM key derivation that we did not offer",
                reconnect=False,
            )
            return
        self.pushed = options
        self.cipher = cipher
        self.key_derivation = "tls-ekm" if options.tls_ekm else "prf"
        self.peer_id = options.peer_id
        self._auth_token = options.auth_token
        self._next_push_request = None
        self._push_deadline = None
        ks = self._current
        assert ks is not None
        self._generate_keys(ks)
        assert ks.keys is not None
        self.state = SessionState.ESTABLISHED
        self.established_at = now
        self._reneg_at = self._reneg_deadline(now)
        self._events.append(KeyInstalled(ks.key_id, ks.keys, True, self.peer_id))
        self._events.append(SessionEstablished(options, cipher, self.key_derivation, self.peer_id))

    # -- key states ----------------------------------------------------------
    def _new_key_state(self, key_id: int, now: float, reset: Opcode) -> _KeyState:
        source = KeySource(
            self._random(RANDOM_SIZE), self._random(RANDOM_SIZE), self._random(PRE_MASTER_SIZE)
        )
        ks = _KeyState(
            key_id,
            now,
            TLSEngine(self.settings.tls, server=False),
            source,
            ReliableSender(initial_timeout=self.settings.tls_timeout),
        )
        ks.sender.queue(reset, b"")
        return ks

    def _key_state(self, key_id: int) -> _KeyState | None:
        for ks in (self._current, self._lame_duck):
            if ks is not None and ks.key_id == key_id:
                return ks
        return None

    def _key_method_message(self, ks: _KeyState) -> KeyMethod2Message:
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
        password = s.password
        if self._auth_token is not None:
            password = self._auth_token
        username = s.username
        if username is None and password is not None:
            username = ""
        options = options_string(
            proto=s.proto,
            tun_mtu=s.tun_mtu,
            server=False,
            tls_auth=type(s.wrap).__name__ == "TLSAuthWrap",
        )
        return KeyMethod2Message(ks.source, options, username, password, peer_info(variables))

    def _key_active(self, ks: _KeyState, now: float) -> None:
        if ks.key_id == 0 and self.state is SessionState.HANDSHAKE:
            self.state = SessionState.PULL
            self._send_control(ks, "PUSH_REQUEST")
            self._next_push_request = now + PUSH_REQUEST_INTERVAL
            self._push_deadline = now + self.settings.hand_window
            return
        # Renegotiated key: same cipher and derivation as key 0, no new push.
        self._generate_keys(ks)
        assert ks.keys is not None
        delay = min(self.settings.hand_window, self.settings.reneg_sec / 2)
        ks.promote_at = max(now, ks.opened_at + delay)
        self.last_rekey_at = now
        self._reneg_at = self._reneg_deadline(now)
        self._events.append(KeyInstalled(ks.key_id, ks.keys, False, self.peer_id))
        self._events.append(RenegotiationCompleted(ks.key_id))

    def _generate_keys(self, ks: _KeyState) -> None:
        assert self.cipher is not None and ks.peer_message is not None
        if self.key_derivation == "tls-ekm":
            key2 = ks.tls.export_keying_material(EKM_LABEL_DATAKEYS, 256)
        else:
            assert self.remote_session_id is not None
            key2 = derive_key2_prf(
                ks.source, ks.peer_message.source, self.own_session_id, self.remote_session_id
            )
        ks.keys = slice_keys(key2, self.cipher, server=False)
        ks.phase = KeyPhase.GENERATED

    def _reneg_deadline(self, now: float) -> float | None:
        return now + self.settings.reneg_sec if self.settings.reneg_sec > 0 else None

    def _start_renegotiation(self, now: float, *, locally: bool) -> _KeyState:
        current = self._current
        assert current is not None
        if current.promote_at is not None:
            self._promote(current)  # never retire the key that still encrypts
        self._retire_lame_duck()
        current.expires_at = now + self.settings.transition_window
        self._lame_duck = current
        ks = self._new_key_state(next_key_id(current.key_id), now, Opcode.CONTROL_SOFT_RESET_V1)
        self._current = ks
        self._reneg_at = None
        self._events.append(RenegotiationStarted(ks.key_id, locally))
        return ks

    def _promote(self, ks: _KeyState) -> None:
        ks.promote_at = None
        self._events.append(PrimaryKeyChanged(ks.key_id))

    def _retire_lame_duck(self) -> None:
        lame = self._lame_duck
        if lame is None:
            return
        self._lame_duck = None
        if lame.keys is not None:
            self._events.append(KeyRetired(lame.key_id))

    # -- packet output -----------------------------------------------------------
    def _send_control(self, ks: _KeyState, text: str) -> None:
        ks.tls.write(text.encode() + b"\x00")

    def _flush_tls(self, ks: _KeyState) -> None:
        if ks.phase is KeyPhase.PRE_START:
            return
        data = ks.tls.outgoing()
        chunk = max(self.settings.tls_mtu - _CONTROL_HEADROOM - self._wrap.overhead, 100)
        for offset in range(0, len(data), chunk):
            ks.sender.queue(Opcode.CONTROL_V1, data[offset : offset + chunk])

    def _packets_for(self, ks: _KeyState, now: float) -> list[bytes]:
        out = []
        for message_id, opcode, payload in ks.sender.due(now):
            acks = ks.receiver.take_acks(MAX_PIGGYBACK_ACKS) if self.remote_session_id else ()
            out.append(
                self._encode(
                    ControlPacket(
                        opcode,
                        ks.key_id,
                        self.own_session_id,
                        acks,
                        self.remote_session_id if acks else None,
                        message_id,
                        payload,
                    ),
                    now,
                )
            )
        if ks.receiver.has_pending_acks and self.remote_session_id is not None:
            # SoftEther workaround of 2.6: no wrapping => at most 4 ids per ACK_V1.
            limit = MAX_PIGGYBACK_ACKS if isinstance(self._wrap, PlainWrap) else MAX_ACKS
            acks = ks.receiver.take_acks(limit)
            out.append(
                self._encode(
                    ControlPacket(
                        Opcode.ACK_V1, ks.key_id, self.own_session_id, acks, self.remote_session_id
                    ),
                    now,
                )
            )
        return out

    def _encode(self, packet: ControlPacket, now: float) -> bytes:
        return self._wrap.wrap(packet.prefix, push_control_body(packet), now)

    def _close(self, kind: str, reason: str, *, reconnect: bool, advance: bool = False) -> None:
        self.state = SessionState.CLOSED
        self._events.append(SessionClosed(kind, reason, reconnect, advance))


__all__ = ["ClientSession", "ClientSettings", "SessionState", "KeyPhase", "next_key_id"]
