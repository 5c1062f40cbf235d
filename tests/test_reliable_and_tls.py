"""Reliability layer under a fake clock, and TLS over memory BIOs.

The reliability tests push a stream through a simulated link that loses,
duplicates and reorders packets, with ``now`` advanced by hand: delivery
must be complete, in order and exactly once, and the timers must follow
OpenVPN's (2 s doubling, send window 6, fast retransmit after 3 acks).
"""

from __future__ import annotations

import random

import pytest

from dcoctl.errors import AuthenticationError
from dcoctl.pki import PKI, issue, make_ca, make_pki
from dcoctl.protocol.packet import Opcode
from dcoctl.protocol.reliable import SEND_WINDOW, ReliableReceiver, ReliableSender
from dcoctl.protocol.tls import EKM_LABEL_DATAKEYS, TLSEngine, TLSSettings


def _run_link(seed: int, loss: float, dup: float, reorder: float, count: int = 60) -> float:
    rng = random.Random(seed)
    sender, receiver = ReliableSender(), ReliableReceiver()
    payloads = [f"message {i}".encode() for i in range(count)]
    for payload in payloads:
        sender.queue(Opcode.CONTROL_V1, payload)
    delivered: list[bytes] = []
    now = 0.0
    in_flight: list[tuple[int, Opcode, bytes]] = []
    while len(delivered) < count:
        assert now < 3600, "stream did not complete"
        for packet in sender.due(now):
            if rng.random() < loss:
                continue
            in_flight.append(packet)
            if rng.random() < dup:
                in_flight.append(packet)
        if rng.random() < reorder:
            rng.shuffle(in_flight)
        for mid, opcode, payload in in_flight:
            receiver.receive(mid, opcode, payload)
        in_flight.clear()
        delivered += [payload for _, payload in receiver.deliver()]
        acks = receiver.take_acks(8) if receiver.has_pending_acks else ()
        if acks and rng.random() >= loss:
            sender.acknowledge(acks)
        timer = sender.timer()
        now = max(now + 0.01, timer if timer is not None else now + 0.01)
    assert delivered == payloads
    assert sender.idle or not receiver.has_pending_acks
    return now


@pytest.mark.parametrize("seed", range(8))
def test_stream_survives_loss_duplication_reordering(seed: int) -> None:
    _run_link(seed, loss=0.3, dup=0.2, reorder=0.5)


def test_lossless_link_needs_no_retransmission() -> None:
    assert _run_link(1, loss=0.0, dup=0.0, reorder=0.0, count=30) < 2.0


def test_retransmission_backoff_doubles() -> None:
    sender = ReliableSender(initial_timeout=2.0)
    sender.queue(Opcode.CONTROL_V1, b"x")
    sends = []
    now = 0.0
    while now < 40:
        if sender.due(now):
            sends.append(now)
        timer = sender.timer()
        assert timer is not None
        now = timer
    assert sends == [0.0, 2.0, 6.0, 14.0, 30.0]


def test_send_window_and_fast_retransmit() -> None:
    sender = ReliableSender()
    for i in range(10):
        sender.queue(Opcode.CONTROL_V1, bytes([i]))
    first = sender.due(0.0)
    assert [mid for mid, _, _ in first] == list(range(SEND_WINDOW))
    # Acking 1..3 but not 0 triggers a fast retransmit of 0, and the window
    # stays anchored at the lowest unacknowledged id.
    sender.acknowledge([1, 2, 3])
    again = sender.due(0.1)
    assert [mid for mid, _, _ in again] == [0]
    sender.acknowledge([0])
    assert [mid for mid, _, _ in sender.due(0.2)] == [6, 7, 8, 9]


def test_receiver_window_duplicates_and_mru_acks() -> None:
    receiver = ReliableReceiver()
    assert not receiver.receive(12, Opcode.CONTROL_V1, b"far")  # beyond 0 + 12
    assert receiver.receive(1, Opcode.CONTROL_V1, b"b")
    assert receiver.deliver() == []
    assert receiver.receive(0, Opcode.CONTROL_V1, b"a")
    assert [p for _, p in receiver.deliver()] == [b"a", b"b"]
    assert receiver.take_acks(4) == (1, 0)
    # A duplicate of something delivered is acked again, not delivered again.
    assert receiver.receive(0, Opcode.CONTROL_V1, b"a")
    assert receiver.deliver() == []
    assert receiver.take_acks(4)[0] == 0
    # With nothing pending, recent acks are repeated (2.6's lru_acks).
    assert set(receiver.take_acks(4)) == {0, 1}


