"""Server options that change who may connect and how: IPv6, identities, limits.

dcoctl serves in one namespace; stock OpenVPN 2.6 clients and dcoctl clients
connect from the other. Profiles come from :class:`OpenVPNServer.client_profile`
on a server object that is never started (it only renders client files).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dcoctl.pki import make_pki
from dcoctl.testbed import NetnsPair, OpenVPNClient, OpenVPNServer, TestbedError

from .dcoctl_runner import DcoctlRunner


class Bed:
    """A dcoctl server in ``ns_server`` plus helpers for clients in ``ns_client``."""

    def __init__(self, pair: NetnsPair, workdir: Path) -> None:
        self.pair = pair
        self.workdir = workdir
        self.pki = make_pki(clients=("alice", "bob"))
        self.server = DcoctlRunner(pair, pair.ns_server, workdir / "srv")
        self.client = DcoctlRunner(pair, pair.ns_client, workdir / "cli")
        (workdir / "srv").mkdir()
        (workdir / "cli").mkdir()
        self.key = workdir / "ta.key"
        self.renderer = OpenVPNServer(pair.ns_server, workdir, self.pki, wrap="tls-crypt")
        assert self.renderer.static_key_text is not None
        self.key.write_text(self.renderer.static_key_text)
        self.stock: list[OpenVPNClient] = []

    def start_server(self, *extra: str, proto: str = "udp") -> None:
        files = {
            "ca": self.pki.ca_cert_pem,
            "cert": self.pki.server.cert_pem,
            "key": self.pki.server.key_pem,
        }
        for name, text in files.items():
            (self.workdir / f"s-{name}.pem").write_text(text)
        conf = (
            "\n".join(
                [
                    f"proto {proto}",
                    "port 1194",
                    "dev tun",
                    "topology subnet",
                    "server 10.8.0.0 255.255.255.0",
                    "keepalive 2 10",
                    "dh none",
                    f"ca {self.workdir}/s-ca.pem",
                    f"cert {self.workdir}/s-cert.pem",
                    f"key {self.workdir}/s-key.pem",
                    f"tls-crypt {self.key}",
                    *extra,
                ]
            )
            + "\n"
        )
        result = self.server.up(conf, "vpnsrv", timeout=20)
        assert result.returncode == 0, result.stderr + self.server.log("vpnsrv")

    def profile(
        self,
        name: str,
        remote: str | None = None,
        *extra: str,
        proto: str = "udp",
        identity: bool = True,
    ) -> str:
        text = self.renderer.client_profile(name, remote or self.pair.server_ip, list(extra))
        if proto != "udp":
            text = text.replace("proto udp", f"proto {proto}").replace(
                "explicit-exit-notify 1\n", ""
            )
        if not identity:
            # Certificate-less client (server has verify-client-cert none).
            start, end = text.index("<cert>"), text.index("</key>") + len("</key>")
            text = text[:start] + text[end:]
        return text

    def stock_client(self, profile: str, name: str, *, wait: bool = True) -> OpenVPNClient:
        client = OpenVPNClient(self.pair.ns_client, self.workdir, profile, name=name)
        self.stock.append(client)
        client.start(wait=wait, timeout=20)
        return client

    def peers(self) -> list[dict[str, Any]]:
        result = self.server.run("peers", "vpnsrv", "--json")
        assert result.returncode == 0, result.stderr
        instances: list[dict[str, Any]] = json.loads(result.stdout)
        peers: list[dict[str, Any]] = instances[0]["peers"]
        return peers

    def wait_peers(self, count: int, timeout: float = 15) -> list[dict[str, Any]]:
        deadline = time.time() + timeout
        peers = self.peers()
        while len(peers) != count and time.time() < deadline:
            time.sleep(0.3)
            peers = self.peers()
        return peers

    def close(self) -> None:
        for client in self.stock:
            client.stop()
        self.client.cleanup()
        self.server.cleanup()


@pytest.fixture
def bed(netns_pair: NetnsPair, workdir: Path) -> Iterator[Bed]:
    testbed = Bed(netns_pair, workdir)
    try:
        yield testbed
    finally:
        testbed.close()


@pytest.mark.parametrize("proto", ["udp6", "tcp6-server"])
def test_ipv6_underlay_and_tunnel(bed: Bed, proto: str) -> None:
    bed.start_server("server-ipv6 fd00:8::/64", proto=proto)
    client_proto = "tcp-client" if proto.startswith("tcp") else "udp"
    # A stock client over the IPv6 underlay, a dcoctl client over IPv4: the
    # server's socket is dual-stack.
    bed.stock_client(bed.profile("alice", bed.pair.server_ip6, proto=client_proto), "alice")
    result = bed.client.up(bed.profile("bob", bed.pair.server_ip, proto=client_proto), "bob")
    assert result.returncode == 0, result.stderr + bed.client.log("bob")
    peers = {p["common_name"]: p for p in bed.wait_peers(2)}
    assert peers["alice"]["remote"].startswith("fd00:")
    assert peers["alice"]["vpn_ipv6"] and peers["bob"]["vpn_ipv6"]
    assert peers["alice"]["vpn_ipv6"] != peers["bob"]["vpn_ipv6"]
    assert peers["bob"]["vpn_ipv6"].startswith("fd00:8::")
    ping6 = bed.pair.run(
        bed.pair.ns_client,
        ["ping", "-6", "-c", "3", "-i", "0.3", "-W", "2", "fd00:8::1"],
        capture_output=True,
        text=True,
    )
    assert ping6.returncode == 0, ping6.stdout + ping6.stderr
    assert bed.pair.ping(bed.pair.ns_client, "10.8.0.1")


def test_duplicate_cn_replaces_unless_allowed(bed: Bed) -> None:
    bed.start_server()
    bed.stock_client(bed.profile("alice"), "first")
    assert len(bed.wait_peers(1)) == 1
    bed.stock_client(bed.profile("alice"), "second")
    time.sleep(1)
    peers = bed.wait_peers(1)
    assert len(peers) == 1 and peers[0]["common_name"] == "alice"
    assert "replaced by a new connection of alice" in bed.server.log("vpnsrv")


def test_duplicate_cn_allowed(bed: Bed) -> None:
    bed.start_server("duplicate-cn")
    bed.stock_client(bed.profile("alice"), "first")
    bed.stock_client(bed.profile("alice"), "second")
    peers = bed.wait_peers(2)
    assert [p["common_name"] for p in peers] == ["alice", "alice"]
    assert peers[0]["vpn_ipv4"] != peers[1]["vpn_ipv4"]


def test_max_clients(bed: Bed) -> None:
    bed.start_server("max-clients 1")
    bed.stock_client(bed.profile("alice"), "alice")
    with pytest.raises(TestbedError):
        bed.stock_client(bed.profile("bob"), "bob", wait=True)
    assert [p["common_name"] for p in bed.peers()] == ["alice"]
    assert "max-clients 1 reached" in bed.server.log("vpnsrv")


def test_certificateless_clients_with_username(bed: Bed) -> None:
    script = bed.workdir / "check.sh"
    script.write_text('#!/bin/sh\n[ "$username" = carol ] && [ "$password" = "pw 1" ]\n')
    script.chmod(0o755)
    bed.start_server(
        "verify-client-cert none",
        "username-as-common-name",
        "script-security 3",
        f"auth-user-pass-verify {script} via-env",
    )
    creds = bed.workdir / "creds.txt"
    creds.write_text("carol\npw 1\n")
    profile = bed.profile("carol", None, f"auth-user-pass {creds}", identity=False)
    result = bed.client.up(profile, "carol")
    assert result.returncode == 0, result.stderr + bed.client.log("carol")
    (peer,) = bed.wait_peers(1)
    assert peer["common_name"] == "carol"
    assert bed.pair.ping(bed.pair.ns_client, "10.8.0.1")
    creds.write_text("carol\nwrong\n")
    bad = bed.client.up(profile.replace("carol.ovpn", "x"), "carol2")
    assert bad.returncode != 0 and "AUTH_FAILED" in bad.stderr


def test_server_down_tells_clients_to_reconnect(bed: Bed) -> None:
    bed.start_server("explicit-exit-notify 1")
    client = bed.stock_client(bed.profile("alice"), "alice")
    assert bed.server.down("vpnsrv").returncode == 0
    assert client.wait_for(r"server-pushed-connection-reset", timeout=10)
    links = subprocess.run(
        ["ip", "netns", "exec", bed.pair.ns_server, "ip", "-o", "link"],
        capture_output=True,
        text=True,
    ).stdout
    assert "vpnsrv" not in links


def test_pool_persist_status_connect_scripts_and_ccd_exclusive(bed: Bed) -> None:
    wd = bed.workdir
    ccd = wd / "ccd"
    ccd.mkdir()
    (ccd / "alice").write_text('push "route 172.31.0.0 255.255.0.0"\n')
    connect = wd / "connect.sh"
    connect.write_text('#!/bin/sh\necho \'push "route 172.30.0.0 255.255.0.0"\' > "$1"\n')
    disconnect = wd / "disconnect.sh"
    disconnect.write_text(f'#!/bin/sh\necho "$common_name $bytes_received" >> {wd}/gone.txt\n')
    for script in (connect, disconnect):
        script.chmod(0o755)
    bed.start_server(
        f"status {wd}/status.log 1",
        f"ifconfig-pool-persist {wd}/ipp.txt",
        "script-security 2",
        f"client-connect {connect}",
        f"client-disconnect {disconnect}",
        f"client-config-dir {ccd}",
        "ccd-exclusive",
    )
    alice = bed.stock_client(bed.profile("alice"), "alice")
    routes = bed.pair.run(
        bed.pair.ns_client, ["ip", "route"], capture_output=True, text=True
    ).stdout
    assert "172.30.0.0/16 via 10.8.0.1" in routes  # from client-connect's output
    assert "172.31.0.0/16 via 10.8.0.1" in routes  # from the ccd file
    # bob has no ccd file: refused under ccd-exclusive.
    with pytest.raises(TestbedError):
        bed.stock_client(bed.profile("bob"), "bob")
    assert "ccd-exclusive" in bed.server.log("vpnsrv")
    assert bed.pair.ping(bed.pair.ns_client, "10.8.0.1")
    time.sleep(1.5)
    status = (wd / "status.log").read_text()
    assert status.startswith("OpenVPN CLIENT LIST") and "\nalice," in status
    assert "10.8.0.2,alice," in status
    assert (wd / "ipp.txt").read_text().startswith("alice,10.8.0.2")
    alice.stop()
    deadline = time.time() + 10
    while not (wd / "gone.txt").exists() and time.time() < deadline:
        time.sleep(0.2)
    name, received = (wd / "gone.txt").read_text().split()
    assert name == "alice" and int(received) > 0
    # A restarted server gives alice her remembered address, even if another
    # client grabs the first pool address first.
    assert bed.server.down("vpnsrv").returncode == 0
    (wd / "ipp.txt").write_text("alice,10.8.0.9,\n")
    bed.start_server(f"ifconfig-pool-persist {wd}/ipp.txt")
    bed.stock_client(bed.profile("alice"), "alice2")
    (peer,) = bed.wait_peers(1)
    assert peer["vpn_ipv4"] == "10.8.0.9"


def test_clients_rekeying_every_few_seconds(bed: Bed) -> None:
    bed.start_server()
    bed.stock_client(bed.profile("alice", None, "reneg-sec 3", "dev tun-alice"), "alice")
    result = bed.client.up(bed.profile("bob", None, "reneg-sec 3"), "bob")
    assert result.returncode == 0, result.stderr
    pings = {
        dev: bed.pair.popen(
            bed.pair.ns_client,
            ["ping", "-n", "-q", "-I", dev, "-c", "48", "-i", "0.25", "-W", "1", "10.8.0.1"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for dev in ("tun-alice", "bob")
    }
    received = {}
    for dev, proc in pings.items():
        out, _ = proc.communicate(timeout=60)
        received[dev] = int(out.split(" received")[0].rsplit(", ", 1)[-1])
    # A stock 2.6 client frees its oldest key the moment it starts a soft
    # reset and sends data right behind it: the server must already encrypt
    # with the newest key (G.4 with young keys) or replies are lost.
    assert received == {"tun-alice": 48, "bob": 48}
    peers = {p["common_name"]: p for p in bed.peers()}
    assert all(p["last_rekey"] > p["connected_since"] for p in peers.values())
    assert len([line for line in bed.client.log("bob").splitlines() if "installed" in line]) >= 3


RELAY = r"""
import os, select, socket, sys, time
listen, server, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
front.bind(("127.0.0.1", listen))
ups = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM)]
ups[0].connect((server, port))
client = None
while True:
    if os.path.exists(sys.argv[4]) and len(ups) == 1:
        ups.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))  # NAT rebinding
        ups[1].connect((server, port))
    ready, _, _ = select.select([front, *ups], [], [], 0.1)
    for sock in ready:
        if sock is front:
            data, client = front.recvfrom(65535)
            ups[-1].send(data)
        elif client is not None:
            front.sendto(sock.recv(65535), client)
