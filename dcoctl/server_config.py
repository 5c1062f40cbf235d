"""OpenVPN 2.6 *server* configuration files and client-config-dir entries.

:func:`load_server_config` reads a ``server.conf`` written for OpenVPN 2.6 and
returns a :class:`ServerConfig`, so ``openvpn --config server.conf`` can become
``dcoctl up server.conf``. The syntax is OpenVPN's (and the machinery is
:mod:`dcoctl.config`'s: same tokenizer, inline ``<tag>`` blocks, file paths
relative to the config, ``file:line`` errors, ``ignore-unknown-option``,
process-model directives ignored). The ``server`` helper is expanded the way
OpenVPN's ``helper_client_server()`` does it, and the derived values are kept
as fields (``server_ip``, ``pool_start``, ...); :attr:`ServerConfig.pushed_options`
is the push list OpenVPN would build from them.

Only routed ``tun`` servers with ``topology subnet`` are supported: TAP
bridging, ``net30``/``p2p`` topologies, compression and ``fragment`` are
refused with a :class:`~dcoctl.errors.ConfigError` naming ``file:line``.

:func:`load_ccd_entry` / :func:`parse_ccd` read the per-client files of a
``client-config-dir`` into a :class:`CcdEntry`.
"""

from __future__ import annotations

import difflib
import ipaddress
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, cast

from .config import (
    _HANDLERS,
    _INLINE_ARG,
    _MAX_FILE_SIZE,
    _TAG,
    AEAD_CIPHERS,
    DEFAULT_DATA_CIPHERS,
    IGNORED_DIRECTIVES,
    UNSUPPORTED_DIRECTIVES,
    ProtoProperties,
    Route6Spec,
    RouteSpec,
    _choice,
    _Directive,
    _flag,
    _Handler,
    _ignored,
    _infer_dev_type,
    _int,
    _Parser,
    _script,
    _unsupported,
)
from .errors import ConfigError
from .protocol.options import tokenize_line
from .protocol.statickey import KeyDirection, StaticKey

__all__ = [
    "CCD_DEFAULT",
    "CcdEntry",
    "ServerConfig",
    "is_server_config",
    "load_ccd_entry",
    "load_server_config",
    "parse_ccd",
    "parse_server_config",
]

log = logging.getLogger(__name__)

#: Name of the client-config-dir file used when no file matches the common name.
CCD_DEFAULT = "DEFAULT"

#: ``proto`` spellings accepted for a server, mapped to the stored form
#: (``tcp`` on a server always means a TCP listener).
SERVER_PROTOCOLS: dict[str, str] = {
    "udp": "udp",
    "udp4": "udp4",
    "udp6": "udp6",
    "tcp": "tcp",
    "tcp4": "tcp4",
    "tcp6": "tcp6",
    "tcp-server": "tcp",
    "tcp4-server": "tcp4",
    "tcp6-server": "tcp6",
}

#: Directives only an OpenVPN client understands; a server config with one of
#: them is most likely a client profile given by mistake.
CLIENT_DIRECTIVES = frozenset(
    """
        client pull tls-client remote remote-random remote-random-hostname nobind rport
        resolv-retry connect-retry connect-retry-max server-poll-timeout connect-timeout
        timeout-connect auth-user-pass auth-retry auth-nocache route-nopull pull-filter
        allow-pull-fqdn redirect-gateway redirect-private dhcp-option dns push-peer-info
        http-proxy http-proxy-option http-proxy-user-pass socks-proxy dcoctl-key-derivation
    """.split()
)
#: Client directives a server usually means to hand out with ``push``.
_PUSHABLE = frozenset({"redirect-gateway", "redirect-private", "dhcp-option", "dns"})

#: Per-client directives: valid only in a client-config-dir file.
CCD_DIRECTIVES = frozenset(
    """
        ifconfig-push ifconfig-ipv6-push iroute iroute-ipv6 push-reset push-remove disable
    """.split()
)

_AUTH_PLUGIN_HINT = "use 'auth-user-pass-verify SCRIPT via-file' instead"

#: Directives dcoctl recognises in a server config but cannot honour.
SERVER_UNSUPPORTED_DIRECTIVES: dict[str, str] = {
    **{
        name: message
        for name, message in UNSUPPORTED_DIRECTIVES.items()
        if name not in ("crl-verify", "ifconfig") and name not in CLIENT_DIRECTIVES
    },
    "server-bridge": (
        "'server-bridge' (TAP bridging) is not supported: dcoctl only runs routed tun "
        "servers; use 'dev tun' with 'server NETWORK NETMASK'"
    ),
    "client-cert-not-required": (
        "'client-cert-not-required' was removed in OpenVPN 2.5; use 'verify-client-cert none'"
    ),
    "plugin": f"plugins are not supported; {_AUTH_PLUGIN_HINT}",
    "management-client-auth": f"'management-client-auth' is not supported; {_AUTH_PLUGIN_HINT}",
    "tls-verify": "'tls-verify' scripts are not supported yet; refusing rather than skipping it",
    "tls-crypt-v2-verify": "'tls-crypt-v2-verify' is not supported yet",
    "auth-gen-token": "'auth-gen-token' is not supported yet",
    "auth-gen-token-secret": "'auth-gen-token' is not supported yet",
    "port-share": "'port-share' is not supported",
    "connect-freq": "'connect-freq' is not supported yet",
    "stale-routes-check": "'stale-routes-check' is not supported yet",
}

#: Directives whose client handler in :mod:`dcoctl.config` means the same on a
#: server (same field, same validation); they are reused as they are.
SHARED_DIRECTIVES = frozenset(
    """
        dev dev-type port proto float
        ca cert key extra-certs pkcs12 tls-auth key-direction tls-crypt
        verify-x509-name tls-version-min tls-version-max tls-cipher tls-ciphersuites tls-groups
        data-ciphers ncp-ciphers data-ciphers-fallback cipher auth reneg-sec reneg-bytes
        reneg-pkts hand-window tls-timeout replay-window mute-replay-warnings
        ping ping-restart explicit-exit-notify allow-compression comp-lzo
        route route-ipv6 tun-mtu mssfix link-mtu txqueuelen sndbuf rcvbuf persist-key persist-tun
        verb mute setenv setenv-safe ignore-unknown-option script-security up down
        disable-dco dcoctl-datapath
    """.split()
)

