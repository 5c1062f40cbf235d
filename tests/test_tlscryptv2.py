"""tls-crypt-v2 keys against the reference: openvpn's key files and a stock 2.6 server."""

from __future__ import annotations

import base64
import os
import re
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dcoctl.errors import ConfigError, RemoteProtocolError
from dcoctl.pki import PKI
from dcoctl.protocol.packet import ControlPacket, Opcode, push_control_body
from dcoctl.protocol.tlscryptv2 import (
    METADATA_TYPE_TIMESTAMP,
    TLSCryptV2ServerKey,
    format_server_key,
    generate_server_key,
    make_client_key,
    metadata_timestamp,
    parse_client_key,
    parse_server_key,
    split_wkc,
    unwrap_client_key,
    wrap_client_key,
)
from dcoctl.protocol.wrapping import TLSCryptWrap
from dcoctl.testbed import OPENVPN, NetnsPair, OpenVPNClient, OpenVPNServer

from .dcoctl_runner import DcoctlRunner

needs_openvpn = pytest.mark.skipif(
    not os.access(OPENVPN, os.X_OK), reason="stock openvpn binary not installed"
)


def _openvpn(*args: str) -> str:
    proc = subprocess.run([OPENVPN, *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def openvpn_server_key(tmp_path: Path) -> tuple[str, Path]:
    path = tmp_path / "srv.key"
    _openvpn("--genkey", "tls-crypt-v2-server", str(path))
    return path.read_text(), path


def openvpn_client_key(server_key_path: Path, tmp_path: Path, b64_metadata: str = "") -> str:
    path = tmp_path / "cli.key"
    extra = [b64_metadata] if b64_metadata else []
    _openvpn("--tls-crypt-v2", str(server_key_path), "--genkey", "tls-crypt-v2-client", str(path),
             *extra)  # fmt: skip
    return path.read_text()


def _pem_payload(text: str) -> bytes:
    body = [line for line in text.splitlines() if not line.startswith("-----")]
    return base64.b64decode("".join(body))


# -- openvpn's key files -----------------------------------------------------------


@needs_openvpn
def test_openvpn_keys_parse_and_unwrap(tmp_path: Path) -> None:
    before = time.time()
    server_text, server_path = openvpn_server_key(tmp_path)
    client_text = openvpn_client_key(server_path, tmp_path)
    after = time.time()

    server_key = parse_server_key(server_text, str(server_path))
    assert server_key.data == _pem_payload(server_text)
    assert format_server_key(server_key) == server_text  # byte-identical file

    kc, wkc = parse_client_key(client_text, "cli.key")
    raw = _pem_payload(client_text)
    assert kc.data == raw[:256] and wkc == raw[256:]
    assert len(wkc) == 32 + 256 + 9 + 2  # default metadata: the timestamp

    unwrapped, metadata = unwrap_client_key(server_key, wkc)
    assert unwrapped.data == kc.data
    assert metadata[0] == METADATA_TYPE_TIMESTAMP and len(metadata) == 9
    stamp = metadata_timestamp(metadata)
    assert stamp is not None and int(before) - 1 <= stamp <= after + 1

    # The same client key re-wrapped by us is openvpn's WKc byte for byte
    # (wrapping is deterministic: the IV is the tag).
    assert wrap_client_key(server_key, kc, metadata) == wkc

    # A different server key cannot open it.
    with pytest.raises(RemoteProtocolError, match="authentication"):
        unwrap_client_key(generate_server_key(), wkc)


@needs_openvpn
def test_openvpn_user_metadata(tmp_path: Path) -> None:
    _, server_path = openvpn_server_key(tmp_path)
    user = b"alice@example \x00\xff"
    client_text = openvpn_client_key(server_path, tmp_path, base64.b64encode(user).decode())
    server_key = parse_server_key(server_path.read_text())
    kc, wkc = parse_client_key(client_text)
    unwrapped, metadata = unwrap_client_key(server_key, wkc)
    assert unwrapped == kc
    assert metadata == b"\x00" + user
    assert metadata_timestamp(metadata) is None


@needs_openvpn
def test_format_matches_openvpn_line_wrapping(tmp_path: Path) -> None:
    server_text, _ = openvpn_server_key(tmp_path)
    ours = format_server_key(generate_server_key())
    assert [len(line) for line in ours.splitlines()] == [
        len(line) for line in server_text.splitlines()
    ]
    assert ours.endswith("-----END OpenVPN tls-crypt-v2 server key-----\n")


# -- our key files ------------------------------------------------------------------


def test_make_client_key_layout() -> None:
    server_key = generate_server_key()
    text = make_client_key(server_key, now=1_700_000_000)
    lines = text.splitlines()
    assert lines[0] == "-----BEGIN OpenVPN tls-crypt-v2 client key-----"
    assert lines[-1] == "-----END OpenVPN tls-crypt-v2 client key-----"
    # 555 bytes -> 740 base64 characters: 11 full lines of 64 and one of 36,
    # exactly like openvpn's own client keys.
    assert [len(line) for line in lines[1:-1]] == [64] * 11 + [36]
    assert text.endswith("-----\n")

    kc, wkc = parse_client_key(text)
    assert len(wkc) == 299 and wkc[-2:] == struct.pack(">H", 299)
    unwrapped, metadata = unwrap_client_key(server_key, wkc)
    assert unwrapped == kc
    assert metadata == b"\x01" + struct.pack(">Q", 1_700_000_000)
    assert metadata_timestamp(metadata) == 1_700_000_000
    # Fresh Kc every time.
    assert parse_client_key(make_client_key(server_key))[0] != kc


@needs_openvpn
def test_openvpn_accepts_our_key_files(tmp_path: Path) -> None:
    # openvpn can derive a client key from our server key file...
    server_key = generate_server_key()
    srv = tmp_path / "ours.key"
    srv.write_text(format_server_key(server_key))
    kc, wkc = parse_client_key(openvpn_client_key(srv, tmp_path))
    assert unwrap_client_key(server_key, wkc)[0] == kc


def test_metadata_sizes() -> None:
    server_key = generate_server_key()
    biggest = b"\x00" + b"m" * 733
    kc, wkc = parse_client_key(make_client_key(server_key, biggest))
    assert len(wkc) == 1024
    assert unwrap_client_key(server_key, wkc) == (kc, biggest)
    with pytest.raises(ValueError, match="734"):
        make_client_key(server_key, biggest + b"!")
    # Empty metadata is legal on the wire (OpenVPN's unwrap accepts it).
    kc, wkc = parse_client_key(make_client_key(server_key, b""))
    assert len(wkc) == 290 and unwrap_client_key(server_key, wkc) == (kc, b"")


def test_server_key_parse_errors() -> None:
    good = format_server_key(generate_server_key())
    assert parse_server_key("# comment\n" + good + "trailer\n").data == _pem_payload(good)
    with pytest.raises(ConfigError, match="no '-----BEGIN"):
        parse_server_key("nothing here", "srv.key")
    with pytest.raises(ConfigError, match="client key"):
        parse_server_key(make_client_key(generate_server_key()), "srv.key")
    with pytest.raises(ConfigError, match="no '-----END"):
        parse_server_key(good.replace("-----END", "-----FIN"), "srv.key")
    with pytest.raises(ConfigError, match="base64"):
        parse_server_key(good.replace(good.splitlines()[1][:4], "!!!!"), "srv.key")
    short = good.replace(good.splitlines()[3], "")
    with pytest.raises(ConfigError, match="expected 128") as info:
        parse_server_key(short, "srv.key")
    assert str(info.value).startswith("srv.key: ")
    with pytest.raises(ValueError):
        TLSCryptV2ServerKey(b"x" * 127)
    assert "x" not in repr(TLSCryptV2ServerKey(b"x" * 128))


def _client_pem(raw: bytes) -> str:
    b64 = base64.b64encode(raw).decode()
    body = "\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
    return (
        "-----BEGIN OpenVPN tls-crypt-v2 client key-----\n"
        f"{body}\n-----END OpenVPN tls-crypt-v2 client key-----\n"
    )


def test_client_key_parse_errors() -> None:
    server_key = generate_server_key()
    raw = _pem_payload(make_client_key(server_key))
    assert parse_client_key(_client_pem(raw))[1] == raw[256:]
    with pytest.raises(ConfigError, match="server key"):
        parse_client_key(format_server_key(server_key), "c.ovpn")
    with pytest.raises(ConfigError, match="base64") as info:
        parse_client_key(_client_pem(raw).replace("\n", "\n*", 1), "c.ovpn")
    assert info.value.line is None  # no line unless we know where the text starts
    inline = "# comment\n" + _client_pem(raw).replace("\n", "\n*", 1)
    with pytest.raises(ConfigError, match="base64") as info:
        parse_client_key(inline, "c.ovpn", first_line=40)
    assert str(info.value).startswith("c.ovpn:41: ")  # the BEGIN line
    with pytest.raises(ConfigError, match="too short"):
        parse_client_key(_client_pem(raw[:256] + struct.pack(">H", 34) + b"t" * 32))
    with pytest.raises(ConfigError, match="length field"):
        parse_client_key(_client_pem(raw[:-2] + struct.pack(">H", 298)))
    huge = os.urandom(256 + 1023) + struct.pack(">H", 1025)
    with pytest.raises(ConfigError, match="exceeds 1024"):
        parse_client_key(_client_pem(huge))


# -- tampering and the receive path ------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        (0, "authentication"),  # tag
        (31, "authentication"),  # last tag byte
        (32, "authentication"),  # first ciphertext byte (Kc)
        (32 + 256 + 3, "authentication"),  # metadata
        (-1, "length"),  # length field, low byte
        (-2, "length"),  # length field, high byte
    ],
    ids=["tag", "tag-end", "ciphertext", "metadata", "len-lo", "len-hi"],
)
def test_tampered_wkc_is_rejected(offset: int, reason: str) -> None:
    server_key = generate_server_key()
    _, wkc = parse_client_key(make_client_key(server_key))
    for bit in (0x01, 0x80):
        bad = bytearray(wkc)
        bad[offset] ^= bit
        with pytest.raises(RemoteProtocolError, match=reason):
            unwrap_client_key(server_key, bytes(bad))


