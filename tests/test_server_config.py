"""Tests for dcoctl.server_config: OpenVPN server configs and client-config-dir files."""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from dcoctl.config import RouteSpec
from dcoctl.errors import ConfigError
from dcoctl.protocol.statickey import KeyDirection, StaticKey, format_static_key
from dcoctl.server_config import (
    CcdEntry,
    ServerConfig,
    is_server_config,
    load_ccd_entry,
    load_server_config,
    parse_ccd,
    parse_server_config,
)

# The parser stores PEM text without X.509 parsing, so fake PEM is enough.
CA_PEM = "-----BEGIN CERTIFICATE-----\nQ0EgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
CERT_PEM = "-----BEGIN CERTIFICATE-----\nc2VydmVyIGNlcnQ=\n-----END CERTIFICATE-----\n"
KEY_PEM = "-----BEGIN PRIVATE KEY-----\nc2VydmVyIGtleQ==\n-----END PRIVATE KEY-----\n"
CRL_PEM = "-----BEGIN X509 CRL-----\nY3Js\n-----END X509 CRL-----\n"
TLS_CRYPT_V2_SERVER = (
    "-----BEGIN OpenVPN tls-crypt-v2 server key-----\n"
    "c2VydmVyIGtleQ==\n"
    "-----END OpenVPN tls-crypt-v2 server key-----\n"
)
TLS_CRYPT_V2_CLIENT = (
    "-----BEGIN OpenVPN tls-crypt-v2 client key-----\n"
    "Y2xpZW50IGtleQ==\n"
    "-----END OpenVPN tls-crypt-v2 client key-----\n"
)

#: Debian's sample server.conf (openvpn 2.6), comments kept, with ``dh none``.
DEBIAN_SERVER_CONF = """\
#################################################
# Sample OpenVPN 2.0 config file for            #
# multi-client server.                          #
#################################################

# Which local IP address should OpenVPN
# listen on? (optional)
;local a.b.c.d

port 1194

# TCP or UDP server?
;proto tcp
proto udp

;dev tap
dev tun

ca ca.crt
cert server.crt
key server.key  # This file should be kept secret

# Diffie hellman parameters.
dh none

# Network topology
topology subnet

server 10.8.0.0 255.255.255.0

ifconfig-pool-persist /var/log/openvpn/ipp.txt

;server-bridge 10.8.0.4 255.255.255.0 10.8.0.50 10.8.0.100
;push "route 192.168.10.0 255.255.255.0"
push "route 192.168.10.0 255.255.255.0"
push "redirect-gateway def1 bypass-dhcp"
push "dhcp-option DNS 208.67.222.222"
;client-config-dir ccd
;client-to-client
;duplicate-cn

keepalive 10 120

tls-crypt ta.key

;cipher AES-256-CBC
;compress lz4-v2
;push "compress lz4-v2"
;comp-lzo
;max-clients 100

user nobody
group nogroup

persist-key
persist-tun

status /var/log/openvpn/openvpn-status.log
;log         /var/log/openvpn/openvpn.log
;log-append  /var/log/openvpn/openvpn.log

verb 3
;mute 20

explicit-exit-notify 1
"""


def new_key() -> StaticKey:
    return StaticKey(os.urandom(256))


def inline(tag: str, text: str) -> str:
    return f"<{tag}>\n{text.strip()}\n</{tag}>"


PKI = [inline("ca", CA_PEM), inline("cert", CERT_PEM), inline("key", KEY_PEM)]


def conf(*extra: str, pki: bool = True, server: bool = True) -> str:
    """A minimal valid server config followed by ``extra`` lines."""
    lines = ["dev tun"]
    if server:
        lines += ["topology subnet", "server 10.8.0.0 255.255.255.0"]
    if pki:
        lines += PKI
    return "\n".join([*lines, *extra]) + "\n"


def parse(text: str, base_dir: Path | None = None) -> ServerConfig:
    return parse_server_config(text, "server.conf", base_dir)


def parse_error(text: str, base_dir: Path | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, base_dir)
    return info.value