#: OpenVPN's smallest and largest ``server`` subnets for ``dev tun``.
_MIN_SERVER_PREFIX, _MAX_SERVER_PREFIX = 16, 29
#: IFCONFIG_POOL_MAX: the most addresses one pool may hold.
_POOL_MAX = 65536
_TLS_CRYPT_V2_SERVER = "-----BEGIN OpenVPN tls-crypt-v2 server key-----"
_TLS_CRYPT_V2_CLIENT = "-----BEGIN OpenVPN tls-crypt-v2 client key-----"
_CRL_BEGIN = "-----BEGIN X509 CRL-----"
#: Characters OpenVPN keeps when it turns a common name into a file name.
_CCD_UNSAFE = re.compile(r"[^A-Za-z0-9_.@-]")


# ---------------------------------------------------------------------------
# Result types
# ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ServerConfig(ProtoProperties):
    """Everything a server config says, validated; defaults are OpenVPN 2.6's.

    Build it with :func:`load_server_config` or :func:`parse_server_config`.
    Paths (``client_config_dir``, ``status_file``, ...) are already resolved
    against the config's directory. ``lines`` maps each directive seen to the
    line where it was last given, so later checks can still name ``file:line``.
    """

    source: str
    name: str
    dev: str = "tun"
    topology: str = "subnet"

    # Listening socket
    #: One of ``udp``, ``udp4``, ``udp6``, ``tcp``, ``tcp4``, ``tcp6`` (tcp = listener).
    proto: str = "udp"
    #: The port to listen on (``lport`` if given, else ``port``).
    port: int = 1194
    #: ``local``: the address or host name to bind to (None: all addresses).
    local: str | None = None
    bind_ipv6only: bool = False
    allow_float: bool = False

    # IPv4 addressing (``server`` expanded like OpenVPN's helper)
    #: The ``server`` network; None when the config sets ``ifconfig``/``ifconfig-pool`` itself.
    server_network: str | None = None
    #: The server's own tunnel address (``network + 1`` with ``server``).
    server_ip: str = ""
    #: Netmask of the tunnel subnet, also what clients get with their address.
    server_netmask: str = ""
    #: First and last pool address; both None with ``server ... nopool``.
    pool_start: str | None = None
    pool_end: str | None = None

    # IPv6 addressing
    #: The ``server-ipv6`` prefix as given (``prefix/bits``), else None.
    server_ipv6_network: str | None = None
    server_ipv6: str | None = None
    server_ipv6_prefixlen: int | None = None
    #: First IPv6 pool address; pool entry ``i`` pairs with IPv4 entry ``i``.
    pool_ipv6_start: str | None = None
    pool_ipv6_prefixlen: int | None = None

    # Clients
    ifconfig_pool_persist: Path | None = None
    ifconfig_pool_persist_seconds: int = 600
    client_to_client: bool = False
    duplicate_cn: bool = False
    max_clients: int = 1024
    #: The ``push`` lines of the config, in order (see :attr:`pushed_options`).
    push: tuple[str, ...] = ()
    client_config_dir: Path | None = None
    ccd_exclusive: bool = False
    #: Server-side system routes (usually the networks behind ``iroute``).
    routes: tuple[RouteSpec, ...] = ()
    routes_ipv6: tuple[Route6Spec, ...] = ()

    # PKI and control-channel wrapping
    ca_pem: str = ""
    cert_pem: str | None = None
    key_pem: str | None = field(default=None, repr=False)
    pkcs12: bytes | None = field(default=None, repr=False)
    extra_certs_pem: str | None = None
    #: ``crl-verify``: the CRL's PEM text, and its file (None if inline) for reloading.
    crl_pem: str | None = None
    crl_path: Path | None = None
    tls_auth_key: StaticKey | None = None
    key_direction: KeyDirection = KeyDirection.BIDIRECTIONAL
    tls_crypt_key: StaticKey | None = None
    #: The tls-crypt-v2 *server* key (PEM text).
    tls_crypt_v2_key_pem: str | None = field(default=None, repr=False)
    tls_crypt_v2_force_cookie: bool = False

    # TLS
    remote_cert_tls: str | None = None
    verify_x509_name: tuple[str, str] | None = None
    tls_version_min: str | None = None
    tls_version_max: str | None = None
    tls_cipher: str | None = None
    tls_ciphersuites: str | None = None
    tls_groups: str | None = None
    #: ``none``, ``optional`` or ``require``.
    verify_client_cert: str = "require"

    # Data channel and timers
    data_ciphers: tuple[str, ...] = DEFAULT_DATA_CIPHERS
    data_ciphers_fallback: str | None = None
    cipher: str | None = None
    auth: str = "SHA1"
    reneg_sec: int = 3600
    reneg_bytes: int | None = None
    reneg_pkts: int | None = None
    hand_window: int = 60
    tls_timeout: int = 2
    replay_window: int = 64
    mute_replay_warnings: bool = False
    #: ``keepalive A B`` as given; see the ``server_*`` / ``pushed_*`` properties.
    keepalive: tuple[int, int] | None = None
    ping: int = 0
    ping_restart: int = 0
    explicit_exit_notify: int = 0

    # Authentication and scripts
    #: (script, ``via-env`` | ``via-file``).
    auth_user_pass_verify: tuple[str, str] | None = None
    auth_user_pass_optional: bool = False
    username_as_common_name: bool = False
    script_security: int = 1
    client_connect: str | None = None
    client_disconnect: str | None = None
    learn_address: str | None = None
    up: str | None = None
    down: str | None = None

    # Interface and sockets
    tun_mtu: int = 1500
    mssfix: int | None = None
    txqueuelen: int | None = None
    sndbuf: int | None = None
    rcvbuf: int | None = None
    persist_key: bool = False
    persist_tun: bool = False

    # Status, logging, environment
    status_file: Path | None = None
    status_interval: int = 60
    status_version: int = 1
    verb: int = 1
    mute: int = 0
    setenv: tuple[tuple[str, str], ...] = ()

    # dcoctl's own directives
    datapath: str = "auto"
    disable_dco: bool = False

    #: (line, directive) of every directive accepted but ignored.
    ignored: tuple[tuple[int, str], ...] = ()
    #: Directive name -> line where it was last given.
    lines: dict[str, int] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def server_prefixlen(self) -> int:
        """Prefix length of :attr:`server_netmask`."""
        return ipaddress.IPv4Network(f"0.0.0.0/{self.server_netmask}").prefixlen

    @property
    def pool_size(self) -> int:
        """How many addresses the IPv4 pool holds (0 without a pool)."""
        if self.pool_start is None or self.pool_end is None:
            return 0
        start, end = ipaddress.IPv4Address(self.pool_start), ipaddress.IPv4Address(self.pool_end)
        return int(end) - int(start) + 1

    @property
    def server_ping(self) -> int:
        """Seconds between the server's own pings (``keepalive A B`` -> A)."""
        return self.keepalive[0] if self.keepalive else self.ping

    @property
    def server_ping_restart(self) -> int:
        """The server's own restart timeout (``keepalive A B`` -> 2*B, like OpenVPN)."""
        return 2 * self.keepalive[1] if self.keepalive else self.ping_restart

    @property
    def pushed_ping(self) -> int | None:
        """``ping`` pushed to clients (``keepalive A B`` -> A), or None."""
        return self.keepalive[0] if self.keepalive else None

    @property
    def pushed_ping_restart(self) -> int | None:
        """``ping-restart`` pushed to clients (``keepalive A B`` -> B), or None."""
        return self.keepalive[1] if self.keepalive else None

    @property
    def pushed_options(self) -> tuple[str, ...]:
        """The push list in OpenVPN's order, before the per-client options.

        The config's ``push`` lines, then what the ``server-ipv6`` / ``server``
        and ``keepalive`` helpers add (``tun-ipv6``, ``route-gateway``,
        ``topology subnet``, ``ping``, ``ping-restart``). The per-client
        ``ifconfig``, ``ifconfig-ipv6``, ``peer-id`` and ``cipher`` (and any
        client-config-dir pushes) come after these.
        """
        result = list(self.push)
        if self.server_ipv6_network is not None:
            result.append("tun-ipv6")
        if self.server_network is not None:
            result += [f"route-gateway {self.server_ip}", f"topology {self.topology}"]
        if self.keepalive is not None:
            result += [f"ping {self.keepalive[0]}", f"ping-restart {self.keepalive[1]}"]
        return tuple(result)