# -- TLS ----------------------------------------------------------------------


def _pump(client: TLSEngine, server: TLSEngine) -> None:
    for _ in range(20):
        moved = False
        for src, dst in ((client, server), (server, client)):
            src.progress()
            data = src.outgoing()
            if data:
                dst.feed(data)
                moved = True
        if not moved and client.handshake_done and server.handshake_done:
            return


def _settings(pki: PKI, side: str, **kw: object) -> TLSSettings:
    ident = pki.server if side == "server" else pki.clients["client"]
    return TLSSettings(ca_pem=pki.ca_cert_pem, cert_pem=ident.cert_pem, key_pem=ident.key_pem, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tls_pki() -> PKI:
    return make_pki()


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_ekm_is_equal_on_both_ends(tls_pki: PKI, version: str) -> None:
    client = TLSEngine(
        _settings(
            tls_pki,
            "client",
            remote_cert_tls="server",
            verify_x509_name=("server", "name"),
            tls_version_max=version,
        ),
        server=False,
    )
    server = TLSEngine(_settings(tls_pki, "server", remote_cert_tls="client"), server=True)
    _pump(client, server)
    assert client.handshake_done and server.handshake_done
    assert client.version == f"TLSv{version}"
    a = client.export_keying_material(EKM_LABEL_DATAKEYS, 256)
    b = server.export_keying_material(EKM_LABEL_DATAKEYS, 256)
    assert a == b and len(a) == 256
    assert client.export_keying_material(b"EXPORTER-other", 256) != a
    client.write(b"PUSH_REQUEST\x00")
    server.feed(client.outgoing())
    assert server.progress() == b"PUSH_REQUEST\x00"


def _handshake_error(client_settings: TLSSettings, server_settings: TLSSettings) -> str:
    client = TLSEngine(client_settings, server=False)
    server = TLSEngine(server_settings, server=True)
    with pytest.raises(AuthenticationError) as info:
        _pump(client, server)
    return str(info.value)


def test_unknown_ca_is_named(tls_pki: PKI) -> None:
    other = make_pki()
    message = _handshake_error(
        TLSSettings(
            ca_pem=other.ca_cert_pem,
            cert_pem=tls_pki.clients["client"].cert_pem,
            key_pem=tls_pki.clients["client"].key_pem,
        ),
        _settings(tls_pki, "server"),
    )
    assert "TLS verification failed" in message and "not issued by the configured" in message


def test_verify_x509_name_mismatch(tls_pki: PKI) -> None:
    message = _handshake_error(
        _settings(tls_pki, "client", verify_x509_name=("vpn.example.org", "name")),
        _settings(tls_pki, "server"),
    )
    assert "verify-x509-name" in message and "CN=server" in message


def test_remote_cert_tls_server_refuses_client_cert(tls_pki: PKI) -> None:
    ca = tls_pki.ca
    impostor = issue(ca, "impostor", role="client")
    message = _handshake_error(
        _settings(tls_pki, "client", remote_cert_tls="server"),
        TLSSettings(
            ca_pem=tls_pki.ca_cert_pem, cert_pem=impostor.cert_pem, key_pem=impostor.key_pem
        ),
    )
    assert "remote-cert-tls" in message


def test_expired_server_certificate(tls_pki: PKI) -> None:
    import datetime

    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=10)
    old = issue(
        tls_pki.ca, "server", role="server", not_before=past - datetime.timedelta(1), not_after=past
    )
    message = _handshake_error(
        _settings(tls_pki, "client"),
        TLSSettings(ca_pem=tls_pki.ca_cert_pem, cert_pem=old.cert_pem, key_pem=old.key_pem),
    )
    assert "expired" in message


def test_make_ca_is_independent() -> None:
    assert make_ca().cert_pem != make_ca().cert_pem


def test_empty_control_payload_is_accepted(tls_pki: PKI) -> None:
    # An empty CONTROL_WKC_V1 delivers zero TLS bytes; that must be a no-op.
    engine = TLSEngine(_settings(tls_pki, "server"), server=True)
    engine.feed(b"")
    assert engine.progress() == b""