def line_of(text: str, needle: str) -> int:
    """1-based number of the first line of ``text`` that starts with ``needle``."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(needle))


def write_debian_pki(directory: Path) -> StaticKey:
    (directory / "ca.crt").write_text(CA_PEM)
    (directory / "server.crt").write_text(CERT_PEM)
    (directory / "server.key").write_text(KEY_PEM)
    key = new_key()
    (directory / "ta.key").write_text(format_static_key(key))
    return key


# ---------------------------------------------------------------------------
# Whole configs
# ---------------------------------------------------------------------------


def test_debian_sample_server_conf(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key = write_debian_pki(tmp_path)
    path = tmp_path / "server.conf"
    path.write_text(DEBIAN_SERVER_CONF)
    with caplog.at_level(logging.DEBUG, logger="dcoctl"):
        cfg = load_server_config(path)

    assert cfg.source == str(path) and cfg.name == "server"
    assert (cfg.dev, cfg.topology, cfg.proto, cfg.port) == ("tun", "subnet", "udp", 1194)
    assert cfg.transport == "udp" and cfg.family is None and cfg.local is None
    assert (cfg.ca_pem, cfg.cert_pem, cfg.key_pem) == (CA_PEM, CERT_PEM, KEY_PEM)
    assert cfg.tls_crypt_key == key and cfg.tls_auth_key is None
    assert cfg.server_network == "10.8.0.0"
    assert (cfg.server_ip, cfg.server_netmask) == ("10.8.0.1", "255.255.255.0")
    assert (cfg.pool_start, cfg.pool_end, cfg.pool_size) == ("10.8.0.2", "10.8.0.254", 253)
    assert cfg.ifconfig_pool_persist == Path("/var/log/openvpn/ipp.txt")
    assert cfg.ifconfig_pool_persist_seconds == 600
    assert cfg.push == (
        "route 192.168.10.0 255.255.255.0",
        "redirect-gateway def1 bypass-dhcp",
        "dhcp-option DNS 208.67.222.222",
    )
    assert cfg.keepalive == (10, 120)
    assert cfg.status_file == Path("/var/log/openvpn/openvpn-status.log")
    assert cfg.persist_key and cfg.persist_tun
    assert (cfg.verb, cfg.explicit_exit_notify, cfg.max_clients) == (3, 1, 1024)
    assert cfg.verify_client_cert == "require"
    assert not (cfg.client_to_client or cfg.duplicate_cn)
    # dh, user and group are accepted and listed as ignored.
    names = {name for _, name in cfg.ignored}
    assert names == {"dh", "user", "group"}
    assert "ignoring 'dh'" in caplog.text
    assert cfg.lines["server"] == line_of(DEBIAN_SERVER_CONF, "server ")
    # What OpenVPN 2.6 would push (its options dump shows this order).
    assert cfg.pushed_options == (
        "route 192.168.10.0 255.255.255.0",
        "redirect-gateway def1 bypass-dhcp",
        "dhcp-option DNS 208.67.222.222",
        "route-gateway 10.8.0.1",
        "topology subnet",
        "ping 10",
        "ping-restart 120",
    )


def test_inline_pki_and_tls_crypt() -> None:
    key = new_key()
    cfg = parse(conf(inline("tls-crypt", format_static_key(key))))
    assert (cfg.ca_pem, cfg.cert_pem, cfg.key_pem) == (CA_PEM, CERT_PEM, KEY_PEM)
    assert cfg.tls_crypt_key == key


def test_defaults() -> None:
    cfg = parse(conf())
    assert cfg.proto == "udp" and cfg.port == 1194
    assert cfg.keepalive is None and cfg.push == ()
    assert cfg.pushed_options == ("route-gateway 10.8.0.1", "topology subnet")
    assert cfg.server_ping == 0 and cfg.server_ping_restart == 0
    assert cfg.pushed_ping is None and cfg.pushed_ping_restart is None
    assert cfg.client_config_dir is None and not cfg.ccd_exclusive
    assert cfg.server_ipv6 is None and cfg.pool_ipv6_start is None
    assert cfg.key_direction is KeyDirection.BIDIRECTIONAL
    assert cfg.script_security == 1 and cfg.datapath == "auto"
    assert cfg.status_interval == 60 and cfg.status_version == 1


def test_secrets_stay_out_of_repr() -> None:
    text = conf(inline("tls-crypt-v2", TLS_CRYPT_V2_SERVER))
    cfg = parse(text)
    assert cfg.tls_crypt_v2_key_pem == TLS_CRYPT_V2_SERVER
    shown = repr(cfg)
    assert "c2VydmVyIGtleQ==" not in shown  # key_pem and the tls-crypt-v2 server key


def test_config_is_frozen() -> None:
    cfg = parse(conf())
    with pytest.raises(AttributeError):
        cfg.port = 1  # type: ignore[misc]


def test_files_resolved_relative_to_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = tmp_path / "etc"
    (sub / "keys").mkdir(parents=True)
    (sub / "ccd").mkdir()
    (sub / "keys" / "ca.crt").write_text(CA_PEM)
    (sub / "keys" / "server.crt").write_text(CERT_PEM)
    (sub / "keys" / "server.key").write_text(KEY_PEM)
    (sub / "server.conf").write_text(
        "topology subnet\nserver 10.8.0.0 255.255.255.0\n"
        "ca keys/ca.crt\ncert keys/server.crt\nkey keys/server.key\n"
        "client-config-dir ccd\nstatus status.log 30\nifconfig-pool-persist ipp.txt 0\n"
    )
    monkeypatch.chdir(tmp_path)  # not the config's directory
    cfg = load_server_config("etc/server.conf")
    assert cfg.ca_pem == CA_PEM
    assert cfg.client_config_dir == (sub / "ccd").absolute()
    assert cfg.status_file == (sub / "status.log").absolute() and cfg.status_interval == 30
    assert cfg.ifconfig_pool_persist == (sub / "ipp.txt").absolute()
    assert cfg.ifconfig_pool_persist_seconds == 0


def test_cd_changes_where_relative_paths_point(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "ca.crt").write_text(CA_PEM)
    (keys / "s.crt").write_text(CERT_PEM)
    (keys / "s.key").write_text(KEY_PEM)
    text = conf("cd keys", "ca ca.crt", "cert s.crt", "key s.key", pki=False)
    assert parse(text, tmp_path).cert_pem == CERT_PEM
    text = conf("cd nowhere")
    error = parse_error(text, tmp_path)
    assert "'cd'" in str(error) and error.line == line_of(text, "cd ")


def test_missing_file_names_config_line_and_path(tmp_path: Path) -> None:
    text = conf("crl-verify crl.pem")
    error = parse_error(text, tmp_path)
    assert error.line == line_of(text, "crl-verify")
    assert "crl.pem" in str(error) and str(error).startswith("server.conf:")


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_server_config(tmp_path / "nope.conf")


def test_many_directives_map_to_fields(tmp_path: Path) -> None:
    key = new_key()
    (tmp_path / "ta.key").write_text(format_static_key(key))
    (tmp_path / "ccd").mkdir()
    text = conf(
        "mode server",
        "tls-server",
        "proto tcp6-server",
        "port 443",
        "local 192.0.2.1",
        "bind ipv6only",
        "float",
        "client-to-client",
        "duplicate-cn",
        "max-clients 50",
        "client-config-dir ccd",
        "ccd-exclusive",
        "route 10.9.0.0 255.255.255.0",
        "route-ipv6 fd00:9::/64",
        "tls-auth ta.key 0",
        "remote-cert-tls client",
        "verify-x509-name client name-prefix",
        "tls-version-min 1.2",
        "tls-version-max 1.3",
        "data-ciphers AES-256-GCM:chacha20-poly1305",
        "data-ciphers-fallback AES-128-GCM",
        "cipher AES-256-GCM",
        "auth SHA256",
        "reneg-sec 600",
        "hand-window 30",
        "tls-timeout 4",
        "replay-window 128",
        "ping 5",
        "ping-restart 30",
        "tun-mtu 1400",
        "mssfix 1360",
        "sndbuf 393216",
        "rcvbuf 393216",
        "txqueuelen 1000",
        "status-version 2",
        "mute 20",
        "setenv FOO bar",
        "dcoctl-datapath userspace",
    )
    cfg = parse(text, tmp_path)
    assert (cfg.proto, cfg.port, cfg.transport, cfg.family) == (
        "tcp6",
        443,
        "tcp",
        socket.AF_INET6,
    )
    assert cfg.local == "192.0.2.1" and cfg.bind_ipv6only and cfg.allow_float
    assert cfg.client_to_client and cfg.duplicate_cn and cfg.max_clients == 50
    assert cfg.client_config_dir == tmp_path / "ccd" and cfg.ccd_exclusive
    assert cfg.routes == (RouteSpec("10.9.0.0", "255.255.255.0", None, None),)
    assert [r.network for r in cfg.routes_ipv6] == ["fd00:9::/64"]
    assert cfg.tls_auth_key == key and cfg.key_direction is KeyDirection.NORMAL
    assert cfg.remote_cert_tls == "client"
    assert cfg.verify_x509_name == ("client", "name-prefix")
    assert (cfg.tls_version_min, cfg.tls_version_max) == ("1.2", "1.3")
    assert cfg.data_ciphers == ("AES-256-GCM", "CHACHA20-POLY1305")
    assert (cfg.data_ciphers_fallback, cfg.cipher, cfg.auth) == (
        "AES-128-GCM",
        "AES-256-GCM",
        "SHA256",
    )
    assert (cfg.reneg_sec, cfg.hand_window, cfg.tls_timeout, cfg.replay_window) == (
        600,
        30,
        4,
        128,
    )
    assert (cfg.ping, cfg.ping_restart, cfg.server_ping, cfg.server_ping_restart) == (5, 30, 5, 30)
    assert cfg.pushed_ping is None
    assert (cfg.tun_mtu, cfg.mssfix, cfg.sndbuf, cfg.rcvbuf, cfg.txqueuelen) == (
        1400,
        1360,
        393216,
        393216,
        1000,
    )
    assert (cfg.status_version, cfg.mute, cfg.setenv) == (2, 20, (("FOO", "bar"),))
    assert cfg.datapath == "userspace"


@pytest.mark.parametrize(
    ("proto", "stored"),
    [
        ("udp", "udp"),
        ("udp4", "udp4"),
        ("udp6", "udp6"),
        ("tcp", "tcp"),  # plain tcp on a server = tcp-server
        ("tcp-server", "tcp"),
        ("tcp4-server", "tcp4"),
        ("tcp6", "tcp6"),
    ],
)
def test_proto_values(proto: str, stored: str) -> None:
    cfg = parse(conf(f"proto {proto}"))
    assert cfg.proto == stored
    assert cfg.transport == ("tcp" if stored.startswith("tcp") else "udp")


def test_proto_tcp_client_is_an_error() -> None:
    error = parse_error(conf("proto tcp-client"))
    assert "tcp-server" in error.message


def test_lport_wins_over_port() -> None:
    assert parse(conf("lport 1195", "port 443")).port == 1195
    assert parse(conf("port 443")).port == 443


# ---------------------------------------------------------------------------
# server / server-ipv6 / manual pools
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("network", "netmask", "server_ip", "pool_start", "pool_end"),
    [
        ("10.8.0.0", "255.255.255.0", "10.8.0.1", "10.8.0.2", "10.8.0.254"),
        ("10.8.0.0", "255.255.255.248", "10.8.0.1", "10.8.0.2", "10.8.0.6"),
        ("172.16.0.0", "255.255.0.0", "172.16.0.1", "172.16.0.2", "172.16.255.254"),
        ("192.168.5.128", "255.255.255.192", "192.168.5.129", "192.168.5.130", "192.168.5.190"),
    ],
)
def test_server_derived_values(
    network: str, netmask: str, server_ip: str, pool_start: str, pool_end: str
) -> None:
    cfg = parse(conf(f"server {network} {netmask}", server=False) + "topology subnet\n")
    assert cfg.server_network == network
    assert (cfg.server_ip, cfg.server_netmask) == (server_ip, netmask)
    assert (cfg.pool_start, cfg.pool_end) == (pool_start, pool_end)
    assert cfg.pushed_options == (f"route-gateway {server_ip}", "topology subnet")


def test_server_prefixlen_and_pool_size() -> None:
    cfg = parse(conf())
    assert cfg.server_prefixlen == 24 and cfg.pool_size == 253


def test_server_nopool(caplog: pytest.LogCaptureFixture) -> None:
    text = conf("server 10.8.0.0 255.255.255.0 nopool", server=False) + "topology subnet\n"
    with caplog.at_level(logging.WARNING):
        cfg = parse(text)
    assert cfg.server_ip == "10.8.0.1" and cfg.pool_start is None and cfg.pool_end is None
    assert cfg.pool_size == 0
    assert "nopool" in caplog.text


def test_server_nopool_with_ifconfig_pool() -> None:
    text = conf(
        "server 10.8.0.0 255.255.255.0 nopool",
        "ifconfig-pool 10.8.0.100 10.8.0.199",
        "topology subnet",
        server=False,
    )
    cfg = parse(text)
    assert (cfg.server_ip, cfg.pool_start, cfg.pool_end) == ("10.8.0.1", "10.8.0.100", "10.8.0.199")


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("server 10.8.0.0 255.255.255.252", "/29"),
        ("server 10.8.0.0 255.254.0.0", "/16"),
        ("server 10.8.0.1 255.255.255.0", "host bits"),
        ("server 10.8.0.0 0.0.0.255", "invalid netmask"),
        ("server 10.8.0.0 255.0.255.0", "invalid netmask"),
        ("server 10.8.0 255.255.255.0", "invalid network"),
        ("server 10.8.0.0", "2 to 3 arguments"),
        ("server 10.8.0.0 255.255.255.0 pool", "nopool"),
    ],
)
def test_bad_server_lines(line: str, needle: str) -> None:
    text = conf(line, "topology subnet", server=False)
    error = parse_error(text)
    assert needle in error.message
    assert error.line == line_of(text, "server ")


@pytest.mark.parametrize(
    ("prefix", "server_ipv6", "pool_start"),
    [
        ("fd00:8::/64", "fd00:8::1", "fd00:8::1000"),
        ("fd00:8::/100", "fd00:8::1", "fd00:8::1000"),
        ("fd00:8::/112", "fd00:8::1", "fd00:8::2"),  # small pools start at + 2
        ("fd00:8::/120", "fd00:8::1", "fd00:8::2"),
    ],
)
def test_server_ipv6(prefix: str, server_ipv6: str, pool_start: str) -> None:
    cfg = parse(conf(f"server-ipv6 {prefix}"))
    bits = int(prefix.split("/")[1])
    assert cfg.server_ipv6_network == prefix
    assert (cfg.server_ipv6, cfg.server_ipv6_prefixlen) == (server_ipv6, bits)
    assert (cfg.pool_ipv6_start, cfg.pool_ipv6_prefixlen) == (pool_start, bits)
    assert cfg.pushed_options == ("tun-ipv6", "route-gateway 10.8.0.1", "topology subnet")


@pytest.mark.parametrize(
    ("lines", "needle"),
    [
        (["server-ipv6 fd00::/63"], "between /64 and /124"),
        (["server-ipv6 fd00::/125"], "between /64 and /124"),
        (["server-ipv6 fd00::"], "prefix length"),
        (["server-ipv6 10.0.0.0/64"], "invalid IPv6"),
        (["server-ipv6 fd00::/64", "ifconfig-ipv6-pool fd00::1000/64"], "ifconfig-ipv6-pool"),
        (["ifconfig-ipv6-pool fd00::1000/64"], "needs 'ifconfig-ipv6'"),
    ],
)
def test_bad_ipv6_addressing(lines: list[str], needle: str) -> None:
    assert needle in parse_error(conf(*lines)).message


def test_server_ipv6_with_nopool() -> None:
    text = conf("server 10.8.0.0 255.255.255.0 nopool", "server-ipv6 fd00::/64", server=False)
    error = parse_error(text + "topology subnet\n")
    assert "nopool" in error.message


def test_manual_server_with_ifconfig_pool() -> None:
    text = conf(
        "mode server",
        "tls-server",
        "topology subnet",
        "ifconfig 10.8.0.1 255.255.255.0",
        "ifconfig-pool 10.8.0.10 10.8.0.20 255.255.255.0",
        "ifconfig-ipv6 fd00::1/64 fd00::2",
        "ifconfig-ipv6-pool fd00::100/64",
        'push "topology subnet"',
        'push "route-gateway 10.8.0.1"',
        server=False,
    )
    cfg = parse(text)
    assert cfg.server_network is None
    assert (cfg.server_ip, cfg.server_netmask) == ("10.8.0.1", "255.255.255.0")
    assert (cfg.pool_start, cfg.pool_end, cfg.pool_size) == ("10.8.0.10", "10.8.0.20", 11)
    assert (cfg.server_ipv6, cfg.server_ipv6_prefixlen) == ("fd00::1", 64)
    assert (cfg.pool_ipv6_start, cfg.pool_ipv6_prefixlen) == ("fd00::100", 64)
    # No helper: only what the config pushes itself.
    assert cfg.pushed_options == ("topology subnet", "route-gateway 10.8.0.1")


MANUAL = ("mode server", "tls-server", "topology subnet")


@pytest.mark.parametrize(
    ("lines", "needle", "at"),
    [
        (["ifconfig 10.8.0.1 255.255.255.0"], "dcoctl server needs 'server", "mode"),
        ([], "dcoctl server needs 'server", "mode"),
        (["ifconfig-pool 10.8.0.10 10.8.0.20"], "needs 'ifconfig", "ifconfig-pool"),
        (
            ["ifconfig 10.8.0.1 255.255.255.0", "ifconfig-pool 10.8.1.10 10.8.1.20"],
            "outside the server's subnet",
            "ifconfig-pool",
        ),
        (
            ["ifconfig 10.8.0.1 255.255.255.0", "ifconfig-pool 10.8.0.1 10.8.0.20"],
            "server's own address",
            "ifconfig-pool",
        ),
        (
            ["ifconfig 10.8.0.1 255.255.255.0", "ifconfig-pool 10.8.0.10 10.8.0.20 255.255.0.0"],
            "differs",
            "ifconfig-pool",
        ),
        (["ifconfig-pool 10.8.0.20 10.8.0.10"], "is above end", "ifconfig-pool"),
        (["ifconfig-pool 10.0.0.0 10.2.0.0"], "too large", "ifconfig-pool"),
    ],
)
def test_manual_addressing_errors(lines: list[str], needle: str, at: str) -> None:
    text = conf(*MANUAL, *lines, server=False)
    error = parse_error(text)
    assert needle in error.message
    assert error.line == line_of(text, at)


def test_ifconfig_pool_or_ifconfig_with_server() -> None:
    text = conf("ifconfig-pool 10.8.0.10 10.8.0.20")
    error = parse_error(text)
    assert "already defines an ifconfig-pool" in error.message
    assert error.line == line_of(text, "ifconfig-pool")
    assert "'ifconfig'" in parse_error(conf("ifconfig 10.8.0.1 255.255.255.0")).message


def test_mode_directives() -> None:
    # "server" implies mode server + tls-server; spelling them out is fine.
    assert parse(conf("mode server", "tls-server")).server_ip == "10.8.0.1"
    text = conf("mode server", "ifconfig 10.8.0.1 255.255.255.0", server=False)
    error = parse_error(text + "ifconfig-pool 10.8.0.10 10.8.0.20\ntopology subnet\n")
    assert "requires 'tls-server'" in error.message and error.line == line_of(text, "mode")
    error = parse_error(conf("tls-server", "topology subnet", server=False))
    assert "point-to-point" in error.message
    error = parse_error(conf("mode p2p"))
    assert "point-to-point" in error.message
    error = parse_error(conf(server=False))
    assert "not a server config" in error.message and error.line is None


# ---------------------------------------------------------------------------
# topology
# ---------------------------------------------------------------------------


def test_net30_default_is_an_error() -> None:
    text = conf("server 10.8.0.0 255.255.255.0", server=False)
    error = parse_error(text)
    assert "add 'topology subnet'" in error.message and "net30" in error.message
    assert error.line == line_of(text, "server ")


@pytest.mark.parametrize("topology", ["net30", "p2p"])
def test_other_topologies_rejected(topology: str) -> None:
    text = conf(f"topology {topology}", "server 10.8.0.0 255.255.255.0", server=False)
    error = parse_error(text)
    assert error.message == f"topology {topology} is not supported: use 'topology subnet'"
    assert error.line == line_of(text, "topology")


def test_topology_after_server_is_fine() -> None:
    text = conf("server 10.8.0.0 255.255.255.0", "topology subnet", server=False)
    assert parse(text).topology == "subnet"


# ---------------------------------------------------------------------------
# keepalive and timers
# ---------------------------------------------------------------------------


def test_keepalive_properties() -> None:
    cfg = parse(conf("keepalive 10 120"))
    assert cfg.keepalive == (10, 120)
    assert (cfg.server_ping, cfg.server_ping_restart) == (10, 240)
    assert (cfg.pushed_ping, cfg.pushed_ping_restart) == (10, 120)
    assert cfg.pushed_options[-2:] == ("ping 10", "ping-restart 120")


@pytest.mark.parametrize(
    ("lines", "needle"),
    [
        (["keepalive 10 15"], "at least twice"),
        (["keepalive 0 60"], "out of range"),
        (["keepalive 10"], "2 arguments"),
        (["keepalive 10 60", "ping 5"], "conflicts with 'ping'"),
        (["ping-restart 30", "keepalive 10 60"], "conflicts with 'ping-restart'"),
    ],
)
def test_keepalive_errors(lines: list[str], needle: str) -> None:
    assert needle in parse_error(conf(*lines)).message


# ---------------------------------------------------------------------------
# push
# ---------------------------------------------------------------------------


def test_push_keeps_order_and_text() -> None:
    text = conf(
        'push "route 10.1.0.0 255.255.0.0"',
        "push 'dhcp-option DOMAIN example.org'",
        'push "setenv-safe NAME \\"two words\\""',
        "push route-gateway\\ 10.8.0.1",
        'push "dhcp-option DNS 10.8.0.1" # the resolver',
    )
    assert parse(text).push == (
        "route 10.1.0.0 255.255.0.0",
        "dhcp-option DOMAIN example.org",
        'setenv-safe NAME "two words"',
        "route-gateway 10.8.0.1",
        "dhcp-option DNS 10.8.0.1",
    )


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("push route 10.1.0.0 255.255.0.0", 'quote the whole option: push "route'),
        ("push", "takes 1 argument, got 0"),
        ('push "route 10.1.0.0 255.255.0.0,route 10.2.0.0 255.255.0.0"', "illegal comma"),
        ('push ""', "empty option"),
        ('push "# nothing"', "empty option"),
        ('push "setenv X \'unterminated"', "bad quoting"),
        ('push "route 10.1.0.0', "no closing quotation"),
    ],
)
def test_push_errors(line: str, needle: str) -> None:
    text = conf(line)
    error = parse_error(text)
    assert needle in error.message
    assert error.line == line_of(text, "push")


# ---------------------------------------------------------------------------
# PKI, control-channel wrapping, CRL
# ---------------------------------------------------------------------------


def test_missing_ca() -> None:
    error = parse_error(conf(inline("cert", CERT_PEM), inline("key", KEY_PEM), pki=False))
    assert "no 'ca'" in error.message


def test_missing_cert_and_key() -> None:
    error = parse_error(conf(inline("ca", CA_PEM), pki=False))
    assert "give 'cert' and 'key'" in error.message


def test_cert_without_key() -> None:
    text = conf(inline("ca", CA_PEM), inline("cert", CERT_PEM), pki=False)
    error = parse_error(text)
    assert error.message == "'cert' given without 'key'"
    assert error.line == line_of(text, "<cert>")


def test_pkcs12_instead_of_cert(tmp_path: Path) -> None:
    (tmp_path / "server.p12").write_bytes(b"\x30\x82pkcs12")
    cfg = parse(conf(inline("ca", CA_PEM), "pkcs12 server.p12", pki=False), tmp_path)
    assert cfg.pkcs12 == b"\x30\x82pkcs12" and cfg.cert_pem is None
    assert "pkcs12" not in repr(cfg).replace("pkcs12=", "")


def test_tls_auth_with_key_direction() -> None:
    key = new_key()
    cfg = parse(conf(inline("tls-auth", format_static_key(key)), "key-direction 0"))
    assert cfg.tls_auth_key == key and cfg.key_direction is KeyDirection.NORMAL


def test_only_one_wrapping() -> None:
    text = conf(
        inline("tls-auth", format_static_key(new_key())),
        inline("tls-crypt", format_static_key(new_key())),
    )
    assert "cannot be used together" in parse_error(text).message


def test_tls_crypt_v2_server_key(tmp_path: Path) -> None:
    (tmp_path / "v2.key").write_text(TLS_CRYPT_V2_SERVER)
    cfg = parse(conf("tls-crypt-v2 v2.key force-cookie"), tmp_path)
    assert cfg.tls_crypt_v2_key_pem == TLS_CRYPT_V2_SERVER and cfg.tls_crypt_v2_force_cookie
    cfg = parse(conf("tls-crypt-v2 v2.key allow-noncookie"), tmp_path)
    assert not cfg.tls_crypt_v2_force_cookie


@pytest.mark.parametrize(
    ("block", "needle"),
    [
        (TLS_CRYPT_V2_CLIENT, "holds a client key"),
        (CA_PEM, "no tls-crypt-v2 server key"),
    ],
)
def test_tls_crypt_v2_wrong_key(block: str, needle: str) -> None:
    text = conf(inline("tls-crypt-v2", block))
    error = parse_error(text)
    assert needle in error.message and error.line == line_of(text, "<tls-crypt-v2>")


def test_tls_crypt_v2_bad_cookie_mode() -> None:
    error = parse_error(conf("tls-crypt-v2 v2.key sometimes"))
    assert "force-cookie | allow-noncookie" in error.message


def test_crl_verify_file_and_inline(tmp_path: Path) -> None:
    (tmp_path / "crl.pem").write_text(CRL_PEM)
    cfg = parse(conf("crl-verify crl.pem"), tmp_path)
    assert cfg.crl_pem == CRL_PEM and cfg.crl_path == tmp_path / "crl.pem"
    cfg = parse(conf(inline("crl-verify", CRL_PEM)))
    assert cfg.crl_pem == CRL_PEM and cfg.crl_path is None


def test_crl_verify_dir_is_unsupported(tmp_path: Path) -> None:
    (tmp_path / "crl").mkdir()
    text = conf("crl-verify crl dir")
    error = parse_error(text, tmp_path)
    assert "not supported" in error.message and "dir" in error.message
    assert error.line == line_of(text, "crl-verify")


def test_crl_verify_without_crl() -> None:
    assert "no CRL" in parse_error(conf(inline("crl-verify", CA_PEM))).message


def test_dh_file_is_not_read(tmp_path: Path) -> None:
    # ECDHE only: the DH file is ignored, even when it does not exist.
    cfg = parse(conf("dh dh2048.pem"), tmp_path)
    assert (line_of(conf("dh dh2048.pem"), "dh"), "dh") in cfg.ignored
    assert parse(conf(inline("dh", "-----BEGIN DH PARAMETERS-----\nx\n"))).ignored


@pytest.mark.parametrize("line", ["remote-cert-tls client", "verify-client-cert require"])
def test_client_certificate_checks(line: str) -> None:
    parse(conf(line))


def test_remote_cert_tls_server_on_a_server() -> None:
    assert "remote-cert-tls client" in parse_error(conf("remote-cert-tls server")).message


# ---------------------------------------------------------------------------
# Authentication and scripts
# ---------------------------------------------------------------------------


def test_auth_user_pass_verify_and_scripts() -> None:
    cfg = parse(
        conf(
            "script-security 2",
            'auth-user-pass-verify "/etc/openvpn/check --strict" via-file',
            "verify-client-cert optional",
            "auth-user-pass-optional",
            "username-as-common-name",
            "client-connect /etc/openvpn/connect.sh",
            "client-disconnect /etc/openvpn/disconnect.sh",
            "learn-address /etc/openvpn/learn.sh",
        )
    )
    assert cfg.auth_user_pass_verify == ("/etc/openvpn/check --strict", "via-file")
    assert cfg.verify_client_cert == "optional"
    assert cfg.auth_user_pass_optional and cfg.username_as_common_name
    assert cfg.client_connect == "/etc/openvpn/connect.sh"
    assert cfg.client_disconnect == "/etc/openvpn/disconnect.sh"
    assert cfg.learn_address == "/etc/openvpn/learn.sh"
    assert cfg.script_security == 2


@pytest.mark.parametrize(
    ("lines", "needle"),
    [
        (["verify-client-cert none"], "would let anyone connect"),
        (["username-as-common-name"], "needs 'auth-user-pass-verify'"),
        (["auth-user-pass-optional"], "needs 'auth-user-pass-verify'"),
        (["client-connect /bin/true"], "needs 'script-security 2'"),
        (["auth-user-pass-verify /bin/check via-file"], "needs 'script-security 2'"),
        (["script-security 2", "auth-user-pass-verify /bin/check via-env"], "script-security 3"),
        (["script-security 2", "auth-user-pass-verify /bin/check"], "via-env|via-file"),
        (["script-security 2", "auth-user-pass-verify /bin/check via-pipe"], "via-env"),
        (["verify-client-cert maybe"], "none | optional | require"),
        (["client-cert-not-required"], "verify-client-cert none"),
        (["plugin /usr/lib/openvpn/openvpn-plugin-auth-pam.so login"], "auth-user-pass-verify"),
        (["management-client-auth"], "not supported"),
    ],
)
def test_authentication_errors(lines: list[str], needle: str) -> None:
    assert needle in parse_error(conf(*lines)).message


def test_via_env_with_script_security_3() -> None:
    cfg = parse(conf("script-security 3", "auth-user-pass-verify /bin/check via-env"))
    assert cfg.auth_user_pass_verify == ("/bin/check", "via-env")


# ---------------------------------------------------------------------------
# client-config-dir in the server config
# ---------------------------------------------------------------------------


def test_client_config_dir_must_exist(tmp_path: Path) -> None:
    text = conf("client-config-dir ccd")
    error = parse_error(text, tmp_path)
    assert "does not exist" in error.message and error.line == line_of(text, "client-config-dir")
    (tmp_path / "ccd").write_text("")
    assert "not a directory" in parse_error(text, tmp_path).message


def test_ccd_exclusive_needs_client_config_dir() -> None:
    assert "needs 'client-config-dir'" in parse_error(conf("ccd-exclusive")).message


@pytest.mark.parametrize(
    "line", ["iroute 10.9.0.0 255.255.255.0", "ifconfig-push 10.8.0.5 255.255.255.0", "push-reset"]
)
def test_ccd_directives_in_server_config(line: str) -> None:
    text = conf(line)
    error = parse_error(text)
    assert "client-config-dir file" in error.message
    assert error.line == line_of(text, line.split()[0])


# ---------------------------------------------------------------------------
# Refused and ignored directives
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("dev tap", "only tun devices"),
        ("dev-type tap", "only tun devices"),
        ("server-bridge 10.8.0.4 255.255.255.0 10.8.0.50 10.8.0.100", "TAP bridging"),
        ("server-bridge", "TAP bridging"),
    ],
)
def test_tap_rejected(line: str, needle: str) -> None:
    text = conf(line)
    error = parse_error(text)
    assert needle in error.message
    assert error.line == line_of(text, line)


@pytest.mark.parametrize(
    "line",
    ["compress lz4-v2", "compress", "comp-lzo", "comp-lzo yes", "allow-compression yes"],
)
def test_compression_rejected(line: str) -> None:
    text = conf(line)
    error = parse_error(text)
    assert "compression is not supported" in error.message
    assert error.line == line_of(text, line.split()[0])


def test_comp_lzo_no_and_allow_compression_no_accepted() -> None:
    parse(conf("comp-lzo no", "allow-compression no"))


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("fragment 1300", "'fragment' is not supported"),
        ("secret static.key", "static-key mode"),
        ("port-share 127.0.0.1 443", "not supported"),
        ("tls-verify /bin/check", "not supported"),
    ],
)
def test_unsupported_directives(line: str, needle: str) -> None:
    text = conf(line)
    error = parse_error(text)
    assert needle in error.message and error.line == line_of(text, line.split()[0])


@pytest.mark.parametrize(
    "line",
    [
        "client",
        "pull",
        "tls-client",
        "remote vpn.example.org 1194",
        "nobind",
        "auth-user-pass",
        "resolv-retry infinite",
    ],
)
def test_client_directives_rejected(line: str) -> None:
    text = conf(line)
    error = parse_error(text)
    assert "this is a client directive" in error.message
    assert error.line == line_of(text, line.split()[0])


def test_client_directive_reported_before_other_errors() -> None:
    # A client profile given by mistake: say so, not "cannot read ca.crt".
    text = "ca missing.crt\nclient\nremote vpn.example.org\n"
    error = parse_error(text)
    assert "'client': this is a client directive" in error.message and error.line == 2


def test_pushable_client_directive_gets_a_hint() -> None:
    error = parse_error(conf("redirect-gateway def1"))
    assert 'push "redirect-gateway ..."' in error.message


@pytest.mark.parametrize(
    "line",
    [
        "user nobody",
        "group nogroup",
        "daemon",
        "log /var/log/openvpn.log",
        "log-append /var/log/openvpn.log",
        "writepid /run/openvpn.pid",
        "management 127.0.0.1 7505",
        "management-log-cache 100",
        "chroot /var/empty",
        "persist-local-ip",
        "suppress-timestamps",
    ],
)
def test_process_model_directives_are_ignored(line: str, caplog: pytest.LogCaptureFixture) -> None:
    text = conf(line)
    with caplog.at_level(logging.DEBUG, logger="dcoctl"):
        cfg = parse(text)
    name = line.split()[0]
    assert (line_of(text, name), name) in cfg.ignored
    assert f"ignoring '{name}'" in caplog.text


def test_unknown_option_error_names_file_and_line() -> None:
    text = conf("frobnicate yes")
    error = parse_error(text)
    assert str(error) == f"server.conf:{line_of(text, 'frobnicate')}: unknown option 'frobnicate'"


def test_unknown_option_suggests_a_close_match() -> None:
    assert "did you mean 'client-to-client'" in parse_error(conf("client-too-client")).message


def test_ignore_unknown_option_and_setenv_opt() -> None:
    cfg = parse(conf("ignore-unknown-option frobnicate", "frobnicate yes", "setenv opt wibble 1"))
    assert {name for _, name in cfg.ignored} == {"frobnicate", "wibble"}


def test_inline_block_for_non_file_directive() -> None:
    error = parse_error(conf(inline("push", "route 10.0.0.0 255.0.0.0")))
    assert "cannot be given as an inline <push> block" in error.message


def test_inline_placeholder_without_block() -> None:
    text = conf("tls-crypt [inline]")
    error = parse_error(text)
    assert "no <tls-crypt> block follows" in error.message
    assert error.line == line_of(text, "tls-crypt")


def test_tokenizer_error_names_config_line() -> None:
    text = conf('status "unterminated')
    assert parse_error(text).line == line_of(text, "status")


def test_non_aead_cipher_only_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        cfg = parse(conf("cipher AES-256-CBC"))
    assert cfg.cipher == "AES-256-CBC" and "AES-256-CBC" in caplog.text


def test_cbc_data_ciphers_rejected() -> None:
    assert "only the AEAD ciphers" in parse_error(conf("data-ciphers AES-256-CBC")).message


# ---------------------------------------------------------------------------
# is_server_config
# ---------------------------------------------------------------------------

CLIENT_PROFILE = "\n".join(
    [
        "client",
        "dev tun",
        "proto udp",
        "remote vpn.example.org 1194",
        "# server 10.8.0.0 255.255.255.0",
        "; tls-server",
        *PKI,
        "<tls-crypt>",
        "server",  # inside an inline block: not a directive
        "</tls-crypt>",
    ]
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (CLIENT_PROFILE, False),
        (DEBIAN_SERVER_CONF, True),
        ("mode server\ntls-server\n", True),
        ("mode p2p\n", False),
        ("  server-ipv6 fd00::/64\n", True),
        ("server-bridge\n", True),
        ("--tls-server\n", True),
        ("\ufeffserver 10.8.0.0 255.255.255.0\r\n", True),
        ('remote "unterminated\nclient\n', False),
        ('push "x\ntls-server\n', True),
        ("", False),
    ],
)
def test_is_server_config(text: str, expected: bool) -> None:
    assert is_server_config(text) is expected


def test_is_server_config_agrees_with_the_parsers() -> None:
    assert is_server_config(conf())
    assert not is_server_config(conf(server=False).replace("dev tun", "client\ndev tun"))


# ---------------------------------------------------------------------------
# client-config-dir files
# ---------------------------------------------------------------------------


def test_ccd_fixed_address_and_iroutes() -> None:
    text = "\n".join(
        [
            "# alice's office",
            "ifconfig-push 10.8.0.50 255.255.255.0",
            "ifconfig-ipv6-push fd00:8::50/64 fd00:8::1",
            "iroute 192.168.50.0 255.255.255.0",
            "iroute 192.168.60.7",
            "iroute-ipv6 fd00:50::/64",
            'push "route 192.168.70.0 255.255.255.0"',
            'push "dhcp-option DNS 192.168.50.1"',
        ]
    )
    entry = parse_ccd(text, "ccd/alice")
    assert entry == CcdEntry(
        source="ccd/alice",
        ifconfig_push=("10.8.0.50", "255.255.255.0"),
        ifconfig_ipv6_push=("fd00:8::50/64", "fd00:8::1"),
        iroutes=(("192.168.50.0", 24), ("192.168.60.7", 32)),
        iroutes_ipv6=(("fd00:50::", 64),),
        push=("route 192.168.70.0 255.255.255.0", "dhcp-option DNS 192.168.50.1"),
    )
    assert not entry.push_reset and not entry.disable and entry.push_remove == ()


def test_ccd_push_reset_remove_and_disable() -> None:
    entry = parse_ccd('push-reset\npush-remove "route 10.1"\npush-remove dhcp-option\n', "c")
    assert entry.push_reset and entry.push_remove == ("route 10.1", "dhcp-option")
    assert parse_ccd("disable\n", "c").disable
    assert parse_ccd("ifconfig-ipv6-push fd00::5/64\n", "c").ifconfig_ipv6_push == (
        "fd00::5/64",
        None,
    )
    assert parse_ccd("", "c") == CcdEntry(source="c")


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("frobnicate", "not valid in a client-config-dir file"),
        ("ifconfig-pus 10.8.0.5 255.255.255.0", "did you mean 'ifconfig-push'"),
        ("ifconfig-push 10.8.0.5", "2 arguments"),
        ("ifconfig-push 10.8.0.500 255.255.255.0", "invalid address"),
        ("ifconfig-push 10.8.0.5 255.0.255.0", "invalid netmask"),
        ("iroute 192.168.50.1 255.255.255.0", "host bits"),
        ("iroute-ipv6 fd00:50::1/64", "host bits"),
        ("iroute-ipv6 fd00:50::", "prefix length"),
        ("ifconfig-ipv6-push fd00::5/64 nonsense", "invalid IPv6 address"),
        ("push route 10.0.0.0 255.0.0.0", "quote the whole option"),
        ("disable now", "no arguments"),
        ("<ca>\nx\n</ca>", "inline <ca> blocks"),
        ('push "a', "no closing quotation"),
    ],
)
def test_ccd_errors_name_file_and_line(line: str, needle: str) -> None:
    text = f"# comment\n{line}\n"
    with pytest.raises(ConfigError) as info:
        parse_ccd(text, "/etc/openvpn/ccd/alice")
    assert needle in info.value.message
    assert info.value.source == "/etc/openvpn/ccd/alice" and info.value.line == 2
    assert str(info.value).startswith("/etc/openvpn/ccd/alice:2: ")


def test_load_ccd_entry_and_default_fallback(tmp_path: Path) -> None:
    (tmp_path / "alice").write_text("ifconfig-push 10.8.0.50 255.255.255.0\n")
    assert load_ccd_entry(tmp_path, "bob") is None
    alice = load_ccd_entry(tmp_path, "alice")
    assert alice is not None and alice.ifconfig_push == ("10.8.0.50", "255.255.255.0")
    assert alice.source == str(tmp_path / "alice")

    (tmp_path / "DEFAULT").write_text('push "route 10.9.0.0 255.255.0.0"\n')
    bob = load_ccd_entry(tmp_path, "bob")
    assert bob is not None and bob.push == ("route 10.9.0.0 255.255.0.0",)
    assert bob.source == str(tmp_path / "DEFAULT")
    alice = load_ccd_entry(tmp_path, "alice")  # the own file wins over DEFAULT
    assert alice is not None and alice.push == ()
    # ccd-exclusive: only the common name's own file counts.
    assert load_ccd_entry(tmp_path, "bob", exclusive=True) is None
    assert load_ccd_entry(tmp_path, "alice", exclusive=True) == alice


def test_load_ccd_entry_names_are_exact_and_safe(tmp_path: Path) -> None:
    ccd = tmp_path / "ccd"
    ccd.mkdir()
    (tmp_path / "secret").write_text("disable\n")
    (ccd / "Alice").write_text("disable\n")
    (ccd / "a_b").write_text("iroute 10.1.0.0 255.255.0.0\n")
    assert load_ccd_entry(ccd, "alice") is None  # case matters
    assert load_ccd_entry(ccd, "../secret") is None  # no way out of the directory
    assert load_ccd_entry(ccd, "..") is None
    entry = load_ccd_entry(ccd, "a b")  # unsafe characters become '_', like OpenVPN
    assert entry is not None and entry.iroutes == (("10.1.0.0", 16),)


def test_load_ccd_entry_error_names_the_ccd_file(tmp_path: Path) -> None:
    (tmp_path / "carol").write_text("ifconfig-push 10.8.0.7 255.255.255.0\nbogus\n")
    with pytest.raises(ConfigError) as info:
        load_ccd_entry(tmp_path, "carol")
    assert str(info.value).startswith(f"{tmp_path / 'carol'}:2: ")
    (tmp_path / "dave").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_ccd_entry(tmp_path, "dave")


def test_ccd_directory_from_server_config(tmp_path: Path) -> None:
    (tmp_path / "ccd").mkdir()
    (tmp_path / "ccd" / "client").write_text("ifconfig-push 10.8.0.9 255.255.255.0\n")
    cfg = parse(conf("client-config-dir ccd"), tmp_path)
    assert cfg.client_config_dir is not None
    entry = load_ccd_entry(cfg.client_config_dir, "client")
    assert entry is not None and entry.ifconfig_push == ("10.8.0.9", cfg.server_netmask)


# ---------------------------------------------------------------------------
# Against the real OpenVPN (when it is installed and we may use namespaces)
# ---------------------------------------------------------------------------


def _openvpn_dump(config: Path) -> str:
    argv = ["unshare", "-n", "openvpn", "--config", str(config), "--verb", "4"]
    try:
        result = subprocess.run(
            argv, cwd=config.parent, capture_output=True, text=True, timeout=3, check=False
        )
        return result.stdout + result.stderr
    except subprocess.TimeoutExpired as exc:  # it got as far as running: fine
        out = exc.stdout or b""
        return out.decode() if isinstance(out, bytes) else out


@pytest.mark.skipif(
    shutil.which("openvpn") is None or shutil.which("unshare") is None or os.geteuid() != 0,
    reason="needs openvpn, unshare and root",
)
def test_derived_values_match_openvpn(tmp_path: Path) -> None:
    from dcoctl.pki import make_pki, write_pki

    write_pki(make_pki(server_cn="server", clients=()), tmp_path)
    path = tmp_path / "server.conf"
    path.write_text(
        "dev tun\nca ca.crt\ncert server.crt\nkey server.key\ndh none\ntopology subnet\n"
        "server 10.20.0.0 255.255.254.0\nserver-ipv6 fd00:20::/64\n"
        'push "route 10.30.0.0 255.255.0.0"\nkeepalive 5 30\n'
    )
    cfg = load_server_config(path)
    dump = _openvpn_dump(path)
    if "ifconfig_pool_start" not in dump:
        pytest.skip(f"openvpn did not print its options: {dump[-500:]}")

    def value(name: str) -> str:
        match = re.search(rf"  {name} = '?([^'\n]*)'?\n", dump)
        assert match, name
        return match.group(1)

    assert value("ifconfig_local") == cfg.server_ip
    assert value("ifconfig_remote_netmask") == cfg.server_netmask
    assert value("ifconfig_pool_start") == cfg.pool_start
    assert value("ifconfig_pool_end") == cfg.pool_end
    assert value("ifconfig_ipv6_local") == cfg.server_ipv6
    assert value("ifconfig_ipv6_pool_base") == cfg.pool_ipv6_start
    assert int(value("ping_send_timeout")) == cfg.server_ping
    assert int(value("ping_rec_timeout")) == cfg.server_ping_restart
    assert tuple(re.findall(r"push_entry = '([^']*)'", dump)) == cfg.pushed_options
