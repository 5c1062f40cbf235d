"""What client and server sessions share, sans I/O.

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

Data keys leave the core only as events (:mod:`.events`): the data path,
userspace or kernel, installs them (``KeyInstalled``), switches encryption
(``PrimaryKeyChanged``; reference G.4: the new key is preferred only
``min(hand-window, reneg-sec/2)`` after the soft reset began, so both peers
can already decrypt it) and deletes them (``KeyRetired``).

Roles differ only in who speaks first (the client sends the hard reset and
the first key-method message; the server answers), in what the first key
needs before it is usable (client: PUSH_REPLY; server: authentication and
the push it sends) and in the control messages each understands. Those are
the hooks :class:`ClientSession` and :class:`ServerSession` fill in.

Drivers follow the aioquic loop::

    send(session.packets_to_send(now))
    wait for a packet or session.get_timer()
    session.receive_packet(data, now) / session.handle_timer(now)
    while (event := session.next_event()) is not None: ...

Only control packets come in here; P_DATA packets go to the data path.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from ..errors import AuthenticationError, RemoteProtocolError
from .events import (
    Event,
    KeyInstalled,
    KeyRetired,
    PrimaryKeyChanged,
    RenegotiationCompleted,
    RenegotiationStarted,
    SessionClosed,
    TLSEstablished,
)
from .keymethod import (
    PRE_MASTER_SIZE,
    RANDOM_SIZE,
    KeyMethod2Message,
    KeySource,
    pull_key_method_2,
    push_key_method_2,
)
from .keys import DataKeys, derive_key2_prf, slice_keys
from .packet import (
    HARD_RESET_OPCODES,
    MAX_ACKS,
    MAX_PIGGYBACK_ACKS,
    SESSION_ID_SIZE,
    ControlPacket,
    Opcode,
    pull_control_body,
    push_control_body,
)
from .reliable import ReliableReceiver, ReliableSender
from .tls import EKM_LABEL_DATAKEYS, TLSEngine, TLSSettings, describe_subject
from .wrapping import ControlWrap, PlainWrap

#: Room left in a tls-mtu sized datagram for headers (IPv6+UDP estimate,
#: opcode, session id, four piggy-backed acks, message id).
_CONTROL_HEADROOM = 48 + 1 + SESSION_ID_SIZE + 1 + 4 * MAX_PIGGYBACK_ACKS + SESSION_ID_SIZE + 4


class SessionState(Enum):
    """Where the session as a whole stands."""

    IDLE = "idle"
    HANDSHAKE = "handshake"  # hard reset, TLS, key-method 2 for key 0
    PULL = "pull"  # key 0 active; client waits for PUSH_REPLY, server for auth/push
    ESTABLISHED = "established"
    CLOSED = "closed"


class KeyPhase(Enum):
    """Per-key progress (OpenVPN's S_PRE_START .. S_GENERATED_KEYS)."""

    PRE_START = "pre-start"  # our reset queued, not yet acknowledged
    START = "start"  # resets exchanged: TLS and key-method 2 running
    ACTIVE = "active"  # both key-method messages done, ours acknowledged
    GENERATED = "generated"  # data keys derived and handed to the data path


@dataclass(frozen=True)
class SessionSettings:
    """Settings both roles need."""

    tls: TLSSettings
    wrap: ControlWrap = field(default_factory=PlainWrap)
    proto: str = "udp"
    data_ciphers: tuple[str, ...] = ("AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305")
    reneg_sec: int = 3600
    hand_window: int = 60
    tls_timeout: float = 2.0
    transition_window: int = 3600
    tun_mtu: int = 1500
    tls_mtu: int = 1250


@dataclass
class KeyState:
    """One key_id's negotiation and, once done, its data keys."""

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


class Session:
    """Machinery shared by :class:`ClientSession` and :class:`ServerSession`."""

    is_server = False

    def __init__(
        self, settings: SessionSettings, random_bytes: Callable[[int], bytes] = os.urandom
    ) -> None:
        self.settings = settings
        self._random = random_bytes
        self._wrap = settings.wrap.fresh()
        self._events: deque[Event] = deque()
        self.state = SessionState.IDLE
        self.own_session_id = b""
        self.remote_session_id: bytes | None = None
        self._current: KeyState | None = None
        self._lame_duck: KeyState | None = None
        self._reneg_at: float | None = None
        self.cipher: str | None = None
        self.key_derivation: str | None = None
        self.peer_id: int | None = None
        self.established_at: float | None = None
        self.last_rekey_at: float | None = None
        #: Control packets dropped as invalid, and the last reason.
        self.dropped = 0
        self.last_drop_reason = ""

    # -- public API ------------------------------------------------------
    @property
    def current_key_id(self) -> int | None:
        """key_id of the newest key state."""
        return None if self._current is None else self._current.key_id

    @property
    def primary_key_id(self) -> int | None:
        """key_id the data path currently encrypts with."""
        current, lame = self._current, self._lame_duck
        if current is not None and current.keys is not None and current.promote_at is None:
            return current.key_id
        if lame is not None and lame.keys is not None:
            return lame.key_id
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
            self.receive_unwrapped(pull_control_body(prefix, body), now)
        except RemoteProtocolError as exc:
            self.dropped += 1
            self.last_drop_reason = str(exc)

    def receive_unwrapped(self, packet: ControlPacket, now: float) -> None:
        """Process a control packet whose wrapping was already verified."""
        self._process(packet, now)

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
        deadlines = self._role_deadlines()
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
        if self._reneg_at is not None:
            deadlines.append(self._reneg_at)
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
        if not self._role_timers(current, now):
            return
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

    def send_control(self, text: str) -> bool:
        """Send a control-channel message on the newest usable key.

        Usable means our key-method message is written (control messages
        must follow it inside TLS); it need not be acknowledged yet.
        """
        for ks in (self._current, self._lame_duck):
            if ks is not None and ks.sent_key:
                ks.tls.write(text.encode() + b"\x00")
                self._flush_tls(ks)
                return True
        return False

    def close(self, reason: str = "closed locally") -> None:
        """Stop the session without further packets."""
        if self.state is not SessionState.CLOSED:
            self._close("local", reason, reconnect=False)

    # -- role hooks ------------------------------------------------------------
    def _accept_first_packet(self, packet: ControlPacket) -> None:
        """Check the very first packet from the peer (sets remote_session_id)."""
        raise NotImplementedError

    def _key_method_message(self, ks: KeyState) -> KeyMethod2Message:
        raise NotImplementedError

    def _may_send_key(self, ks: KeyState) -> bool:
        """May our key-method message go out now?"""
        raise NotImplementedError

    def _initial_key_active(self, ks: KeyState, now: float) -> None:
        raise NotImplementedError

    def _control_message(self, ks: KeyState, text: str, now: float) -> None:
        raise NotImplementedError

    def _role_deadlines(self) -> list[float]:
        return []

    def _role_timers(self, current: KeyState, now: float) -> bool:
        """Role-specific deadlines (push, auth); False if the session closed."""
        return True

    def _handle_reset_payload(
        self, ks: KeyState, opcode: Opcode, payload: bytes, now: float
    ) -> None:
        """The peer's hard reset was delivered (its payload holds TLVs)."""
        ks.sender.reschedule_all(now)

    # -- packet intake ---------------------------------------------------
    def _process(self, packet: ControlPacket, now: float) -> None:
        if self.remote_session_id is None:
            self._accept_first_packet(packet)
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

    def _deliver(self, ks: KeyState, opcode: Opcode, payload: bytes, now: float) -> None:
        if opcode in HARD_RESET_OPCODES:
            self._handle_reset_payload(ks, opcode, payload, now)
        elif opcode in (Opcode.CONTROL_V1, Opcode.CONTROL_WKC_V1):
            ks.tls.feed(payload)
        elif opcode is not Opcode.CONTROL_SOFT_RESET_V1:
            raise RemoteProtocolError(f"unexpected {opcode.name}")

    def _advance(self, ks: KeyState, now: float) -> None:
        if (
            ks.phase is KeyPhase.PRE_START
            and ks.sender.is_acked(0)
            and ks.receiver.next_expected >= 1
        ):
            ks.phase = KeyPhase.START
        if ks.phase is KeyPhase.PRE_START:
            return
        try:
            data = ks.tls.progress()
        except AuthenticationError as exc:
            self._close("tls-error", str(exc), reconnect=self.established_at is not None)
            return
        if ks.tls.handshake_done and not ks.tls_reported:
            ks.tls_reported = True
            cert = ks.tls.peer_certificate
            self._events.append(
                TLSEstablished(
                    ks.key_id,
                    ks.tls.version,
                    ks.tls.cipher,
                    describe_subject(cert) if cert is not None else "(no certificate)",
                )
            )
        if data:
            ks.plaintext += data
            self._consume_plaintext(ks, now)
        if (
            ks.tls.handshake_done
            and not ks.sent_key
            and self.state is not SessionState.CLOSED
            and self._may_send_key(ks)
        ):
            ks.tls.write(push_key_method_2(self._key_method_message(ks)))
            ks.sent_key = True
        # Queue TLS output now, so get_timer() sees it before packets_to_send().
        self._flush_tls(ks)
        if (
            ks.phase is KeyPhase.START
            and ks.sent_key
            and ks.peer_message is not None
            and ks.sender.idle
            and self.state is not SessionState.CLOSED
        ):
            ks.phase = KeyPhase.ACTIVE
            ks.active_at = now
            if ks.key_id == 0 and self.state is SessionState.HANDSHAKE:
                self._initial_key_active(ks, now)
            else:
                self._rekeyed(ks, now)

    def _consume_plaintext(self, ks: KeyState, now: float) -> None:
        if ks.peer_message is None:
            message, used = pull_key_method_2(bytes(ks.plaintext), from_client=self.is_server)
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

    # -- key states ----------------------------------------------------------
    def _new_key_state(self, key_id: int, now: float, reset: Opcode | None) -> KeyState:
        """A fresh key state; ``reset`` (if any) is queued as message id 0."""
        source = KeySource(
            self._random(RANDOM_SIZE),
            self._random(RANDOM_SIZE),
            None if self.is_server else self._random(PRE_MASTER_SIZE),
        )
        ks = KeyState(
            key_id,
            now,
            TLSEngine(self.settings.tls, server=self.is_server),
            source,
            ReliableSender(initial_timeout=self.settings.tls_timeout),
        )
        if reset is not None:
            ks.sender.queue(reset, b"")
        return ks

    def _key_state(self, key_id: int) -> KeyState | None:
        for ks in (self._current, self._lame_duck):
            if ks is not None and ks.key_id == key_id:
                return ks
        return None

    def _rekeyed(self, ks: KeyState, now: float) -> None:
        # Renegotiated key: same cipher and derivation as key 0, no new push.
        keys = self._generate_keys(ks)
        self.last_rekey_at = now
        self._reneg_at = self._reneg_deadline(now)
        self._events.append(KeyInstalled(ks.key_id, keys, False, self.peer_id))
        self._events.append(RenegotiationCompleted(ks.key_id))
        # OpenVPN's tls_select_encryption_key (reference G.4): a key "matures"
        # min(hand-window, reneg-sec/2) after its start; the older key keeps
        # encrypting only while it is mature and the new one is not. So with
        # a young previous key the new one is used at once (peers rekeying
        # every few seconds rely on that); otherwise after its own window.
        # Unlike 2.6 we never switch back once switched (its issue #944).
        window = min(self.settings.hand_window, self.settings.reneg_sec / 2)
        lame = self._lame_duck
        if lame is None or now < lame.opened_at + window:
            self._promote(ks)
        else:
            ks.promote_at = max(now, ks.opened_at + window)

    def _generate_keys(self, ks: KeyState) -> DataKeys:
        assert self.cipher is not None and ks.peer_message is not None
        if self.key_derivation == "tls-ekm":
            key2 = ks.tls.export_keying_material(EKM_LABEL_DATAKEYS, 256)
        else:
            assert self.remote_session_id is not None
            client, server = ks.source, ks.peer_message.source
            client_sid, server_sid = self.own_session_id, self.remote_session_id
            if self.is_server:
                client, server = server, client
                client_sid, server_sid = server_sid, client_sid
            key2 = derive_key2_prf(client, server, client_sid, server_sid)
        ks.keys = slice_keys(key2, self.cipher, server=self.is_server)
        ks.phase = KeyPhase.GENERATED
        return ks.keys

    def _reneg_deadline(self, now: float) -> float | None:
        return now + self.settings.reneg_sec if self.settings.reneg_sec > 0 else None

    def _start_renegotiation(self, now: float, *, locally: bool) -> KeyState:
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

    def _promote(self, ks: KeyState) -> None:
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
    def _flush_tls(self, ks: KeyState) -> None:
        if ks.phase is KeyPhase.PRE_START:
            return
        data = ks.tls.outgoing()
        chunk = max(self.settings.tls_mtu - _CONTROL_HEADROOM - self._wrap.overhead, 100)
        for offset in range(0, len(data), chunk):
            ks.sender.queue(Opcode.CONTROL_V1, data[offset : offset + chunk])

    def _packets_for(self, ks: KeyState, now: float) -> list[bytes]:
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
