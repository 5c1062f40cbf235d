"""Error types shared by the whole project.

Local errors mean the user or the configuration asked for something wrong;
remote errors mean the peer (or the network) sent something wrong. Parsers of
outside input only ever raise these types.
"""

from __future__ import annotations


class DcoctlError(Exception):
    """Base class of every error dcoctl raises on purpose."""


class ConfigError(DcoctlError):
    """A configuration file or option is invalid.

    ``source`` names the file and ``line`` the 1-based line, when known; the
    string form reads ``file:line: message`` like a compiler diagnostic.
    """

    def __init__(self, message: str, source: str | None = None, line: int | None = None):
        self.message = message
        self.source = source
        self.line = line
        where = ""
        if source is not None:
            where = f"{source}:{line}: " if line is not None else f"{source}: "
        super().__init__(f"{where}{message}")


class ProtocolError(DcoctlError):
    """The OpenVPN protocol was violated."""


class LocalProtocolError(ProtocolError):
    """We were asked to do something the protocol does not allow."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something malformed or out of place (packet is dropped)."""


class AuthenticationError(DcoctlError):
    """TLS verification or authentication failed (fatal for this attempt)."""


class DatapathError(DcoctlError):
    """The data path (tun, sockets, kernel) could not be set up."""
