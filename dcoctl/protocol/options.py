"""OpenVPN option syntax and pushed options (reference F.3, F.4).

:func:`tokenize_line` is OpenVPN's own tokenizer (config files and pushed
options share it). :class:`PushAccumulator` collects a possibly multi-part
PUSH_REPLY and turns it into :class:`PushedOptions`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ..errors import RemoteProtocolError

_SPACE = frozenset(" \t\n\v\f\r")


def tokenize_line(line: str) -> list[str]:
    """Split one option line exactly like OpenVPN's ``parse_line()``.

    * Whitespace separates tokens.
    * A token that *starts* with ``"`` runs to the next unescaped ``"``; inside,
      backslash escapes ``\\``, ``"`` and whitespace. ``""`` is an empty token.
    * A token that starts with ``'`` runs to the next ``'``; nothing is escaped.
    * Outside quotes a backslash escapes ``\\``, ``"`` or whitespace; any other
      escape is an error (OpenVPN rejects it to catch Windows paths).
    * ``#`` or ``;`` where a token would start ends the line (comment), so
      ``remote host 1194 # primary`` has three tokens and ``# x`` has none.

    Quote characters inside an unquoted token are literal, and a closing quote
    ends its token even without following whitespace (``"a"b`` is two tokens),
    as in OpenVPN. Raises :class:`ValueError` on unbalanced quotes or a bad
    escape.
    """
    tokens: list[str] = []
    buf: list[str] = []
    # None: between tokens; "": unquoted token; '"' or "'": inside that quote.
    state: str | None = None
    backslash = False
    for ch in line:
        if backslash:
            backslash = False
            if state is None:
                # OpenVPN checks for a comment before honouring the escape and
                # skips an escaped blank between tokens; mirror both quirks.
                if ch in "#;":
                    break
                if ch in _SPACE:
                    continue
                state = ""
            if ch != "\\" and ch != '"' and ch not in _SPACE:
                raise ValueError(
                    f"bad backslash escape '\\{ch}': only \\\\, \\\" and an escaped blank are "
                    "allowed (write Windows paths with double backslashes)"
                )
            buf.append(ch)
            continue
        if ch == "\\" and state != "'":
            backslash = True
            continue
        if state is None:
            if ch in _SPACE:
                continue
            if ch in "#;":
                break
            if ch in "\"'":
                state = ch
            else:
                state = ""
                buf.append(ch)
        elif state == "":
            if ch in _SPACE:
                tokens.append("".join(buf))
                buf = []
                state = None
            else:
                buf.append(ch)
        elif ch == state:
            tokens.append("".join(buf))
            buf = []
            state = None
        else:
            buf.append(ch)
    if backslash and state is not None:
        raise ValueError("line ends with a backslash inside a token")
    if state == '"':
        raise ValueError('no closing quotation (")')
    if state == "'":
        raise ValueError("no closing single quotation (')")
    if state == "":
        tokens.append("".join(buf))
    return tokens


@dataclass
class PushedRoute:
    """One pushed IPv4 ``route``."""

    network: str
    netmask: str
    gateway: str | None
    metric: int | None


@dataclass
class PushedOptions:
    """What a server told us to use; ``foreign`` keeps what we only pass on."""

    ifconfig: tuple[str, str] | None = None
    ifconfig_ipv6: tuple[str, str | None] | None = None
    topology: str = "net30"
    route_gateway: str | None = None
    routes: list[PushedRoute] = field(default_factory=list)
    routes_ipv6: list[tuple[str, str | None, int | None]] = field(default_factory=list)
    redirect_gateway: set[str] | None = None
    dhcp_options: list[tuple[str, str]] = field(default_factory=list)
    dns: list[list[str]] = field(default_factory=list)
    peer_id: int | None = None
    cipher: str | None = None
    protocol_flags: set[str] = field(default_factory=set)
    ping: int | None = None
    ping_restart: int | None = None
    ping_exit: int | None = None
    tun_mtu: int | None = None
    explicit_exit_notify: int | None = None
    auth_token: str | None = field(default=None, repr=False)
    auth_token_user: str | None = None
    route_metric: int | None = None
    #: Options not interpreted here, in order (e.g. ``setenv``, ``echo``).
    foreign: list[str] = field(default_factory=list)
    #: Every option as received, in order (after pull-filter).
    raw: list[str] = field(default_factory=list)

    @property
    def tls_ekm(self) -> bool:
        """The server asked for keying-material-exporter key derivation."""
        return "tls-ekm" in self.protocol_flags

    @property
    def cc_exit(self) -> bool:
        """The server understands ``EXIT`` on the control channel."""
        return "cc-exit" in self.protocol_flags


#: Options route-nopull makes us drop (OpenVPN's "routes and DNS" set).
ROUTE_NOPULL_DROPS = (
    "route",
    "route-ipv6",
    "redirect-gateway",
    "redirect-private",
    "dhcp-option",
    "dns",
    "block-outside-dns",
    "route-gateway",
    "route-metric",
)


class PushAccumulator:
    """Collects PUSH_REPLY parts until the last one (``push-continuation``)."""

    def __init__(
        self, pull_filters: tuple[tuple[str, str], ...] = (), route_nopull: bool = False
    ) -> None:
        self._filters = pull_filters
        self._route_nopull = route_nopull
        self._options: list[str] = []

    def feed(self, message: str) -> PushedOptions | None:
        """Take one ``PUSH_REPLY,...`` message; returns the options when complete.

        Raises :class:`RemoteProtocolError` for a malformed reply and
        ``PermissionError`` when a ``pull-filter reject`` matched.
        """
        if not message.startswith("PUSH_REPLY"):
            raise RemoteProtocolError("not a PUSH_REPLY")
        parts = [p.strip() for p in message[len("PUSH_REPLY") :].split(",")]
        done = True
        for part in parts:
            if not part:
                continue
            if part.startswith("push-continuation"):
                done = part.split()[-1] != "2"
                continue
            self._options.append(part)
        if not done:
            return None
        options, self._options = self._options, []
        return self._build(options)

    def feed_all(self, messages: list[str]) -> PushedOptions:
        """Parse a complete reply given as all its parts (server side echo)."""
        result = None
        for message in messages:
            result = self.feed(message)
        if result is None:
            raise RemoteProtocolError("push reply ends with push-continuation 2")
        return result

    def _filtered(self, options: list[str]) -> list[str]:
        kept = []
        for option in options:
            action = "accept"
            for filter_action, text in self._filters:
                if option.startswith(text):
                    action = filter_action
                    break
            if action == "reject":
                raise PermissionError(f"pushed option '{option}' rejected by pull-filter")
            if action == "ignore":
                continue
            if self._route_nopull and option.split(" ", 1)[0] in ROUTE_NOPULL_DROPS:
                continue
            kept.append(option)
        return kept

    def _build(self, options: list[str]) -> PushedOptions:
        result = PushedOptions()
        for option in self._filtered(options):
            try:
                tokens = tokenize_line(option)
            except ValueError:
                raise RemoteProtocolError(f"unparsable pushed option '{option}'") from None
            if not tokens:
                continue
            result.raw.append(option)
            try:
                _apply(result, tokens, option)
            except (ValueError, IndexError):
                raise RemoteProtocolError(f"invalid pushed option '{option}'") from None
        return result


def _ip(text: str) -> str:
    return str(ipaddress.ip_address(text))


def _apply(result: PushedOptions, tokens: list[str], option: str) -> None:
    name, args = tokens[0], tokens[1:]
    if name == "ifconfig":
        result.ifconfig = (_ip(args[0]), _ip(args[1]))
    elif name == "ifconfig-ipv6":
        ipaddress.ip_interface(args[0])
        result.ifconfig_ipv6 = (args[0], _ip(args[1]) if len(args) > 1 else None)
    elif name == "topology":
        if args[0] not in ("subnet", "net30", "p2p"):
            raise ValueError(args[0])
        result.topology = args[0]
    elif name == "route-gateway":
        result.route_gateway = args[0] if args[0] == "dhcp" else _ip(args[0])
    elif name == "route":
        netmask = args[1] if len(args) > 1 and args[1] != "default" else "255.255.255.255"
        gateway = args[2] if len(args) > 2 and args[2] != "default" else None
        metric = int(args[3]) if len(args) > 3 else None
        result.routes.append(PushedRoute(args[0], netmask, gateway, metric))
    elif name == "route-ipv6":
        ipaddress.ip_network(args[0], strict=False)
        gateway = args[1] if len(args) > 1 and args[1] != "default" else None
        metric = int(args[2]) if len(args) > 2 else None
        result.routes_ipv6.append((args[0], gateway, metric))
    elif name == "redirect-gateway":
        result.redirect_gateway = set(args)
    elif name == "dhcp-option":
        result.dhcp_options.append((args[0], " ".join(args[1:])))
        result.foreign.append(option)
    elif name == "dns":
        result.dns.append(args)
    elif name == "peer-id":
        peer_id = int(args[0])
        if not 0 <= peer_id < 0xFFFFFF:
            raise ValueError(peer_id)
        result.peer_id = peer_id
    elif name == "cipher":
        result.cipher = args[0].upper()
    elif name == "protocol-flags":
        result.protocol_flags.update(args)
    elif name == "key-derivation":
        if args[0] == "tls-ekm":
            result.protocol_flags.add("tls-ekm")
    elif name in ("ping", "ping-restart", "ping-exit", "tun-mtu", "route-metric"):
        value = int(args[0])
        if value < 0:
            raise ValueError(value)
        setattr(result, name.replace("-", "_"), value)
    elif name == "explicit-exit-notify":
        result.explicit_exit_notify = int(args[0]) if args else 1
    elif name == "auth-token":
        result.auth_token = args[0]
    elif name == "auth-token-user":
        result.auth_token_user = args[0]
    else:
        result.foreign.append(option)


#: PUSH_BUNDLE_SIZE minus OpenVPN's headroom: the longest single push message.
PUSH_MESSAGE_LIMIT = 1024 - 84


def format_push_replies(options: list[str]) -> list[str]:
    """Render options as PUSH_REPLY messages, split with ``push-continuation``."""
    messages: list[str] = []
    current = "PUSH_REPLY"
    suffix = ",push-continuation 2"
    for option in options:
        if len(current) + 1 + len(option) + len(suffix) > PUSH_MESSAGE_LIMIT and (
            current != "PUSH_REPLY"
        ):
            messages.append(current + suffix)
            current = "PUSH_REPLY"
        current += "," + option
    if messages:
        messages.append(current + ",push-continuation 1")
    else:
        messages.append(current)
    return messages
