"""Tests for dcoctl.config: OpenVPN client profile parsing."""

from __future__ import annotations

import base64
import logging
import os
import socket
from pathlib import Path

import pytest

from dcoctl.config import (
    DEFAULT_DATA_CIPHERS,
    IGNORED_DIRECTIVES,
    ClientConfig,
    Remote,
    Route6Spec,
    RouteSpec,
    load_client_config,
    parse_client_config,
    tokenize_line,
)
from dcoctl.errors import ConfigError
from dcoctl.protocol.statickey import KeyDirection, StaticKey, format_static_key

# The parser stores PEM text without X.509 parsing, so fake PEM is enough.
CA_PEM = "-----BEGIN CERTIFICATE-----\nQ0EgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
CERT_PEM = "-----BEGIN CERTIFICATE-----\nY2xpZW50IGNlcnQ=\n-----END CERTIFICATE-----\n"
KEY_PEM = "-----BEGIN PRIVATE KEY-----\nY2xpZW50IGtleQ==\n-----END PRIVATE KEY-----\n"
TLS_CRYPT_V2_CLIENT = (
    "-----BEGIN OpenVPN tls-crypt-v2 client key-----\n"
    "d2hhdGV2ZXI=\n"
    "-----END OpenVPN tls-crypt-v2 client key-----\n"
)


def new_key() -> StaticKey:
    return StaticKey(os.urandom(256))


def inline(tag: str, text: str) -> str:
    return f"<{tag}>\n{text.strip()}\n</{tag}>"


def profile(*extra: str, pki: bool = True) -> str:
    """A minimal valid client profile followed by ``extra`` lines."""
    lines = ["client", "dev tun", "remote vpn.example.org"]
    if pki:
        lines += [inline("ca", CA_PEM), inline("cert", CERT_PEM), inline("key", KEY_PEM)]
    return "\n".join([*lines, *extra]) + "\n"


def parse(text: str, base_dir: Path | None = None) -> ClientConfig:
    return parse_client_config(text, "test.ovpn", base_dir)


def parse_error(text: str, base_dir: Path | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, base_dir)
    return info.value


def line_of(text: str, needle: str) -> int:
    """1-based number of the first line of ``text`` that starts with ``needle``."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(needle))


# ---------------------------------------------------------------------------
# tokenize_line
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "tokens"),
    [
        ("remote vpn.example.org 1194 udp", ["remote", "vpn.example.org", "1194", "udp"]),
        ("  \tremote   host\t443  ", ["remote", "host", "443"]),
        ("", []),
        ("   ", []),
        ("# a comment", []),
        ("; a comment", []),
        ("   ; indented comment", []),
        ("remote host 1194 # trailing comment", ["remote", "host", "1194"]),
        ("remote host ;x", ["remote", "host"]),
        ("auth-user-pass a#b", ["auth-user-pass", "a#b"]),
        ('up "/etc/openvpn/my script.sh"', ["up", "/etc/openvpn/my script.sh"]),
        ("up '/etc/openvpn/my script.sh'", ["up", "/etc/openvpn/my script.sh"]),
        (r'setenv X "say \"hi\" \\ there"', ["setenv", "X", 'say "hi" \\ there']),
        (r"setenv X 'no \escapes \here'", ["setenv", "X", r"no \escapes \here"]),
        (r"ca my\ ca.crt", ["ca", "my ca.crt"]),
        (r"ca C:\\keys\\ca.crt", ["ca", r"C:\keys\ca.crt"]),
        ('setenv X ""', ["setenv", "X", ""]),
        ('x "a"b', ["x", "a", "b"]),
        ("x a\"b'c", ["x", "a\"b'c"]),
        ('x "# not a comment"', ["x", "# not a comment"]),
        ("--remote host", ["--remote", "host"]),
    ],
)
def test_tokenize_line(line: str, tokens: list[str]) -> None:
    assert tokenize_line(line) == tokens


@pytest.mark.parametrize(
    "line",
    ['up "unterminated', "up 'unterminated", r"ca C:\keys\ca.crt", 'x "a\\n"', "x abc\\"],
)
def test_tokenize_line_errors(line: str) -> None:
    with pytest.raises(ValueError):
        tokenize_line(line)


def test_tokenizer_error_names_config_line() -> None:
    text = profile('up "/bin/true')
    err = parse_error(text)
    assert err.line == line_of(text, "up ")
    assert "closing quotation" in err.message


# ---------------------------------------------------------------------------
# Complete profiles
# ---------------------------------------------------------------------------


def test_debian_style_inline_profile(tmp_path: Path) -> None:
    key = new_key()
    text = f"""\