_FIELD_NAMES = frozenset(f.name for f in fields(ServerConfig))


@dataclass(frozen=True, kw_only=True)
class CcdEntry:
    """One client-config-dir file: per-client address, routes and pushes.

    ``push`` lines are added after the server's push list, unless
    ``push_reset`` drops the server's list first; ``push_remove`` holds option
    names to take out of it.
    """

    source: str
    #: ``ifconfig-push LOCAL NETMASK`` (topology subnet: client address, netmask).
    ifconfig_push: tuple[str, str] | None = None
    #: ``ifconfig-ipv6-push ADDR/BITS [REMOTE]`` -> (``addr/bits``, remote or None).
    ifconfig_ipv6_push: tuple[str, str | None] | None = None
    #: ``iroute NET [MASK]`` -> (network, prefix length).
    iroutes: tuple[tuple[str, int], ...] = ()
    #: ``iroute-ipv6 NET/BITS`` -> (network, prefix length).
    iroutes_ipv6: tuple[tuple[str, int], ...] = ()
    push: tuple[str, ...] = ()
    push_reset: bool = False
    push_remove: tuple[str, ...] = ()
    #: ``disable``: refuse this client.
    disable: bool = False


# ---------------------------------------------------------------------------
# Shared checks
# ---------------------------------------------------------------------------


def _prefixlen(p: _Parser, d: _Directive, text: str) -> int:
    """Prefix length of a dotted netmask; refuses host masks and holes."""
    try:
        mask = int(ipaddress.IPv4Address(text))
    except ValueError:
        raise p.error(f"'{d.name}': invalid netmask '{text}'", d.line) from None
    inverted = ~mask & 0xFFFFFFFF
    if inverted & (inverted + 1):
        raise p.error(f"'{d.name}': invalid netmask '{text}'", d.line)
    return 32 - inverted.bit_length()


def _network(p: _Parser, d: _Directive, address: str, netmask: str) -> ipaddress.IPv4Network:
    """``address``/``netmask`` as a network; host bits set is an error (as in OpenVPN)."""
    prefix = _prefixlen(p, d, netmask)
    p.ipv4(d, address, "network")
    try:
        return ipaddress.IPv4Network(f"{address}/{prefix}")
    except ValueError:
        raise p.error(
            f"'{d.name}': {address} {netmask} is not a network address (host bits are set)",
            d.line,
        ) from None


def _ipv6_interface(p: _Parser, d: _Directive, text: str) -> ipaddress.IPv6Interface:
    if "/" not in text:
        raise p.error(f"'{d.name}': '{text}' needs a prefix length (ADDRESS/BITS)", d.line)
    try:
        return ipaddress.IPv6Interface(text)
    except ValueError:
        raise p.error(f"'{d.name}': invalid IPv6 address/prefix '{text}'", d.line) from None


def _ipv6(p: _Parser, d: _Directive, text: str) -> str:
    try:
        return str(ipaddress.IPv6Address(text))
    except ValueError:
        raise p.error(f"'{d.name}': invalid IPv6 address '{text}'", d.line) from None


def _pushed_option(p: _Parser, d: _Directive) -> str:
    """Validate one ``push "OPTION"`` line and return the option text."""
    p.expect(d, 1, hint=' (quote the whole option: push "route 10.0.0.0 255.255.255.0")')
    option = d.args[0]
    if "," in option:
        raise p.error(
            f"'push': illegal comma in '{option}' (the push list is comma-separated; "
            "give each option its own push line)",
            d.line,
        )
    try:
        tokens = tokenize_line(option)
    except ValueError as exc:
        raise p.error(f"'push': bad quoting inside '{option}': {exc}", d.line) from None
    if not tokens:
        raise p.error("'push': empty option", d.line)
    return option


# ---------------------------------------------------------------------------
# Server config parser
# ---------------------------------------------------------------------------

_ServerHandler = Callable[["_ServerParser", _Directive], None]


