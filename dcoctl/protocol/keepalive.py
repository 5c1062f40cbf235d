"""Keepalive timers of the userspace data path (reference E.5).

Send a ping when nothing was sent for ``ping`` seconds; declare the peer
dead when nothing authenticated arrived for ``ping_restart`` seconds. With
a kernel data path the kernel runs these timers itself.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Keepalive:
    """Sans-I/O ping / ping-restart bookkeeping."""

    interval: int = 0
    timeout: int = 0
    last_sent: float = 0.0
    last_received: float = 0.0

    def start(self, now: float) -> None:
        """Begin timing from ``now`` (tunnel just came up)."""
        self.last_sent = now
        self.last_received = now

    def sent(self, now: float) -> None:
        """Anything went out on the data channel."""
        self.last_sent = now

    def received(self, now: float) -> None:
        """An authenticated packet arrived."""
        self.last_received = now

    def ping_due(self, now: float) -> bool:
        """A keepalive ping should be sent now."""
        return self.interval > 0 and now - self.last_sent >= self.interval

    def expired(self, now: float) -> bool:
        """The peer has been silent for longer than ``timeout``."""
        return self.timeout > 0 and now - self.last_received >= self.timeout

    def timer(self) -> float | None:
        """Next moment :meth:`ping_due` or :meth:`expired` can change."""
        deadlines = []
        if self.interval > 0:
            deadlines.append(self.last_sent + self.interval)
        if self.timeout > 0:
            deadlines.append(self.last_received + self.timeout)
        return min(deadlines, default=None)