##############################################
# Sample client-side OpenVPN 2.6 config file #
##############################################
client
dev tun
proto udp
remote vpn.example.org 1194
resolv-retry infinite
nobind
;user openvpn
;group openvpn
persist-key
persist-tun
remote-cert-tls server
verify-x509-name server name
data-ciphers AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305
auth SHA256
key-direction 1
explicit-exit-notify 1
verb 3
{inline("ca", CA_PEM)}
{inline("cert", CERT_PEM)}
{inline("key", KEY_PEM)}
{inline("tls-auth", format_static_key(key))}
"""
    path = tmp_path / "office.ovpn"
    path.write_text(text)
    cfg = load_client_config(path)

    assert cfg.source == str(path)
    assert cfg.name == "office"
    assert cfg.dev == "tun"
    assert cfg.remotes == (Remote("vpn.example.org", 1194, "udp"),)
    assert cfg.resolv_retry is None
    assert cfg.nobind is True
    assert cfg.persist_key and cfg.persist_tun
    assert cfg.remote_cert_tls == "server"
    assert cfg.verify_x509_name == ("server", "name")
    assert cfg.data_ciphers == ("AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305")
    assert cfg.auth == "SHA256"
    assert cfg.key_direction is KeyDirection.INVERSE
    assert cfg.tls_auth_key == key
    assert cfg.tls_crypt_key is None and cfg.tls_crypt_v2_key_pem is None
    assert cfg.explicit_exit_notify == 1
    assert cfg.verb == 3
    assert cfg.ca_pem == CA_PEM
    assert cfg.cert_pem == CERT_PEM
    assert cfg.key_pem == KEY_PEM
    assert cfg.pkcs12 is None
    assert cfg.auth_user_pass is False
    assert cfg.lines["client"] == 4
    assert cfg.lines["ca"] == line_of(text, "<ca>")
    assert cfg.lines["tls-auth"] == line_of(text, "<tls-auth>")
    assert cfg.ignored == ()


def test_reference_j2_profile_with_trailing_comments() -> None:
    key = new_key()
    text = f"""\
