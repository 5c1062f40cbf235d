"""The control channel's reliability layer (reference A.5-A.7).

OpenVPN runs its own small ARQ under TLS: every control packet carries a
message id (per key, per direction, from 0, no gaps); the receiver
acknowledges each id individually and delivers payloads strictly in order.
This module is that layer and nothing else: it never sees TLS or wrapping.

Behaviour copied from OpenVPN 2.6 because peers depend on it:

* send window of 6 ids counted from the lowest unacknowledged one;
* retransmit after ``tls-timeout`` (2 s), doubling after each try;
* fast retransmit once 3 higher ids were acknowledged;
* receive window of 12 ids; anything inside it is acknowledged, duplicates
  included, anything beyond is dropped without an ack;
* recently sent acks are repeated in later packets (an MRU of 8), which is
  what lets a 2.6 server's stateless handshake see the ack of its reset on
  every retransmission of our first TLS packet (reference B.5).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .packet import MAX_ACKS, Opcode

SEND_WINDOW = 6
RECEIVE_WINDOW = 12
FAST_RETRANSMIT_ACKS = 3


@dataclass(slots=True)
class _Outgoing:
    message_id: int
    opcode: Opcode
    payload: bytes
    next_try: float
    timeout: float
    later_acks: int = 0
    sent: int = 0


@dataclass(slots=True)
class ReliableSender:
    """Outgoing half: numbering, retransmission, acknowledgement."""

    initial_timeout: float = 2.0
    next_message_id: int = 0
    _inflight: dict[int, _Outgoing] = field(default_factory=dict)
    _waiting: deque[tuple[Opcode, bytes]] = field(default_factory=deque)

    def queue(self, opcode: Opcode, payload: bytes) -> None:
        """Queue a payload; it gets a message id once the send window allows."""
        self._waiting.append((opcode, payload))

    @property
    def idle(self) -> bool:
        """True once everything queued has been acknowledged."""
        return not self._inflight and not self._waiting

    def is_acked(self, message_id: int) -> bool:
        """Has ``message_id`` been sent and acknowledged?"""
        return message_id < self.next_message_id and message_id not in self._inflight

    def acknowledge(self, ids: tuple[int, ...] | list[int]) -> None:
        """Process a received ack block; unknown or repeated ids are ignored."""
        for message_id in ids:
            entry = self._inflight.pop(message_id, None)
            if entry is None:
                continue
            for other in self._inflight.values():
                if other.message_id < message_id:
                    other.later_acks += 1

    def _admit(self, now: float) -> None:
        lowest = min(self._inflight, default=self.next_message_id)
        while self._waiting and self.next_message_id < lowest + SEND_WINDOW:
            opcode, payload = self._waiting.popleft()
            mid = self.next_message_id
            self.next_message_id += 1
            self._inflight[mid] = _Outgoing(mid, opcode, payload, now, self.initial_timeout)

    def due(self, now: float) -> list[tuple[int, Opcode, bytes]]:
        """Packets to (re)transmit now, lowest id first; updates their timers."""
        self._admit(now)
        out = []
        for mid in sorted(self._inflight):
            entry = self._inflight[mid]
            if entry.next_try <= now or entry.later_acks >= FAST_RETRANSMIT_ACKS:
                if entry.sent:
                    entry.timeout *= 2
                entry.sent += 1
                entry.next_try = now + entry.timeout
                entry.later_acks = 0
                out.append((mid, entry.opcode, entry.payload))
        return out

    def reschedule_all(self, now: float) -> None:
        """Retransmit everything unacknowledged at once (OpenVPN's "burst")."""
        for entry in self._inflight.values():
            entry.next_try = now

    def timer(self) -> float | None:
        """Earliest retransmission deadline, if anything is in flight."""
        if self._waiting and len(self._inflight) < SEND_WINDOW:
            return 0.0
        return min((e.next_try for e in self._inflight.values()), default=None)


@dataclass(slots=True)
class ReliableReceiver:
    """Incoming half: windowing, reordering, in-order delivery, ack bookkeeping."""

    next_expected: int = 0
    _buffered: dict[int, tuple[Opcode, bytes]] = field(default_factory=dict)
    _pending_acks: list[int] = field(default_factory=list)
    _recent_acks: deque[int] = field(default_factory=lambda: deque(maxlen=MAX_ACKS))

    def receive(self, message_id: int, opcode: Opcode, payload: bytes) -> bool:
        """Take one packet; returns False (and does not ack) if outside the window."""
        if message_id >= self.next_expected + RECEIVE_WINDOW:
            return False
        if message_id >= self.next_expected and message_id not in self._buffered:
            self._buffered[message_id] = (opcode, payload)
        if message_id not in self._pending_acks:
            self._pending_acks.append(message_id)
        return True

    def deliver(self) -> list[tuple[Opcode, bytes]]:
        """Payloads now deliverable in order."""
        out = []
        while self.next_expected in self._buffered:
            out.append(self._buffered.pop(self.next_expected))
            self.next_expected += 1
        return out

    @property
    def has_pending_acks(self) -> bool:
        """Something was received that has not been acknowledged yet."""
        return bool(self._pending_acks)

    def take_acks(self, limit: int) -> tuple[int, ...]:
        """Ack ids for an outgoing packet: pending ones, topped up with recent ones."""
        acks = self._pending_acks[:limit]
        del self._pending_acks[:limit]
        for mid in acks:
            if mid in self._recent_acks:
                self._recent_acks.remove(mid)
            self._recent_acks.appendleft(mid)
        for mid in self._recent_acks:
            if len(acks) >= limit:
                break
            if mid not in acks:
                acks.append(mid)
        return tuple(acks)
