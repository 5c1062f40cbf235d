"""dcoctl client against Debian's stock OpenVPN 2.6 server, in namespaces.

Every test runs the real CLI (``dcoctl up``/``peers``/``down``) in one
namespace and a real ``openvpn`` server in the other, joined by a veth pair
on 198.18.0.0/15, and checks what a user would: the tunnel carries pings,
counters move, and ``down`` leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcoctl.pki import PKI, make_pki
from dcoctl.testbed import NetnsPair, OpenVPNServer

from .dcoctl_runner import DcoctlRunner

CIPHERS = ["AES-128-GCM", "AES-256-GCM", "CHACHA20-POLY1305"]


@pytest.fixture
def dcoctl(netns_pair: NetnsPair, workdir: Path) -> Iterator[DcoctlRunner]:
    runner = DcoctlRunner(netns_pair, netns_pair.ns_client, workdir)
    try:
        yield runner
    finally:
        runner.cleanup()


def _server(pair: NetnsPair, workdir: Path, pki: PKI, **kw: object) -> OpenVPNServer:
    return OpenVPNServer(pair.ns_server, workdir, pki, **kw)  # type: ignore[arg-type]


def assert_clean(dcoctl: DcoctlRunner, name: str, ifname: str | None = None) -> None:
    """Nothing of instance ``name`` is left: no link, route, socket, state or process."""
    ifname = ifname or name
    assert f" {ifname}:" not in dcoctl.links()
    assert not re.search(rf"\bdev {re.escape(ifname)}\b", dcoctl.routes())
    for suffix in (".sock", ".json"):
        assert not (dcoctl.runtime_dir / f"{name}{suffix}").exists()
    pids = dcoctl.pair.run(
        dcoctl.ns, ["ip", "netns", "pids", dcoctl.ns], capture_output=True, text=True
    ).stdout.split()
    cmdlines = [
        Path(f"/proc/{pid}/cmdline").read_bytes()
        for pid in pids
        if Path(f"/proc/{pid}/cmdline").exists()
    ]
    assert not [c for c in cmdlines if b"dcoctl" in c], "a dcoctl process is still running"


def _tunnel_roundtrip(
    dcoctl: DcoctlRunner, name: str, server: OpenVPNServer, cipher: str | None, derivation: str
) -> None:
    assert dcoctl.pair.ping(dcoctl.ns, server.tunnel_ip, count=3)
    first = dcoctl.peers(name)
    assert first["mode"] == "client" and first["datapath"] == "userspace"
    assert first["datapath_reason"]
    (peer,) = first["peers"]
    assert peer["vpn_ipv4"] and peer["vpn_ipv4"].startswith("10.8.0.")
    if cipher:
        assert peer["cipher"] == cipher
    assert peer["key_derivation"] == derivation
    assert peer["key_id"] == 0 and isinstance(peer["peer_id"], int)
    assert peer["connected_since"] <= time.time()
    assert dcoctl.pair.ping(dcoctl.ns, server.tunnel_ip, count=5)
    second = dcoctl.peers(name)["peers"][0]
    for counter in ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets"):
        assert second[counter] > peer[counter] > 0, counter
    # Five echo requests of 84 bytes each went out at least.
    assert second["tx_bytes"] - peer["tx_bytes"] >= 5 * 84


MATRIX = [
    (proto, wrap, cipher)
    for proto in ("udp", "tcp")
    for wrap in ("tls-auth", "tls-crypt")
    for cipher in CIPHERS
]


@pytest.mark.parametrize(("proto", "wrap", "cipher"), MATRIX)
def test_tunnel_ekm(
    netns_pair: NetnsPair,
    workdir: Path,
    pki: PKI,
    dcoctl: DcoctlRunner,
    proto: str,
    wrap: str,
    cipher: str,
) -> None:
    digest = "SHA256" if wrap == "tls-auth" and cipher == "AES-128-GCM" else "SHA1"
    with _server(
        netns_pair, workdir, pki, proto=proto, wrap=wrap, data_ciphers=cipher, auth_digest=digest
    ) as server:
        profile = server.client_profile("c1", netns_pair.server_ip)
        result = dcoctl.up(profile, "c1")
        assert result.returncode == 0, result.stderr + dcoctl.log("c1")
        assert "tunnel up" in result.stdout
        _tunnel_roundtrip(dcoctl, "c1", server, cipher, "tls-ekm")
        down = dcoctl.down("c1")
        assert down.returncode == 0, down.stderr
        assert_clean(dcoctl, "c1")
        if proto == "udp":
            # cc-exit: the server learns at once that we left.
            assert server.wait_for(r"(EXIT|exit-notify|client-instance exiting)", timeout=5)


@pytest.mark.parametrize(
    ("proto", "wrap"), [("udp", "tls-crypt"), ("tcp", "tls-auth"), ("udp", None)]
)
def test_tunnel_legacy_prf(
    netns_pair: NetnsPair,
    workdir: Path,
    pki: PKI,
    dcoctl: DcoctlRunner,
    proto: str,
    wrap: str | None,
) -> None:
    with _server(netns_pair, workdir, pki, proto=proto, wrap=wrap) as server:
        profile = server.client_profile("prf", netns_pair.server_ip, ["dcoctl-key-derivation prf"])
        result = dcoctl.up(profile, "prf")
        assert result.returncode == 0, result.stderr + dcoctl.log("prf")
        _tunnel_roundtrip(dcoctl, "prf", server, "AES-256-GCM", "prf")
        assert dcoctl.down("prf").returncode == 0
        assert_clean(dcoctl, "prf")


def test_rekey_under_traffic_loses_nothing(
    netns_pair: NetnsPair, workdir: Path, pki: PKI, dcoctl: DcoctlRunner
) -> None:
    with _server(netns_pair, workdir, pki, wrap="tls-crypt") as server:
        profile = server.client_profile("rk", netns_pair.server_ip, ["reneg-sec 3"])
        assert dcoctl.up(profile, "rk").returncode == 0, dcoctl.log("rk")
        # 80 pings at 0.2 s = 16 s: long enough for at least four rekeys.
        result = netns_pair.run(
            dcoctl.ns,
            ["ping", "-c", "80", "-i", "0.2", "-W", "1", server.tunnel_ip],
            capture_output=True,
            text=True,
        )
        assert " 0% packet loss" in result.stdout, result.stdout
        peer = dcoctl.peers("rk")["peers"][0]
        log = dcoctl.log("rk")
        rekeys = re.findall(r"key (\d) installed", log)
        assert len(rekeys) >= 4, log
        assert peer["key_id"] != 0
        assert time.time() - peer["last_rekey"] < 10
        assert dcoctl.down("rk").returncode == 0
        assert_clean(dcoctl, "rk")


def test_key_ids_wrap_around_after_seven(
    netns_pair: NetnsPair, workdir: Path, pki: PKI, dcoctl: DcoctlRunner
) -> None:
    with _server(netns_pair, workdir, pki, wrap="tls-auth", reneg_sec=2) as server:
        profile = server.client_profile("wrap", netns_pair.server_ip)
        assert dcoctl.up(profile, "wrap").returncode == 0, dcoctl.log("wrap")
        deadline = time.time() + 60
        while (
            time.time() < deadline and len(re.findall(r"key \d installed", dcoctl.log("wrap"))) < 8
        ):
            time.sleep(0.5)
        log = dcoctl.log("wrap")
        ids = [int(k) for k in re.findall(r"key (\d) installed", log)]
        assert ids[:8] == [1, 2, 3, 4, 5, 6, 7, 1], log
        assert "started by the server" in log
        assert netns_pair.ping(dcoctl.ns, server.tunnel_ip, count=3)


def test_redirect_gateway_keeps_underlay_and_is_undone(
    netns_pair: NetnsPair, workdir: Path, pki: PKI, dcoctl: DcoctlRunner
) -> None:
    with _server(
        netns_pair,
        workdir,
        pki,
        wrap="tls-crypt",
        push=["redirect-gateway def1", "route 172.31.0.0 255.255.0.0"],
    ) as server:
        before = dcoctl.routes()
        profile = server.client_profile("rg", netns_pair.server_ip)
        assert dcoctl.up(profile, "rg").returncode == 0, dcoctl.log("rg")
        routes = dcoctl.routes()
        assert re.search(r"^0\.0\.0\.0/1 via 10\.8\.0\.1 dev rg", routes, re.M), routes
        assert re.search(r"^128\.0\.0\.0/1 via 10\.8\.0\.1 dev rg", routes, re.M), routes
        assert re.search(r"^172\.31\.0\.0/16 via 10\.8\.0\.1 dev rg", routes, re.M), routes
        # The server itself stays reachable outside the tunnel.
        assert re.search(rf"^{re.escape(netns_pair.server_ip)} dev vd", routes, re.M), routes
        assert netns_pair.ping(dcoctl.ns, server.tunnel_ip, count=3)
        assert netns_pair.ping(dcoctl.ns, netns_pair.server_ip, count=2)
        assert dcoctl.down("rg").returncode == 0
        assert dcoctl.routes() == before
        assert_clean(dcoctl, "rg")


def test_down_after_sigkill_cleans_up(
    netns_pair: NetnsPair, workdir: Path, pki: PKI, dcoctl: DcoctlRunner
) -> None:
    with _server(
        netns_pair, workdir, pki, wrap="tls-crypt", push=["redirect-gateway def1"]
    ) as server:
        before = dcoctl.routes()
        profile = server.client_profile("kill", netns_pair.server_ip)
        assert dcoctl.up(profile, "kill").returncode == 0, dcoctl.log("kill")
        pid = dcoctl.peers("kill")["pid"]
        # A second instance of the same name is refused with a clear message.
        again = dcoctl.up(profile, "kill")
        assert again.returncode != 0 and "already running" in again.stderr
        os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 5
        while Path(f"/proc/{pid}").exists() and time.time() < deadline:
            time.sleep(0.05)
        assert netns_pair.server_ip in dcoctl.routes()  # the pinned route is left over
        result = dcoctl.down("kill")
        assert result.returncode == 0, result.stderr
        assert "cleaned up" in result.stdout
        assert dcoctl.routes() == before
        assert_clean(dcoctl, "kill")
        assert dcoctl.down("kill").returncode == 0  # idempotent
        # And the instance comes up again.
        assert dcoctl.up(profile, "kill").returncode == 0, dcoctl.log("kill")
        assert netns_pair.ping(dcoctl.ns, server.tunnel_ip)
        assert dcoctl.down("kill").returncode == 0


# -- failures: one clear line, non-zero exit, nothing left behind ----------------------


def _assert_failure(result: subprocess.CompletedProcess[str], pattern: str) -> None:
    assert result.returncode != 0
    lines = [
        line
        for line in result.stderr.splitlines()
        if line.startswith("dcoctl: ") and "data path" not in line
    ]
    assert len(lines) == 1, result.stderr
    assert re.search(pattern, lines[0]), lines[0]


def test_wrong_ca(netns_pair: NetnsPair, workdir: Path, pki: PKI, dcoctl: DcoctlRunner) -> None:
    other = make_pki()
    with _server(netns_pair, workdir, pki, wrap="tls-crypt") as server:
        profile = server.client_profile("ca", netns_pair.server_ip)
        profile = profile.replace(pki.ca_cert_pem.strip(), other.ca_cert_pem.strip())
        result = dcoctl.up(profile, "ca", timeout=30)
        _assert_failure(result, r"TLS verification failed.*not issued by the configured")
        assert_clean(dcoctl, "ca")


def test_wrong_verify_x509_name(
    netns_pair: NetnsPair, workdir: Path, pki: PKI, dcoctl: DcoctlRunner
) -> None:
    with _server(netns_pair, workdir, pki, wrap="tls-crypt") as server:
        profile = server.client_profile("xn", netns_pair.server_ip)
        profile = profile.replace(
            "verify-x509-name server name", "verify-x509-name vpn.example.org name"
        )
        result = dcoctl.up(profile, "xn", timeout=30)
        _assert_failure(result, r"verify-x509-name.*vpn\.example\.org.*CN=server")
        assert_clean(dcoctl, "xn")


def test_unreachable_server(
    netns_pair: NetnsPair, workdir: Path, pki: PKI, dcoctl: DcoctlRunner
) -> None:
    server = _server(netns_pair, workdir, pki, wrap="tls-crypt")  # configured, never started
    profile = server.client_profile("gone", netns_pair.server_ip, ["server-poll-timeout 3"])
    result = dcoctl.up(profile, "gone", timeout=8)
    _assert_failure(result, r"timed out after 8 s.*(unreachable|did not answer)")
    assert_clean(dcoctl, "gone")


def test_auth_failed(netns_pair: NetnsPair, workdir: Path, pki: PKI, dcoctl: DcoctlRunner) -> None:
    with _server(
        netns_pair, workdir, pki, wrap="tls-crypt", auth_user_pass_verify="reject"
    ) as server:
        profile = server.client_profile(
            "af", netns_pair.server_ip, auth_user_pass=("alice", "wrong")
        )
        result = dcoctl.up(profile, "af", timeout=30)
        _assert_failure(result, r"AUTH_FAILED")
        assert_clean(dcoctl, "af")


# -- more of what real profiles and servers do ------------------------------------------


def test_tls12_with_ekm_uses_no_context_exporter(
    netns_pair: NetnsPair, workdir: Path, pki: PKI, dcoctl: DcoctlRunner
) -> None:
    # Under TLS 1.2 an exporter with an empty context differs from one with
    # none; only the latter matches OpenVPN (reference D.2), so data flowing
    # proves we use the right one.
    with _server(netns_pair, workdir, pki, wrap="tls-auth") as server:
        profile = server.client_profile("t12", netns_pair.server_ip, ["tls-version-max 1.2"])
        assert dcoctl.up(profile, "t12").returncode == 0, dcoctl.log("t12")
        assert "TLSv1.2" in dcoctl.log("t12")
        _tunnel_roundtrip(dcoctl, "t12", server, "AES-256-GCM", "tls-ekm")


def test_username_password_accepted(
    netns_pair: NetnsPair, workdir: Path, pki: PKI, dcoctl: DcoctlRunner
) -> None:
    with _server(
        netns_pair, workdir, pki, wrap="tls-crypt", auth_user_pass_verify="accept"
    ) as server:
        credentials = workdir / "creds.txt"
        credentials.write_text("alice\ns3cret\n")
        profile = server.client_profile(
            "up", netns_pair.server_ip, [f"auth-user-pass {credentials}"]
        )
        assert dcoctl.up(profile, "up").returncode == 0, dcoctl.log("up")
        assert netns_pair.ping(dcoctl.ns, server.tunnel_ip)
        # The password never reaches our log.
        assert "s3cret" not in dcoctl.log("up")


def test_long_push_reply_with_continuation(
    netns_pair: NetnsPair, workdir: Path, pki: PKI, dcoctl: DcoctlRunner
) -> None:
    routes = [f"route 172.20.{i}.0 255.255.255.0" for i in range(90)]
    with _server(netns_pair, workdir, pki, wrap="tls-crypt", push=routes) as server:
        profile = server.client_profile("long", netns_pair.server_ip)
        assert dcoctl.up(profile, "long").returncode == 0, dcoctl.log("long")
        assert "push-continuation 2" in server.log_text()
        table = dcoctl.routes()
        assert all(f"172.20.{i}.0/24 via 10.8.0.1 dev long" in table for i in range(90))
        assert dcoctl.down("long").returncode == 0
        assert "172.20." not in dcoctl.routes()


def test_ping_restart_reconnects_to_a_new_server(
    netns_pair: NetnsPair, workdir: Path, pki: PKI, dcoctl: DcoctlRunner
) -> None:
    first = _server(netns_pair, workdir, pki, wrap="tls-crypt", keepalive=(1, 4))
    with first:
        profile = first.client_profile("pr", netns_pair.server_ip)
        assert dcoctl.up(profile, "pr").returncode == 0, dcoctl.log("pr")
        assert netns_pair.ping(dcoctl.ns, first.tunnel_ip)
        assert first.process is not None
        first.process.send_signal(signal.SIGKILL)  # vanishes without a word
        first.process.wait()
    started = time.time()
    deadline = started + 15
    while "ping-restart" not in dcoctl.log("pr") and time.time() < deadline:
        time.sleep(0.2)
    assert "ping-restart" in dcoctl.log("pr")
    assert time.time() - started < 8
    (workdir / "second").mkdir()
    second = _server(
        netns_pair,
        workdir / "second",
        pki,
        wrap="tls-crypt",
        keepalive=(1, 4),
        static_key=first.static_key_text,
    )
    with second:
        deadline = time.time() + 30
        while time.time() < deadline and dcoctl.log("pr").count("tunnel up") < 2:
            time.sleep(0.3)
        assert dcoctl.log("pr").count("tunnel up") == 2, dcoctl.log("pr")
        assert netns_pair.ping(dcoctl.ns, second.tunnel_ip)
        peer = dcoctl.peers("pr")["peers"][0]
        assert peer["state"] == "established"


def test_up_and_down_scripts_get_openvpn_arguments(
    netns_pair: NetnsPair, workdir: Path, pki: PKI, dcoctl: DcoctlRunner
) -> None:
    script = workdir / "hook.sh"
    out = workdir / "hook.out"
    script.write_text(
        f'#!/bin/sh\necho "$script_type $* dev=$dev local=$ifconfig_local '
        f"mask=$ifconfig_netmask trusted=$trusted_ip "
        f'opt1=$foreign_option_1" >> {out}\n'
    )
    script.chmod(0o755)
    with _server(
        netns_pair, workdir, pki, wrap="tls-crypt", push=["dhcp-option DNS 10.8.0.53"]
    ) as server:
        profile = server.client_profile(
            "hk", netns_pair.server_ip, ["script-security 2", f"up {script}", f"down {script}"]
        )
        assert dcoctl.up(profile, "hk").returncode == 0, dcoctl.log("hk")
        assert dcoctl.down("hk").returncode == 0
    up_line, down_line = out.read_text().splitlines()
    assert up_line.startswith(
        "up hk 1500 0 10.8.0.2  init dev=hk local=10.8.0.2 mask=255.255.255.0"
    )
    assert f"trusted={netns_pair.server_ip}" in up_line
    assert "opt1=dhcp-option DNS 10.8.0.53" in up_line
    assert down_line.startswith("down hk 1500 0 10.8.0.2  init")


def test_second_remote_takes_over(
    netns_pair: NetnsPair, workdir: Path, pki: PKI, dcoctl: DcoctlRunner
) -> None:
    with _server(netns_pair, workdir, pki, wrap="tls-crypt") as server:
        profile = server.client_profile("two", netns_pair.server_ip)
        # Nothing listens on 1195: the first remote is refused, the second works.
        profile = profile.replace(
            f"remote {netns_pair.server_ip} 1194",
            f"remote {netns_pair.server_ip} 1195\nremote {netns_pair.server_ip} 1194",
        )
        result = dcoctl.up(profile, "two", timeout=30)
        assert result.returncode == 0, dcoctl.log("two")
        log = dcoctl.log("two")
        assert f"{netns_pair.server_ip}:1195 unreachable" in log
        assert dcoctl.peers("two")["peers"][0]["remote"].endswith(":1194")