client                      # = pull + tls-client
dev tun
proto udp                   # udp | tcp (= tcp-client) | udp4/udp6/tcp4/tcp6
remote vpn.example.org 1194 # may repeat; optional 3rd arg proto; remote-random
resolv-retry infinite
nobind
remote-cert-tls server      # require server cert with KU + EKU serverAuth
auth-user-pass              # optional
explicit-exit-notify 1      # UDP only
{inline("ca", CA_PEM)}
{inline("cert", CERT_PEM)}
{inline("key", KEY_PEM)}
<tls-crypt>
{format_static_key(key).strip()}
</tls-crypt>
"""
    cfg = parse(text)
    assert cfg.remotes == (Remote("vpn.example.org", 1194, "udp"),)
    assert cfg.tls_crypt_key == key
    assert cfg.auth_user_pass and cfg.auth_user_pass_prompt


def test_defaults() -> None:
    cfg = parse(profile())
    assert cfg.name == "test"
    assert cfg.remotes == (Remote("vpn.example.org", 1194, "udp"),)
    assert cfg.remote_random is False
    assert cfg.connect_retry == 1 and cfg.connect_retry_max_backoff == 300
    assert cfg.connect_retry_max is None
    assert cfg.server_poll_timeout == 120
    assert cfg.resolv_retry is None
    assert cfg.nobind is False and cfg.lport is None
    assert cfg.key_direction is KeyDirection.BIDIRECTIONAL
    assert cfg.data_ciphers == DEFAULT_DATA_CIPHERS
    assert cfg.data_ciphers_fallback is None and cfg.cipher is None
    assert cfg.auth == "SHA1"
    assert (cfg.reneg_sec, cfg.hand_window, cfg.tls_timeout) == (3600, 60, 2)
    assert (cfg.ping, cfg.ping_restart, cfg.ping_exit, cfg.explicit_exit_notify) == (0, 0, 0, 0)
    assert cfg.tun_mtu == 1500 and cfg.mssfix is None
    assert (cfg.verb, cfg.mute, cfg.script_security, cfg.replay_window) == (1, 0, 1, 64)
    assert cfg.redirect_gateway is None
    assert cfg.routes == () and cfg.routes_ipv6 == () and cfg.pull_filters == ()
    assert cfg.datapath == "auto" and cfg.key_derivation == "auto"
    assert cfg.up is None and cfg.down is None


def test_config_is_frozen() -> None:
    cfg = parse(profile())
    with pytest.raises(AttributeError):
        cfg.verb = 5  # type: ignore[misc]


def test_secrets_stay_out_of_repr(tmp_path: Path) -> None:
    (tmp_path / "creds").write_text("alice\ns3cret-pw\n")
    cfg = parse(profile("auth-user-pass creds"), tmp_path)
    assert cfg.auth_password == "s3cret-pw"
    text = repr(cfg)
    assert "s3cret-pw" not in text
    assert "Y2xpZW50IGtleQ==" not in text  # the private key
    assert "alice" in text


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------


def test_files_resolved_relative_to_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    confdir = tmp_path / "etc"
    (confdir / "keys").mkdir(parents=True)
    (confdir / "ca.crt").write_text(CA_PEM)
    (confdir / "keys" / "client.crt").write_text(CERT_PEM)
    (confdir / "keys" / "client.key").write_text(KEY_PEM)
    key = new_key()
    (confdir / "ta.key").write_text(format_static_key(key))
    abs_dir = tmp_path / "elsewhere"
    abs_dir.mkdir()
    (abs_dir / "extra.pem").write_text(CA_PEM)
    conf = confdir / "client.conf"
    conf.write_text(
        "client\ndev tun\nremote 192.0.2.1\n"
        "ca ca.crt\ncert keys/client.crt\nkey keys/client.key\n"
        f"tls-auth ta.key 1\nextra-certs {abs_dir / 'extra.pem'}\n"
    )
    monkeypatch.chdir(tmp_path)  # not the config's directory
    cfg = load_client_config(conf)
    assert cfg.ca_pem == CA_PEM
    assert cfg.cert_pem == CERT_PEM
    assert cfg.key_pem == KEY_PEM
    assert cfg.extra_certs_pem == CA_PEM
    assert cfg.tls_auth_key == key
    assert cfg.key_direction is KeyDirection.INVERSE
    assert cfg.name == "client"


def test_relative_config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ca.crt").write_text(CA_PEM)
    (tmp_path / "c.ovpn").write_text(profile("ca ca.crt", pki=True))
    monkeypatch.chdir(tmp_path)
    cfg = load_client_config("c.ovpn")
    assert cfg.source == "c.ovpn"
    assert cfg.ca_pem == CA_PEM


def test_missing_file_names_config_line_and_path(tmp_path: Path) -> None:
    text = profile("tls-crypt missing.key")
    err = parse_error(text, tmp_path)
    assert err.source == "test.ovpn"
    assert err.line == line_of(text, "tls-crypt")
    assert str(tmp_path / "missing.key") in err.message
    assert str(err).startswith(f"test.ovpn:{err.line}: 'tls-crypt': cannot read")


def test_unreadable_directory_as_file(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    err = parse_error(profile("ca adir"), tmp_path)
    assert "cannot read" in err.message and "adir" in err.message


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_client_config(tmp_path / "nope.ovpn")


def test_bad_static_key_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "ta.key").write_text("not a key\n")
    text = profile("tls-auth ta.key 1")
    err = parse_error(text, tmp_path)
    assert err.line == line_of(text, "tls-auth")
    assert "ta.key" in err.message and "Static key" in err.message


def test_bad_inline_static_key_points_into_the_block() -> None:
    body = format_static_key(new_key()).splitlines()
    body[6] = "zz" + body[6][2:]  # a non-hex character on the 3rd hex line
    text = profile("key-direction 1", "<tls-auth>", *body, "</tls-auth>")
    err = parse_error(text)
    assert err.source == "test.ovpn"
    assert err.line == line_of(text, "<tls-auth>") + 7
    assert "non-hex" in err.message


def test_ca_file_without_pem(tmp_path: Path) -> None:
    (tmp_path / "ca.der").write_bytes(b"0\x82\x01\x02binary")
    err = parse_error(profile("ca ca.der"), tmp_path)
    assert "ca" in err.message


def test_inline_placeholder_argument() -> None:
    text = "\n".join(
        [
            "client",
            "dev tun",
            "remote h",
            "ca [inline]",
            "cert [inline]",
            "key [inline]",
            "tls-auth [inline] 0",
            inline("ca", CA_PEM),
            inline("cert", CERT_PEM),
            inline("key", KEY_PEM),
            inline("tls-auth", format_static_key(new_key())),
        ]
    )
    cfg = parse(text)
    assert cfg.ca_pem == CA_PEM
    assert cfg.key_direction is KeyDirection.NORMAL


def test_inline_placeholder_without_block() -> None:
    text = profile("tls-crypt [inline]")
    err = parse_error(text)
    assert err.line == line_of(text, "tls-crypt")
    assert "<tls-crypt>" in err.message


def test_pkcs12_inline_base64_and_file(tmp_path: Path) -> None:
    blob = os.urandom(300)
    encoded = base64.encodebytes(blob).decode()
    cfg = parse(profile(inline("ca", CA_PEM), inline("pkcs12", encoded), pki=False))
    assert cfg.pkcs12 == blob
    assert cfg.cert_pem is None and cfg.key_pem is None
    (tmp_path / "me.p12").write_bytes(blob)
    cfg = parse(profile("pkcs12 me.p12", inline("ca", CA_PEM), pki=False), tmp_path)
    assert cfg.pkcs12 == blob
    err = parse_error(profile(inline("pkcs12", "@@not base64@@"), inline("ca", CA_PEM), pki=False))
    assert "base64" in err.message


def test_pkcs12_with_cert_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "me.p12").write_bytes(b"\x30\x00")
    err = parse_error(profile("pkcs12 me.p12"), tmp_path)
    assert "pkcs12" in err.message


def test_tls_crypt_v2_client_key() -> None:
    cfg = parse(profile(inline("tls-crypt-v2", TLS_CRYPT_V2_CLIENT)))
    assert cfg.tls_crypt_v2_key_pem == TLS_CRYPT_V2_CLIENT
    server_key = TLS_CRYPT_V2_CLIENT.replace("client key", "server key")
    err = parse_error(profile(inline("tls-crypt-v2", server_key)))
    assert "server key" in err.message


# ---------------------------------------------------------------------------
# Remotes and connection options
# ---------------------------------------------------------------------------


def test_several_remotes_with_per_remote_port_and_proto() -> None:
    text = profile(
        "remote second.example.org 443 tcp-client",
        "remote 2001:db8::1 1195 udp6",
        "remote 192.0.2.7 1196 tcp4",
        "remote-random",
        "port 1300",
        "proto tcp",
    )
    cfg = parse(text)
    assert cfg.remotes == (
        Remote("vpn.example.org", 1300, "tcp"),
        Remote("second.example.org", 443, "tcp"),
        Remote("2001:db8::1", 1195, "udp6"),
        Remote("192.0.2.7", 1196, "tcp4"),
    )
    assert cfg.remote_random is True
    assert [r.transport for r in cfg.remotes] == ["tcp", "tcp", "udp", "tcp"]
    assert [r.family for r in cfg.remotes] == [None, None, socket.AF_INET6, socket.AF_INET]


@pytest.mark.parametrize(
    ("proto", "stored"),
    [
        ("udp", "udp"),
        ("udp4", "udp4"),
        ("udp6", "udp6"),
        ("tcp", "tcp"),
        ("tcp-client", "tcp"),
        ("tcp4-client", "tcp4"),
        ("tcp6-client", "tcp6"),
        ("tcp6", "tcp6"),
    ],
)
def test_proto_values(proto: str, stored: str) -> None:
    assert parse(profile(f"proto {proto}")).remotes[0].proto == stored


def test_connection_timers() -> None:
    cfg = parse(
        profile(
            "connect-retry 5 60",
            "connect-retry-max 3",
            "timeout-connect 30",
            "resolv-retry 10",
            "lport 5000",
            "float",
        )
    )
    assert cfg.connect_retry == 5 and cfg.connect_retry_max_backoff == 60
    assert cfg.connect_retry_max == 3
    assert cfg.server_poll_timeout == 30
    assert cfg.lines["server-poll-timeout"] == cfg.lines["timeout-connect"]
    assert cfg.resolv_retry == 10
    assert cfg.lport == 5000
    assert cfg.allow_float


def test_bind_after_nobind() -> None:
    assert parse(profile("nobind", "bind")).nobind is False


@pytest.mark.parametrize("dev", ["tun7", "vpn0", "tun"])
def test_dev_names(dev: str) -> None:
    assert parse(profile(f"dev {dev}")).dev == dev


def test_dev_type_tun_with_custom_name() -> None:
    assert parse(profile("dev office", "dev-type tun")).dev == "office"


# ---------------------------------------------------------------------------
# Credentials
# ---------------------------------------------------------------------------


def test_auth_user_pass_file_two_lines(tmp_path: Path) -> None:
    (tmp_path / "login.txt").write_text("alice\ncorrect horse\n")
    cfg = parse(profile("auth-user-pass login.txt", "auth-nocache"), tmp_path)
    assert cfg.auth_user_pass
    assert (cfg.auth_username, cfg.auth_password) == ("alice", "correct horse")
    assert cfg.auth_user_pass_prompt is False
    assert cfg.auth_nocache


def test_auth_user_pass_file_one_line(tmp_path: Path) -> None:
    (tmp_path / "login.txt").write_text("alice\r\n")
    cfg = parse(profile("auth-user-pass login.txt"), tmp_path)
    assert (cfg.auth_username, cfg.auth_password) == ("alice", None)
    assert cfg.auth_user_pass_prompt is True


def test_auth_user_pass_without_file() -> None:
    cfg = parse(profile("auth-user-pass"))
    assert cfg.auth_user_pass and cfg.auth_user_pass_prompt
    assert cfg.auth_username is None and cfg.auth_password is None


def test_auth_user_pass_inline_and_no_client_cert() -> None:
    cfg = parse(profile(inline("ca", CA_PEM), inline("auth-user-pass", "bob\npw"), pki=False))
    assert (cfg.auth_username, cfg.auth_password) == ("bob", "pw")
    assert cfg.cert_pem is None and cfg.key_pem is None


def test_auth_user_pass_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("")
    err = parse_error(profile("auth-user-pass empty"), tmp_path)
    assert "no username" in err.message


# ---------------------------------------------------------------------------
# Routes, pull filters, DNS
# ---------------------------------------------------------------------------


def test_pull_filters_keep_order() -> None:
    cfg = parse(
        profile(
            'pull-filter ignore "route 10."',
            "pull-filter accept route",
            'pull-filter reject "dhcp-option DNS"',
            "route-nopull",
        )
    )
    assert cfg.pull_filters == (
        ("ignore", "route 10."),
        ("accept", "route"),
        ("reject", "dhcp-option DNS"),
    )
    assert cfg.route_nopull


def test_routes() -> None:
    cfg = parse(
        profile(
            "route 10.1.0.0 255.255.0.0",
            "route 10.2.0.0 255.255.255.0 192.168.1.1 20",
            "route 192.0.2.5",
            "route 198.51.100.0 255.255.255.0 net_gateway",
            "route 203.0.113.0 255.255.255.0 default 7",
            "route-ipv6 2001:db8:1::/48",
            "route-ipv6 2001:db8:2::/64 fe80::1 5",
            "route-metric 50",
        )
    )
    assert cfg.routes == (
        RouteSpec("10.1.0.0", "255.255.0.0", None, None),
        RouteSpec("10.2.0.0", "255.255.255.0", "192.168.1.1", 20),
        RouteSpec("192.0.2.5", "255.255.255.255", None, None),
        RouteSpec("198.51.100.0", "255.255.255.0", "net_gateway", None),
        RouteSpec("203.0.113.0", "255.255.255.0", None, 7),
    )
    assert cfg.routes_ipv6 == (
        Route6Spec("2001:db8:1::/48", None, None),
        Route6Spec("2001:db8:2::/64", "fe80::1", 5),
    )
    assert cfg.route_metric == 50


@pytest.mark.parametrize(
    "line",
    [
        "route 10.0.0.300",
        "route example.com",
        "route 10.0.0.0 255.0.255.0",
        "route 10.0.0.0 255.0.0.0 not-an-ip",
        "route 10.0.0.0 255.0.0.0 10.0.0.1 x",
        "route 10.0.0.0 255.0.0.0 10.0.0.1 1 extra",
        "route-ipv6 2001:db8::/200",
        "route-ipv6 2001:db8::/64 10.0.0.1",
    ],
)
def test_bad_routes(line: str) -> None:
    text = profile(line)
    err = parse_error(text)
    assert err.line == line_of(text, line.split()[0] + " ")
    assert line.split()[0] in err.message


def test_redirect_gateway_flags() -> None:
    cfg = parse(profile("redirect-gateway def1 ipv6 bypass-dhcp !ipv4 block-local"))
    assert cfg.redirect_gateway == frozenset(
        {"def1", "ipv6", "bypass-dhcp", "!ipv4", "block-local"}
    )
    assert parse(profile("redirect-gateway")).redirect_gateway == frozenset()
    assert parse(profile("redirect-private local")).redirect_private == frozenset({"local"})
    err = parse_error(profile("redirect-gateway def2"))
    assert "def2" in err.message


def test_dhcp_and_dns_options() -> None:
    cfg = parse(
        profile(
            "dhcp-option DNS 10.8.0.1",
            "dhcp-option DOMAIN corp.example",
            "dhcp-option DISABLE-NBT",
            "dns server 1 address 10.8.0.53",
            "dns search-domains corp.example lab.example",
            "block-outside-dns",
        )
    )
    assert cfg.dhcp_options == (
        ("DNS", "10.8.0.1"),
        ("DOMAIN", "corp.example"),
        ("DISABLE-NBT", ""),
    )
    assert cfg.dns_options == (
        ("server", "1", "address", "10.8.0.53"),
        ("search-domains", "corp.example", "lab.example"),
    )


# ---------------------------------------------------------------------------
# Crypto, timers and other settings
# ---------------------------------------------------------------------------


def test_data_ciphers_normalized() -> None:
    cfg = parse(profile("ncp-ciphers aes-128-gcm:chacha20-poly1305:?AES-256-CBC:AES-128-GCM"))
    assert cfg.data_ciphers == ("AES-128-GCM", "CHACHA20-POLY1305")
    assert cfg.lines["data-ciphers"] == cfg.lines["ncp-ciphers"]
    cfg = parse(profile("data-ciphers-fallback aes-256-gcm", "cipher AES-256-CBC"))
    assert cfg.data_ciphers_fallback == "AES-256-GCM"
    assert cfg.cipher == "AES-256-CBC"


@pytest.mark.parametrize(
    "line",
    [
        "data-ciphers AES-256-GCM:AES-256-CBC",
        "ncp-ciphers BF-CBC",
        "data-ciphers-fallback AES-128-CBC",
    ],
)
def test_cbc_ciphers_rejected(line: str) -> None:
    text = profile(line)
    err = parse_error(text)
    assert err.line == line_of(text, line.split()[0])
    assert "AEAD" in err.message and "CBC" in err.message


def test_tls_settings() -> None:
    cfg = parse(
        profile(
            "tls-version-min 1.2 or-highest",
            "tls-version-max 1.3",
            "tls-cipher TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384",
            "tls-ciphersuites TLS_AES_256_GCM_SHA384",
            "tls-groups X25519:prime256v1",
            "verify-x509-name 'C=DE, CN=server'",
            "remote-cert-tls server",
        )
    )
    assert cfg.tls_version_min == "1.2 or-highest"
    assert cfg.tls_version_max == "1.3"
    assert cfg.tls_cipher == "TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384"
    assert cfg.tls_ciphersuites == "TLS_AES_256_GCM_SHA384"
    assert cfg.tls_groups == "X25519:prime256v1"
    assert cfg.verify_x509_name == ("C=DE, CN=server", "subject")
    assert parse_error(profile("tls-version-min 1.3", "tls-version-max 1.2"))


def test_timers_and_misc_numbers() -> None:
    cfg = parse(
        profile(
            "reneg-sec 600 300",
            "reneg-bytes 1000000",
            "hand-window 30",
            "tls-timeout 4",
            "ping 15",
            "ping-restart 10",
            "ping-exit 300",
            "explicit-exit-notify",
            "tun-mtu 1400",
            "mssfix 1360",
            "verb 4",
            "mute 20",
            "replay-window 128 15",
            "txqueuelen 1000",
            "sndbuf 393216",
            "rcvbuf 393216",
            "auth sha512",
        )
    )
    assert cfg.reneg_sec == 600 and cfg.reneg_bytes == 1000000
    assert cfg.hand_window == 30 and cfg.tls_timeout == 4
    assert (cfg.ping, cfg.ping_restart, cfg.ping_exit) == (15, 10, 300)
    assert cfg.explicit_exit_notify == 1
    assert cfg.tun_mtu == 1400 and cfg.mssfix == 1360
    assert cfg.verb == 4 and cfg.mute == 20
    assert cfg.replay_window == 128
    assert (cfg.txqueuelen, cfg.sndbuf, cfg.rcvbuf) == (1000, 393216, 393216)
    assert cfg.auth == "SHA512"
    assert parse(profile("mssfix")).mssfix == 1492


def test_keepalive() -> None:
    cfg = parse(profile("keepalive 10 60"))
    assert (cfg.ping, cfg.ping_restart) == (10, 60)
    text = profile("keepalive 10 60", "ping 5")
    assert parse_error(text).line == line_of(text, "ping 5")
    assert "twice" in parse_error(profile("keepalive 10 15")).message


def test_scripts_and_environment() -> None:
    cfg = parse(
        profile(
            "script-security 2",
            'up "/etc/openvpn/update-resolv-conf up"',
            "down /etc/openvpn/update-resolv-conf",
            "route-up '/usr/local/bin/notify routes'",
            "route-pre-down /bin/true",
            "ipchange /bin/true",
            "up-delay",
            "down-pre",
            "setenv UV_TEAM blue",
            "setenv EMPTY",
            "setenv-safe COLOR red",
            "push-peer-info",
        )
    )
    assert cfg.script_security == 2
    assert cfg.up == "/etc/openvpn/update-resolv-conf up"
    assert cfg.down == "/etc/openvpn/update-resolv-conf"
    assert cfg.route_up == "/usr/local/bin/notify routes"
    assert cfg.route_pre_down == "/bin/true" and cfg.ipchange == "/bin/true"
    assert cfg.up_delay and cfg.down_pre and not cfg.up_restart
    assert cfg.setenv == (("UV_TEAM", "blue"), ("EMPTY", ""), ("OPENVPN_COLOR", "red"))
    assert cfg.push_peer_info


def test_unquoted_script_with_arguments_is_an_error() -> None:
    text = profile("up /etc/openvpn/script arg")
    err = parse_error(text)
    assert err.line == line_of(text, "up ")
    assert "'up'" in err.message and "quote" in err.message


def test_dcoctl_directives_and_disable_dco() -> None:
    cfg = parse(profile("dcoctl-datapath userspace", "dcoctl-key-derivation prf"))
    assert (cfg.datapath, cfg.key_derivation) == ("userspace", "prf")
    cfg = parse(profile("disable-dco"))
    assert cfg.disable_dco and cfg.datapath == "userspace"
    assert "disable-dco" in parse_error(profile("disable-dco", "dcoctl-datapath dco")).message


def test_key_direction_rules() -> None:
    key_text = format_static_key(new_key())
    # tls-auth's own direction argument wins over key-direction.
    cfg = parse(profile("key-direction 1", "tls-auth [inline] 0", inline("tls-auth", key_text)))
    assert cfg.key_direction is KeyDirection.NORMAL
    # key-direction next to tls-crypt is harmless.
    cfg = parse(profile("key-direction 1", inline("tls-crypt", key_text)))
    assert cfg.tls_crypt_key is not None and cfg.tls_auth_key is None
    assert "'key-direction'" in parse_error(profile("key-direction 2")).message


def test_comp_lzo_no_and_allow_compression_no_accepted() -> None:
    cfg = parse(profile("comp-lzo no", "allow-compression no"))
    assert cfg.remotes


def test_leading_double_dash() -> None:
    cfg = parse("--client\n--dev tun\n--remote h 1200\n" + profile().split("\n", 3)[3])
    assert cfg.remotes == (Remote("h", 1200, "udp"),)
    assert cfg.lines["remote"] == 3


def test_comments_blank_lines_crlf_and_bom() -> None:
    text = "\ufeff# hash comment\r\n; semicolon comment\r\n\r\n   \r\n" + profile(
        ";remote commented.out", "#dev tap"
    ).replace("\n", "\r\n")
    cfg = parse(text)
    assert cfg.remotes == (Remote("vpn.example.org", 1194, "udp"),)
    assert cfg.dev == "tun"
    assert cfg.lines["client"] == 5


def test_lines_records_last_occurrence() -> None:
    text = profile("verb 3", "verb 5")
    cfg = parse(text)
    assert cfg.verb == 5
    assert cfg.lines["verb"] == len(text.splitlines())
    assert cfg.lines["dev"] == 2


# ---------------------------------------------------------------------------
# Ignored and unknown directives
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "daemon",
        "log /var/log/openvpn.log",
        "log-append /var/log/openvpn.log",
        "status /run/openvpn.status 10",
        "writepid /run/openvpn.pid",
        "user nobody",
        "group nogroup",
        "chroot /var/empty",
        "cd /etc/openvpn",
        "management 127.0.0.1 7505",
        "management-hold",
        "management-query-passwords",
        "suppress-timestamps",
        "syslog",
        "mlock",
        "ping-timer-rem",
        "persist-remote-ip",
        "tun-ipv6",
        "ifconfig-nowarn",
        "block-outside-dns",
    ],
)
def test_process_model_directives_are_ignored(line: str, caplog: pytest.LogCaptureFixture) -> None:
    text = profile(line)
    with caplog.at_level(logging.DEBUG, logger="dcoctl.config"):
        cfg = parse(text)
    assert cfg.ignored == ((line_of(text, line), line.split()[0]),)
    assert line.split()[0] in caplog.text


def test_ignored_directive_list_is_explicit() -> None:
    assert {"daemon", "user", "group", "chroot", "log", "status"} <= IGNORED_DIRECTIVES


def test_unknown_option_error_names_file_and_line() -> None:
    text = profile("foo bar")
    with pytest.raises(ConfigError) as info:
        parse(text)
    line = line_of(text, "foo")
    assert (info.value.source, info.value.line) == ("test.ovpn", line)
    assert str(info.value).startswith(f"test.ovpn:{line}: unknown option 'foo'")


def test_unknown_option_suggests_a_close_match() -> None:
    assert "did you mean 'remote'" in parse_error(profile("remot x")).message


def test_ignore_unknown_option() -> None:
    text = profile("ignore-unknown-option foo fancy-new-thing", "foo 1 2", "fancy-new-thing")
    cfg = parse(text)
    assert cfg.ignored == (
        (line_of(text, "foo 1"), "foo"),
        (line_of(text, "fancy-new-thing"), "fancy-new-thing"),
    )
    # Only applies to later lines.
    text = profile("foo 1", "ignore-unknown-option foo")
    assert parse_error(text).line == line_of(text, "foo 1")


def test_setenv_opt() -> None:
    cfg = parse(profile("setenv opt block-ipv6-nonsense", "setenv opt tun-mtu 1400"))
    assert cfg.tun_mtu == 1400
    assert [d for _, d in cfg.ignored] == ["block-ipv6-nonsense"]
    assert cfg.setenv == ()


def test_setenv_forward_compatible() -> None:
    cfg = parse(profile("setenv FORWARD_COMPATIBLE 1", "brand-new-option x"))
    assert [d for _, d in cfg.ignored] == ["brand-new-option"]


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def test_unclosed_inline_block_names_opening_line() -> None:
    text = profile("<tls-crypt>", "-----BEGIN OpenVPN Static key V1-----", "00")
    err = parse_error(text)
    assert err.line == line_of(text, "<tls-crypt>")
    assert "never closed" in err.message and "</tls-crypt>" in err.message


def test_stray_closing_tag() -> None:
    text = profile("</ca>")
    err = parse_error(text)
    assert err.line == len(text.splitlines())
    assert "without a matching" in err.message


def test_unknown_inline_block() -> None:
    text = profile("<foo>", "x", "</foo>")
    err = parse_error(text)
    assert err.message == "unknown option 'foo'"
    assert err.line == line_of(text, "<foo>")


def test_inline_block_for_non_file_directive() -> None:
    assert "inline" in parse_error(profile("<remote>", "x", "</remote>")).message


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("dev tap", "only tun"),
        ("dev tap0", "only tun"),
        ("dev-type tap", "only tun"),
        ("dev null", "only tun"),
    ],
)
def test_only_tun(line: str, needle: str) -> None:
    err = parse_error(profile(line))
    assert needle in err.message
    assert err.line is not None


@pytest.mark.parametrize(
    "line",
    [
        "compress",
        "compress lz4-v2",
        "compress stub-v2",
        "comp-lzo",
        "comp-lzo yes",
        "comp-lzo adaptive",
        "allow-compression yes",
        "allow-compression asym",
    ],
)
def test_compression_rejected(line: str) -> None:
    text = profile(line)
    err = parse_error(text)
    assert err.line == line_of(text, line)
    assert "compression is not supported" in err.message and "VORACLE" in err.message


@pytest.mark.parametrize(
    "line",
    ["mode server", "server 10.8.0.0 255.255.255.0", "tls-server", "proto tcp-server"],
)
def test_server_config_rejected(line: str) -> None:
    text = profile(line)
    err = parse_error(text)
    assert "server configs are not supported yet" in err.message
    assert err.line == line_of(text, line)


def test_server_file_without_client() -> None:
    text = "port 1194\nproto udp\ndev tun\nca ca.crt\nserver 10.8.0.0 255.255.255.0\n"
    err = parse_error(text)
    assert "server configs are not supported yet" in err.message and err.line == 5


@pytest.mark.parametrize(
    ("drop", "needle"),
    [
        ("client", "client"),
        ("remote vpn.example.org", "remote"),
    ],
)
def test_required_directives(drop: str, needle: str) -> None:
    text = profile().replace(drop + "\n", "")
    err = parse_error(text)
    assert needle in err.message


def test_tls_client_without_pull() -> None:
    text = profile().replace("client\n", "tls-client\n")
    assert "pull" in parse_error(text).message
    text = profile().replace("client\n", "tls-client\npull\n")
    assert parse(text).remotes


def test_missing_ca() -> None:
    text = "client\ndev tun\nremote h\n" + inline("cert", CERT_PEM) + "\n" + inline("key", KEY_PEM)
    assert "'ca'" in parse_error(text).message


def test_cert_without_key_and_vice_versa() -> None:
    base = "client\ndev tun\nremote h\n" + inline("ca", CA_PEM) + "\n"
    err = parse_error(base + inline("cert", CERT_PEM))
    assert "'cert' given without 'key'" in err.message
    err = parse_error(base + inline("key", KEY_PEM))
    assert "'key' given without 'cert'" in err.message
    assert "client authentication" in parse_error(base).message


def test_tls_auth_and_tls_crypt_together() -> None:
    key_text = format_static_key(new_key())
    text = profile(inline("tls-auth", key_text), inline("tls-crypt", key_text))
    err = parse_error(text)
    assert "tls-auth" in err.message and "tls-crypt" in err.message
    assert err.line == line_of(text, "<tls-crypt>")
    text = profile(inline("tls-crypt", key_text), inline("tls-crypt-v2", TLS_CRYPT_V2_CLIENT))
    assert "together" in parse_error(text).message


@pytest.mark.parametrize(
    "line",
    ["remote h 0", "remote h 65536", "remote h abc", "port 70000", "lport -1", "rport 0"],
)
def test_bad_port(line: str) -> None:
    text = profile(line)
    err = parse_error(text)
    assert err.line == line_of(text, line)
    assert "port" in err.message


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("secret static.key", "static-key mode"),
        ("fragment 1300", "fragment"),
        ("proto sctp", "invalid protocol"),
        ("remote h 1194 quic", "invalid protocol"),
        ("tun-mtu 100", "tun-mtu"),
        ("tun-mtu 65000", "tun-mtu"),
        ("reneg-sec -5", "reneg-sec"),
        ("ping -1", "ping"),
        ("ping-restart x", "ping-restart"),
        ("verb loud", "verb"),
        ("nobind yes", "nobind"),
        ("remote", "remote"),
        ("remote a 1 udp extra", "remote"),
        ("remote-cert-tls peer", "remote-cert-tls"),
        ("verify-x509-name srv cn", "verify-x509-name"),
        ("tls-version-min 1.4", "tls-version-min"),
        ("auth MD5", "auth"),
        ("auth-retry sometimes", "auth-retry"),
        ("pull-filter drop route", "pull-filter"),
        ("script-security 4", "script-security"),
        ("dcoctl-datapath kernel", "dcoctl-datapath"),
        ("dcoctl-key-derivation ekm", "dcoctl-key-derivation"),
        ("connect-retry 5 2", "connect-retry"),
        ("lport 5000\nnobind", "nobind"),
        ("dev bad/name", "dev"),
        ("dev averyveryverylongname", "dev"),
        ("ns-cert-type server", "remote-cert-tls"),
        ("crl-verify crl.pem", "crl-verify"),
        ("http-proxy proxy 8080", "prox"),
        ("mssfix 1400 sometimes", "mssfix"),
    ],
)
def test_invalid_values(line: str, needle: str) -> None:
    text = profile(line)
    err = parse_error(text)
    assert needle in err.message
    assert err.line is not None and err.source == "test.ovpn"


def test_ping_restart_below_ping_is_fine() -> None:
    cfg = parse(profile("ping 30", "ping-restart 10"))
    assert (cfg.ping, cfg.ping_restart) == (30, 10)