def test_unwrap_rejects_bad_sizes() -> None:
    server_key = generate_server_key()
    _, wkc = parse_client_key(make_client_key(server_key))
    with pytest.raises(RemoteProtocolError):
        unwrap_client_key(server_key, b"")
    with pytest.raises(RemoteProtocolError, match="length"):
        unwrap_client_key(server_key, wkc[:-3] + wkc[-2:])  # shortened, stale length
    # A self-consistent length field that is too small or too large.
    with pytest.raises(RemoteProtocolError, match="too short"):
        unwrap_client_key(server_key, b"t" * 32 + struct.pack(">H", 34))
    with pytest.raises(RemoteProtocolError, match="too long"):
        unwrap_client_key(server_key, b"z" * 1023 + struct.pack(">H", 1025))
    # A length-consistent WKc of random bytes fails authentication.
    forged = os.urandom(297) + struct.pack(">H", 299)
    with pytest.raises(RemoteProtocolError, match="authentication"):
        unwrap_client_key(server_key, forged)


def test_split_wkc_and_unwrap_a_client_reset() -> None:
    """The full server receive path on a packet built like a real client's."""
    server_key = generate_server_key()
    kc, wkc = parse_client_key(make_client_key(server_key, b"\x00tenant-42"))
    client = TLSCryptWrap(kc, is_server=False, wkc=wkc, early_negotiation=True)
    reset = ControlPacket(Opcode.CONTROL_HARD_RESET_CLIENT_V3, 0, b"S" * 8, message_id=0)
    wire = client.wrap(reset.prefix, push_control_body(reset), 1000.0)

    front, got_wkc = split_wkc(wire)
    assert got_wkc == wkc and front + wkc == wire
    server_kc, metadata = unwrap_client_key(server_key, got_wkc)
    assert server_kc == kc and metadata == b"\x00tenant-42"
    prefix, body = TLSCryptWrap(server_kc, is_server=True).unwrap(front, 1000.0)
    assert prefix == reset.prefix and body == push_control_body(reset)

    # CONTROL_WKC_V1 carries it too.
    wkc_v1 = ControlPacket(Opcode.CONTROL_WKC_V1, 0, b"S" * 8, message_id=1, payload=b"hi")
    wire = client.wrap(wkc_v1.prefix, push_control_body(wkc_v1), 1000.0)
    assert split_wkc(wire)[1] == wkc


