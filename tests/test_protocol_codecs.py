"""Byte-level tests of the protocol core's codecs and crypto.

Vectors are hand-built from the layouts in the reference (sections A-E) or
computed by an independent implementation (OpenSSL's TLS1-PRF via
``openssl kdf``), never by the code under test.
"""

from __future__ import annotations

import os
import struct

import pytest

from dcoctl.errors import RemoteProtocolError
from dcoctl.protocol.datachannel import PING_MAGIC, DataChannel, DataChannelKey
from dcoctl.protocol.keymethod import (
    KeyMethod2Message,
    KeySource,
    pull_key_method_2,
    push_key_method_2,
)
from dcoctl.protocol.keys import derive_key2_prf, slice_keys, tls1_prf
from dcoctl.protocol.options import PushAccumulator, tokenize_line
from dcoctl.protocol.packet import (
    ControlPacket,
    Opcode,
    pull_control_body,
    pull_early_negotiation,
    push_control_body,
)
from dcoctl.protocol.replay import ReplayWindow
from dcoctl.protocol.statickey import KeyDirection, StaticKey
from dcoctl.protocol.wrapping import PlainWrap, TLSAuthWrap, TLSCryptWrap

CSID = bytes.fromhex("0102030405060708")
SSID = bytes.fromhex("a1a2a3a4a5a6a7a8")


def test_hard_reset_client_v2_bytes() -> None:
    # Reference A.10: 38 | Csid | 00 | 00000000, 14 bytes in all.
    packet = ControlPacket(Opcode.CONTROL_HARD_RESET_CLIENT_V2, 0, CSID, message_id=0)
    wire = PlainWrap().wrap(packet.prefix, push_control_body(packet), 0)
    assert wire == bytes.fromhex("38") + CSID + bytes.fromhex("00 00000000")
    assert len(wire) == 14


def test_server_reset_with_ack_roundtrip() -> None:
    # Reference A.10: 40 | Ssid | 01 00000000 Csid | 00000000 (26 bytes).
    wire = bytes.fromhex("40") + SSID + bytes.fromhex("01 00000000") + CSID + bytes(4)
    assert len(wire) == 26
    prefix, body = PlainWrap().unwrap(wire, 0)
    packet = pull_control_body(prefix, body)
    assert packet.opcode is Opcode.CONTROL_HARD_RESET_SERVER_V2
    assert packet.session_id == SSID and packet.acks == (0,)
    assert packet.remote_session_id == CSID and packet.message_id == 0
    assert packet.prefix + push_control_body(packet) == wire


def test_ack_v1_has_no_message_id() -> None:
    packet = ControlPacket(Opcode.ACK_V1, 2, CSID, (5, 6), SSID)
    body = push_control_body(packet)
    assert body == bytes.fromhex("02 00000005 00000006") + SSID
    assert pull_control_body(packet.prefix, body) == packet


