"""Events the protocol core reports to its driver.

Everything that happens to a session (control-channel progress, keys to
install, kernel notifications translated by a backend) is one of these
objects, delivered through one queue in order. Drivers never poll flags.
Don't subclass these outside this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .keys import DataKeys
from .options import PushedOptions


@dataclass(frozen=True)
class Event:
    """Base class of all protocol events."""


@dataclass(frozen=True)
class TLSEstablished(Event):
    """A TLS handshake finished and the peer certificate verified."""

    key_id: int
    version: str
    cipher: str
    peer_subject: str


@dataclass(frozen=True)
class KeyInstalled(Event):
    """New data-channel keys: install them into the data path.

    ``primary`` is True for the first key of a session (it encrypts at once);
    renegotiated keys arrive with ``primary=False`` (the kernel's SECONDARY
    slot) and are promoted later by :class:`PrimaryKeyChanged`.
    """

    key_id: int
    keys: DataKeys
    primary: bool
    peer_id: int | None


@dataclass(frozen=True)
class PrimaryKeyChanged(Event):
    """Start encrypting with ``key_id`` (kernel: SWAP_KEYS)."""

    key_id: int


@dataclass(frozen=True)
class KeyRetired(Event):
    """Forget ``key_id`` (kernel: DEL_KEY of the slot holding it)."""

    key_id: int


@dataclass(frozen=True)
class SessionEstablished(Event):
    """PUSH_REPLY applied and the first key installed: the tunnel is usable."""

    options: PushedOptions
    cipher: str
    key_derivation: str
    peer_id: int | None


@dataclass(frozen=True)
class RenegotiationStarted(Event):
    """A soft reset began for ``key_id``."""

    key_id: int
    initiated_locally: bool


@dataclass(frozen=True)
class RenegotiationCompleted(Event):
    """Keys for ``key_id`` are derived and installed."""

    key_id: int


@dataclass(frozen=True)
class ControlMessageReceived(Event):
    """A control-channel message the core did not act on itself (INFO, ...)."""

    text: str


@dataclass(frozen=True)
class SessionClosed(Event):
    """The session is over; ``reconnect`` says whether to try again.

    ``kind`` is one of ``auth-failed``, ``restart``, ``halt``, ``exit``,
    ``tls-error``, ``timeout``, ``protocol-error``, ``local``; ``advance``
    asks the driver to move on to the next ``remote``.
    """

    kind: str
    reason: str
    reconnect: bool
    advance: bool = False


@dataclass(frozen=True)
class PingTimeout(Event):
    """Nothing authenticated arrived for ``ping-restart`` seconds."""

    seconds: int
    peer_id: int | None = None


@dataclass(frozen=True)
class AuthenticationRequested(Event):
    """Server side: the client's key-method message arrived; decide on it.

    Answer with :meth:`ServerSession.accept_client` or ``reject_client``.
    """

    common_name: str | None
    username: str | None
    password: str | None = field(repr=False)
    peer_info: dict[str, str]


@dataclass(frozen=True)
class PeerEvent(Event):
    """An event of one client session on a server, tagged with its peer id."""

    peer_id: int
    event: Event


@dataclass(frozen=True)
class PeerDeleted(Event):
    """A data-path backend removed the peer (kernel DEL_PEER notification)."""

    peer_id: int
    reason: str