class _ServerParser(_Parser):
    """:class:`dcoctl.config._Parser` with the server's handler table and checks."""

    def __init__(self, source: str, base_dir: Path | None) -> None:
        super().__init__(source, base_dir)
        self.mode_server = False
        self.tls_server = False
        self.topology: str | None = None
        self.lport: int | None = None
        self.server: tuple[ipaddress.IPv4Network, bool] | None = None  # (network, nopool)
        self.server_ipv6: ipaddress.IPv6Interface | None = None
        self.ifconfig: tuple[str, str] | None = None
        self.ifconfig_ipv6: ipaddress.IPv6Interface | None = None
        self.ifconfig_pool: tuple[str, str, str | None] | None = None
        self.ifconfig_ipv6_pool: ipaddress.IPv6Interface | None = None
        self.push: list[str] = []

    # -- overrides of the client parser ----------------------------------------
    def set(self, name: str, value: object) -> None:
        # Catch a misspelt field in the handler table at the first use.
        assert name in _FIELD_NAMES, name
        self.values[name] = value

    def proto(self, d: _Directive, text: str) -> str:
        if text in SERVER_PROTOCOLS:
            return SERVER_PROTOCOLS[text]
        if text.endswith("-client"):
            raise self.error(
                f"'{d.name} {text}' is a client protocol; a server uses 'tcp-server' (or 'tcp')",
                d.line,
            )
        raise self.error(
            f"'{d.name}': invalid protocol '{text}' (expected {' | '.join(SERVER_PROTOCOLS)})",
            d.line,
        )

    def handler_table(self) -> dict[str, _Handler]:
        # dispatch() calls each handler with self, which is a _ServerParser.
        return cast(dict[str, _Handler], _SERVER_HANDLERS)

    def is_refused(self, name: str) -> bool:
        return name in _REFUSED

    def parse(self, text: str) -> None:
        directives = self.read_directives(text)
        # A client profile would otherwise fail on whatever comes first; say
        # what it really is.
        for d in directives:
            if d.name in CLIENT_DIRECTIVES:
                _client_only(self, d)
        for d in directives:
            self.dispatch(d)

    # -- helpers ------------------------------------------------------------------
    def path(self, text: str) -> Path:
        path = Path(text)
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        return path

    def where(self, *names: str) -> int | None:
        """The line of the first of ``names`` that was given."""
        return next((self.lines[n] for n in names if n in self.lines), None)

    # -- handlers -------------------------------------------------------------------
    def h_mode(self, d: _Directive) -> None:
        self.expect(d, 1)
        if self.choice(d, d.args[0], ("p2p", "server")) == "p2p":
            raise self.error(
                "'mode p2p' is a point-to-point setup, which dcoctl does not run; "
                "use 'server NETWORK NETMASK'",
                d.line,
            )
        self.mode_server = True

    def h_tls_server(self, d: _Directive) -> None:
        self.expect(d, 0)
        self.tls_server = True

    def h_topology(self, d: _Directive) -> None:
        self.expect(d, 1)
        topology = self.choice(d, d.args[0], ("subnet", "net30", "p2p"))
        if topology != "subnet":
            raise self.error(f"topology {topology} is not supported: use 'topology subnet'", d.line)
        self.topology = topology

    def h_server(self, d: _Directive) -> None:
        self.expect(d, 2, 3)
        nopool = False
        if len(d.args) > 2:
            nopool = self.choice(d, d.args[2], ("nopool",)) == "nopool"
        network = _network(self, d, d.args[0], d.args[1])
        if network.prefixlen > _MAX_SERVER_PREFIX:
            raise self.error(
                "'server': with dev tun the subnet must be 255.255.255.248 (/29) or larger",
                d.line,
            )
        if network.prefixlen < _MIN_SERVER_PREFIX:
            raise self.error(
                "'server': the netmask allows too many hosts (it must be 255.255.0.0 (/16) "
                "or longer)",
                d.line,
            )
        self.server = (network, nopool)

    def h_server_ipv6(self, d: _Directive) -> None:
        self.expect(d, 1)
        prefix = _ipv6_interface(self, d, d.args[0])
        if not 64 <= prefix.network.prefixlen <= 124:
            raise self.error(
                f"'server-ipv6': the network must be between /64 and /124 "
                f"(not /{prefix.network.prefixlen})",
                d.line,
            )
        self.server_ipv6 = prefix

    def h_ifconfig(self, d: _Directive) -> None:
        self.expect(d, 2)
        local = self.ipv4(d, d.args[0], "address")
        _prefixlen(self, d, d.args[1])
        self.ifconfig = (local, d.args[1])

    def h_ifconfig_ipv6(self, d: _Directive) -> None:
        self.expect(d, 1, 2)
        if len(d.args) > 1:
            _ipv6(self, d, d.args[1])
        self.ifconfig_ipv6 = _ipv6_interface(self, d, d.args[0])

    def h_ifconfig_pool(self, d: _Directive) -> None:
        self.expect(d, 2, 3)
        start = self.ipv4(d, d.args[0], "start address")
        end = self.ipv4(d, d.args[1], "end address")
        netmask = None
        if len(d.args) > 2:
            _prefixlen(self, d, d.args[2])
            netmask = d.args[2]
        first, last = int(ipaddress.IPv4Address(start)), int(ipaddress.IPv4Address(end))
        if first > last:
            raise self.error(f"'ifconfig-pool': start {start} is above end {end}", d.line)
        if last - first >= _POOL_MAX:
            raise self.error(
                f"'ifconfig-pool': the range is too large (at most {_POOL_MAX} addresses)", d.line
            )
        self.ifconfig_pool = (start, end, netmask)

    def h_ifconfig_ipv6_pool(self, d: _Directive) -> None:
        self.expect(d, 1)
        self.ifconfig_ipv6_pool = _ipv6_interface(self, d, d.args[0])

    def h_ifconfig_pool_persist(self, d: _Directive) -> None:
        self.expect(d, 1, 2)
        self.set("ifconfig_pool_persist", self.path(d.args[0]))
        if len(d.args) > 1:
            self.set("ifconfig_pool_persist_seconds", self.integer(d, d.args[1], 0))

    def h_push(self, d: _Directive) -> None:
        self.push.append(_pushed_option(self, d))

    def h_client_config_dir(self, d: _Directive) -> None:
        self.expect(d, 1)
        path = self.path(d.args[0])
        if not path.is_dir():
            reason = "is not a directory" if path.exists() else "does not exist"
            raise self.error(f"'client-config-dir': '{path}' {reason}", d.line)
        self.set("client_config_dir", path)

    def h_dh(self, d: _Directive) -> None:
        if d.inline is None:
            self.expect(d, 1)
        self.ignore(d, "dcoctl uses ECDHE only; DH parameters are not needed")

    def h_crl_verify(self, d: _Directive) -> None:
        if d.inline is None:
            self.expect(d, 1, 2)
        if len(d.args) > 1:
            if self.choice(d, d.args[1], ("dir",)) == "dir":
                raise self.error(
                    "'crl-verify ... dir' (a directory of revoked serials) is not supported; "
                    "give a CRL file",
                    d.line,
                )
        got = self.file_text(d, max_args=2)
        if got is None:
            return
        text, path = got
        if _CRL_BEGIN not in text:
            where = f"'{path}'" if path is not None else "the <crl-verify> block"
            raise self.error(f"'crl-verify': no CRL ({_CRL_BEGIN}) in {where}", d.line)
        self.set("crl_pem", text)
        self.set("crl_path", self.path(path) if path is not None else None)

    def h_tls_crypt_v2(self, d: _Directive) -> None:
        if d.inline is None:
            self.expect(d, 1, 2)
        if len(d.args) > 1:
            cookie = self.choice(d, d.args[1], ("force-cookie", "allow-noncookie"))
            self.set("tls_crypt_v2_force_cookie", cookie == "force-cookie")
        got = self.file_text(d, max_args=2)
        if got is None:
            return
        text, path = got
        where = f"'{path}'" if path is not None else "the <tls-crypt-v2> block"
        if _TLS_CRYPT_V2_CLIENT in text:
            raise self.error(
                f"'tls-crypt-v2': {where} holds a client key; the server needs the server key "
                "(openvpn --genkey tls-crypt-v2-server)",
                d.line,
            )
        if _TLS_CRYPT_V2_SERVER not in text:
            raise self.error(f"'tls-crypt-v2': no tls-crypt-v2 server key in {where}", d.line)
        self.set("tls_crypt_v2_key_pem", text)

    def h_remote_cert_tls(self, d: _Directive) -> None:
        self.expect(d, 1)
        if self.choice(d, d.args[0], ("client", "server")) == "server":
            raise self.error(
                "'remote-cert-tls server' belongs in client configs; a server checks its "
                "clients with 'remote-cert-tls client'",
                d.line,
            )
        self.set("remote_cert_tls", "client")

    def h_keepalive(self, d: _Directive) -> None:
        self.expect(d, 2)
        interval, restart = self.integer(d, d.args[0], 1), self.integer(d, d.args[1], 1)
        if restart < 2 * interval:
            raise self.error(
                f"'keepalive': the restart timeout ({restart}) must be at least twice the ping "
                f"interval ({interval}); 'keepalive 10 60' is the usual choice",
                d.line,
            )
        self.set("keepalive", (interval, restart))

    def h_auth_user_pass_verify(self, d: _Directive) -> None:
        hint = " (SCRIPT via-env|via-file; quote a command with arguments)"
        self.expect(d, 2, hint=hint)
        method = self.choice(d, d.args[1], ("via-env", "via-file"))
        self.set("auth_user_pass_verify", (d.args[0], method))

    def h_status(self, d: _Directive) -> None:
        self.expect(d, 1, 2)
        self.set("status_file", self.path(d.args[0]))
        if len(d.args) > 1:
            self.set("status_interval", self.integer(d, d.args[1], 0))

    def h_lport(self, d: _Directive) -> None:
        self.expect(d, 1)
        self.lport = self.port(d, d.args[0])

    def h_local(self, d: _Directive) -> None:
        self.expect(d, 1)
        host = d.args[0]
        if not host or host.startswith("-") or any(c.isspace() for c in host):
            raise self.error(f"'local': invalid address '{host}'", d.line)
        self.set("local", host)

    def h_bind(self, d: _Directive) -> None:
        self.expect(d, 0, 1)
        if d.args:
            self.choice(d, d.args[0], ("ipv6only",))
        self.set("bind_ipv6only", bool(d.args))

    def h_cd(self, d: _Directive) -> None:
        # OpenVPN changes directory while it parses, so later relative paths
        # are relative to it; dcoctl only resolves paths against it.
        self.expect(d, 1)
        path = self.path(d.args[0])
        if not path.is_dir():
            raise self.error(f"'cd': '{path}' is not a directory", d.line)
        self.base_dir = path

    # -- final checks ------------------------------------------------------------
    def finish_server(self) -> ServerConfig:
        if self.pending_inline:
            name, line = next(iter(self.pending_inline.items()))
            raise self.error(f"'{name} {_INLINE_ARG}' but no <{name}> block follows", line)
        dev_type = self.dev_type or _infer_dev_type(self.dev)
        if dev_type != "tun":
            raise self.error(
                f"'dev {self.dev}': only tun devices are supported ({dev_type} is not; "
                "TAP bridging is not available)",
                self.where("dev-type", "dev"),
            )
        self.check_mode()
        self.finish_ipv4()
        self.finish_ipv6()
        self.check_pki()
        self.check_conflicts()
        self.check_scripts()

        self.set("dev", self.dev)
        self.set("topology", self.topology)
        self.set("proto", self.default_proto)
        self.set("port", self.lport if self.lport is not None else self.default_port)
        for direction in (self.tls_auth_direction, self.key_direction):
            if direction is not None:
                self.set("key_direction", direction)
                break
        if self.values.get("disable_dco") and self.values.get("datapath", "auto") == "auto":
            self.set("datapath", "userspace")
        cipher = self.values.get("cipher")
        if cipher is not None and cipher.upper() not in AEAD_CIPHERS:
            log.warning(
                "%s:%d: 'cipher %s' cannot be offered (dcoctl only has AEAD ciphers); clients "
                "that cannot negotiate 'data-ciphers' will not connect",
                self.source,
                self.lines["cipher"],
                cipher,
            )
        self.set("push", tuple(self.push))
        self.set("routes", tuple(self.routes))
        self.set("routes_ipv6", tuple(self.routes_ipv6))
        self.set("setenv", tuple(self.setenv))
        self.set("ignored", tuple(self.ignored))
        self.set("lines", dict(self.lines))
        return ServerConfig(source=self.source, name=Path(self.source).stem, **self.values)

    def check_mode(self) -> None:
        if self.server is not None:
            return  # "server" implies "mode server" and "tls-server"
        if not self.mode_server:
            if self.tls_server:
                raise self.error(
                    "'tls-server' without 'mode server' is a point-to-point setup, which "
                    "dcoctl does not run; use 'server NETWORK NETMASK'",
                    self.lines["tls-server"],
                )
            raise self.error(
                "not a server config: add 'server NETWORK NETMASK' (and 'topology subnet')", None
            )
        if not self.tls_server:
            raise self.error(
                "'mode server' requires 'tls-server' (or use 'server NETWORK NETMASK', which "
                "implies both)",
                self.lines["mode"],
            )

    def finish_ipv4(self) -> None:
        anchor = self.where("server", "ifconfig-pool", "mode", "ifconfig")
        if self.server is None and self.ifconfig_pool is None:
            raise self.error(
                "dcoctl server needs 'server NETWORK NETMASK' (e.g. 'server 10.8.0.0 "
                "255.255.255.0') to hand out client addresses",
                anchor,
            )
        if self.topology is None:
            raise self.error(
                "OpenVPN 2.6 servers default to 'topology net30', which dcoctl does not "
                "support: add 'topology subnet'",
                anchor,
            )
        if self.server is not None:
            network, nopool = self.server
            if self.ifconfig is not None:
                raise self.error(
                    "'ifconfig' cannot be combined with 'server' (which sets the server's "
                    "address itself)",
                    self.lines["ifconfig"],
                )
            if self.ifconfig_pool is not None and not nopool:
                raise self.error(
                    "'server' already defines an ifconfig-pool; remove 'ifconfig-pool' (or "
                    "add 'nopool' to 'server')",
                    self.lines["ifconfig-pool"],
                )
            self.set("server_network", str(network.network_address))
            self.set("server_ip", str(network.network_address + 1))
            self.set("server_netmask", str(network.netmask))
            if nopool and self.ifconfig_pool is None:
                if "client-config-dir" not in self.lines:
                    log.warning(
                        "%s:%d: 'server ... nopool' without 'client-config-dir': clients "
                        "can only get an address from ifconfig-push",
                        self.source,
                        self.lines["server"],
                    )
                return
            if not nopool:
                self.set("pool_start", str(network.network_address + 2))
                self.set("pool_end", str(network.broadcast_address - 1))
                return
        self.manual_pool(self.server[0] if self.server is not None else None)

    def manual_pool(self, server_net: ipaddress.IPv4Network | None) -> None:
        """``ifconfig-pool`` (with ``ifconfig``, or with ``server ... nopool``)."""
        assert self.ifconfig_pool is not None
        start, end, netmask = self.ifconfig_pool
        line = self.lines["ifconfig-pool"]
        if server_net is None:
            if self.ifconfig is None:
                raise self.error(
                    "'ifconfig-pool' needs 'ifconfig SERVER_IP NETMASK' for the server's own "
                    "address (or use 'server NETWORK NETMASK')",
                    line,
                )
            local, server_mask = self.ifconfig
            server_net = ipaddress.IPv4Network(f"{local}/{server_mask}", strict=False)
            self.set("server_ip", local)
            self.set("server_netmask", str(server_net.netmask))
            if not any(p.startswith("topology") for p in self.push):
                log.warning(
                    "%s: without 'server', clients are told nothing about the topology; add "
                    'push "topology subnet" and push "route-gateway %s"',
                    self.source,
                    local,
                )
        if netmask is not None and ipaddress.IPv4Address(netmask) != server_net.netmask:
            raise self.error(
                f"'ifconfig-pool': netmask {netmask} differs from the server's "
                f"{server_net.netmask}",
                line,
            )
        for address in (start, end):
            if ipaddress.IPv4Address(address) not in server_net:
                raise self.error(
                    f"'ifconfig-pool': {address} is outside the server's subnet {server_net}",
                    line,
                )
        server_ip = ipaddress.IPv4Address(self.values["server_ip"])
        if ipaddress.IPv4Address(start) <= server_ip <= ipaddress.IPv4Address(end):
            raise self.error(
                f"'ifconfig-pool': the range includes the server's own address {server_ip}", line
            )
        self.set("pool_start", start)
        self.set("pool_end", end)

    def finish_ipv6(self) -> None:
        if self.server_ipv6 is not None:
            line = self.lines["server-ipv6"]
            if self.server is not None and self.server[1]:
                raise self.error("'server-ipv6' is incompatible with 'server ... nopool'", line)
            if self.ifconfig_ipv6_pool is not None:
                raise self.error(
                    "'server-ipv6' already defines an ifconfig-ipv6-pool; remove "
                    "'ifconfig-ipv6-pool'",
                    self.lines["ifconfig-ipv6-pool"],
                )
            if self.ifconfig_ipv6 is not None:
                raise self.error(
                    "'ifconfig-ipv6' cannot be combined with 'server-ipv6'",
                    self.lines["ifconfig-ipv6"],
                )
            # Like OpenVPN: the address as given + 1, pool from + 0x1000 (+ 2 if small).
            base, bits = self.server_ipv6.ip, self.server_ipv6.network.prefixlen
            self.set("server_ipv6_network", f"{base}/{bits}")
            self.set("server_ipv6", str(base + 1))
            self.set("server_ipv6_prefixlen", bits)
            self.set("pool_ipv6_start", str(base + (0x1000 if bits < 112 else 2)))
            self.set("pool_ipv6_prefixlen", bits)
            return
        if self.ifconfig_ipv6_pool is not None and self.ifconfig_ipv6 is None:
            raise self.error(
                "'ifconfig-ipv6-pool' needs 'ifconfig-ipv6' (or use 'server-ipv6 PREFIX/BITS')",
                self.lines["ifconfig-ipv6-pool"],
            )
        if self.ifconfig_ipv6 is not None:
            self.set("server_ipv6", str(self.ifconfig_ipv6.ip))
            self.set("server_ipv6_prefixlen", self.ifconfig_ipv6.network.prefixlen)
        if self.ifconfig_ipv6_pool is not None:
            self.set("pool_ipv6_start", str(self.ifconfig_ipv6_pool.ip))
            self.set("pool_ipv6_prefixlen", self.ifconfig_ipv6_pool.network.prefixlen)

    def check_pki(self) -> None:
        v = self.values
        if "ca_pem" not in v:
            raise self.error(
                "no 'ca' given: a server needs the CA that signed its clients' certificates",
                None,
            )
        has_cert, has_key = "cert_pem" in v, "key_pem" in v
        if has_cert != has_key:
            given, missing = ("cert", "key") if has_cert else ("key", "cert")
            raise self.error(f"'{given}' given without '{missing}'", self.lines[given])
        if "pkcs12" in v and has_cert:
            raise self.error("'cert'/'key' cannot be combined with 'pkcs12'", self.lines["pkcs12"])
        if not has_cert and "pkcs12" not in v:
            raise self.error("no server certificate: give 'cert' and 'key' (or 'pkcs12')", None)

    def check_conflicts(self) -> None:
        v = self.values
        wraps = [n for n in ("tls-auth", "tls-crypt", "tls-crypt-v2") if n in self.lines]
        if len(wraps) > 1:
            later = max(wraps, key=lambda n: self.lines[n])
            raise self.error(
                f"'{wraps[0]}' and '{wraps[1]}' cannot be used together (pick one)",
                self.lines[later],
            )
        if "keepalive" in self.lines:
            for name in ("ping", "ping-restart"):
                if name in self.lines:
                    raise self.error(
                        f"'keepalive' conflicts with '{name}' (keepalive already sets the pings)",
                        max(self.lines["keepalive"], self.lines[name]),
                    )
        no_auth = "auth_user_pass_verify" not in v
        if v.get("verify_client_cert", "require") != "require" and no_auth:
            raise self.error(
                f"'verify-client-cert {v['verify_client_cert']}' without "
                "'auth-user-pass-verify' would let anyone connect",
                self.lines["verify-client-cert"],
            )
        for name in ("username-as-common-name", "auth-user-pass-optional"):
            if name in self.lines and no_auth:
                raise self.error(f"'{name}' needs 'auth-user-pass-verify'", self.lines[name])
        if v.get("ccd_exclusive") and "client_config_dir" not in v:
            raise self.error(
                "'ccd-exclusive' needs 'client-config-dir'", self.lines["ccd-exclusive"]
            )
        low, high = v.get("tls_version_min"), v.get("tls_version_max")
        if low and high and "or-highest" not in low and low.split()[0] > high:
            raise self.error(
                f"'tls-version-min {low}' is above 'tls-version-max {high}'",
                self.lines["tls-version-min"],
            )
        if v.get("disable_dco") and v.get("datapath") == "dco":
            raise self.error(
                "'dcoctl-datapath dco' contradicts 'disable-dco'", self.lines["dcoctl-datapath"]
            )

    def check_scripts(self) -> None:
        # OpenVPN would start and then refuse to run the scripts, rejecting
        # every client; say so now.
        v = self.values
        level = v.get("script_security", 1)
        scripts = ("auth-user-pass-verify", "client-connect", "client-disconnect")
        for name in (*scripts, "learn-address", "up", "down"):
            if name in self.lines and level < 2:
                raise self.error(
                    f"'{name}' needs 'script-security 2' (OpenVPN would not run it)",
                    self.lines[name],
                )
        verify = v.get("auth_user_pass_verify")
        if verify is not None and verify[1] == "via-env" and level < 3:
            raise self.error(
                "'auth-user-pass-verify ... via-env' needs 'script-security 3' (the password "
                "is passed in the environment); or use via-file",
                self.lines["auth-user-pass-verify"],
            )