@pytest.mark.parametrize(
    "wire",
    [
        bytes.fromhex("20") + CSID + bytes.fromhex("09") + bytes(80),  # 9 acks
        bytes.fromhex("20") + CSID + bytes.fromhex("01 000000"),  # truncated ack
        bytes.fromhex("20") + CSID + bytes.fromhex("00 0000"),  # truncated msg id
        bytes.fromhex("28") + CSID + bytes.fromhex("00 00"),  # junk after ACK_V1
        bytes.fromhex("00") + CSID + bytes.fromhex("00 00000000"),  # opcode 0
        bytes.fromhex("48") + CSID + bytes.fromhex("00 00000000"),  # data opcode
    ],
)
def test_malformed_control_packets_rejected(wire: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        pull_control_body(wire[:9], wire[9:])


def test_early_negotiation_tlv() -> None:
    assert pull_early_negotiation(bytes.fromhex("0001 0002 0001")) == {1: b"\x00\x01"}
    with pytest.raises(RemoteProtocolError):
        pull_early_negotiation(bytes.fromhex("0001 0004 00"))


def _key() -> StaticKey:
    return StaticKey(bytes(range(256)))


def test_tls_auth_layout_and_directions() -> None:
    key = _key()
    client = TLSAuthWrap(key, KeyDirection.INVERSE, "SHA256")
    server = TLSAuthWrap(key, KeyDirection.NORMAL, "SHA256")
    packet = ControlPacket(Opcode.CONTROL_HARD_RESET_CLIENT_V2, 0, CSID, message_id=0)
    wire = client.wrap(packet.prefix, push_control_body(packet), 1_700_000_000.5)
    # byte0 | sid | HMAC(32) | pid=1 | time | body (reference B.2)
    assert len(wire) == 9 + 32 + 8 + 5
    assert wire[41:49] == struct.pack(">II", 1, 1_700_000_000)
    import hmac as _hmac

    expected = _hmac.new(key.hmac(1)[:32], wire[41:49] + wire[:9] + wire[49:], "sha256")
    assert wire[9:41] == expected.digest()
    assert server.unwrap(wire, 0) == (wire[:9], wire[49:])
    # A replay of the same packet is refused; a client-direction key can't read it.
    with pytest.raises(RemoteProtocolError, match="replayed"):
        server.unwrap(wire, 0)
    with pytest.raises(RemoteProtocolError, match="HMAC"):
        TLSAuthWrap(key, KeyDirection.INVERSE, "SHA256").unwrap(wire, 0)


def test_tls_auth_sizes_match_reference() -> None:
    # Reference A.4 table: a bare client reset is 42 bytes with tls-auth SHA1.
    wrap = TLSAuthWrap(_key(), KeyDirection.INVERSE)
    packet = ControlPacket(Opcode.CONTROL_HARD_RESET_CLIENT_V2, 0, CSID, message_id=0)
    assert len(wrap.wrap(packet.prefix, push_control_body(packet), 0)) == 42


def test_tls_crypt_roundtrip_and_tamper() -> None:
    key = StaticKey(os.urandom(256))
    client = TLSCryptWrap(key, is_server=False)
    server = TLSCryptWrap(key, is_server=True)
    packet = ControlPacket(Opcode.CONTROL_V1, 0, CSID, (0,), SSID, 1, b"hello tls")
    wire = client.wrap(packet.prefix, push_control_body(packet), 1000)
    # Reference A.4: 54 bytes for a bare reset; here pid at 9, tag at 17, ct at 49.
    assert wire[9:13] == struct.pack(">I", 1)
    assert b"hello tls" not in wire
    prefix, body = server.unwrap(wire, 1000)
    assert pull_control_body(prefix, body) == packet
    flipped = bytearray(client.wrap(packet.prefix, push_control_body(packet), 1000))
    flipped[-1] ^= 1
    with pytest.raises(RemoteProtocolError):
        server.unwrap(bytes(flipped), 1000)
    # The server's own direction uses different keys: a client cannot read it.
    with pytest.raises(RemoteProtocolError):
        TLSCryptWrap(key, is_server=False).unwrap(wire, 1000)


def test_tls_crypt_v2_appends_wkc_only_to_v3_and_wkc() -> None:
    wrap = TLSCryptWrap(_key(), is_server=False, wkc=b"W" * 40, early_negotiation=True)
    reset = ControlPacket(Opcode.CONTROL_HARD_RESET_CLIENT_V3, 0, CSID, message_id=0)
    wire = wrap.wrap(reset.prefix, push_control_body(reset), 5)
    assert wire.endswith(b"W" * 40)
    assert wire[9:13] == struct.pack(">I", 0x0F000001)  # early-negotiation start (B.4)
    normal = ControlPacket(Opcode.CONTROL_V1, 0, CSID, message_id=1, payload=b"x")
    assert not wrap.wrap(normal.prefix, push_control_body(normal), 5).endswith(b"W" * 40)


def test_replay_window() -> None:
    window = ReplayWindow(64)
    assert not window.accept(0)
    assert window.accept(1) and window.accept(3)
    assert not window.accept(3)
    assert window.accept(2)
    assert window.accept(100)
    assert not window.accept(36)  # 64 behind the highest: outside the window
    assert window.accept(37)
    # Sender time moving forward restarts the sequence; backwards is a replay.
    assert window.accept(1, epoch=10)
    assert not window.accept(5, epoch=9)


def test_tls1_prf_matches_openssl() -> None:
    # openssl kdf -keylen 64 -kdfopt digest:MD5-SHA1 -kdfopt hexsecret:ab*48
    #   -kdfopt hexseed:"OpenVPN master secret"+cd*64 TLS1-PRF
    expected = bytes.fromhex(
        "FCEF7F29701778CF522AB2DA815D13D98F3145F03044AD8C38202B04ED3809C3"
        "F87F116F8786628019AC038CF985256A561A5ACA26E3D21A560BC4598BEF2A3C"
    )
    assert tls1_prf(b"\xab" * 48, b"OpenVPN master secret" + b"\xcd" * 64, 64) == expected


def test_openvpn_key_expansion_matches_openssl() -> None:
    # Second PRF round of reference D.3, with the session ids appended;
    # oracle: openssl kdf ... hexsecret:01*48 hexseed:label+02*32+03*32+04*8+05*8.
    expected_head = bytes.fromhex("BF9E7B6BBBFC455683F2E2F2A46D7DA0815061DA7B33F353")
    expected_tail = bytes.fromhex("AE1BB98AF7FF102921C152D2F214D829")
    seed = b"OpenVPN key expansion" + b"\x02" * 32 + b"\x03" * 32 + b"\x04" * 8 + b"\x05" * 8
    key2 = tls1_prf(b"\x01" * 48, seed, 256)
    assert key2.startswith(expected_head) and key2.endswith(expected_tail)


def test_derive_key2_prf_is_symmetric_in_slicing() -> None:
    client = KeySource(os.urandom(32), os.urandom(32), os.urandom(48))
    server = KeySource(os.urandom(32), os.urandom(32))
    key2 = derive_key2_prf(client, server, CSID, SSID)
    c = slice_keys(key2, "AES-256-GCM", server=False)
    s = slice_keys(key2, "AES-256-GCM", server=True)
    assert c.encrypt_key == s.decrypt_key == key2[0:32]
    assert c.encrypt_nonce_tail == s.decrypt_nonce_tail == key2[64:72]
    assert c.decrypt_key == s.encrypt_key == key2[128:160]
    assert slice_keys(key2, "AES-128-GCM", server=False).encrypt_key == key2[0:16]


def test_key_method_2_roundtrip_and_string_encoding() -> None:
    message = KeyMethod2Message(
        KeySource(b"\x11" * 32, b"\x22" * 32, b"\x33" * 48),
        "V4,dev-type tun",
        "alice",
        "secret",
        "IV_VER=2.6.14\nIV_PROTO=414\n",
    )
    wire = push_key_method_2(message)
    assert wire[:5] == b"\x00\x00\x00\x00\x02"
    assert wire[5:53] == b"\x33" * 48  # pre-master first (C.1)
    assert wire[117:119] == struct.pack(">H", len("V4,dev-type tun") + 1)
    parsed, used = pull_key_method_2(wire + b"PUSH_REPLY\x00", from_client=True)
    assert parsed == message and used == len(wire)
    assert parsed.peer_info_vars()["IV_PROTO"] == "414"
    server = KeyMethod2Message(KeySource(b"\x44" * 32, b"\x55" * 32), "V4")
    wire = push_key_method_2(server)
    # Empty strings are a bare zero length (reference C.2 / J.6).
    assert wire.endswith(b"\x00\x00" * 3)
    assert pull_key_method_2(wire, from_client=False)[0] == server
    with pytest.raises(RemoteProtocolError):
        pull_key_method_2(b"\x00\x00\x00\x01\x02" + bytes(100), from_client=False)


def test_data_v2_packet_layout() -> None:
    key2 = os.urandom(256)
    sender = DataChannelKey(3, slice_keys(key2, "AES-256-GCM", server=False), peer_id=0x123456)
    receiver = DataChannelKey(3, slice_keys(key2, "AES-256-GCM", server=True), peer_id=0x123456)
    wire = sender.encrypt(b"\x45" + bytes(39))
    # op|peer-id, packet-id 1, then tag *before* ciphertext (reference E.2).
    assert wire[:4] == bytes([0x48 | 3, 0x12, 0x34, 0x56])
    assert wire[4:8] == struct.pack(">I", 1)
    assert len(wire) == 8 + 16 + 40
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    keys = slice_keys(key2, "AES-256-GCM", server=False)
    plain = AESGCM(keys.encrypt_key).decrypt(
        wire[4:8] + keys.encrypt_nonce_tail, wire[24:] + wire[8:24], wire[:8]
    )
    assert plain == b"\x45" + bytes(39)
    assert receiver.decrypt(wire) == plain
    assert receiver.decrypt(wire) is None  # replay


@pytest.mark.parametrize("cipher", ["AES-128-GCM", "AES-256-GCM", "CHACHA20-POLY1305"])
def test_data_channel_key_rotation(cipher: str) -> None:
    keys_a, keys_b = os.urandom(256), os.urandom(256)
    client, server = DataChannel(7), DataChannel(7)
    client.install(0, slice_keys(keys_a, cipher, server=False), primary=True)
    server.install(0, slice_keys(keys_a, cipher, server=True), primary=True)
    in_flight = client.encrypt(b"\x45old")
    # Renegotiated key installed as secondary on both ends, promoted later.
    client.install(1, slice_keys(keys_b, cipher, server=False), primary=False)
    server.install(1, slice_keys(keys_b, cipher, server=True), primary=False)
    client.promote(1)
    new = client.encrypt(b"\x45new")
    assert new is not None and in_flight is not None
    assert new[0] & 7 == 1 and in_flight[0] & 7 == 0
    assert server.decrypt(new) == b"\x45new"
    assert server.decrypt(in_flight) == b"\x45old"  # the old key still decrypts
    server.retire(0)
    assert server.decrypt(in_flight) is None
    assert server.counters.rx_packets == 2 and server.counters.rx_dropped == 1
    flipped = bytearray(client.encrypt(b"\x45x") or b"")
    flipped[-1] ^= 0x01
    assert server.decrypt(bytes(flipped)) is None
    ping = client.encrypt(PING_MAGIC, count=False)
    assert ping is not None and server.decrypt(ping) == PING_MAGIC


def test_tokenizer() -> None:
    # OpenVPN's parse_line: a '#' where a token would start ends the line.
    assert tokenize_line('route 10.0.0.0 255.0.0.0 "vpn gateway" # x') == [
        "route",
        "10.0.0.0",
        "255.0.0.0",
        "vpn gateway",
    ]
    assert tokenize_line("# comment") == [] and tokenize_line("; comment") == []
    assert tokenize_line(r'setenv A "x\"y"') == ["setenv", "A", 'x"y']
    assert tokenize_line("up 'a b\\c'") == ["up", "a b\\c"]
    with pytest.raises(ValueError):
        tokenize_line('dev "tun')


def test_push_reply_with_continuation_and_filters() -> None:
    acc = PushAccumulator(pull_filters=(("ignore", "route 10.9."),))
    assert (
        acc.feed("PUSH_REPLY,route-gateway 10.8.0.1,route 10.9.0.0 255.255.0.0,push-continuation 2")
        is None
    )
    options = acc.feed(
        "PUSH_REPLY,topology subnet,ifconfig 10.8.0.2 255.255.255.0,peer-id 5,"
        "cipher AES-128-GCM,protocol-flags cc-exit tls-ekm,ping 10,ping-restart 60,"
        "dhcp-option DNS 10.8.0.1,redirect-gateway def1 ipv6,route 172.16.0.0 255.240.0.0,"
        "push-continuation 1"
    )
    assert options is not None
    assert options.ifconfig == ("10.8.0.2", "255.255.255.0")
    assert options.peer_id == 5 and options.cipher == "AES-128-GCM"
    assert options.tls_ekm and options.cc_exit
    assert [r.network for r in options.routes] == ["172.16.0.0"]
    assert options.redirect_gateway == {"def1", "ipv6"}
    assert options.foreign == ["dhcp-option DNS 10.8.0.1"]
    assert (options.ping, options.ping_restart) == (10, 60)
    rejecting = PushAccumulator(pull_filters=(("reject", "redirect-gateway"),))
    with pytest.raises(PermissionError):
        rejecting.feed("PUSH_REPLY,redirect-gateway def1")
    nopull = PushAccumulator(route_nopull=True).feed("PUSH_REPLY,route 1.0.0.0 255.0.0.0,ping 5")
    assert nopull is not None and nopull.routes == [] and nopull.ping == 5
    with pytest.raises(RemoteProtocolError):
        PushAccumulator().feed("PUSH_REPLY,peer-id banana")
