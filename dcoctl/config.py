"""OpenVPN-style client configuration files (``.ovpn`` / ``.conf``).

:func:`load_client_config` reads a profile written for OpenVPN 2.6 and returns
a :class:`ClientConfig`. The syntax follows OpenVPN exactly (one directive per
line, optional leading ``--``, quoting as in :func:`tokenize_line`, inline
``<tag>`` ... ``</tag>`` blocks, file paths relative to the profile). The
semantics are those of an OpenVPN *client*: anything only a server, a TAP
bridge, static-key mode or compression would need is refused with a clear
:class:`~dcoctl.errors.ConfigError` naming ``file:line``, rather than being
silently dropped.

The parser is table-driven: :data:`_HANDLERS` maps every recognised directive
to a handler that validates the arguments and records a value; a final pass
checks the combination (client mode, a remote, a CA, one control-channel
wrapping, ...).
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import logging
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .protocol.options import tokenize_line
from .protocol.statickey import KeyDirection, StaticKey, parse_static_key

__all__ = [
    "AEAD_CIPHERS",
    "ClientConfig",
    "DEFAULT_DATA_CIPHERS",
    "IGNORED_DIRECTIVES",
    "INLINE_DIRECTIVES",
    "Remote",
    "Route6Spec",
    "RouteSpec",
    "load_client_config",
    "parse_client_config",
    "tokenize_line",
]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------

# C isspace() in the "C" locale; Python's str.isspace() would also accept
# Unicode spaces that OpenVPN treats as ordinary characters.


# ---------------------------------------------------------------------------
# Result types
# ---------------------------------------------------------------------------

#: ``proto`` spellings accepted for a client, mapped to the stored form.
PROTOCOLS: dict[str, str] = {
    "udp": "udp",
    "udp4": "udp4",
    "udp6": "udp6",
    "tcp": "tcp",
    "tcp4": "tcp4",
    "tcp6": "tcp6",
    "tcp-client": "tcp",
    "tcp4-client": "tcp4",
    "tcp6-client": "tcp6",
}

#: Data-channel ciphers dcoctl implements (all AEAD, all kernel-DCO capable).
AEAD_CIPHERS: tuple[str, ...] = ("AES-128-GCM", "AES-192-GCM", "AES-256-GCM", "CHACHA20-POLY1305")
#: OpenVPN 2.6's default ``data-ciphers``.
DEFAULT_DATA_CIPHERS: tuple[str, ...] = ("AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305")
#: Digests accepted by ``auth`` (only used for the tls-auth HMAC).
AUTH_DIGESTS: tuple[str, ...] = ("SHA1", "SHA224", "SHA256", "SHA384", "SHA512")
#: Flags ``redirect-gateway`` / ``redirect-private`` understand.
REDIRECT_FLAGS = frozenset(
    {"local", "autolocal", "def1", "bypass-dhcp", "bypass-dns", "block-local", "ipv6", "!ipv4"}
)
TLS_VERSIONS: tuple[str, ...] = ("1.0", "1.1", "1.2", "1.3")
#: Gateway keywords OpenVPN resolves when it installs a route.
ROUTE_GATEWAY_KEYWORDS = frozenset({"vpn_gateway", "net_gateway", "remote_host"})

#: Directives that may be given as an inline ``<name>`` block (reference J.2).
INLINE_DIRECTIVES = frozenset(
    """
        ca cert key pkcs12 extra-certs tls-auth tls-crypt tls-crypt-v2 auth-user-pass
        crl-verify dh secret http-proxy-user-pass peer-fingerprint verify-hash
        auth-gen-token-secret
    """.split()
)

#: Directives that only steer OpenVPN's own process (logging, daemonizing,
#: privileges, management interface). dcoctl has its own answers for all of
#: them, so they are accepted and listed in ``ClientConfig.ignored``.
PROCESS_MODEL_DIRECTIVES = frozenset(
    """
        daemon log log-append status status-version writepid user group chroot cd
        suppress-timestamps machine-readable-output syslog errors-to-stderr nice mlock
        persist-remote-ip persist-local-ip ping-timer-rem single-session tls-exit echo
    """.split()
)
#: Windows-only or obsolete directives that have no effect on a Linux client.
FOREIGN_DIRECTIVES = frozenset(
    """
        block-outside-dns ifconfig-nowarn tun-ipv6 tun-mtu-extra dh comp-noadapt service
        pause-exit show-net-up allow-nonadmin dhcp-renew dhcp-release register-dns
        ip-win32 route-method tap-sleep win-sys windows-driver
    """.split()
)
#: Everything accepted and ignored (``management*`` is matched by prefix too).
IGNORED_DIRECTIVES = PROCESS_MODEL_DIRECTIVES | FOREIGN_DIRECTIVES

#: Directives that only make sense in a server config.
SERVER_DIRECTIVES = frozenset(
    """
        server server-ipv6 server-bridge tls-server ifconfig-pool ifconfig-pool-persist
        ifconfig-ipv6-pool ifconfig-push iroute client-config-dir ccd-exclusive
        client-to-client duplicate-cn push push-reset max-clients verify-client-cert
        client-cert-not-required auth-user-pass-verify username-as-common-name
        client-connect client-disconnect learn-address auth-gen-token
        auth-gen-token-secret tls-crypt-v2-verify port-share connect-freq
        stale-routes-check
    """.split()
)

_COMPRESSION_UNSUPPORTED = (
    "compression is not supported: it is insecure (VORACLE) and kernel data-channel offload "
    "cannot do it; remove it here and on the server ('allow-compression no' is the 2.6 default)"
)
_PROXY_UNSUPPORTED = "proxies are not supported yet; connect to the server directly"

#: Directives dcoctl recognises but cannot honour, with the reason given.
UNSUPPORTED_DIRECTIVES: dict[str, str] = {
    "secret": "static-key mode ('secret') is not supported: use TLS mode (client with ca/cert/key)",
    "fragment": (
        "'fragment' is not supported (kernel data-channel offload cannot fragment); "
        "lower 'tun-mtu' instead"
    ),
    "compress": _COMPRESSION_UNSUPPORTED,
    "http-proxy": _PROXY_UNSUPPORTED,
    "http-proxy-option": _PROXY_UNSUPPORTED,
    "http-proxy-user-pass": _PROXY_UNSUPPORTED,
    "socks-proxy": _PROXY_UNSUPPORTED,
    "crl-verify": (
        "'crl-verify' is not supported yet; refusing rather than silently skipping the "
        "revocation check"
    ),
    "peer-fingerprint": "'peer-fingerprint' is not supported yet; use 'ca'",
    "verify-hash": "'verify-hash' is not supported yet",
    "ns-cert-type": "'ns-cert-type' was removed in OpenVPN 2.5; use 'remote-cert-tls server'",
    "tls-remote": "'tls-remote' was removed in OpenVPN 2.4; use 'verify-x509-name'",
    "askpass": "encrypted private keys ('askpass') are not supported yet",
    "pkcs11-providers": "PKCS#11 tokens are not supported yet",
    "pkcs11-id": "PKCS#11 tokens are not supported yet",
    "cryptoapicert": "'cryptoapicert' is Windows-only",
    "ifconfig": "static 'ifconfig' is not supported: the server must push the address",
    "shaper": "'shaper' is not supported",
    "connection": "<connection> blocks are not supported yet; use several 'remote' lines",
}

#: Old or alternative spellings; ``ClientConfig.lines`` records both names.
ALIASES: dict[str, str] = {
    "ncp-ciphers": "data-ciphers",
    "timeout-connect": "server-poll-timeout",
    "connect-timeout": "server-poll-timeout",
}

_MAX_FILE_SIZE = 4 * 1024 * 1024
_INLINE_ARG = "[inline]"
_DIGITS = re.compile(r"-?[0-9]+")
_TAG = re.compile(r"<(/?)([A-Za-z0-9_-]*)>")


class ProtoProperties:
    """``transport`` and ``family`` derived from an OpenVPN ``proto`` value."""

    proto: str

    @property
    def transport(self) -> str:
        """``"udp"`` or ``"tcp"``."""
        return "tcp" if self.proto.startswith("tcp") else "udp"

    @property
    def family(self) -> socket.AddressFamily | None:
        """The address family the protocol pins, or None for "either"."""
        if self.proto.endswith("4"):
            return socket.AF_INET
        if self.proto.endswith("6"):
            return socket.AF_INET6
        return None


@dataclass(frozen=True)
class Remote(ProtoProperties):
    """One ``remote`` entry with port and protocol filled in."""

    host: str
    port: int
    #: One of ``udp``, ``udp4``, ``udp6``, ``tcp``, ``tcp4``, ``tcp6``.
    proto: str


@dataclass(frozen=True)
class RouteSpec:
    """A configured IPv4 ``route``; ``gateway`` may be a keyword like ``net_gateway``."""

    network: str
    netmask: str
    gateway: str | None
    metric: int | None


@dataclass(frozen=True)
class Route6Spec:
    """A configured ``route-ipv6``; ``network`` is ``prefix/bits``."""

    network: str
    gateway: str | None
    metric: int | None


@dataclass(frozen=True, kw_only=True)
class ClientConfig:
    """Everything a client profile says, validated; defaults are OpenVPN 2.6's.

    Build it with :func:`load_client_config` or :func:`parse_client_config`.
    ``lines`` maps each directive seen to the line where it was last given, so
    later checks can still point at ``file:line``.
    """

    source: str
    name: str
    dev: str = "tun"
    topology: str | None = None

    # Connection
    remotes: tuple[Remote, ...] = ()
    remote_random: bool = False
    remote_random_hostname: bool = False
    connect_retry: float = 1.0
    connect_retry_max_backoff: float = 300.0
    connect_retry_max: int | None = None
    server_poll_timeout: float = 120.0
    resolv_retry: float | None = None
    nobind: bool = False
    lport: int | None = None
    allow_float: bool = False

    # PKI and control-channel wrapping
    ca_pem: str = ""
    cert_pem: str | None = None
    key_pem: str | None = field(default=None, repr=False)
    pkcs12: bytes | None = field(default=None, repr=False)
    extra_certs_pem: str | None = None
    tls_auth_key: StaticKey | None = None
    key_direction: KeyDirection = KeyDirection.BIDIRECTIONAL
    tls_crypt_key: StaticKey | None = None
    tls_crypt_v2_key_pem: str | None = field(default=None, repr=False)

    # TLS
    remote_cert_tls: str | None = None
    verify_x509_name: tuple[str, str] | None = None
    tls_version_min: str | None = None
    tls_version_max: str | None = None
    tls_cipher: str | None = None
    tls_ciphersuites: str | None = None
    tls_groups: str | None = None

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
    ping: int = 0
    ping_restart: int = 0
    ping_exit: int = 0
    explicit_exit_notify: int = 0

    # Credentials
    auth_user_pass: bool = False
    #: Something (username and/or password) must be asked for interactively.
    auth_user_pass_prompt: bool = False
    auth_username: str | None = None
    auth_password: str | None = field(default=None, repr=False)
    auth_nocache: bool = False
    auth_retry: str = "none"

    # Routes, DNS and pushed options
    route_nopull: bool = False
    pull_filters: tuple[tuple[str, str], ...] = ()
    allow_pull_fqdn: bool = False
    routes: tuple[RouteSpec, ...] = ()
    routes_ipv6: tuple[Route6Spec, ...] = ()
    route_metric: int | None = None
    route_delay: int | None = None
    redirect_gateway: frozenset[str] | None = None
    redirect_private: frozenset[str] | None = None
    dhcp_options: tuple[tuple[str, str], ...] = ()
    dns_options: tuple[tuple[str, ...], ...] = ()

    # Interface and sockets
    tun_mtu: int = 1500
    mssfix: int | None = None
    txqueuelen: int | None = None
    sndbuf: int | None = None
    rcvbuf: int | None = None
    persist_key: bool = False
    persist_tun: bool = False

    # Logging, environment and scripts
    verb: int = 1
    mute: int = 0
    setenv: tuple[tuple[str, str], ...] = ()
    push_peer_info: bool = False
    script_security: int = 1
    up: str | None = None
    down: str | None = None
    route_up: str | None = None
    route_pre_down: str | None = None
    ipchange: str | None = None
    up_delay: bool = False
    down_pre: bool = False
    up_restart: bool = False

    # dcoctl's own directives
    datapath: str = "auto"
    disable_dco: bool = False
    key_derivation: str = "auto"

    #: (line, directive) of every directive accepted but ignored.
    ignored: tuple[tuple[int, str], ...] = ()
    #: Directive name -> line where it was last given.
    lines: dict[str, int] = field(default_factory=dict, compare=False, hash=False, repr=False)


_FIELD_NAMES = frozenset(f.name for f in fields(ClientConfig))


# ---------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Directive:
    """One directive occurrence: a tokenized line or an inline block."""

    name: str
    args: tuple[str, ...]
    line: int
    #: The block's text for ``<name>`` ... ``</name>`` (args are then empty).
    inline: str | None = None


_Handler = Callable[["_Parser", _Directive], None]


class _Parser:
    """Mutable state while reading one profile; :meth:`finish` builds the result."""

    def __init__(self, source: str, base_dir: Path | None) -> None:
        self.source = source
        self.base_dir = base_dir
        self.values: dict[str, Any] = {}
        self.lines: dict[str, int] = {}
        self.ignored: list[tuple[int, str]] = []
        self.ignore_unknown: set[str] = set()
        self.forward_compatible = False
        self.modes: set[str] = set()  # "pull", "tls-client"
        self.dev = "tun"
        self.dev_type: str | None = None
        self.default_proto = "udp"
        self.default_port = 1194
        self.remotes: list[tuple[str, int | None, str | None]] = []
        self.pull_filters: list[tuple[str, str]] = []
        self.routes: list[RouteSpec] = []
        self.routes_ipv6: list[Route6Spec] = []
        self.dhcp_options: list[tuple[str, str]] = []
        self.dns_options: list[tuple[str, ...]] = []
        self.setenv: list[tuple[str, str]] = []
        self.key_direction: KeyDirection | None = None
        self.tls_auth_direction: KeyDirection | None = None
        # Directives given as "name [inline]" still waiting for their block.
        self.pending_inline: dict[str, int] = {}
        self.inline_seen: set[str] = set()

    # -- helpers ---------------------------------------------------------------
    def error(self, message: str, line: int | None) -> ConfigError:
        return ConfigError(message, self.source, line)

    def set(self, name: str, value: object) -> None:
        # Catch a misspelt field in the handler table at the first use.
        assert name in _FIELD_NAMES, name
        self.values[name] = value

    def expect(self, d: _Directive, low: int, high: int | None = -1, hint: str = "") -> None:
        """Check the argument count: ``high=-1`` means exactly ``low``, None means no limit."""
        high = low if high == -1 else high
        count = len(d.args)
        if count >= low and (high is None or count <= high):
            return
        if high == low:
            wanted = "no arguments" if low == 0 else f"{low} argument{'s' if low > 1 else ''}"
        elif high is None:
            wanted = f"at least {low} argument{'s' if low > 1 else ''}"
        else:
            wanted = f"{low} to {high} arguments"
        raise self.error(f"'{d.name}' takes {wanted}, got {count}{hint}", d.line)

    def integer(self, d: _Directive, text: str, low: int, high: int | None = None) -> int:
        if not _DIGITS.fullmatch(text):
            raise self.error(f"'{d.name}': '{text}' is not a number", d.line)
        value = int(text)
        if value < low or (high is not None and value > high):
            limits = f"{low}..{high}" if high is not None else f">= {low}"
            raise self.error(f"'{d.name}': {value} is out of range ({limits})", d.line)
        return value

    def port(self, d: _Directive, text: str) -> int:
        if not _DIGITS.fullmatch(text) or not 1 <= int(text) <= 65535:
            raise self.error(f"'{d.name}': invalid port '{text}' (must be 1..65535)", d.line)
        return int(text)

    def choice(self, d: _Directive, text: str, choices: tuple[str, ...]) -> str:
        if text not in choices:
            raise self.error(
                f"'{d.name}': invalid value '{text}' (expected {' | '.join(choices)})", d.line
            )
        return text

    def proto(self, d: _Directive, text: str) -> str:
        if text in PROTOCOLS:
            return PROTOCOLS[text]
        if text.startswith("tcp") and text.endswith("-server"):
            raise self.error(f"'{d.name} {text}': server configs are not supported yet", d.line)
        raise self.error(
            f"'{d.name}': invalid protocol '{text}' (expected {' | '.join(PROTOCOLS)})", d.line
        )

    def read_file(self, d: _Directive, name: str) -> bytes:
        path = Path(name)
        if not path.is_absolute() and self.base_dir is not None:
            path = self.base_dir / path
        try:
            with path.open("rb") as fh:
                data = fh.read(_MAX_FILE_SIZE + 1)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise self.error(f"'{d.name}': cannot read '{path}': {reason}", d.line) from None
        if len(data) > _MAX_FILE_SIZE:
            raise self.error(f"'{d.name}': '{path}' is too large", d.line)
        return data

    def file_bytes(self, d: _Directive, max_args: int = 1) -> tuple[bytes, str | None] | None:
        """What a file-taking directive provides: (contents, path or None if inline).

        Returns None for ``name [inline]``: the ``<name>`` block supplies it.
        """
        if d.inline is not None:
            self.inline_seen.add(d.name)
            self.pending_inline.pop(d.name, None)
            return d.inline.encode(), None
        self.expect(d, 1, max_args)
        if d.args[0] == _INLINE_ARG:
            if d.name not in self.inline_seen:
                self.pending_inline[d.name] = d.line
            return None
        return self.read_file(d, d.args[0]), d.args[0]

    def file_text(self, d: _Directive, max_args: int = 1) -> tuple[str, str | None] | None:
        got = self.file_bytes(d, max_args)
        if got is None:
            return None
        data, path = got
        try:
            return data.decode("utf-8-sig"), path
        except UnicodeDecodeError:
            raise self.error(f"'{d.name}': '{path}' is not a text (PEM) file", d.line) from None

    def pem(self, d: _Directive) -> str | None:
        got = self.file_text(d)
        if got is None:
            return None
        text, path = got
        if "-----BEGIN " not in text:
            where = f"'{path}'" if path is not None else f"the <{d.name}> block"
            raise self.error(f"'{d.name}': no PEM data in {where}", d.line)
        return text

    def static_key(self, d: _Directive, max_args: int = 1) -> StaticKey | None:
        got = self.file_text(d, max_args)
        if got is None:
            return None
        text, path = got
        try:
            if path is None:
                # Inline: the key's own line numbers are the profile's.
                return parse_static_key(text, self.source, d.line + 1)
            return parse_static_key(text, path)
        except ConfigError as exc:
            if path is None:
                raise self.error(f"'{d.name}': {exc.message}", exc.line or d.line) from None
            raise self.error(f"'{d.name}': {exc}", d.line) from None

    def ciphers(self, d: _Directive, spec: str) -> tuple[str, ...]:
        result: list[str] = []
        for item in spec.split(":"):
            # OpenVPN 2.6: "?NAME" means "use it if this build has it".
            optional = item.startswith("?")
            cipher = (item[1:] if optional else item).upper()
            if cipher not in AEAD_CIPHERS:
                if optional:
                    log.debug("%s:%d: skipping optional cipher %r", self.source, d.line, item)
                    continue
                raise self.error(
                    f"'{d.name}': cipher '{item}' is not supported; only the AEAD ciphers "
                    f"{', '.join(AEAD_CIPHERS)} are (no CBC/HMAC data channel)",
                    d.line,
                )
            if cipher not in result:
                result.append(cipher)
        if not result:
            raise self.error(f"'{d.name}': no usable cipher in '{spec}'", d.line)
        return tuple(result)

    def ipv4(self, d: _Directive, text: str, what: str) -> str:
        try:
            return str(ipaddress.IPv4Address(text))
        except ValueError:
            raise self.error(f"'{d.name}': invalid {what} '{text}'", d.line) from None

    def ignore(self, d: _Directive, why: str) -> None:
        log.debug("%s:%d: ignoring '%s' (%s)", self.source, d.line, d.name, why)
        self.ignored.append((d.line, d.name))

    # -- dispatch ----------------------------------------------------------------
    def handler_table(self) -> dict[str, _Handler]:
        """Directive name -> handler; the server parser swaps in its own table."""
        return _HANDLERS

    def is_refused(self, name: str) -> bool:
        """Directives whose handler only explains why they are not supported."""
        return name in UNSUPPORTED_DIRECTIVES or name in SERVER_DIRECTIVES

    def dispatch(self, d: _Directive, optional: bool = False) -> None:
        handler = self.handler_table().get(d.name)
        if handler is None and d.name.startswith("management"):
            handler = _ignored
        if handler is None:
            self.unknown(d, optional)
            return
        if d.inline is not None and d.name not in INLINE_DIRECTIVES and not self.is_refused(d.name):
            raise self.error(f"'{d.name}' cannot be given as an inline <{d.name}> block", d.line)
        handler(self, d)
        self.lines[d.name] = d.line
        if d.name in ALIASES:
            self.lines[ALIASES[d.name]] = d.line

    def unknown(self, d: _Directive, optional: bool) -> None:
        if optional or d.name in self.ignore_unknown:
            self.ignore(d, "unknown, but marked ignorable")
            return
        if self.forward_compatible:
            log.warning("%s:%d: ignoring unknown option '%s'", self.source, d.line, d.name)
            self.ignored.append((d.line, d.name))
            return
        message = f"unknown option '{d.name}'"
        close = difflib.get_close_matches(d.name, self.handler_table(), n=1)
        if close:
            message += f" (did you mean '{close[0]}'?)"
        raise self.error(message, d.line)

    def parse(self, text: str) -> None:
        directives = self.read_directives(text)
        # A server config would otherwise fail on whatever comes first (often
        # "ca ca.crt" relative to some other directory); say what it really is.
        for d in directives:
            if _is_server_directive(d):
                _server_only(self, d)
        for d in directives:
            self.dispatch(d)

    def read_directives(self, text: str) -> list[_Directive]:
        """Tokenize every line and collect inline blocks, in file order."""
        directives: list[_Directive] = []
        lines = text.splitlines()
        if lines and lines[0].startswith("\ufeff"):
            lines[0] = lines[0][1:]
        # One iterator, so an inline block consumes its lines from the main loop.
        numbered = iter(enumerate(lines, start=1))
        for lineno, line in numbered:
            try:
                tokens = tokenize_line(line)
            except ValueError as exc:
                raise self.error(str(exc), lineno) from None
            if not tokens:
                continue
            tag = _TAG.fullmatch(tokens[0]) if len(tokens) == 1 else None
            if tag is None:
                name = tokens[0][2:] if tokens[0].startswith("--") else tokens[0]
                directives.append(_Directive(name, tuple(tokens[1:]), lineno))
                continue
            closing, name = tag.groups()
            if closing or not name:
                raise self.error(f"'{tokens[0]}' without a matching opening tag", lineno)
            end = f"</{name}>"
            body: list[str] = []
            for _, body_line in numbered:
                # Like OpenVPN: leading blanks allowed, anything after the tag ignored.
                if body_line.lstrip().startswith(end):
                    break
                body.append(body_line + "\n")
            else:
                raise self.error(f"inline block <{name}> is never closed (no {end})", lineno)
            directives.append(_Directive(name, (), lineno, "".join(body)))
        return directives

    # -- final checks ------------------------------------------------------------
    def finish(self) -> ClientConfig:
        if self.pending_inline:
            name, line = next(iter(self.pending_inline.items()))
            raise self.error(f"'{name} {_INLINE_ARG}' but no <{name}> block follows", line)
        if not self.modes:
            raise self.error(
                "not a client config: add 'client' (dcoctl only runs OpenVPN clients)", None
            )
        if self.modes != {"pull", "tls-client"}:
            missing = ({"pull", "tls-client"} - self.modes).pop()
            raise self.error(
                f"'{missing}' is missing: dcoctl needs a TLS client that pulls its settings "
                "(add 'client')",
                self.lines.get("pull", self.lines.get("tls-client")),
            )
        dev_type = self.dev_type or _infer_dev_type(self.dev)
        if dev_type != "tun":
            raise self.error(
                f"'dev {self.dev}': only tun devices are supported ({dev_type} is not)",
                self.lines.get("dev-type", self.lines.get("dev")),
            )
        if not self.remotes:
            raise self.error("no 'remote' given: the profile must name the server", None)
        self.check_pki()
        self.check_conflicts()

        self.set("dev", self.dev)
        self.set(
            "remotes",
            tuple(
                Remote(host, port or self.default_port, proto or self.default_proto)
                for host, port, proto in self.remotes
            ),
        )
        # An explicit "tls-auth FILE N" wins over a general key-direction, as in OpenVPN.
        for direction in (self.tls_auth_direction, self.key_direction):
            if direction is not None:
                self.set("key_direction", direction)
                break
        if self.values.get("disable_dco") and self.values.get("datapath", "auto") == "auto":
            self.set("datapath", "userspace")
        self.set("pull_filters", tuple(self.pull_filters))
        self.set("routes", tuple(self.routes))
        self.set("routes_ipv6", tuple(self.routes_ipv6))
        self.set("dhcp_options", tuple(self.dhcp_options))
        self.set("dns_options", tuple(self.dns_options))
        self.set("setenv", tuple(self.setenv))
        self.set("ignored", tuple(self.ignored))
        self.set("lines", dict(self.lines))
        return ClientConfig(source=self.source, name=Path(self.source).stem, **self.values)

    def check_pki(self) -> None:
        v = self.values
        if "ca_pem" not in v:
            raise self.error(
                "no 'ca' given: the server certificate cannot be verified without it", None
            )
        has_cert, has_key = "cert_pem" in v, "key_pem" in v
        if has_cert != has_key:
            given, missing = ("cert", "key") if has_cert else ("key", "cert")
            raise self.error(f"'{given}' given without '{missing}'", self.lines[given])
        if "pkcs12" in v and has_cert:
            raise self.error("'cert'/'key' cannot be combined with 'pkcs12'", self.lines["pkcs12"])
        if not has_cert and "pkcs12" not in v and not v.get("auth_user_pass"):
            raise self.error(
                "no client authentication: give 'cert' and 'key', 'pkcs12' or 'auth-user-pass'",
                None,
            )

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
            for name in ("ping", "ping-restart", "ping-exit"):
                if name in self.lines:
                    raise self.error(
                        f"'keepalive' conflicts with '{name}' (keepalive already sets the pings)",
                        max(self.lines["keepalive"], self.lines[name]),
                    )
        if v.get("nobind") and v.get("lport") is not None:
            raise self.error("'lport' and 'nobind' contradict each other", self.lines["lport"])
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

    # -- handlers that need more than one field ----------------------------------
    def h_client(self, d: _Directive) -> None:
        self.expect(d, 0)
        self.modes |= {"pull", "tls-client"}

    def h_pull(self, d: _Directive) -> None:
        self.expect(d, 0)
        self.modes.add(d.name)

    def h_mode(self, d: _Directive) -> None:
        self.expect(d, 1)
        if self.choice(d, d.args[0], ("p2p", "server")) == "server":
            _server_only(self, d)

    def h_dev(self, d: _Directive) -> None:
        self.expect(d, 1)
        name = d.args[0]
        # Linux interface names: at most IFNAMSIZ-1 bytes, no '/', ':' or blanks.
        bad = len(name.encode()) > 15 or name in (".", "..") or any(c in name for c in "/: \t")
        if not name or bad:
            raise self.error(f"'dev': invalid interface name '{name}'", d.line)
        self.dev = name

    def h_dev_type(self, d: _Directive) -> None:
        self.expect(d, 1)
        self.dev_type = self.choice(d, d.args[0], ("tun", "tap", "null"))

    def h_proto(self, d: _Directive) -> None:
        self.expect(d, 1)
        self.default_proto = self.proto(d, d.args[0])

    def h_port(self, d: _Directive) -> None:
        self.expect(d, 1)
        self.default_port = self.port(d, d.args[0])

    def h_lport(self, d: _Directive) -> None:
        self.expect(d, 1)
        self.set("lport", self.port(d, d.args[0]))

    def h_remote(self, d: _Directive) -> None:
        self.expect(d, 1, 3)
        host = d.args[0]
        if not host or host.startswith("-"):
            raise self.error(f"'remote': invalid host '{host}'", d.line)
        port = self.port(d, d.args[1]) if len(d.args) > 1 else None
        proto = self.proto(d, d.args[2]) if len(d.args) > 2 else None
        self.remotes.append((host, port, proto))

    def h_resolv_retry(self, d: _Directive) -> None:
        self.expect(d, 1)
        infinite = d.args[0] == "infinite"
        self.set("resolv_retry", None if infinite else float(self.integer(d, d.args[0], 0)))

    def h_connect_retry(self, d: _Directive) -> None:
        self.expect(d, 1, 2)
        delay = self.integer(d, d.args[0], 0)
        self.set("connect_retry", float(delay))
        if len(d.args) > 1:
            self.set("connect_retry_max_backoff", float(self.integer(d, d.args[1], delay)))

    def h_connect_retry_max(self, d: _Directive) -> None:
        self.expect(d, 1)
        limit = self.integer(d, d.args[0], 0)
        self.set("connect_retry_max", limit or None)  # 0 means "unlimited" in OpenVPN

    def h_server_poll_timeout(self, d: _Directive) -> None:
        self.expect(d, 1)
        self.set("server_poll_timeout", float(self.integer(d, d.args[0], 1)))

    def h_nobind(self, d: _Directive) -> None:
        self.expect(d, 0)
        self.set("nobind", True)

    def h_bind(self, d: _Directive) -> None:
        self.expect(d, 0, 1)
        if d.args:
            self.choice(d, d.args[0], ("ipv6only",))
        self.set("nobind", False)

    def h_ca(self, d: _Directive) -> None:
        text = self.pem(d)
        if text is not None:
            self.set("ca_pem", text)

    def h_cert(self, d: _Directive) -> None:
        text = self.pem(d)
        if text is not None:
            self.set("cert_pem", text)

    def h_key(self, d: _Directive) -> None:
        text = self.pem(d)
        if text is not None:
            self.set("key_pem", text)

    def h_extra_certs(self, d: _Directive) -> None:
        text = self.pem(d)
        if text is not None:
            self.set("extra_certs_pem", text)

    def h_pkcs12(self, d: _Directive) -> None:
        got = self.file_bytes(d)
        if got is None:
            return
        data, path = got
        if path is None:
            # Inline PKCS#12 is base64 text (reference J.2); a file is raw DER.
            try:
                data = base64.b64decode(b"".join(data.split()), validate=True)
            except binascii.Error:
                raise self.error("'pkcs12': the inline block is not valid base64", d.line) from None
        self.set("pkcs12", data)

    def h_tls_auth(self, d: _Directive) -> None:
        key = self.static_key(d, max_args=2)
        if len(d.args) > 1:
            self.tls_auth_direction = self.direction(d, d.args[1])
        if key is not None:
            self.set("tls_auth_key", key)

    def h_key_direction(self, d: _Directive) -> None:
        self.expect(d, 1)
        self.key_direction = self.direction(d, d.args[0])

    def direction(self, d: _Directive, text: str) -> KeyDirection:
        value = self.choice(d, text, ("0", "1"))
        return KeyDirection.NORMAL if value == "0" else KeyDirection.INVERSE

    def h_tls_crypt(self, d: _Directive) -> None:
        key = self.static_key(d)
        if key is not None:
            self.set("tls_crypt_key", key)

    def h_tls_crypt_v2(self, d: _Directive) -> None:
        got = self.file_text(d)
        if got is None:
            return
        text, path = got
        where = f"'{path}'" if path is not None else "the <tls-crypt-v2> block"
        if "-----BEGIN OpenVPN tls-crypt-v2 server key-----" in text:
            raise self.error(
                f"'tls-crypt-v2': {where} holds the server key; the client needs its own "
                "client key (openvpn --genkey tls-crypt-v2-client)",
                d.line,
            )
        if "-----BEGIN OpenVPN tls-crypt-v2 client key-----" not in text:
            raise self.error(f"'tls-crypt-v2': no tls-crypt-v2 client key in {where}", d.line)
        self.set("tls_crypt_v2_key_pem", text)

    def h_verify_x509_name(self, d: _Directive) -> None:
        self.expect(d, 1, 2)
        kind = d.args[1] if len(d.args) > 1 else "subject"
        self.set("verify_x509_name", (d.args[0], self.choice(d, kind, _X509_NAME_TYPES)))

    def h_tls_version_min(self, d: _Directive) -> None:
        self.expect(d, 1, 2)
        value = self.choice(d, d.args[0], TLS_VERSIONS)
        if len(d.args) > 1:
            value += " " + self.choice(d, d.args[1], ("or-highest",))
        self.set("tls_version_min", value)

    def h_data_ciphers(self, d: _Directive) -> None:
        self.expect(d, 1)
        self.set("data_ciphers", self.ciphers(d, d.args[0]))

    def h_data_ciphers_fallback(self, d: _Directive) -> None:
        self.expect(d, 1)
        if ":" in d.args[0] or d.args[0].startswith("?"):
            raise self.error("'data-ciphers-fallback' takes a single cipher", d.line)
        self.set("data_ciphers_fallback", self.ciphers(d, d.args[0])[0])

    def h_auth(self, d: _Directive) -> None:
        self.expect(d, 1)
        digest = d.args[0].upper()
        if digest not in AUTH_DIGESTS:
            raise self.error(
                f"'auth': unsupported digest '{d.args[0]}' (expected {', '.join(AUTH_DIGESTS)})",
                d.line,
            )
        self.set("auth", digest)

    def h_reneg_sec(self, d: _Directive) -> None:
        self.expect(d, 1, 2)
        seconds = self.integer(d, d.args[0], 0)
        if len(d.args) > 1:
            self.integer(d, d.args[1], 0, seconds)  # the jitter floor; servers only
        self.set("reneg_sec", seconds)

    def h_replay_window(self, d: _Directive) -> None:
        self.expect(d, 1, 2)
        self.set("replay_window", self.integer(d, d.args[0], 0, 65536))
        if len(d.args) > 1:
            self.integer(d, d.args[1], 0)

    def h_keepalive(self, d: _Directive) -> None:
        self.expect(d, 2)
        interval, restart = self.integer(d, d.args[0], 1), self.integer(d, d.args[1], 1)
        if restart < 2 * interval:
            raise self.error(
                f"'keepalive': the restart timeout ({restart}) must be at least twice the ping "
                f"interval ({interval}); 'keepalive 10 60' is the usual choice",
                d.line,
            )
        self.set("ping", interval)
        self.set("ping_restart", restart)

    def h_explicit_exit_notify(self, d: _Directive) -> None:
        self.expect(d, 0, 1)
        self.set("explicit_exit_notify", self.integer(d, d.args[0], 0) if d.args else 1)

    def h_auth_user_pass(self, d: _Directive) -> None:
        if d.inline is None:
            self.expect(d, 0, 1)
        self.set("auth_user_pass", True)
        got = self.file_text(d) if d.args or d.inline is not None else None
        if got is None:
            if not d.args:  # no file at all: ask for both
                self.set("auth_username", None)
                self.set("auth_password", None)
                self.set("auth_user_pass_prompt", True)
            return
        lines = got[0].splitlines()
        if not lines or not lines[0]:
            where = f"'{got[1]}'" if got[1] is not None else "the <auth-user-pass> block"
            raise self.error(f"'auth-user-pass': no username in {where}", d.line)
        password = lines[1] if len(lines) > 1 else None
        self.set("auth_username", lines[0])
        self.set("auth_password", password)
        self.set("auth_user_pass_prompt", password is None)

    def h_pull_filter(self, d: _Directive) -> None:
        self.expect(d, 2)
        action = self.choice(d, d.args[0], ("accept", "ignore", "reject"))
        self.pull_filters.append((action, d.args[1]))

    def h_route(self, d: _Directive) -> None:
        self.expect(d, 1, 4)
        args = list(d.args) + [""] * (4 - len(d.args))
        network, netmask, gateway, metric = args
        if network in ROUTE_GATEWAY_KEYWORDS:
            raise self.error(f"'route': '{network}' as the network is not supported yet", d.line)
        network = self.ipv4(d, network, "network")
        netmask = "255.255.255.255" if netmask in ("", "default") else netmask
        try:
            net = ipaddress.IPv4Network(f"0.0.0.0/{netmask}")
        except ValueError:
            raise self.error(f"'route': invalid netmask '{netmask}'", d.line) from None
        if int(ipaddress.IPv4Address(network)) & int(net.hostmask):
            log.warning(
                "%s:%d: route %s/%s has host bits set", self.source, d.line, network, netmask
            )
        gw: str | None = None
        if gateway not in ("", "default"):
            gw = gateway if gateway in ROUTE_GATEWAY_KEYWORDS else self.ipv4(d, gateway, "gateway")
        metric_value = self.integer(d, metric, 0) if metric not in ("", "default") else None
        self.routes.append(RouteSpec(network, str(net.netmask), gw, metric_value))

    def h_route_ipv6(self, d: _Directive) -> None:
        self.expect(d, 1, 3)
        try:
            net = ipaddress.IPv6Network(d.args[0], strict=False)
        except ValueError:
            raise self.error(f"'route-ipv6': invalid prefix '{d.args[0]}'", d.line) from None
        gw: str | None = None
        if len(d.args) > 1 and d.args[1] != "default":
            try:
                gw = str(ipaddress.IPv6Address(d.args[1]))
            except ValueError:
                raise self.error(f"'route-ipv6': invalid gateway '{d.args[1]}'", d.line) from None
        metric = self.integer(d, d.args[2], 0) if len(d.args) > 2 else None
        self.routes_ipv6.append(Route6Spec(str(net), gw, metric))

    def h_route_delay(self, d: _Directive) -> None:
        self.expect(d, 0, 2)
        self.set("route_delay", self.integer(d, d.args[0], 0) if d.args else 0)
        if len(d.args) > 1:
            self.integer(d, d.args[1], 0)

    def h_redirect(self, d: _Directive) -> None:
        for flag in d.args:
            if flag not in REDIRECT_FLAGS:
                known = ", ".join(sorted(REDIRECT_FLAGS))
                raise self.error(f"'{d.name}': unknown flag '{flag}' (expected {known})", d.line)
        self.set(d.name.replace("-", "_"), frozenset(d.args))

    def h_dhcp_option(self, d: _Directive) -> None:
        self.expect(d, 1, 2)
        self.dhcp_options.append((d.args[0], d.args[1] if len(d.args) > 1 else ""))

    def h_dns(self, d: _Directive) -> None:
        self.expect(d, 1, None)
        self.dns_options.append(d.args)

    def h_mssfix(self, d: _Directive) -> None:
        self.expect(d, 0, 2)
        # OpenVPN's default when mssfix is given without a value.
        self.set("mssfix", self.integer(d, d.args[0], 0, 65535) if d.args else 1492)
        if len(d.args) > 1:
            self.choice(d, d.args[1], ("mtu", "fixed"))

    def h_link_mtu(self, d: _Directive) -> None:
        self.expect(d, 1)
        self.integer(d, d.args[0], 0, 65535)
        log.warning(
            "%s:%d: 'link-mtu' is deprecated and ignored; use 'tun-mtu'", self.source, d.line
        )
        self.ignored.append((d.line, d.name))

    def h_setenv(self, d: _Directive) -> None:
        self.expect(d, 1, None)
        if d.args[0] == "opt":
            # "setenv opt X ..." = option X, ignored if this client does not know it.
            if len(d.args) < 2:
                raise self.error("'setenv opt' needs an option after it", d.line)
            self.dispatch(_Directive(d.args[1], d.args[2:], d.line), optional=True)
            return
        self.expect(d, 1, 2)
        name, value = d.args[0], d.args[1] if len(d.args) > 1 else ""
        if name == "FORWARD_COMPATIBLE" and value == "1":
            self.forward_compatible = True
        if d.name == "setenv-safe":
            name = "OPENVPN_" + name
        self.setenv.append((name, value))

    def h_ignore_unknown_option(self, d: _Directive) -> None:
        self.expect(d, 1, None)
        self.ignore_unknown.update(d.args)

    def h_allow_compression(self, d: _Directive) -> None:
        self.expect(d, 1)
        if self.choice(d, d.args[0], ("no", "asym", "yes")) != "no":
            raise self.error(_COMPRESSION_UNSUPPORTED, d.line)

    def h_comp_lzo(self, d: _Directive) -> None:
        self.expect(d, 0, 1)
        if d.args != ("no",):
            raise self.error(_COMPRESSION_UNSUPPORTED, d.line)
        log.debug("%s:%d: 'comp-lzo no' accepted (no compression)", self.source, d.line)


def _is_server_directive(d: _Directive) -> bool:
    if d.name in SERVER_DIRECTIVES:
        return True
    if d.name == "mode":
        return d.args == ("server",)
    return d.name == "proto" and len(d.args) == 1 and d.args[0].endswith("-server")


def _infer_dev_type(dev: str) -> str:
    # OpenVPN infers the type from the name's prefix; names like "vpn0" need a
    # dev-type there, but tun is the only type dcoctl has, so assume it.
    for kind in ("tap", "null"):
        if dev.startswith(kind):
            return kind
    return "tun"


_X509_NAME_TYPES = ("subject", "name", "name-prefix")


# -- handler factories for the common one-field shapes --------------------------
def _flag(name: str, value: bool = True) -> _Handler:
    def handle(p: _Parser, d: _Directive) -> None:
        p.expect(d, 0)
        p.set(name, value)

    return handle


def _int(name: str, low: int, high: int | None = None) -> _Handler:
    def handle(p: _Parser, d: _Directive) -> None:
        p.expect(d, 1)
        p.set(name, p.integer(d, d.args[0], low, high))

    return handle


def _str(name: str) -> _Handler:
    def handle(p: _Parser, d: _Directive) -> None:
        p.expect(d, 1)
        p.set(name, d.args[0])

    return handle


def _choice(name: str, *choices: str) -> _Handler:
    def handle(p: _Parser, d: _Directive) -> None:
        p.expect(d, 1)
        p.set(name, p.choice(d, d.args[0], choices))

    return handle


def _script(name: str) -> _Handler:
    def handle(p: _Parser, d: _Directive) -> None:
        # OpenVPN takes one token and splits it itself when running the script.
        p.expect(d, 1, hint=f' (quote a command with arguments: {d.name} "/path/cmd arg")')
        p.set(name, d.args[0])

    return handle


def _unsupported(message: str) -> _Handler:
    def handle(p: _Parser, d: _Directive) -> None:
        raise p.error(message, d.line)

    return handle


def _ignored(p: _Parser, d: _Directive) -> None:
    p.ignore(d, "not needed by dcoctl")


def _server_only(p: _Parser, d: _Directive) -> None:
    raise p.error(
        f"server configs are not supported yet ('{d.name}' is a server option); "
        "dcoctl only runs OpenVPN clients",
        d.line,
    )


_HANDLERS: dict[str, _Handler] = {
    **{name: _ignored for name in IGNORED_DIRECTIVES},
    **{name: _server_only for name in SERVER_DIRECTIVES},
    **{name: _unsupported(msg) for name, msg in UNSUPPORTED_DIRECTIVES.items()},
    # mode and device
    "client": _Parser.h_client,
    "pull": _Parser.h_pull,
    "tls-client": _Parser.h_pull,
    "mode": _Parser.h_mode,
    "dev": _Parser.h_dev,
    "dev-type": _Parser.h_dev_type,
    "topology": _choice("topology", "subnet", "net30", "p2p"),
    # connection
    "proto": _Parser.h_proto,
    "remote": _Parser.h_remote,
    "remote-random": _flag("remote_random"),
    "remote-random-hostname": _flag("remote_random_hostname"),
    "port": _Parser.h_port,
    "rport": _Parser.h_port,
    "lport": _Parser.h_lport,
    "nobind": _Parser.h_nobind,
    "bind": _Parser.h_bind,
    "float": _flag("allow_float"),
    "resolv-retry": _Parser.h_resolv_retry,
    "connect-retry": _Parser.h_connect_retry,
    "connect-retry-max": _Parser.h_connect_retry_max,
    "server-poll-timeout": _Parser.h_server_poll_timeout,
    "connect-timeout": _Parser.h_server_poll_timeout,
    "timeout-connect": _Parser.h_server_poll_timeout,
    # PKI and control-channel wrapping
    "ca": _Parser.h_ca,
    "cert": _Parser.h_cert,
    "key": _Parser.h_key,
    "extra-certs": _Parser.h_extra_certs,
    "pkcs12": _Parser.h_pkcs12,
    "tls-auth": _Parser.h_tls_auth,
    "key-direction": _Parser.h_key_direction,
    "tls-crypt": _Parser.h_tls_crypt,
    "tls-crypt-v2": _Parser.h_tls_crypt_v2,
    # TLS
    "remote-cert-tls": _choice("remote_cert_tls", "server", "client"),
    "verify-x509-name": _Parser.h_verify_x509_name,
    "tls-version-min": _Parser.h_tls_version_min,
    "tls-version-max": _choice("tls_version_max", *TLS_VERSIONS),
    "tls-cipher": _str("tls_cipher"),
    "tls-ciphersuites": _str("tls_ciphersuites"),
    "tls-groups": _str("tls_groups"),
    # data channel and timers
    "data-ciphers": _Parser.h_data_ciphers,
    "ncp-ciphers": _Parser.h_data_ciphers,
    "data-ciphers-fallback": _Parser.h_data_ciphers_fallback,
    "cipher": _str("cipher"),
    "auth": _Parser.h_auth,
    "reneg-sec": _Parser.h_reneg_sec,
    "reneg-bytes": _int("reneg_bytes", 0),
    "reneg-pkts": _int("reneg_pkts", 0),
    "hand-window": _int("hand_window", 1),
    "tls-timeout": _int("tls_timeout", 1),
    "replay-window": _Parser.h_replay_window,
    "mute-replay-warnings": _flag("mute_replay_warnings"),
    "ping": _int("ping", 0),
    "ping-restart": _int("ping_restart", 0),
    "ping-exit": _int("ping_exit", 0),
    "keepalive": _Parser.h_keepalive,
    "explicit-exit-notify": _Parser.h_explicit_exit_notify,
    "allow-compression": _Parser.h_allow_compression,
    "comp-lzo": _Parser.h_comp_lzo,
    # credentials
    "auth-user-pass": _Parser.h_auth_user_pass,
    "auth-nocache": _flag("auth_nocache"),
    "auth-retry": _choice("auth_retry", "none", "nointeract", "interact"),
    # routes, DNS, pushed options
    "route-nopull": _flag("route_nopull"),
    "pull-filter": _Parser.h_pull_filter,
    "allow-pull-fqdn": _flag("allow_pull_fqdn"),
    "route": _Parser.h_route,
    "route-ipv6": _Parser.h_route_ipv6,
    "route-metric": _int("route_metric", 0, 2**31 - 1),
    "route-delay": _Parser.h_route_delay,
    "redirect-gateway": _Parser.h_redirect,
    "redirect-private": _Parser.h_redirect,
    "dhcp-option": _Parser.h_dhcp_option,
    "dns": _Parser.h_dns,
    # interface and sockets
    "tun-mtu": _int("tun_mtu", 576, 9000),
    "mssfix": _Parser.h_mssfix,
    "link-mtu": _Parser.h_link_mtu,
    "txqueuelen": _int("txqueuelen", 0),
    "sndbuf": _int("sndbuf", 0),
    "rcvbuf": _int("rcvbuf", 0),
    "persist-key": _flag("persist_key"),
    "persist-tun": _flag("persist_tun"),
    # logging, environment, scripts
    "verb": _int("verb", 0, 11),
    "mute": _int("mute", 0),
    "setenv": _Parser.h_setenv,
    "setenv-safe": _Parser.h_setenv,
    "ignore-unknown-option": _Parser.h_ignore_unknown_option,
    "push-peer-info": _flag("push_peer_info"),
    "script-security": _int("script_security", 0, 3),
    "up": _script("up"),
    "down": _script("down"),
    "route-up": _script("route_up"),
    "route-pre-down": _script("route_pre_down"),
    "ipchange": _script("ipchange"),
    "up-delay": _flag("up_delay"),
    "down-pre": _flag("down_pre"),
    "up-restart": _flag("up_restart"),
    # dcoctl's own
    "disable-dco": _flag("disable_dco"),
    "dcoctl-datapath": _choice("datapath", "auto", "userspace", "dco"),
    "dcoctl-key-derivation": _choice("key_derivation", "auto", "prf"),
}


# ---------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------


def parse_client_config(
    text: str, source: str = "<config>", base_dir: Path | None = None
) -> ClientConfig:
    """Parse the text of a client profile.

    ``source`` names the profile in errors (and gives ``ClientConfig.name`` its
    stem); relative file paths are resolved against ``base_dir`` (the current
    directory if None). Raises :class:`~dcoctl.errors.ConfigError`.
    """
    parser = _Parser(source, base_dir)
    parser.parse(text)
    return parser.finish()


def load_client_config(path: str | Path) -> ClientConfig:
    """Read and parse the client profile at ``path``.

    Files the profile names (``ca``, ``tls-auth``, ...) are read now, relative
    to the profile's directory. Raises :class:`~dcoctl.errors.ConfigError`.
    """
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config: {exc.strerror or exc}", source) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config is not UTF-8 text ({exc.reason})", source) from None
    return parse_client_config(text, source, Path(path).absolute().parent)