def _client_only(p: _Parser, d: _Directive) -> None:
    message = f"'{d.name}': this is a client directive, not valid in a server config"
    if d.name in _PUSHABLE:
        message += f' (to hand it to clients, write push "{d.name} ...")'
    raise p.error(message, d.line)


def _ccd_only(p: _Parser, d: _Directive) -> None:
    raise p.error(
        f"'{d.name}' is a per-client option: it belongs in a client-config-dir file", d.line
    )


_REFUSED = CLIENT_DIRECTIVES | CCD_DIRECTIVES | frozenset(SERVER_UNSUPPORTED_DIRECTIVES)

_SERVER_HANDLERS: dict[str, _ServerHandler] = {
    **{name: _ignored for name in IGNORED_DIRECTIVES},
    **{name: _HANDLERS[name] for name in SHARED_DIRECTIVES},
    **{name: _client_only for name in CLIENT_DIRECTIVES},
    **{name: _ccd_only for name in CCD_DIRECTIVES},
    **{name: _unsupported(msg) for name, msg in SERVER_UNSUPPORTED_DIRECTIVES.items()},
    # mode and addressing
    "mode": _ServerParser.h_mode,
    "tls-server": _ServerParser.h_tls_server,
    "topology": _ServerParser.h_topology,
    "server": _ServerParser.h_server,
    "server-ipv6": _ServerParser.h_server_ipv6,
    "ifconfig": _ServerParser.h_ifconfig,
    "ifconfig-ipv6": _ServerParser.h_ifconfig_ipv6,
    "ifconfig-pool": _ServerParser.h_ifconfig_pool,
    "ifconfig-ipv6-pool": _ServerParser.h_ifconfig_ipv6_pool,
    "ifconfig-pool-persist": _ServerParser.h_ifconfig_pool_persist,
    # clients
    "client-to-client": _flag("client_to_client"),
    "duplicate-cn": _flag("duplicate_cn"),
    "max-clients": _int("max_clients", 1),
    "push": _ServerParser.h_push,
    "client-config-dir": _ServerParser.h_client_config_dir,
    "ccd-exclusive": _flag("ccd_exclusive"),
    # PKI
    "dh": _ServerParser.h_dh,
    "crl-verify": _ServerParser.h_crl_verify,
    "tls-crypt-v2": _ServerParser.h_tls_crypt_v2,
    "remote-cert-tls": _ServerParser.h_remote_cert_tls,
    "verify-client-cert": _choice("verify_client_cert", "none", "optional", "require"),
    # timers
    "keepalive": _ServerParser.h_keepalive,
    # authentication and scripts
    "auth-user-pass-verify": _ServerParser.h_auth_user_pass_verify,
    "auth-user-pass-optional": _flag("auth_user_pass_optional"),
    "username-as-common-name": _flag("username_as_common_name"),
    "client-connect": _script("client_connect"),
    "client-disconnect": _script("client_disconnect"),
    "learn-address": _script("learn_address"),
    # socket
    "lport": _ServerParser.h_lport,
    "local": _ServerParser.h_local,
    "bind": _ServerParser.h_bind,
    # status and process
    "status": _ServerParser.h_status,
    "status-version": _int("status_version", 1, 3),
    "cd": _ServerParser.h_cd,
}


