"""The test bed against reality: real certificates, namespaces and stock OpenVPN."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from dcoctl.pki import PKI, make_crl, make_pki, make_static_key, write_pki
from dcoctl.protocol.statickey import parse_static_key
from dcoctl.testbed import NetnsPair, OpenVPNClient, OpenVPNServer


def _netns_list() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def _pid_gone(pid: int | None) -> bool:
    assert pid is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _openssl_verify(ca: Path, cert: Path, purpose: str, crl: Path | None = None) -> None:
    argv = ["openssl", "verify", "-CAfile", str(ca), "-purpose", purpose]
    if crl is not None:
        argv += ["-CRLfile", str(crl), "-crl_check"]
    proc = subprocess.run([*argv, str(cert)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith(": OK")


# -- PKI -------------------------------------------------------------------


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_pki_verifies_with_openssl(key_type: str, tmp_path: Path) -> None:
    pki = make_pki(clients=("alice", "bob"), key_type=key_type)  # type: ignore[arg-type]
    files = write_pki(pki, tmp_path)
    assert set(files) == {
        "ca.crt", "ca.key", "server.crt", "server.key",
        "client-alice.crt", "client-alice.key", "client-bob.crt", "client-bob.key",
    }  # fmt: skip
    for name, path in files.items():
        mode = path.stat().st_mode & 0o777
        assert mode == (0o600 if name.endswith(".key") else 0o644), name

    _openssl_verify(files["ca.crt"], files["server.crt"], "sslserver")
    _openssl_verify(files["ca.crt"], files["client-alice.crt"], "sslclient")

    server = x509.load_pem_x509_certificate(pki.server.cert_pem.encode())
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    ku = server.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and ku.value.key_agreement
    assert ku.value.key_encipherment == (key_type == "rsa")
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["server"]

    client = x509.load_pem_x509_certificate(pki.clients["alice"].cert_pem.encode())
    eku = client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert client.serial_number == pki.clients["alice"].serial

    ca = x509.load_pem_x509_certificate(pki.ca_cert_pem.encode())
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ca_ku = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ca_ku.key_cert_sign and ca_ku.crl_sign

    # A server certificate is not a client certificate and vice versa.
    wrong = subprocess.run(
        ["openssl", "verify", "-CAfile", str(files["ca.crt"]), "-purpose", "sslclient",
         str(files["server.crt"])],
        capture_output=True, text=True,
    )  # fmt: skip
    assert wrong.returncode != 0


def test_crl_revokes_only_listed_serials(pki: PKI, tmp_path: Path) -> None:
    revoked = pki.issue_client("crl-victim")
    good = pki.issue_client("crl-fine")
    crl_pem = make_crl(pki.ca, [revoked.serial])
    crl = x509.load_pem_x509_crl(crl_pem.encode())
    assert crl.get_revoked_certificate_by_serial_number(revoked.serial) is not None
    assert crl.get_revoked_certificate_by_serial_number(good.serial) is None

    (tmp_path / "ca.crt").write_text(pki.ca_cert_pem)
    (tmp_path / "crl.pem").write_text(crl_pem)
    (tmp_path / "good.crt").write_text(good.cert_pem)
    (tmp_path / "bad.crt").write_text(revoked.cert_pem)
    _openssl_verify(tmp_path / "ca.crt", tmp_path / "good.crt", "sslclient", tmp_path / "crl.pem")
    proc = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp_path / "ca.crt"), "-crl_check",
         "-CRLfile", str(tmp_path / "crl.pem"), str(tmp_path / "bad.crt")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "revoked" in (proc.stdout + proc.stderr).lower()


def test_static_key_roundtrips() -> None:
    text = make_static_key()
    assert text.count("-----BEGIN OpenVPN Static key V1-----") == 1
    assert len(parse_static_key(text).data) == 256
    assert make_static_key() != text


# -- namespaces ------------------------------------------------------------


def test_netns_pair_underlay_and_cleanup() -> None:
    with NetnsPair(prefix="dcot") as pair:
        names = _netns_list()
        assert pair.ns_server in names and pair.ns_client in names
        assert len(pair.veth_server) <= 15 and len(pair.veth_client) <= 15
        assert pair.server_ip.startswith(("198.18.", "198.19."))
        assert pair.ping(pair.ns_client, pair.server_ip)
        assert pair.ping(pair.ns_server, pair.client_ip6)
        # The root namespace never sees our veth.
        root_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert pair.veth_server not in root_links and pair.veth_client not in root_links

        pair.set_link(pair.ns_client, False)
        assert not pair.ping(pair.ns_client, pair.server_ip, count=1, wait=1)
        pair.set_link(pair.ns_client, True)
        assert pair.ping(pair.ns_client, pair.server_ip)
        assert pair.ping(pair.ns_client, pair.server_ip6)

        sleeper = pair.popen(pair.ns_server, ["sleep", "300"])
    assert sleeper.poll() is not None
    names = _netns_list()
    assert pair.ns_server not in names and pair.ns_client not in names


def test_netns_pair_cleans_up_when_body_raises() -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with NetnsPair() as pair:
            raise RuntimeError("boom")
    names = _netns_list()
    assert pair.ns_server not in names and pair.ns_client not in names


# -- stock OpenVPN <-> stock OpenVPN -----------------------------------------


@pytest.mark.parametrize(
    ("proto", "wrap", "digest"),
    [("udp", "tls-crypt", "SHA1"), ("tcp", "tls-auth", "SHA256")],
    ids=["udp-tls-crypt", "tcp-tls-auth-sha256"],
)
def test_stock_openvpn_client_reaches_server(
    pki: PKI, tmp_path: Path, proto: str, wrap: str, digest: str
) -> None:
    with NetnsPair() as pair:
        with OpenVPNServer(
            pair.ns_server,
            tmp_path / "server",
            pki,
            proto=proto,  # type: ignore[arg-type]
            wrap=wrap,  # type: ignore[arg-type]
            auth_digest=digest,
        ) as server:
            profile = server.client_profile("client", pair.server_ip)
            assert f"<{wrap}>" in profile and "remote-cert-tls server" in profile
            assert ("key-direction 1" in profile) == (wrap == "tls-auth")
            with OpenVPNClient(pair.ns_client, tmp_path / "client", profile) as client:
                assert server.tunnel_ip == "10.8.0.1"
                ping = pair.run(
                    pair.ns_client,
                    ["ping", "-c", "3", "-W", "2", "10.8.0.1"],
                    capture_output=True,
                    text=True,
                )
                assert ping.returncode == 0, ping.stdout + ping.stderr
                assert client.is_running() and server.is_running()
                assert server.wait_for(r"client/\S+ Data Channel: cipher", 5)
        for proc in (server, client):
            assert not proc.is_running()
            assert _pid_gone(proc.pid)
    names = _netns_list()
    assert pair.ns_server not in names and pair.ns_client not in names


def test_server_over_ipv6_underlay(pki: PKI, tmp_path: Path, netns_pair: NetnsPair) -> None:
    with OpenVPNServer(
        netns_pair.ns_server, tmp_path / "s", pki, listen_ipv6=True, server_ipv6="fd00:8::/64"
    ) as server:
        profile = server.client_profile("client", netns_pair.server_ip6)
        with OpenVPNClient(netns_pair.ns_client, tmp_path / "c", profile):
            assert netns_pair.ping(netns_pair.ns_client, "10.8.0.1")
            assert netns_pair.ping(netns_pair.ns_client, "fd00:8::1")


def test_revoked_client_is_rejected(pki: PKI, tmp_path: Path, netns_pair: NetnsPair) -> None:
    victim = pki.issue_client("revoked-client")
    crl_pem = make_crl(pki.ca, [victim.serial])
    with OpenVPNServer(netns_pair.ns_server, tmp_path / "s", pki, crl_pem=crl_pem) as server:
        profile = server.client_profile("revoked-client", netns_pair.server_ip)
        client = OpenVPNClient(netns_pair.ns_client, tmp_path / "c", profile)
        try:
            client.start(wait=False)
            assert not client.wait_for("Initialization Sequence Completed", timeout=10)
        finally:
            client.stop()
        log = server.log_text()
        assert "VERIFY ERROR" in log or "CRL" in log, log[-3000:]
        assert "certificate revoked" in log


def test_auth_user_pass_verify_reject(pki: PKI, tmp_path: Path, netns_pair: NetnsPair) -> None:
    with OpenVPNServer(
        netns_pair.ns_server, tmp_path / "s", pki, auth_user_pass_verify="reject"
    ) as server:
        creds = tmp_path / "creds.txt"
        creds.write_text("alice\nwrong-password\n")
        creds.chmod(0o600)
        profile = server.client_profile(
            "client", netns_pair.server_ip, [f"auth-user-pass {creds}", "auth-retry none"]
        )
        client = OpenVPNClient(netns_pair.ns_client, tmp_path / "c", profile)
        try:
            client.start(wait=False)
            assert client.wait_for("AUTH_FAILED", timeout=15), client.log_text()[-3000:]
            assert not client.is_ready()
        finally:
            client.stop()


def test_auth_user_pass_verify_accept(pki: PKI, tmp_path: Path, netns_pair: NetnsPair) -> None:
    with OpenVPNServer(
        netns_pair.ns_server, tmp_path / "s", pki, auth_user_pass_verify="accept"
    ) as server:
        profile = server.client_profile(
            "client", netns_pair.server_ip, auth_user_pass=("alice", "secret")
        )
        with OpenVPNClient(netns_pair.ns_client, tmp_path / "c", profile):
            assert netns_pair.ping(netns_pair.ns_client, server.tunnel_ip)
