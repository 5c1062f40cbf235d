"""Sliding-window replay protection (reference E.4 and B.2).

One window per key and direction on the data channel (sequence only: AEAD
packets have no time field) and one per session on the tls-auth/tls-crypt
wrapping layer (sequence plus the sender's ``net_time``).
"""

from __future__ import annotations


class ReplayWindow:
    """Accept each packet id at most once, within ``size`` of the highest seen.

    ``check`` only answers; ``commit`` records. They are separate because the
    data channel must authenticate a packet before it may move the window
    (otherwise a forged packet id could push honest packets out of it).
    """

    __slots__ = ("size", "_highest", "_bitmap", "_epoch")

    def __init__(self, size: int = 64) -> None:
        if size < 1:
            raise ValueError("replay window must be at least 1")
        self.size = size
        self._highest = 0
        # bit i set means packet id (highest - i) was seen.
        self._bitmap = 0
        # The sender's timestamp for wrapped control packets (0 = unused).
        self._epoch = 0

    @property
    def highest(self) -> int:
        """Highest packet id accepted so far (0 before the first)."""
        return self._highest

    def check(self, packet_id: int, epoch: int = 0) -> bool:
        """Would ``packet_id`` (sent at sender time ``epoch``) be accepted?"""
        if packet_id == 0:
            return False
        if epoch != self._epoch:
            # A newer sender time starts a fresh sequence; an older one is a replay.
            return epoch > self._epoch
        if packet_id > self._highest:
            return True
        behind = self._highest - packet_id
        if behind >= self.size:
            return False
        return not (self._bitmap >> behind) & 1

    def commit(self, packet_id: int, epoch: int = 0) -> None:
        """Record ``packet_id`` as seen; call only after :meth:`check` passed."""
        if epoch != self._epoch:
            self._epoch = epoch
            self._highest = 0
            self._bitmap = 0
        if packet_id > self._highest:
            shift = packet_id - self._highest
            self._bitmap = ((self._bitmap << shift) | 1) & ((1 << self.size) - 1)
            self._highest = packet_id
        else:
            self._bitmap |= 1 << (self._highest - packet_id)

    def accept(self, packet_id: int, epoch: int = 0) -> bool:
        """:meth:`check` and, if it passes, :meth:`commit`."""
        if not self.check(packet_id, epoch):
            return False
        self.commit(packet_id, epoch)
        return True