# ---------------------------------------------------------------------------
# client-config-dir files
# ---------------------------------------------------------------------------


class _CcdParser(_Parser):
    """Reads one client-config-dir file (no inline blocks, no file references)."""

    def __init__(self, source: str) -> None:
        super().__init__(source, None)
        self.ccd: dict[str, Any] = {}
        self.iroutes: list[tuple[str, int]] = []
        self.iroutes_ipv6: list[tuple[str, int]] = []
        self.push: list[str] = []
        self.push_remove: list[str] = []

    def dispatch(self, d: _Directive, optional: bool = False) -> None:
        if d.inline is not None:
            raise self.error(f"inline <{d.name}> blocks are not allowed in a ccd file", d.line)
        handler = _CCD_HANDLERS.get(d.name)
        if handler is None:
            message = f"'{d.name}' is not valid in a client-config-dir file"
            close = difflib.get_close_matches(d.name, _CCD_HANDLERS, n=1)
            if close:
                message += f" (did you mean '{close[0]}'?)"
            raise self.error(message, d.line)
        handler(self, d)

    def parse(self, text: str) -> None:
        for d in self.read_directives(text):
            self.dispatch(d)

    def finish_ccd(self) -> CcdEntry:
        return CcdEntry(
            source=self.source,
            iroutes=tuple(self.iroutes),
            iroutes_ipv6=tuple(self.iroutes_ipv6),
            push=tuple(self.push),
            push_remove=tuple(self.push_remove),
            **self.ccd,
        )

    def h_ifconfig_push(self, d: _Directive) -> None:
        self.expect(d, 2)
        local = self.ipv4(d, d.args[0], "address")
        _prefixlen(self, d, d.args[1])
        self.ccd["ifconfig_push"] = (local, d.args[1])

    def h_ifconfig_ipv6_push(self, d: _Directive) -> None:
        self.expect(d, 1, 2)
        address = _ipv6_interface(self, d, d.args[0])
        remote = _ipv6(self, d, d.args[1]) if len(d.args) > 1 else None
        self.ccd["ifconfig_ipv6_push"] = (str(address), remote)

    def h_iroute(self, d: _Directive) -> None:
        self.expect(d, 1, 2)
        network = _network(self, d, d.args[0], d.args[1] if len(d.args) > 1 else "255.255.255.255")
        self.iroutes.append((str(network.network_address), network.prefixlen))

    def h_iroute_ipv6(self, d: _Directive) -> None:
        self.expect(d, 1)
        prefix = _ipv6_interface(self, d, d.args[0])
        if prefix.ip != prefix.network.network_address:
            raise self.error(
                f"'iroute-ipv6': {d.args[0]} is not a network address (host bits are set)",
                d.line,
            )
        self.iroutes_ipv6.append((str(prefix.ip), prefix.network.prefixlen))

    def h_push(self, d: _Directive) -> None:
        self.push.append(_pushed_option(self, d))

    def h_push_reset(self, d: _Directive) -> None:
        self.expect(d, 0)
        self.ccd["push_reset"] = True

    def h_push_remove(self, d: _Directive) -> None:
        self.expect(d, 1, hint=' (quote it: push-remove "route 10.0.0.0")')
        if not d.args[0].strip():
            raise self.error("'push-remove': empty option", d.line)
        self.push_remove.append(d.args[0])

    def h_disable(self, d: _Directive) -> None:
        self.expect(d, 0)
        self.ccd["disable"] = True


