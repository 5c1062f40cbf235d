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
    assert ifname not in dcoctl.routes()
    for suffix in (".sock", ".json"):
        assert not (dcoctl.runtime_dir / f"{name}{suffix}").exists()
    pids = dcoctl.pair.run(dcoctl.ns, ["ip", "netns", "pids", dcoctl.ns], capture_output=True,
                           text=True).stdout.split()
    cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in pids
                if Path(f"/proc/{pid}/cmdline").exists()]
    assert not [c for c in cmdlines if b"dcoctl" in c], "a dcoctl process is still running"


def _tunnel_roundtrip(dcoctl: DcoctlRunner, name: str, server: OpenVPNServer,
                      cipher: str | None, derivation: str) -> None:
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


MATRIX = [(proto, wrap, cipher) for proto in ("udp", "tcp")
          for wrap in ("tls-auth", "tls-crypt") for cipher in CIPHERS]


@pytest.mark.parametrize(("proto", "wrap", "cipher"), MATRIX)
def test_tunnel_ekm(netns_pair: NetnsPair, workdir: Path, pki: PKI, dcoctl: DcoctlRunner,
                    proto: str, wrap: str, cipher: str) -> None:
    digest = "SHA256" if wrap == "tls-auth" and cipher == "AES-128-GCM" else "SHA1"
    with _server(netns_pair, workdir, pki, proto=proto, wrap=wrap, data_ciphers=cipher,
                 auth_digest=digest) as server:
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


@pytest.mark.parametrize(("proto", "wrap"), [("udp", "tls-crypt"), ("tcp", "tls-auth"),
                                             ("udp", None)])
def test_tunnel_legacy_prf(netns_pair: NetnsPair, workdir: Path, pki: PKI,
                           dcoctl: DcoctlRunner, proto: str, wrap: str | None) -> None:
    with _server(netns_pair, workdir, pki, proto=proto, wrap=wrap) as server:
        profile = server.client_profile("prf", netns_pair.server_ip,
                                        ["dcoctl-key-derivation prf"])
        result = dcoctl.up(profile, "prf")
        assert result.returncode == 0, result.stderr + dcoctl.log("prf")
        _tunnel_roundtrip(dcoctl, "prf", server, "AES-256-GCM", "prf")
        assert dcoctl.down("prf").returncode == 0
        assert_clean(dcoctl, "prf")


def test_rekey_under_traffic_loses_nothing(netns_pair: NetnsPair, workdir: Path, pki: PKI,
                                           dcoctl: DcoctlRunner) -> None:
    with _server(netns_pair, workdir, pki, wrap="tls-crypt") as server:
        profile = server.client_profile("rk", netns_pair.server_ip, ["reneg-sec 3"])
        assert dcoctl.up(profile, "rk").returncode == 0, dcoctl.log("rk")
        # 80 pings at 0.2 s = 16 s: long enough for at least four rekeys.
        result = netns_pair.run(dcoctl.ns, ["ping", "-c", "80", "-i", "0.2", "-W", "1",
                                            server.tunnel_ip], capture_output=True, text=True)
        assert " 0% packet loss" in result.stdout, result.stdout
        peer = dcoctl.peers("rk")["peers"][0]
        log = dcoctl.log("rk")
        rekeys = re.findall(r"key (\d) installed", log)
        assert len(rekeys) >= 4, log
        assert peer["key_id"] != 0
        assert time.time() - peer["last_rekey"] < 10
        assert dcoctl.down("rk").returncode == 0
        assert_clean(dcoctl, "rk")


def test_key_ids_wrap_around_after_seven(netns_pair: NetnsPair, workdir: Path, pki: PKI,
                                         dcoctl: DcoctlRunner) -> None:
    with _server(netns_pair, workdir, pki, wrap="tls-auth", reneg_sec=2) as server:
        profile = server.client_profile("wrap", netns_pair.server_ip)
        assert dcoctl.up(profile, "wrap").returncode == 0, dcoctl.log("wrap")
        deadline = time.time() + 60
        while time.time() < deadline and len(re.findall(r"key \d installed",
                                                        dcoctl.log("wrap"))) < 8:
            time.sleep(0.5)
        log = dcoctl.log("wrap")
        ids = [int(k) for k in re.findall(r"key (\d) installed", log)]
        assert ids[:8] == [1, 2, 3, 4, 5, 6, 7, 1], log
        assert "started by the server" in log
        assert netns_pair.ping(dcoctl.ns, server.tunnel_ip, count=3)


def test_redirect_gateway_keeps_underlay_and_is_undone(netns_pair: NetnsPair, workdir: Path,
                                                       pki: PKI, dcoctl: DcoctlRunner) -> None:
    with _server(netns_pair, workdir, pki, wrap="tls-crypt",
                 push=["redirect-gateway def1", "route 172.31.0.0 255.255.0.0"]) as server:
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


def test_down_after_sigkill_cleans_up(netns_pair: NetnsPair, workdir: Path, pki: PKI,
                                      dcoctl: DcoctlRunner) -> None:
    with _server(netns_pair, workdir, pki, wrap="tls-crypt",
                 push=["redirect-gateway def1"]) as server:
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
    lines = [line for line in result.stderr.splitlines() if line.startswith("dcoctl: ")
             and "data path" not in line]
    assert len(lines) == 1, result.stderr
    assert re.search(pattern, lines[0]), lines[0]


def test_wrong_ca(netns_pair: NetnsPair, workdir: Path, pki: PKI,
                  dcoctl: DcoctlRunner) -> None:
    other = make_pki()
    with _server(netns_pair, workdir, pki, wrap="tls-crypt") as server:
        profile = server.client_profile("ca", netns_pair.server_ip)
        profile = profile.replace(pki.ca_cert_pem.strip(), other.ca_cert_pem.strip())
        result = dcoctl.up(profile, "ca", timeout=30)
        _assert_failure(result, r"TLS verification failed.*not issued by the configured")
        assert_clean(dcoctl, "ca")


def test_wrong_verify_x509_name(netns_pair: NetnsPair, workdir: Path, pki: PKI,
                                dcoctl: DcoctlRunner) -> None:
    with _server(netns_pair, workdir, pki, wrap="tls-crypt") as server:
        profile = server.client_profile("xn", netns_pair.server_ip)
        profile = profile.replace("verify-x509-name server name",
                                  "verify-x509-name vpn.example.org name")
        result = dcoctl.up(profile, "xn", timeout=30)
        _assert_failure(result, r"verify-x509-name.*vpn\.example\.org.*CN=server")
        assert_clean(dcoctl, "xn")


def test_unreachable_server(netns_pair: NetnsPair, workdir: Path, pki: PKI,
                            dcoctl: DcoctlRunner) -> None:
    server = _server(netns_pair, workdir, pki, wrap="tls-crypt")  # configured, never started
    profile = server.client_profile("gone", netns_pair.server_ip, ["server-poll-timeout 3"])
    result = dcoctl.up(profile, "gone", timeout=8)
    _assert_failure(result, r"timed out after 8 s.*(unreachable|did not answer)")
    assert_clean(dcoctl, "gone")


def test_auth_failed(netns_pair: NetnsPair, workdir: Path, pki: PKI,
                     dcoctl: DcoctlRunner) -> None:
    with _server(netns_pair, workdir, pki, wrap="tls-crypt",
                 auth_user_pass_verify="reject") as server:
        profile = server.client_profile("af", netns_pair.server_ip,
                                        auth_user_pass=("alice", "wrong"))
        result = dcoctl.up(profile, "af", timeout=30)
        _assert_failure(result, r"AUTH_FAILED")
        assert_clean(dcoctl, "af")