"""


def test_client_floats_only_on_authenticated_data(bed: Bed) -> None:
    bed.start_server()
    switch = bed.workdir / "switch"
    relay = bed.pair.popen(
        bed.pair.ns_client,
        [sys.executable, "-c", RELAY, "11940", bed.pair.server_ip, "1194", str(switch)],
    )
    try:
        profile = bed.profile("alice", "127.0.0.1", "dev tun-alice").replace(
            "remote 127.0.0.1 1194", "remote 127.0.0.1 11940"
        )
        bed.stock_client(profile, "alice")
        (before,) = bed.wait_peers(1)
        assert bed.pair.ping(bed.pair.ns_client, "10.8.0.1")
        # A forged data packet with alice's peer-id from another port must not
        # move her (it does not authenticate).
        forged = bytes([0x48, 0, 0, before["peer_id"]]) + bytes(range(60))
        bed.pair.run(
            bed.pair.ns_client,
            [
                sys.executable,
                "-c",
                (
                    "import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); "
                    f"s.sendto(bytes.fromhex('{forged.hex()}'), ('{bed.pair.server_ip}', 1194))"
                ),
            ],
            check=True,
        )
        time.sleep(0.3)
        assert bed.peers()[0]["remote"] == before["remote"]
        switch.touch()  # the "NAT" now uses a new source port
        assert bed.pair.ping(bed.pair.ns_client, "10.8.0.1", count=5)
        (after,) = bed.peers()
        assert after["remote"] != before["remote"]
        assert after["remote"].split(":")[0] == before["remote"].split(":")[0]
        assert "floated" in bed.server.log("vpnsrv")
        assert after["peer_id"] == before["peer_id"]
    finally:
        relay.kill()
        relay.wait()