def test_split_wkc_hand_built() -> None:
    wkc = b"W" * 297 + struct.pack(">H", 299)
    front = bytes([Opcode.CONTROL_HARD_RESET_CLIENT_V3 << 3]) + b"F" * 60
    assert split_wkc(front + wkc) == (front, wkc)
    wkc_v1 = bytes([Opcode.CONTROL_WKC_V1 << 3 | 0]) + b"x"
    assert split_wkc(wkc_v1 + wkc) == (wkc_v1, wkc)

    with pytest.raises(RemoteProtocolError):
        split_wkc(b"")
    with pytest.raises(RemoteProtocolError, match="opcode 7"):
        split_wkc(bytes([Opcode.CONTROL_HARD_RESET_CLIENT_V2 << 3]) + b"F" * 60 + wkc)
    # Length larger than the packet, or no room for the packet itself.
    with pytest.raises(RemoteProtocolError, match="does not fit"):
        split_wkc(front[:1] + wkc[1:])
    with pytest.raises(RemoteProtocolError, match="does not fit"):
        split_wkc(front + wkc[:-2] + struct.pack(">H", 400))
    with pytest.raises(RemoteProtocolError, match="too short"):
        split_wkc(front + struct.pack(">H", 10))
    with pytest.raises(RemoteProtocolError, match="too long"):
        split_wkc(front + b"W" * 1100 + struct.pack(">H", 1102))