_CcdHandler = Callable[[_CcdParser, _Directive], None]

_CCD_HANDLERS: dict[str, _CcdHandler] = {
    "ifconfig-push": _CcdParser.h_ifconfig_push,
    "ifconfig-ipv6-push": _CcdParser.h_ifconfig_ipv6_push,
    "iroute": _CcdParser.h_iroute,
    "iroute-ipv6": _CcdParser.h_iroute_ipv6,
    "push": _CcdParser.h_push,
    "push-reset": _CcdParser.h_push_reset,
    "push-remove": _CcdParser.h_push_remove,
    "disable": _CcdParser.h_disable,
}


def _read_text(path: Path, what: str) -> str:
    source = str(path)
    try:
        with path.open("rb") as fh:
            data = fh.read(_MAX_FILE_SIZE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {what}: {exc.strerror or exc}", source) from None
    if len(data) > _MAX_FILE_SIZE:
        raise ConfigError(f"{what} is too large", source)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} is not UTF-8 text ({exc.reason})", source) from None


def _ccd_file_name(common_name: str) -> str | None:
    # OpenVPN's gen_path(): unsafe characters become '_', "." and ".." are refused.
    name = _CCD_UNSAFE.sub("_", common_name)
    return None if name in ("", ".", "..") else name


# ---------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------


def parse_server_config(
    text: str, source: str = "<config>", base_dir: Path | None = None
) -> ServerConfig:
    """Parse the text of an OpenVPN server config.

    ``source`` names the config in errors (and gives ``ServerConfig.name`` its
    stem); relative paths are resolved against ``base_dir`` (the current
    directory if None). Raises :class:`~dcoctl.errors.ConfigError`.
    """
    parser = _ServerParser(source, base_dir)
    parser.parse(text)
    return parser.finish_server()


def load_server_config(path: str | Path) -> ServerConfig:
    """Read and parse the server config at ``path``.

    Files it names (``ca``, ``tls-crypt``, ``crl-verify``, ...) are read now,
    relative to the config's directory. Raises :class:`~dcoctl.errors.ConfigError`.
    """
    text = _read_text(Path(path), "config")
    return parse_server_config(text, str(path), Path(path).absolute().parent)


def is_server_config(text: str) -> bool:
    """True if ``text`` is a server config rather than a client profile.

    That is, it has ``mode server``, ``server``, ``tls-server``,
    ``server-ipv6`` or ``server-bridge`` outside comments and inline blocks.
    Never raises: lines that do not tokenize are skipped.
    """
    markers = {"server", "server-ipv6", "server-bridge", "tls-server"}
    block_end: str | None = None
    for line in text.lstrip("\ufeff").splitlines():
        if block_end is not None:
            if line.lstrip().startswith(block_end):
                block_end = None
            continue
        try:
            tokens = tokenize_line(line)
        except ValueError:
            continue
        if not tokens:
            continue
        tag = _TAG.fullmatch(tokens[0]) if len(tokens) == 1 else None
        if tag is not None and not tag.group(1) and tag.group(2):
            block_end = f"</{tag.group(2)}>"
            continue
        name = tokens[0][2:] if tokens[0].startswith("--") else tokens[0]
        if name in markers or (name == "mode" and tokens[1:] == ["server"]):
            return True
    return False


def parse_ccd(text: str, source: str) -> CcdEntry:
    """Parse the text of one client-config-dir file; errors name ``source:line``."""
    parser = _CcdParser(source)
    parser.parse(text)
    return parser.finish_ccd()


def load_ccd_entry(
    directory: Path, common_name: str, *, exclusive: bool = False
) -> CcdEntry | None:
    """Read the client-config-dir entry for ``common_name``.

    The file is named after the common name (characters other than letters,
    digits and ``_.@-`` replaced by ``_``, as OpenVPN does); if there is none,
    the ``DEFAULT`` file is used. Returns None if neither exists. With
    ``exclusive`` (``ccd-exclusive``) only the common name's own file counts,
    as in OpenVPN. Raises :class:`~dcoctl.errors.ConfigError` for an
    unreadable or invalid file.
    """
    candidates = [_ccd_file_name(common_name)]
    if not exclusive:
        candidates.append(CCD_DEFAULT)
    for name in candidates:
        if name is None:
            continue
        path = Path(directory) / name
        if path.is_file():
            return parse_ccd(_read_text(path, "client-config-dir file"), str(path))
    return None