# -- against a stock OpenVPN 2.6 server ---------------------------------------------


def _ping(pair: NetnsPair, ns: str, address: str) -> subprocess.CompletedProcess[str]:
    return pair.run(
        ns, ["ping", "-c", "3", "-i", "0.3", "-W", "2", address], capture_output=True, text=True
    )


@pytest.mark.parametrize("proto", ["udp", "tcp"])
@pytest.mark.parametrize("keygen", ["dcoctl", "openvpn"])
def test_stock_client_with_tls_crypt_v2(
    pki: PKI, netns_pair: NetnsPair, tmp_path: Path, proto: str, keygen: str
) -> None:
    server_text, _ = openvpn_server_key(tmp_path)
    with OpenVPNServer(
        netns_pair.ns_server,
        tmp_path / "server",
        pki,
        proto=proto,  # type: ignore[arg-type]
        wrap="tls-crypt-v2",
        static_key=server_text,
    ) as server:
        assert f"tls-crypt-v2 {tmp_path / 'server' / 'wrap.key'}" in server.config_path.read_text()
        profile = server.client_profile(
            "client",
            netns_pair.server_ip,
            tls_crypt_v2_keygen=keygen,  # type: ignore[arg-type]
        )
        assert "<tls-crypt-v2>" in profile and "<tls-crypt>" not in profile
        with OpenVPNClient(netns_pair.ns_client, tmp_path / "client", profile):
            ping = _ping(netns_pair, netns_pair.ns_client, server.tunnel_ip)
            assert ping.returncode == 0, ping.stdout + ping.stderr
        # The server really ran tls-crypt-v2 with this client's key.
        log = server.log_text()
        assert re.search(
            rf"{re.escape(netns_pair.client_ip)}:\d+ Control Channel: using tls-crypt-v2 key", log
        )


@pytest.fixture
def dcoctl(netns_pair: NetnsPair, tmp_path: Path) -> Iterator[DcoctlRunner]:
    runner = DcoctlRunner(netns_pair, netns_pair.ns_client, tmp_path / "dcoctl")
    runner.workdir.mkdir()
    try:
        yield runner
    finally:
        runner.cleanup()


@pytest.mark.parametrize("proto", ["udp", "tcp"])
@pytest.mark.parametrize("keygen", ["dcoctl", "openvpn"])
def test_dcoctl_client_with_tls_crypt_v2(
    pki: PKI, netns_pair: NetnsPair, tmp_path: Path, dcoctl: DcoctlRunner, proto: str, keygen: str
) -> None:
    server_text, _ = openvpn_server_key(tmp_path)
    with OpenVPNServer(
        netns_pair.ns_server,
        tmp_path / "server",
        pki,
        proto=proto,  # type: ignore[arg-type]
        wrap="tls-crypt-v2",
        static_key=server_text,
        verb=7,  # logs the stateless-handshake decision
    ) as server:
        profile = server.client_profile(
            "tcv2",
            netns_pair.server_ip,
            tls_crypt_v2_keygen=keygen,  # type: ignore[arg-type]
        )
        result = dcoctl.up(profile, "tcv2", timeout=30)
        assert result.returncode == 0, (
            result.stdout + result.stderr + dcoctl.log("tcv2") + server.log_text()[-4000:]
        )
        ping = _ping(netns_pair, netns_pair.ns_client, server.tunnel_ip)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        if proto == "udp":
            # Early negotiation worked: the 2.6 server stayed stateless until
            # our P_CONTROL_WKC_V1 echoed its cookie (reference B.4/B.5).
            assert "Valid packet (P_CONTROL_WKC_V1) with HMAC challenge" in server.log_text()
        down = dcoctl.down("tcv2")
        assert down.returncode == 0, down.stderr
